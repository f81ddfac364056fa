"""On-the-fly noisy/clean pairs for training a codec that can also denoise (SoundStream §3.4).

:class:`NoiseMixer` takes a batch of clean clips and returns the generator's
input, its target and a per-sample denoising flag:

- a share ``noisy_probability`` of the clips get noise at a random SNR
  (white, pink or brown noise, or babble made of other clips of the batch);
- each clip is given the flag 1 ("denoise") with ``denoise_probability``; its
  target is then the clean clip, otherwise the target is the input itself
  (noisy or not), so one model both reconstructs and denoises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from lit_codec.nn.configurable import Configurable

__all__ = ["NoisyBatch", "NoiseMixer", "colored_noise", "mix_at_snr"]

NoiseKind = Literal["white", "pink", "brown", "babble"]


@dataclass
class NoisyBatch:
    """What the generator sees and what it must produce."""

    inputs: torch.Tensor  # (B, 1, T)
    targets: torch.Tensor  # (B, 1, T)
    condition: torch.Tensor  # (B,) float: 1 = denoise, 0 = reconstruct the input as is
    noisy: torch.Tensor  # (B,) bool: noise was added to the input


def colored_noise(
    shape: tuple[int, ...], exponent: float, generator=None, device=None
) -> torch.Tensor:
    """Gaussian noise whose power falls as ``1 / f**exponent`` (0 white, 1 pink, 2 brown), unit RMS."""
    white = torch.randn(shape, generator=generator, device=device)
    if exponent == 0:
        return white
    spectrum = torch.fft.rfft(white, dim=-1)
    freqs = torch.fft.rfftfreq(shape[-1], device=device)
    freqs[0] = freqs[1] if freqs.numel() > 1 else 1.0
    spectrum = spectrum / freqs.pow(exponent / 2)
    noise = torch.fft.irfft(spectrum, n=shape[-1], dim=-1)
    return noise / noise.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-8)


def mix_at_snr(
    clean: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy, clean)``: unit-RMS ``noise`` (..., T) added to ``clean`` (..., T) at
    ``snr_db`` (broadcast over the leading dimensions), both divided by the mix's peak where
    it exceeds 1 so the input stays within [-1, 1]."""
    rms = clean.pow(2).mean(dim=-1, keepdim=True).sqrt()  # (..., 1)
    noisy = clean + noise * rms * 10 ** (-snr_db / 20)
    peak = noisy.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)
    return noisy / peak, clean / peak


class NoiseMixer(Configurable, nn.Module):
    """Mix noise into clean clips and choose per clip whether the codec should denoise.

    Args:
        noisy_probability: share of clips that get noise.
        denoise_probability: share of clips whose flag asks for the clean signal.
        snr_db: range of signal-to-noise ratios, drawn uniformly in dB.
        kinds: noise kinds to draw from.
    """

    def __init__(
        self,
        noisy_probability: float = 0.5,
        denoise_probability: float = 0.5,
        snr_db: tuple[float, float] = (0.0, 20.0),
        kinds: tuple[NoiseKind, ...] = ("white", "pink", "brown", "babble"),
    ):
        super().__init__()
        if not kinds:
            raise ValueError("NoiseMixer needs at least one noise kind")
        self.noisy_probability = noisy_probability
        self.denoise_probability = denoise_probability
        self.snr_db = tuple(snr_db)
        self.kinds = tuple(kinds)

    def noise(self, clean: torch.Tensor, kind: NoiseKind) -> torch.Tensor:
        """Unit-RMS noise shaped like ``clean`` (B, 1, T)."""
        b, _, t = clean.shape
        if kind == "babble" and b > 1:
            shifts = [int(s) for s in torch.randint(1, b, (3,))]
            noise = sum(torch.roll(clean, s, dims=0) for s in shifts)  # (B, 1, T): other clips
            return noise / noise.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-8)
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0, "babble": 1.0}[kind]
        return colored_noise((b, 1, t), exponent, device=clean.device).to(clean.dtype)

    def forward(self, clean: torch.Tensor) -> NoisyBatch:
        """(B, 1, T) clean clips -> :class:`NoisyBatch`."""
        b = clean.shape[0]
        device = clean.device
        kind = self.kinds[int(torch.randint(len(self.kinds), (1,)))]
        noise = self.noise(clean, kind)  # (B, 1, T), unit RMS
        lo, hi = self.snr_db
        snr = lo + (hi - lo) * torch.rand(b, 1, 1, device=device)  # (B, 1, 1)
        noisy = torch.rand(b, device=device) < self.noisy_probability  # (B,)
        inputs, clean_target = mix_at_snr(clean, noise * noisy[:, None, None], snr)
        condition = (torch.rand(b, device=device) < self.denoise_probability).float()  # (B,)
        targets = torch.where(condition[:, None, None] > 0, clean_target, inputs)
        return NoisyBatch(inputs, targets, condition, noisy)
