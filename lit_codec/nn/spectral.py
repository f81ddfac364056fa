"""Spectral helpers: mel scale, mel filterbank, STFT magnitude and a mel-spectrogram module.

No torchaudio: the mel filterbank re-implements ``librosa.filters.mel`` (Slaney's Auditory
Toolbox mel scale and area normalisation by default, HTK's scale as an option), the same
filters descript-audio-codec's multi-scale mel loss uses through audiotools.

Spectra are always computed in float32 with autocast disabled, so the losses and metrics
built on them are safe under bf16/fp16 autocast.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from lit_codec.nn.configurable import Configurable

__all__ = [
    "MelSpectrogram",
    "hann_window",
    "hz_to_mel",
    "mel_filterbank",
    "mel_to_hz",
    "stft_complex",
    "stft_magnitude",
]

# Slaney's mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above.
_SLANEY_F_SP = 200.0 / 3.0
_SLANEY_MIN_LOG_HZ = 1000.0
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # 15 mels
_SLANEY_LOGSTEP = math.log(6.4) / 27.0


def _as_float64(x: float | Tensor) -> Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def hz_to_mel(freq: float | Tensor, mel_scale: Literal["slaney", "htk"] = "slaney") -> Tensor:
    """Convert frequencies in Hz to mels (as ``librosa.hz_to_mel``), in float64.

    Args:
        freq: frequency or frequencies in Hz.
        mel_scale: ``"slaney"`` (linear below 1 kHz, logarithmic above; 1000 Hz is 15 mels)
            or ``"htk"`` (``2595 * log10(1 + f / 700)``; 1000 Hz is about 1000 mels).
    """
    f = _as_float64(freq)
    if mel_scale == "htk":
        return 2595.0 * torch.log10(1.0 + f / 700.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {mel_scale!r}")
    linear = f / _SLANEY_F_SP
    log_part = (
        _SLANEY_MIN_LOG_MEL
        + torch.log(f.clamp_min(_SLANEY_MIN_LOG_HZ) / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP
    )
    return torch.where(f >= _SLANEY_MIN_LOG_HZ, log_part, linear)


def mel_to_hz(mel: float | Tensor, mel_scale: Literal["slaney", "htk"] = "slaney") -> Tensor:
    """Convert mels to frequencies in Hz, the inverse of :func:`hz_to_mel`, in float64.

    Args:
        mel: value or values in mels.
        mel_scale: ``"slaney"`` or ``"htk"``, as in :func:`hz_to_mel`.
    """
    m = _as_float64(mel)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    if mel_scale != "slaney":
        raise ValueError(f"mel_scale must be 'slaney' or 'htk', got {mel_scale!r}")
    linear = _SLANEY_F_SP * m
    log_part = _SLANEY_MIN_LOG_HZ * torch.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL))
    return torch.where(m >= _SLANEY_MIN_LOG_MEL, log_part, linear)


def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    norm: Literal["slaney"] | None = "slaney",
    mel_scale: Literal["slaney", "htk"] = "slaney",
) -> Tensor:
    """Triangular mel filters over the bins of a real FFT, as ``librosa.filters.mel``.

    Filter ``i`` rises linearly from the ``i``-th to the ``i+1``-th of ``n_mels + 2``
    frequencies equally spaced on the mel scale between ``f_min`` and ``f_max`` and falls
    to zero at the ``i+2``-th. Without normalisation neighbouring filters sum to one between
    the first and last centre; with ``norm="slaney"`` each filter has unit area in Hz.

    Args:
        sample_rate: sample rate of the audio in Hz.
        n_fft: FFT size; the filters cover its ``n_fft // 2 + 1`` bins from 0 Hz to Nyquist.
        n_mels: number of mel bands.
        f_min: lowest frequency of the first filter, in Hz.
        f_max: highest frequency of the last filter in Hz; ``None`` means Nyquist.
        norm: ``"slaney"`` divides each filter by its width in Hz (unit area);
            ``None`` leaves triangles of height one.
        mel_scale: ``"slaney"`` or ``"htk"`` mel scale.

    Returns:
        float32 tensor ``(n_mels, n_fft // 2 + 1)``.
    """
    nyquist = sample_rate / 2.0
    f_max = nyquist if f_max is None else float(f_max)
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"need n_mels >= 1 and n_fft >= 2, got n_mels={n_mels}, n_fft={n_fft}")
    if not 0.0 <= f_min < f_max <= nyquist + 1e-6:
        raise ValueError(
            f"need 0 <= f_min < f_max <= {nyquist} Hz, got f_min={f_min}, f_max={f_max}"
        )
    if norm not in ("slaney", None):
        raise ValueError(f"norm must be 'slaney' or None, got {norm!r}")
    fft_freqs = torch.linspace(0.0, nyquist, n_fft // 2 + 1, dtype=torch.float64)  # (F,)
    mels = torch.linspace(
        float(hz_to_mel(f_min, mel_scale)),
        float(hz_to_mel(f_max, mel_scale)),
        n_mels + 2,
        dtype=torch.float64,
    )  # (n_mels + 2,)
    mel_f = mel_to_hz(mels, mel_scale)  # (n_mels + 2,) band edges in Hz
    f_diff = mel_f.diff()  # (n_mels + 1,)
    ramps = mel_f[:, None] - fft_freqs[None, :]  # (n_mels + 2, F)
    lower = -ramps[:-2] / f_diff[:-1, None]  # (n_mels, F) rising slopes
    upper = ramps[2:] / f_diff[1:, None]  # (n_mels, F) falling slopes
    weights = torch.minimum(lower, upper).clamp_min(0.0)  # (n_mels, F)
    if norm == "slaney":
        weights = weights * (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]  # (n_mels, F)
    return weights.to(torch.float32)


def hann_window(win_length: int, device: torch.device | str | None = None) -> Tensor:
    """A periodic float32 Hann window, cached per length and device.

    The cached tensor is created outside inference mode so it may also be used in graphs
    that need gradients. Do not modify it in place.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (int(win_length), str(device))
    window = _WINDOWS.get(key)
    if window is None:
        with torch.inference_mode(False):
            window = torch.hann_window(
                win_length, periodic=True, dtype=torch.float32, device=device
            )
        _WINDOWS[key] = window
    return window


_WINDOWS: dict[tuple[int, str], Tensor] = {}


def _as_batch(x: Tensor) -> Tensor:
    if x.dim() == 3:
        if x.shape[1] != 1:
            raise ValueError(f"expected mono audio (B, 1, T), got shape {tuple(x.shape)}")
        return x[:, 0]  # (B, T)
    if x.dim() != 2:
        raise ValueError(f"expected audio of shape (B, T) or (B, 1, T), got {tuple(x.shape)}")
    return x


def stft_complex(
    x: Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: Tensor | None = None,
    center: bool = True,
) -> Tensor:
    """Complex STFT in float32 with autocast disabled.

    Args:
        x: audio ``(B, T)`` or ``(B, 1, T)``.
        n_fft: FFT size.
        hop_length: samples between frames.
        win_length: window length (``<= n_fft``); defaults to ``n_fft``.
        window: the window to use; ``None`` takes a cached periodic Hann window.
        center: pad both ends by ``n_fft // 2`` (reflection, or zeros when the signal is
            shorter than that) so frame ``t`` is centred on sample ``t * hop_length``.

    Returns:
        complex64 tensor ``(B, n_fft // 2 + 1, frames)``.
    """
    win_length = n_fft if win_length is None else win_length
    x = _as_batch(x)  # (B, T)
    if window is None:
        window = hann_window(win_length, x.device)
    pad_mode = "reflect" if x.shape[-1] > n_fft // 2 else "constant"
    with torch.autocast(device_type=x.device.type, enabled=False):
        return torch.stft(
            x.float(),
            n_fft=n_fft,
            hop_length=hop_length,
            win_length=win_length,
            window=window.to(device=x.device, dtype=torch.float32),
            center=center,
            pad_mode=pad_mode,
            return_complex=True,
        )  # (B, F, frames)


def stft_magnitude(
    x: Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int | None = None,
    window: Tensor | None = None,
    center: bool = True,
) -> Tensor:
    """Magnitude of the STFT, ``|STFT(x)|``, in float32 (autocast disabled).

    The gradient of the magnitude is zero (not NaN) where a bin is exactly zero, so silent
    input is safe; clamp before taking a log.

    Args:
        x: audio ``(B, T)`` or ``(B, 1, T)``.
        n_fft: FFT size.
        hop_length: samples between frames.
        win_length: window length (``<= n_fft``); defaults to ``n_fft``.
        window: the window to use; ``None`` takes a cached periodic Hann window.
        center: pad both ends by ``n_fft // 2`` so frame ``t`` is centred on sample
            ``t * hop_length``; then ``frames = T // hop_length + 1``.

    Returns:
        float32 tensor ``(B, n_fft // 2 + 1, frames)``.
    """
    return stft_complex(x, n_fft, hop_length, win_length, window, center).abs()  # (B, F, frames)


class MelSpectrogram(Configurable, nn.Module):
    """Mel spectrogram ``filterbank @ |STFT(x)| ** power``, computed in float32.

    The window and filterbank are non-persistent buffers: they follow ``.to(device)`` but
    are not written to ``state_dict`` (they are rebuilt from the arguments).

    Args:
        sample_rate: sample rate of the audio in Hz.
        n_fft: FFT size.
        hop_length: samples between frames; ``None`` means ``win_length // 4``.
        win_length: Hann window length (``<= n_fft``); ``None`` means ``n_fft``.
        n_mels: number of mel bands.
        f_min: lowest mel filter frequency in Hz.
        f_max: highest mel filter frequency in Hz; ``None`` means Nyquist.
        power: exponent applied to the magnitude before the filterbank (1: magnitude,
            2: power spectrum).
        center: centre frames on their sample positions by padding both ends.
        norm: mel filter normalisation, ``"slaney"`` (unit area) or ``None``.
        mel_scale: ``"slaney"`` or ``"htk"`` mel scale.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int | None = None,
        win_length: int | None = None,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 1.0,
        center: bool = True,
        norm: Literal["slaney"] | None = "slaney",
        mel_scale: Literal["slaney", "htk"] = "slaney",
    ) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.win_length = n_fft if win_length is None else win_length
        self.hop_length = self.win_length // 4 if hop_length is None else hop_length
        self.power = power
        self.center = center
        if self.win_length > n_fft:
            raise ValueError(f"win_length ({self.win_length}) must be <= n_fft ({n_fft})")
        self.register_buffer(
            "window", torch.hann_window(self.win_length, periodic=True), persistent=False
        )
        self.register_buffer(
            "filterbank",
            mel_filterbank(
                sample_rate, n_fft, n_mels, f_min, f_max, norm=norm, mel_scale=mel_scale
            ),
            persistent=False,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Mel spectrogram of ``x`` ``(B, T)`` or ``(B, 1, T)`` → float32 ``(B, n_mels, frames)``."""
        mag = stft_magnitude(
            x, self.n_fft, self.hop_length, self.win_length, self.window, self.center
        )  # (B, F, frames)
        if self.power != 1.0:
            mag = mag.pow(self.power)
        with torch.autocast(device_type=mag.device.type, enabled=False):
            return torch.matmul(self.filterbank.float(), mag)  # (B, n_mels, frames)
