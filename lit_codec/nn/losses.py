"""Codec training losses: reconstruction, adversarial and feature matching.

- :class:`MultiScaleMelLoss` follows descript-audio-codec's ``MelSpectrogramLoss`` (L1 between
  mel spectrograms, linear and log, over seven window sizes), the reconstruction loss that
  SoundStream and EnCodec also use in multi-scale form.
- :class:`MultiResolutionSTFTLoss` is Parallel WaveGAN's spectral convergence plus
  log-magnitude L1 over several STFT resolutions.
- :class:`MultiResolutionCompressedSTFTLoss` is the power-law compressed magnitude and complex
  STFT MSE of speech enhancement (Wilson et al., 2018; Braun & Tashev, 2021), which also
  constrains the phase.
- :class:`STOILoss` is one minus a differentiable short-time objective intelligibility
  (Taal et al., 2011): the correlation of clean and processed 1/3-octave band envelopes over
  384 ms segments, the quantity ``pystoi`` reports, for codecs that must keep speech
  intelligible at low bitrates.
- :class:`AdversarialLoss` gives the hinge losses of SoundStream/EnCodec or the least-squares
  losses of HiFi-GAN/DAC, averaged over sub-discriminators.
- :func:`feature_matching_loss` is the L1 between discriminator feature maps, optionally
  normalised per layer by the mean magnitude of the real features (EnCodec).

Everything is computed in float32 (spectra with autocast disabled), so the losses are safe
under bf16/fp16 autocast, and logs are taken of clamped values, so silence gives no NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.nn.configurable import Configurable
from lit_codec.nn.spectral import MelSpectrogram, hann_window, stft_complex

__all__ = [
    "AdversarialLoss",
    "FeatureMatchingLoss",
    "MultiResolutionCompressedSTFTLoss",
    "MultiResolutionSTFTLoss",
    "MultiScaleMelLoss",
    "STOILoss",
    "WaveformL1Loss",
    "feature_matching_loss",
]


def _check_pair(y_hat: Tensor, y: Tensor) -> None:
    if y_hat.shape != y.shape:
        raise ValueError(
            f"prediction and target must have the same shape, got {tuple(y_hat.shape)} "
            f"and {tuple(y.shape)} (trim the decoder output to the input length first)"
        )


def _on_both(fn: Callable[[Tensor], Any], y_hat: Tensor, y: Tensor) -> tuple[Any, Any]:
    """``fn`` of the prediction and of the target (a tensor, or a tuple of tensors each).

    A target that needs no gradient (the usual case: clean audio) goes through ``fn``
    without autograd, which halves the backward; otherwise both go through one call.
    """
    if not y.requires_grad:
        with torch.no_grad():
            ref = fn(y)
        return fn(y_hat), ref
    out = fn(torch.cat([y_hat, y], dim=0))  # (2B, ...) one call for both
    if isinstance(out, tuple):
        halves = [t.split(y_hat.shape[0], dim=0) for t in out]
        return tuple(h[0] for h in halves), tuple(h[1] for h in halves)
    return tuple(out.split(y_hat.shape[0], dim=0))


def _resolutions(
    fft_sizes: Sequence[int], hop_sizes: Sequence[int], win_lengths: Sequence[int]
) -> tuple[tuple[int, int, int], ...]:
    """``(n_fft, hop, win)`` per resolution, checked: one of each, windows within their FFT."""
    if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
        raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
    if any(w > n for w, n in zip(win_lengths, fft_sizes)):
        raise ValueError(
            f"each win_length must be <= its fft_size, got {win_lengths} > {fft_sizes}"
        )
    return tuple(zip(fft_sizes, hop_sizes, win_lengths))


def _floored_magnitude(x: Tensor, n_fft: int, hop: int, win: int, eps: float) -> Tensor:
    """``sqrt(max(|STFT(x)|^2, eps))``: ``(B, T)`` or ``(B, 1, T)`` → ``(B, F, frames)``."""
    spec = stft_complex(x, n_fft, hop, win, hann_window(win, x.device))  # (B, F, frames)
    return (spec.real.square() + spec.imag.square()).clamp_min(eps).sqrt()


def _compressed_spectrum(
    x: Tensor, n_fft: int, hop: int, win: int, power: float, eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``|X|_e^c`` and the real and imaginary parts of ``X |X|_e^(c-1)``, each ``(B, F, frames)``."""
    spec = stft_complex(x, n_fft, hop, win, hann_window(win, x.device))  # (B, F, frames)
    re, im = spec.real, spec.imag  # (B, F, frames) each
    power_e = re.square() + im.square() + eps  # (B, F, frames) |X|_e^2
    magnitude = power_e.pow(power / 2)  # (B, F, frames) |X|_e^c
    gain = magnitude * power_e.rsqrt()  # (B, F, frames) |X|_e^(c-1)
    return magnitude, re * gain, im * gain


class MultiScaleMelLoss(Configurable, nn.Module):
    """Multi-scale mel-spectrogram L1 on linear and log magnitudes (descript-audio-codec).

    For each window length ``w`` (with ``n_fft = w`` and hop ``w * hop_factor``) the mel
    spectrograms ``M`` of prediction and target are compared as::

        linear_weight * L1(M_hat, M) + log_weight * L1(log10(max(M_hat, eps) ** pow),
                                                        log10(max(M, eps) ** pow))

    and the terms of all scales are summed (as DAC does; its recipes weight the sum by 15).

    Args:
        sample_rate: sample rate of the audio in Hz.
        window_lengths: STFT window (and FFT) sizes, one per scale.
        n_mels: number of mel bands per scale, paired with ``window_lengths``.
        hop_factor: hop length as a fraction of the window length.
        log_weight: weight of the L1 between log10 mel spectrograms.
        linear_weight: weight of the L1 between mel magnitudes (DAC's ``mag_weight``).
        clamp_eps: floor applied to mel magnitudes before the log.
        pow: exponent applied to the clamped mel magnitudes before the log.
        f_min: lowest mel frequency in Hz.
        f_max: highest mel frequency in Hz; ``None`` means Nyquist.
    """

    def __init__(
        self,
        sample_rate: int,
        window_lengths: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048),
        n_mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320),
        hop_factor: float = 0.25,
        log_weight: float = 1.0,
        linear_weight: float = 1.0,
        clamp_eps: float = 1e-5,
        pow: float = 1.0,
        f_min: float = 0.0,
        f_max: float | None = None,
    ) -> None:
        super().__init__()
        if len(window_lengths) != len(n_mels):
            raise ValueError(
                f"window_lengths and n_mels must pair up, got {len(window_lengths)} and {len(n_mels)}"
            )
        self.log_weight = log_weight
        self.linear_weight = linear_weight
        self.clamp_eps = clamp_eps
        self.pow = pow
        self.mels = nn.ModuleList(
            MelSpectrogram(
                sample_rate,
                n_fft=w,
                hop_length=max(1, int(w * hop_factor)),
                win_length=w,
                n_mels=m,
                f_min=f_min,
                f_max=f_max,
            )
            for w, m in zip(window_lengths, n_mels)
        )

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """Loss between prediction ``y_hat`` and target ``y``, both ``(B, 1, T)`` or ``(B, T)``.

        Returns a float32 scalar.
        """
        _check_pair(y_hat, y)
        loss = y_hat.new_zeros((), dtype=torch.float32)
        for mel in self.mels:
            m_hat, m = _on_both(mel, y_hat, y)  # (B, n_mels, frames) each
            if self.linear_weight:
                loss = loss + self.linear_weight * F.l1_loss(m_hat, m)
            if self.log_weight:
                log_hat = m_hat.clamp_min(self.clamp_eps).pow(self.pow).log10()
                log_ref = m.clamp_min(self.clamp_eps).pow(self.pow).log10()
                loss = loss + self.log_weight * F.l1_loss(log_hat, log_ref)
        return loss


class MultiResolutionSTFTLoss(Configurable, nn.Module):
    """Spectral convergence plus log-magnitude L1 over several STFTs (Parallel WaveGAN).

    Per resolution, with magnitudes ``S = sqrt(max(|STFT|^2, eps))``::

        sc  = ||S - S_hat||_F / ||S||_F
        mag = L1(log S_hat, log S)

    Both are averaged over resolutions; the loss is ``sc_weight * sc + mag_weight * mag``.

    Args:
        fft_sizes: FFT size of each resolution.
        hop_sizes: hop length of each resolution.
        win_lengths: Hann window length of each resolution (``<=`` its FFT size).
        sc_weight: weight of the spectral-convergence term.
        mag_weight: weight of the log-magnitude term.
        eps: floor on the squared magnitude, which keeps the log and the division finite
            for silent input.
    """

    def __init__(
        self,
        fft_sizes: tuple[int, ...] = (512, 1024, 2048),
        hop_sizes: tuple[int, ...] = (128, 256, 512),
        win_lengths: tuple[int, ...] = (512, 1024, 2048),
        sc_weight: float = 1.0,
        mag_weight: float = 1.0,
        eps: float = 1e-7,
    ) -> None:
        super().__init__()
        self.resolutions = _resolutions(fft_sizes, hop_sizes, win_lengths)
        self.sc_weight = sc_weight
        self.mag_weight = mag_weight
        self.eps = eps

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """Loss between prediction ``y_hat`` and target ``y``, both ``(B, 1, T)`` or ``(B, T)``.

        Returns a float32 scalar.
        """
        _check_pair(y_hat, y)
        sc = y_hat.new_zeros((), dtype=torch.float32)
        mag = y_hat.new_zeros((), dtype=torch.float32)
        for n_fft, hop, win in self.resolutions:
            magnitude = partial(_floored_magnitude, n_fft=n_fft, hop=hop, win=win, eps=self.eps)
            s_hat, s_ref = _on_both(magnitude, y_hat, y)  # (B, F, frames) each
            sc = sc + torch.linalg.vector_norm(s_ref - s_hat) / torch.linalg.vector_norm(s_ref)
            mag = mag + F.l1_loss(s_hat.log(), s_ref.log())
        n = len(self.resolutions)
        return (self.sc_weight * sc + self.mag_weight * mag) / n


class MultiResolutionCompressedSTFTLoss(Configurable, nn.Module):
    """Power-law compressed magnitude and complex STFT MSE over several resolutions.

    The loss of speech enhancement that frame-rate codecs borrow (Wilson et al., 2018,
    "Exploring tradeoffs in models for low-latency speech enhancement"; Braun & Tashev,
    2021, "A consolidated view of loss functions for supervised deep learning-based speech
    enhancement", whose recommended ``power=0.3`` and 0.7/0.3 weighting are the defaults).
    The compression ``|X|^c`` lifts quiet bins towards loud ones, and the complex term
    ``|X|^c e^{i phi}`` also penalises phase errors, which magnitude losses
    (:class:`MultiResolutionSTFTLoss`, :class:`MultiScaleMelLoss`) cannot see.

    Per resolution, with the STFT ``X`` and the floored magnitude ``|X|_e = sqrt(|X|^2 + eps)``::

        mag  = mean((|X_hat|_e^c - |X|_e^c)^2)
        cplx = mean(|X_hat |X_hat|_e^(c-1) - X |X|_e^(c-1)|^2)     # |X|^c e^{i phi}, squared modulus

    and the loss is ``magnitude_weight * mag + complex_weight * cplx``, averaged over
    resolutions. The floor ``eps`` keeps the gradient finite where a bin is zero (the
    derivative of ``|X|^c`` is infinite at 0 for ``c < 1``): at most about
    ``eps^((c - 1) / 2)`` per bin, and silence against silence costs exactly 0.

    Args:
        fft_sizes: FFT size of each resolution.
        hop_sizes: hop length of each resolution.
        win_lengths: Hann window length of each resolution (``<=`` its FFT size).
        power: compression exponent ``c`` applied to magnitudes (1 compares plain spectra).
        magnitude_weight: weight of the compressed-magnitude MSE.
        complex_weight: weight of the compressed-complex MSE.
        eps: floor added to the squared magnitude (> 0).
    """

    def __init__(
        self,
        fft_sizes: tuple[int, ...] = (512, 1024, 2048),
        hop_sizes: tuple[int, ...] = (128, 256, 512),
        win_lengths: tuple[int, ...] = (512, 1024, 2048),
        power: float = 0.3,
        magnitude_weight: float = 0.7,
        complex_weight: float = 0.3,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        if not 0 < power <= 1 or eps <= 0:
            raise ValueError(f"need 0 < power <= 1 and eps > 0, got power={power}, eps={eps}")
        self.resolutions = _resolutions(fft_sizes, hop_sizes, win_lengths)
        self.power = power
        self.magnitude_weight = magnitude_weight
        self.complex_weight = complex_weight
        self.eps = eps

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """Loss between prediction ``y_hat`` and target ``y``, both ``(B, 1, T)`` or ``(B, T)``.

        Returns a float32 scalar.
        """
        _check_pair(y_hat, y)
        loss = y_hat.new_zeros((), dtype=torch.float32)
        with torch.autocast(device_type=y_hat.device.type, enabled=False):
            for n_fft, hop, win in self.resolutions:
                compressed = partial(_compressed_spectrum, n_fft=n_fft, hop=hop, win=win,
                                     power=self.power, eps=self.eps)  # fmt: skip
                (m_hat, re_hat, im_hat), (m_ref, re_ref, im_ref) = _on_both(compressed, y_hat, y)
                if self.magnitude_weight:
                    loss = loss + self.magnitude_weight * F.mse_loss(m_hat, m_ref)
                if self.complex_weight:
                    error = (re_hat - re_ref).square() + (im_hat - im_ref).square()
                    loss = loss + self.complex_weight * error.mean()
        return loss / len(self.resolutions)


def third_octave_bands(
    sample_rate: int, n_fft: int, bands: int = 15, lowest: float = 150.0
) -> Tensor:
    """STOI's 1/3-octave band matrix ``(bands, n_fft // 2 + 1)`` of 0/1: band ``j`` is
    centred on ``lowest * 2^(j/3)`` Hz and holds the FFT bins in ``[c 2^(-1/6), c 2^(1/6))``."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # (F,)
    centres = lowest * 2.0 ** (torch.arange(bands, dtype=torch.float64) / 3)  # (bands,)
    low, high = centres * 2.0 ** (-1 / 6), centres * 2.0 ** (1 / 6)
    if high[-1] > sample_rate / 2:
        fit = int(3 * math.log2(sample_rate / 2 / (lowest * 2 ** (1 / 6)))) + 1
        raise ValueError(
            f"{bands} one-third octave bands from {lowest:g} Hz reach {high[-1].item():.0f} Hz, past "
            f"the Nyquist frequency ({sample_rate / 2:g} Hz) of {sample_rate} Hz audio: use at most {fit} bands"
        )
    matrix = (freqs >= low[:, None]) & (freqs < high[:, None])  # (bands, F)
    if not bool(matrix.any(dim=1).all()):
        raise ValueError(
            f"n_fft {n_fft} at {sample_rate} Hz leaves a 1/3-octave band without a bin"
        )
    return matrix.float()


class STOILoss(Configurable, nn.Module):
    """One minus a differentiable STOI: what a codec loses of speech intelligibility.

    Follows the measure of Taal et al. (2011), "An algorithm for intelligibility prediction
    of time-frequency weighted noisy speech", at the training sample rate instead of 10 kHz:
    Hann-windowed STFT frames of about 25 ms with 50 % overlap; envelopes of 15 one-third
    octave bands from 150 Hz (up to 4.3 kHz); segments of ``segment`` frames (30: 384 ms)
    starting at every ``segment_step``-th frame; in each band and segment the processed
    envelope is scaled to the clean one's energy and clipped at ``(1 + 10^(-beta/20))`` times
    it (``beta`` = -15 dB), and the loss is one minus the mean correlation of the
    mean-removed envelopes. STOI drops frames 40 dB below the loudest; here a segment counts
    with the fraction of its frames within ``dynamic_range`` dB of the clip's loudest frame
    (the clean reference decides), so silence neither scores nor pulls.

    ``1 - loss`` approximates ``pystoi.stoi`` of the pair (the tests check it tracks it); it
    is a training signal for the bands and time scales STOI measures, which mel and STFT
    distances weigh by energy instead.

    Args:
        sample_rate: audio sample rate in Hz (the bands are in Hz).
        frame_ms: STFT window length in milliseconds (hop: half of it).
        segment: frames per envelope segment.
        segment_step: frames between segment starts (1: every frame, as STOI).
        bands: one-third octave bands from 150 Hz (STOI: 15, up to 4.3 kHz; 8 kHz audio
            holds 14).
        beta: clipping bound in dB (STOI: -15).
        dynamic_range: frames this many dB below the loudest clean frame count as silent.
        eps: floor of band energies.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        frame_ms: float = 25.6,
        segment: int = 30,
        segment_step: int = 1,
        bands: int = 15,
        beta: float = -15.0,
        dynamic_range: float = 40.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__()
        self.win = int(round(sample_rate * frame_ms / 1000))
        self.hop = self.win // 2
        self.n_fft = 1 << (self.win - 1).bit_length()  # next power of two
        if segment < 2 or segment_step < 1:
            raise ValueError(
                f"need segment >= 2 and segment_step >= 1, got {segment}, {segment_step}"
            )
        self.segment, self.segment_step = segment, segment_step
        self.clip = 1 + 10 ** (-beta / 20)
        self.dynamic_range, self.eps = dynamic_range, eps
        self.register_buffer(
            "bands", third_octave_bands(sample_rate, self.n_fft, bands), persistent=False
        )

    def envelopes(self, x: Tensor) -> Tensor:
        """Band envelopes ``(B, bands, frames)`` of ``(B, T)`` or ``(B, 1, T)`` audio."""
        spec = stft_complex(x, self.n_fft, self.hop, self.win, hann_window(self.win, x.device))
        power = spec.real.square() + spec.imag.square()  # (B, F, frames)
        return (self.bands.to(power.dtype) @ power).clamp_min(self.eps).sqrt()  # (B, bands, frames)

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """Loss between prediction ``y_hat`` and clean target ``y``, both ``(B, 1, T)`` or
        ``(B, T)`` (at least ``segment`` frames long). Returns a float32 scalar in ``[0, 2]``."""
        _check_pair(y_hat, y)
        with torch.autocast(device_type=y_hat.device.type, enabled=False):
            processed, clean = _on_both(self.envelopes, y_hat.float(), y.float())  # (B, J, M)
            if clean.shape[-1] < self.segment:
                raise ValueError(
                    f"STOILoss needs at least {self.segment} frames of {self.hop} samples, "
                    f"got {clean.shape[-1]}: use longer crops or a smaller segment"
                )
            energy = clean.square().sum(dim=1)  # (B, M) frame energy over the bands
            level = 10 * torch.log10(energy.clamp_min(self.eps))
            loud = (level > level.amax(dim=-1, keepdim=True) - self.dynamic_range).float()  # (B, M)
            seg = partial(
                torch.Tensor.unfold, dimension=-1, size=self.segment, step=self.segment_step
            )
            x, p = seg(clean), seg(processed)  # (B, J, S, N)
            weight = seg(loud).mean(dim=-1)  # (B, S) fraction of loud frames per segment
            scale = (
                x.square().sum(-1, keepdim=True).sqrt()
                / p.square().sum(-1, keepdim=True).clamp_min(self.eps).sqrt()
            )  # (B, J, S, 1)
            p = torch.minimum(p * scale, self.clip * x)  # normalised and clipped
            x = x - x.mean(dim=-1, keepdim=True)
            p = p - p.mean(dim=-1, keepdim=True)
            corr = (x * p).sum(-1) / (x.norm(dim=-1) * p.norm(dim=-1)).clamp_min(
                self.eps
            )  # (B, J, S)
            score = (corr.mean(dim=1) * weight).sum() / weight.sum().clamp_min(self.eps)
        return 1 - score


class WaveformL1Loss(Configurable, nn.Module):
    """Mean absolute error between waveforms, in float32."""

    def __init__(self) -> None:
        super().__init__()

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        """``mean(|y_hat - y|)`` for two waveforms of the same shape, e.g. ``(B, 1, T)`` → scalar."""
        _check_pair(y_hat, y)
        return F.l1_loss(y_hat.float(), y.float())


def _logit_list(logits: Sequence[Tensor] | Tensor) -> list[Tensor]:
    items = [logits] if isinstance(logits, Tensor) else list(logits)
    if not items:
        raise ValueError("expected the logits of at least one sub-discriminator")
    return items


class AdversarialLoss(Configurable, nn.Module):
    """GAN losses for multi-discriminator training, averaged over sub-discriminators.

    Each sub-discriminator's logits (any shape) are averaged over all their elements, then
    the losses of the ``K`` sub-discriminators are averaged:

    - ``"hinge"`` (SoundStream, EnCodec): ``D = relu(1 - D(x)) + relu(1 + D(x_hat))``,
      ``G = relu(1 - D(x_hat))``.
    - ``"lsgan"`` (HiFi-GAN, DAC): ``D = (D(x) - 1)^2 + D(x_hat)^2``, ``G = (D(x_hat) - 1)^2``.

    Args:
        kind: which of the two losses.
    """

    def __init__(self, kind: Literal["hinge", "lsgan"] = "hinge") -> None:
        super().__init__()
        if kind not in ("hinge", "lsgan"):
            raise ValueError(f"kind must be 'hinge' or 'lsgan', got {kind!r}")
        self.kind = kind

    def discriminator(
        self, real_logits: Sequence[Tensor] | Tensor, fake_logits: Sequence[Tensor] | Tensor
    ) -> Tensor:
        """Discriminator loss from the logits on real and (detached) generated audio.

        Args:
            real_logits: one logits tensor per sub-discriminator for the real audio.
            fake_logits: the same for the generated audio (detach it for the D step).

        Returns:
            float32 scalar.
        """
        real, fake = _logit_list(real_logits), _logit_list(fake_logits)
        if len(real) != len(fake):
            raise ValueError(f"got {len(real)} real but {len(fake)} fake logits tensors")
        total = real[0].new_zeros((), dtype=torch.float32)
        for r, f in zip(real, fake):
            r, f = r.float(), f.float()
            if self.kind == "hinge":
                total = total + F.relu(1.0 - r).mean() + F.relu(1.0 + f).mean()
            else:
                total = total + (r - 1.0).square().mean() + f.square().mean()
        return total / len(real)

    def generator(self, fake_logits: Sequence[Tensor] | Tensor) -> Tensor:
        """Generator loss from the discriminators' logits on generated audio → float32 scalar."""
        fake = _logit_list(fake_logits)
        total = fake[0].new_zeros((), dtype=torch.float32)
        for f in fake:
            f = f.float()
            if self.kind == "hinge":
                total = total + F.relu(1.0 - f).mean()
            else:
                total = total + (f - 1.0).square().mean()
        return total / len(fake)


def feature_matching_loss(
    real_features: Sequence[Sequence[Tensor]],
    fake_features: Sequence[Sequence[Tensor]],
    relative: bool = False,
    eps: float = 1e-8,
) -> Tensor:
    """L1 between discriminator feature maps of real and generated audio.

    The mean absolute difference of each layer of each sub-discriminator is averaged over all
    layers of all sub-discriminators. Real features are detached here, so no gradient
    reaches the discriminator through them.

    Args:
        real_features: per sub-discriminator, its list of feature maps for the real audio.
        fake_features: the same for the generated audio; shapes must match.
        relative: divide each layer's L1 by the mean ``|real|`` of that layer (EnCodec's
            relative feature loss), so layers of every scale weigh alike.
        eps: floor on that denominator.

    Returns:
        float32 scalar.
    """
    if len(real_features) != len(fake_features):
        raise ValueError(
            f"got features of {len(real_features)} real but {len(fake_features)} fake sub-discriminators"
        )
    total: Tensor | None = None
    count = 0
    for k, (reals, fakes) in enumerate(zip(real_features, fake_features)):
        if len(reals) != len(fakes):
            raise ValueError(
                f"sub-discriminator {k}: {len(reals)} real but {len(fakes)} fake feature maps"
            )
        for r, f in zip(reals, fakes):
            if r.shape != f.shape:
                raise ValueError(
                    f"sub-discriminator {k}: feature shapes differ, {tuple(r.shape)} vs {tuple(f.shape)}"
                )
            r = r.detach().float()
            term = F.l1_loss(f.float(), r)
            if relative:
                term = term / r.abs().mean().clamp_min(eps)
            total = term if total is None else total + term
            count += 1
    if total is None:
        raise ValueError("expected at least one feature map")
    return total / count


class FeatureMatchingLoss(Configurable, nn.Module):
    """Module form of :func:`feature_matching_loss`, for injection by ``class_path``.

    Args:
        relative: normalise each layer's L1 by the mean magnitude of its real features
            (EnCodec); otherwise a plain mean L1 (MelGAN, HiFi-GAN).
    """

    def __init__(self, relative: bool = False) -> None:
        super().__init__()
        self.relative = relative

    def forward(
        self, real_features: Sequence[Sequence[Tensor]], fake_features: Sequence[Sequence[Tensor]]
    ) -> Tensor:
        """Per sub-discriminator lists of feature maps (any shapes, paired) → float32 scalar."""
        return feature_matching_loss(real_features, fake_features, relative=self.relative)
