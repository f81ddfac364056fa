"""STFT analysis features and the inverse-STFT head of the ConvNeXt codec.

:class:`STFTFeatures` turns waveform frames into the encoder's input channels;
:class:`ISTFTHead` is Vocos's head (Siuzdak 2023, ``vocos/heads.py``: a linear layer to
``n_fft + 2`` channels, ``magnitude = exp(log-magnitude)`` clipped at 100, phase ``p``,
``real = mag * cos p``, ``imag = mag * sin p``, inverse FFT, windowed overlap-add divided by
the window's squared envelope). Both run in float32 with autocast disabled.

Frame placement (``hop`` samples per frame, ``F`` frames for ``F * hop`` samples):

- centred (``causal=False``, Vocos's ``padding="same"``): frame ``j`` is the window of
  ``n_fft`` samples centred on the middle of hop ``j``; analysis and synthesis use the same
  frames, so synthesising the analysis gives the signal back exactly;
- causal: analysis frame ``j`` ends at sample ``(j + 1) * hop`` (it sees no future sample)
  and synthesis frame ``j`` *starts* at sample ``j * hop``, so samples ``[j * hop, (j + 1) *
  hop)`` are final once frame ``j`` is decoded (one frame of latency, like SEANet) and the
  rest of the frame's overlap-add waits for the next frames (the streaming state). The
  first ``n_fft - hop`` samples have fewer overlapping frames: their envelope is partial,
  floored at :data:`ENVELOPE_FLOOR` of its steady value so the rising edge of frame 0's
  window is not amplified without bound.

``torch.istft`` is not used: it requires a non-zero envelope over all of its output (the
NOLA check fails at the edges of uncentred frames, pytorch/pytorch#62323, which is why
Vocos has its own) and keeps no state between chunks. The overlap-add here is ``r =
ceil(n_fft / hop)`` shifted additions of hop-sized blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lit_codec.nn.conv import StreamingModule

__all__ = ["ENVELOPE_FLOOR", "ISTFTHead", "STFTFeatures", "overlap_add"]

ENVELOPE_FLOOR = 0.1
"""The overlap-add envelope is divided out after flooring it at this fraction of its
steady-state maximum (only the first samples of a causal decoder come near it)."""

MAX_LOG_MAGNITUDE = math.log(100.0)
"""Vocos's safeguard: magnitudes are clipped at 100."""

FeatureKind = Literal["both", "log_magnitude", "compressed"]


class STFTFeatures(nn.Module):
    """Spectral features of windowed frames: ``(B, F, n_fft) -> (B, F, channels)``.

    Per frequency bin of the Hann-windowed frame's spectrum ``X``: the log-magnitude
    ``log max(|X|, 1e-5)`` and/or the power-compressed real and imaginary parts of
    ``X * |X| ** (compression - 1)`` (magnitude ``|X| ** compression``, phase kept), as
    ``channels`` input channels ordered [log-magnitude | real | imaginary].

    Args:
        n_fft: frame length and FFT size; ``n_fft // 2 + 1`` bins.
        kind: ``"both"`` (log-magnitude and compressed parts: 3 values per bin),
            ``"log_magnitude"`` (1 per bin) or ``"compressed"`` (2 per bin).
        compression: exponent of the compressed magnitude (0.3 is common in speech
            enhancement; 1 keeps the plain real and imaginary parts).
    """

    def __init__(self, n_fft: int = 1280, kind: FeatureKind = "both", compression: float = 0.3):
        super().__init__()
        if kind not in ("both", "log_magnitude", "compressed"):
            raise ValueError(
                f"features must be 'both', 'log_magnitude' or 'compressed', not {kind!r}"
            )
        self.n_fft = n_fft
        self.kind = kind
        self.compression = compression
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    @property
    def channels(self) -> int:
        """Features per frame."""
        bins = self.n_fft // 2 + 1
        return bins * {"both": 3, "log_magnitude": 1, "compressed": 2}[self.kind]

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, F, n_fft) waveform frames -> (B, F, channels) float32 features."""
        with torch.autocast(device_type=frames.device.type, enabled=False):
            spec = torch.fft.rfft(frames.float() * self.window, dim=-1)  # (B, F, bins)
            magnitude = spec.abs().clamp_min(1e-5)  # (B, F, bins)
            parts = []
            if self.kind != "compressed":
                parts.append(magnitude.log())
            if self.kind != "log_magnitude":
                scale = magnitude.pow(self.compression - 1.0)
                parts += [spec.real * scale, spec.imag * scale]
            return torch.cat(parts, dim=-1)  # (B, F, channels)


@dataclass
class _OverlapState:
    """Streaming state of a causal head: overlap-add beyond the emitted samples."""

    batch: int
    tail: torch.Tensor | None = None  # (B, (r - 1) * hop), made on the first chunk
    emitted: int = 0  # samples emitted so far (indexes the partial envelope)


class ISTFTHead(StreamingModule):
    """Vocos's inverse-STFT head: ``(B, F, C)`` features -> ``(B, 1, F * hop)`` waveform.

    Args:
        channels: features per frame (the decoder trunk's width).
        n_fft: FFT size and window length (Hann).
        hop_length: samples per frame.
        causal: causal frame placement (see the module docstring); streamable.
    """

    def __init__(
        self, channels: int, n_fft: int = 1280, hop_length: int = 320, causal: bool = False
    ) -> None:
        super().__init__()
        if not 0 < hop_length <= n_fft:
            raise ValueError(f"need 0 < hop_length <= n_fft, got hop {hop_length}, n_fft {n_fft}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.causal = causal
        self.out = nn.Linear(channels, n_fft + 2)  # (log-magnitude, phase) per bin
        self.overlap = -(-n_fft // hop_length)  # r: hop-sized blocks a frame covers
        window = torch.hann_window(n_fft)
        self.register_buffer("window", window, persistent=False)
        squared = F.pad(window.square(), (0, self.overlap * hop_length - n_fft))  # (r * hop,)
        self.register_buffer("window_squared", squared, persistent=False)
        # causal: 1 / envelope of samples [0, (r - 1) * hop) (partial), then of one steady hop
        envelope = overlap_add(squared.expand(1, self.overlap, -1), hop_length)[0]  # (2r-1)*hop
        head = envelope[: self.overlap * hop_length]  # (r * hop,)
        self.register_buffer("inverse_envelope", 1.0 / self._floor(head), persistent=False)

    def _floor(self, envelope: torch.Tensor) -> torch.Tensor:
        steady = self.window_squared.view(self.overlap, -1).sum(0).max()  # (hop,) -> ()
        return envelope.clamp_min(ENVELOPE_FLOOR * steady)

    def _start_streaming(self, batch_size: int) -> None:
        self._stream = _OverlapState(batch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F, C) features -> (B, 1, F * hop) waveform (streaming: the next frames)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            log_magnitude, phase = self.out(x.float()).chunk(2, dim=-1)  # (B, F, bins) each
            return self.synthesize(log_magnitude, phase)

    def synthesize(self, log_magnitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """Waveform of per-frame spectra given as log-magnitude and phase.

        Args:
            log_magnitude: (B, F, n_fft // 2 + 1) natural log of each bin's magnitude
                (clipped at log 100).
            phase: (B, F, n_fft // 2 + 1) phase of each bin in radians.

        Returns:
            (B, 1, F * hop) float32 waveform.
        """
        batch, frames = phase.shape[:2]
        hop = self.hop_length
        if frames == 0:
            return phase.new_zeros(batch, 1, 0, dtype=torch.float32)
        with torch.autocast(device_type=phase.device.type, enabled=False):
            magnitude = log_magnitude.float().clamp(max=MAX_LOG_MAGNITUDE).exp()
            phase = phase.float()
            spec = torch.complex(magnitude * phase.cos(), magnitude * phase.sin())  # (B, F, bins)
            wave = torch.fft.irfft(spec, n=self.n_fft, dim=-1) * self.window  # (B, F, n_fft)
            wave = F.pad(wave, (0, self.overlap * hop - self.n_fft))  # (B, F, r * hop)
            summed = overlap_add(wave, hop)  # (B, (F + r - 1) * hop)
            length = frames * hop
            if self._stream is not None:
                return self._emit(summed, length).unsqueeze(1)  # (B, 1, F * hop)
            if self.causal:
                y = summed[:, :length] * self._causal_inverse_envelope(0, length)
            else:
                left = (self.n_fft - hop) // 2
                envelope = overlap_add(self.window_squared.expand(1, frames, -1), hop)[0]
                y = summed[:, left : left + length] / self._floor(envelope[left : left + length])
            return y.unsqueeze(1)  # (B, 1, F * hop)

    def _causal_inverse_envelope(self, start: int, length: int) -> torch.Tensor:
        """1 / envelope of causal output samples ``[start, start + length)``."""
        hop, partial = self.hop_length, (self.overlap - 1) * self.hop_length
        if start >= partial:
            offset = start % hop
            steady = self.inverse_envelope[partial:]  # (hop,)
            return steady.roll(-offset).repeat(-(-length // hop))[:length]  # (length,)
        t = torch.arange(start, start + length, device=self.inverse_envelope.device)
        t = torch.where(t < partial, t, partial + t % hop)
        return self.inverse_envelope[t]  # (length,)

    def _emit(self, summed: torch.Tensor, length: int) -> torch.Tensor:
        """Streaming: add the previous overlap, emit ``length`` final samples, keep the rest."""
        state = self._stream
        if summed.shape[0] != state.batch:
            raise ValueError(f"streaming {state.batch} streams, got {summed.shape[0]} to decode")
        keep = (self.overlap - 1) * self.hop_length
        if state.tail is None:
            state.tail = summed.new_zeros(summed.shape[0], keep)  # (B, (r - 1) * hop)
        summed[:, :keep] += state.tail
        y = summed[:, :length] * self._causal_inverse_envelope(state.emitted, length)  # (B, F*hop)
        state.tail = summed[:, length:].clone()  # (B, (r - 1) * hop)
        state.emitted += length
        return y


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Sum frames placed ``hop`` samples apart: ``(B, F, r * hop) -> (B, (F + r - 1) * hop)``.

    Frame ``j`` lands on samples ``[j * hop, j * hop + r * hop)``; ``r`` shifted additions
    of hop-sized blocks (as fast as ``F.fold`` forward, and its backward is ``r`` slices).
    """
    batch, count, length = frames.shape
    r = length // hop
    blocks = frames.view(batch, count, r, hop)  # (B, F, r, hop)
    out = frames.new_zeros(batch, count + r - 1, hop)  # (B, F + r - 1, hop)
    for i in range(r):
        out[:, i : i + count] += blocks[:, :, i]
    return out.view(batch, (count + r - 1) * hop)  # (B, (F + r - 1) * hop)
