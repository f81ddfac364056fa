"""STFT-domain discriminators: SoundStream's STFT, EnCodec's MS-STFT and DAC's multi-band critics.

- :class:`STFTDiscriminator`: SoundStream's STFT discriminator (Zeghidour et al. 2021):
  residual 2-D conv blocks over the real and imaginary STFT parts, logits aggregated over
  frequency.
- :class:`MultiScaleSTFTDiscriminator`: EnCodec's MS-STFT discriminator (Défossez et al. 2022,
  ``audiocraft/adversarial/discriminators/msstftd.py``).
- :class:`MultiBandMultiScaleSTFTDiscriminator`: descript-audio-codec's multi-resolution,
  multi-band STFT discriminator (``dac/model/discriminator.py``, ``MRD``).

All follow the interface of :mod:`lit_codec.nn.discriminators` (import them from there):
waveform ``(B, 1, T)`` in, a :class:`~lit_codec.nn.discriminators.DiscriminatorOutput` out.
STFTs are computed in float32 with autocast disabled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.nn.configurable import Configurable
from lit_codec.nn.conv2d import Conv2d
from lit_codec.nn.discriminators import (
    DiscriminatorOutput,
    Norm,
    check_waveform,
    normed_conv,
    run_sub_discriminators,
)
from lit_codec.nn.spectral import hann_window, stft_complex

__all__ = [
    "MultiBandMultiScaleSTFTDiscriminator",
    "MultiScaleSTFTDiscriminator",
    "STFTDiscriminator",
]

DAC_BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))


def _complex_spectrogram(
    x: Tensor, n_fft: int, hop_length: int, win_length: int, center: bool, scale: float
) -> Tensor:
    """Real and imaginary STFT parts as two channels, time before frequency.

    ``(B, 1, T)`` → ``(B, 2, frames, n_fft // 2 + 1)`` in ``x``'s dtype. Without centring, an
    input shorter than ``n_fft`` is zero-padded to one frame.
    """
    if not center and x.shape[-1] < n_fft:
        x = F.pad(x, (0, n_fft - x.shape[-1]))  # (B, 1, n_fft)
    spec = stft_complex(x, n_fft, hop_length, win_length, center=center)  # (B, F, frames)
    spec = torch.view_as_real(spec) * scale  # (B, F, frames, 2)
    # contiguous: torch 2.13's CPU backward of a strided conv2d on this channels-last
    # permutation crashes (segfault) for some shapes
    return spec.permute(0, 3, 2, 1).to(x.dtype).contiguous()  # (B, 2, frames, F)


def _window_scale(win_length: int, normalized: bool) -> float:
    """``1 / ||window||_2`` (torchaudio's ``normalized=True``, used by EnCodec) or 1."""
    if not normalized:
        return 1.0
    return float(hann_window(win_length).square().sum().rsqrt())


# ---------------------------------------------------------------------------------------------
# SoundStream STFT discriminator
# ---------------------------------------------------------------------------------------------


class STFTDiscriminator(Configurable, nn.Module):
    """SoundStream's STFT discriminator.

    The complex STFT's real and imaginary parts are two input channels ``(B, 2, frames, F)``;
    a 7×7 conv with ``channels`` channels is followed by residual blocks (3×3 conv, activation,
    a ``(s_t + 2) × (s_f + 2)`` conv with stride ``(s_t, s_f)``, plus a strided 1×1 shortcut),
    and a final conv whose kernel spans the remaining frequency bins aggregates them into one
    logit per (down-sampled) frame: logits ``(B, 1, frames / prod(s_t), 1)``. Inputs shorter
    than ``prod(s_t)`` frames are zero-padded in time.

    Args:
        n_fft: FFT size; the ``n_fft // 2 + 1`` bins are the frequency axis.
        hop_length: samples between STFT frames.
        win_length: Hann window length (``<= n_fft``).
        channels: channels ``C`` of the first conv.
        strides: ``(time, frequency)`` stride of each residual block.
        channel_mults: output channels of each block as multiples of ``C``.
        max_channels: cap on the channels of any layer.
        normalized: divide the STFT by the window's L2 norm, which keeps the input near unit
            scale (torchaudio's ``normalized=True``).
        norm: weight parametrisation of every conv.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
        channels: int = 32,
        strides: tuple[tuple[int, int], ...] = ((1, 2), (2, 2), (1, 2), (2, 2), (1, 2), (2, 2)),
        channel_mults: tuple[int, ...] = (1, 2, 4, 4, 8, 8),
        max_channels: int = 1024,
        normalized: bool = True,
        norm: Norm = "weight_norm",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if len(strides) != len(channel_mults):
            raise ValueError(
                f"need one channel multiple per stride, got {strides} and {channel_mults}"
            )
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.scale = _window_scale(win_length, normalized)
        self.negative_slope = negative_slope
        self.conv_pre = normed_conv(Conv2d(2, channels, 7, padding=3), norm)
        blocks, ch, freq = [], channels, n_fft // 2 + 1
        for (s_t, s_f), mult in zip(strides, channel_mults):
            out = min(channels * mult, max_channels)
            blocks.append(_STFTResBlock(ch, out, (s_t, s_f), norm, negative_slope))
            ch, freq = out, freq // s_f
        if freq < 1:
            raise ValueError(f"n_fft={n_fft} leaves no frequency bins after strides {strides}")
        self.blocks = nn.ModuleList(blocks)
        self.min_frames = math.prod(s_t for s_t, _ in strides)
        self.conv_post = normed_conv(Conv2d(ch, 1, (1, freq)), norm)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """Waveform ``(B, 1, T)`` → logits ``(B, 1, frames', 1)``, one name ``"stft"``."""
        check_waveform(x)
        spec = _complex_spectrogram(
            x, self.n_fft, self.hop_length, self.win_length, True, self.scale
        )  # (B, 2, frames, F)
        if spec.shape[2] < self.min_frames:
            spec = F.pad(spec, (0, 0, 0, self.min_frames - spec.shape[2]))  # (B, 2, min_frames, F)
        h = F.leaky_relu(self.conv_pre(spec), self.negative_slope)  # (B, C, frames, F)
        features = [h]
        for block in self.blocks:
            h = block(h)  # (B, C_k, frames / s_t, F / s_f)
            features.append(h)
        logits = self.conv_post(h)  # (B, 1, frames', 1)
        return DiscriminatorOutput([logits], [features], ["stft"])


class _STFTResBlock(Configurable, nn.Module):
    """A strided residual block of :class:`STFTDiscriminator`; divides time/frequency by the stride."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: tuple[int, int],
        norm: Norm,
        negative_slope: float,
    ) -> None:
        super().__init__()
        s_t, s_f = stride
        self.negative_slope = negative_slope
        self.conv1 = normed_conv(Conv2d(in_channels, in_channels, 3, padding=1), norm)
        # Kernel s + 2, padding 1: output length floor(n / s) on both axes.
        conv2 = Conv2d(in_channels, out_channels, (s_t + 2, s_f + 2), (s_t, s_f), padding=1)
        self.conv2 = normed_conv(conv2, norm)
        self.shortcut = normed_conv(Conv2d(in_channels, out_channels, 1, (s_t, s_f)), norm)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, T, F)`` → ``(B, C_out, T // s_t, F // s_f)``."""
        y = self.conv2(F.leaky_relu(self.conv1(x), self.negative_slope))  # (B, C_out, T', F')
        skip = self.shortcut(x)[..., : y.shape[-2], : y.shape[-1]]  # (B, C_out, T', F')
        return F.leaky_relu(y + skip, self.negative_slope)


# ---------------------------------------------------------------------------------------------
# EnCodec multi-scale STFT discriminator
# ---------------------------------------------------------------------------------------------


class MultiScaleSTFTDiscriminator(Configurable, nn.Module):
    """EnCodec's multi-scale STFT discriminator (MS-STFT-D).

    At each resolution the complex STFT (not centred, divided by the window norm) gives real
    and imaginary channels ``(B, 2, frames, F)``; a ``kernel_size`` conv, then one conv per
    dilation (dilated in time, stride ``stride`` in frequency), a square conv and a square
    logits conv give logits ``(B, 1, frames, F')``.

    Args:
        n_ffts: FFT size of each resolution.
        hop_lengths: hop of each resolution.
        win_lengths: Hann window length of each resolution (``<= n_fft``).
        channels: channels ``C`` of the first conv.
        max_channels: cap on the channels of any layer.
        filters_scale: channel growth per dilated conv (EnCodec: 1, constant width).
        kernel_size: ``(time, frequency)`` kernel of the first and the dilated convs.
        dilations: time dilation of each strided conv.
        stride: ``(time, frequency)`` stride of the dilated convs.
        normalized: divide the STFT by the window's L2 norm (EnCodec: yes).
        norm: weight parametrisation of every conv.
        negative_slope: LeakyReLU slope (EnCodec: 0.2).
    """

    def __init__(
        self,
        n_ffts: tuple[int, ...] = (1024, 2048, 512),
        hop_lengths: tuple[int, ...] = (256, 512, 128),
        win_lengths: tuple[int, ...] = (1024, 2048, 512),
        channels: int = 32,
        max_channels: int = 1024,
        filters_scale: int = 1,
        kernel_size: tuple[int, int] = (3, 9),
        dilations: tuple[int, ...] = (1, 2, 4),
        stride: tuple[int, int] = (1, 2),
        normalized: bool = True,
        norm: Norm = "weight_norm",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if not len(n_ffts) == len(hop_lengths) == len(win_lengths):
            raise ValueError("n_ffts, hop_lengths and win_lengths must have the same length")
        shared = (channels, max_channels, filters_scale, kernel_size, dilations, stride)
        self.nets = nn.ModuleList(
            _STFTScale(n, h, w, *shared, normalized, norm, negative_slope)
            for n, h, w in zip(n_ffts, hop_lengths, win_lengths)
        )
        self.names = [f"msstft_{n}" for n in n_ffts]

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """Waveform ``(B, 1, T)`` → per resolution logits ``(B, 1, frames, F')``."""
        return run_sub_discriminators(self.nets, self.names, x)


class _STFTScale(Configurable, nn.Module):
    """One resolution of :class:`MultiScaleSTFTDiscriminator` (EnCodec's ``DiscriminatorSTFT``)."""

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        win_length: int,
        channels: int,
        max_channels: int,
        filters_scale: int,
        kernel_size: tuple[int, int],
        dilations: tuple[int, ...],
        stride: tuple[int, int],
        normalized: bool,
        norm: Norm,
        negative_slope: float,
    ) -> None:
        super().__init__()
        if win_length > n_fft:
            raise ValueError(f"win_length ({win_length}) must be <= n_fft ({n_fft})")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.scale = _window_scale(win_length, normalized)
        self.negative_slope = negative_slope
        k_t, k_f = kernel_size
        ch = min(channels, max_channels)
        convs = [normed_conv(Conv2d(2, ch, kernel_size, padding=(k_t // 2, k_f // 2)), norm)]
        for i, d in enumerate(dilations):
            out = min(channels * filters_scale ** (i + 1), max_channels)
            pad = ((k_t - 1) * d // 2, (k_f - 1) // 2)
            conv = Conv2d(ch, out, kernel_size, stride, dilation=(d, 1), padding=pad)
            convs.append(normed_conv(conv, norm))
            ch = out
        out = min(channels * filters_scale ** (len(dilations) + 1), max_channels)
        convs.append(normed_conv(Conv2d(ch, out, k_t, padding=k_t // 2), norm))
        self.convs = nn.ModuleList(convs)
        self.conv_post = normed_conv(Conv2d(out, 1, k_t, padding=k_t // 2), norm)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Waveform ``(B, 1, T)`` → logits ``(B, 1, frames, F')`` and the feature maps."""
        h = _complex_spectrogram(
            x, self.n_fft, self.hop_length, self.win_length, False, self.scale
        )  # (B, 2, frames, F)
        features = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), self.negative_slope)  # (B, C, frames, F_layer)
            features.append(h)
        return self.conv_post(h), features


# ---------------------------------------------------------------------------------------------
# descript-audio-codec multi-band multi-scale STFT discriminator
# ---------------------------------------------------------------------------------------------


class MultiBandMultiScaleSTFTDiscriminator(Configurable, nn.Module):
    """descript-audio-codec's multi-resolution STFT discriminator with band splitting (MRD).

    At each window length ``w`` (hop ``w * hop_factor``) the complex STFT's real and
    imaginary channels ``(B, 2, frames, F)`` are split into frequency bands; each band has its
    own stack of convs (kernels 3×9 with frequency strides 1, 2, 2, 2, then 3×3), the band
    outputs are concatenated along frequency and one 3×3 conv gives logits
    ``(B, 1, frames, sum of band widths')``.

    Args:
        window_lengths: STFT window (and FFT) size of each resolution.
        hop_factor: hop as a fraction of the window length.
        bands: frequency bands as fractions ``(low, high)`` of the ``w // 2 + 1`` bins.
        channels: channels of every band conv.
        normalized: divide the STFT by the window's L2 norm (DAC: no).
        norm: weight parametrisation of every conv.
        negative_slope: LeakyReLU slope (DAC: 0.1).
    """

    def __init__(
        self,
        window_lengths: tuple[int, ...] = (2048, 1024, 512),
        hop_factor: float = 0.25,
        bands: tuple[tuple[float, float], ...] = DAC_BANDS,
        channels: int = 32,
        normalized: bool = False,
        norm: Norm = "weight_norm",
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            _BandedSTFTScale(
                w, max(1, int(w * hop_factor)), bands, channels, normalized, norm, negative_slope
            )
            for w in window_lengths
        )
        self.names = [f"mrd_{w}" for w in window_lengths]

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """Waveform ``(B, 1, T)`` → per resolution logits ``(B, 1, frames, F')``."""
        return run_sub_discriminators(self.nets, self.names, x)


class _BandedSTFTScale(Configurable, nn.Module):
    """One resolution of :class:`MultiBandMultiScaleSTFTDiscriminator` (DAC's ``MRD``)."""

    def __init__(
        self,
        window_length: int,
        hop_length: int,
        bands: tuple[tuple[float, float], ...],
        channels: int,
        normalized: bool,
        norm: Norm,
        negative_slope: float,
    ) -> None:
        super().__init__()
        self.window_length, self.hop_length = window_length, hop_length
        self.scale = _window_scale(window_length, normalized)
        self.negative_slope = negative_slope
        n_bins = window_length // 2 + 1
        self.bands = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in bands]
        if any(not 0 <= lo < hi <= n_bins for lo, hi in self.bands):
            raise ValueError(f"bands {bands} leave an empty band at window length {window_length}")

        def stack() -> nn.ModuleList:
            convs = [Conv2d(2, channels, (3, 9), (1, 1), padding=(1, 4))]
            convs += [Conv2d(channels, channels, (3, 9), (1, 2), padding=(1, 4)) for _ in range(3)]
            convs.append(Conv2d(channels, channels, 3, padding=1))
            return nn.ModuleList(normed_conv(c, norm) for c in convs)

        self.band_convs = nn.ModuleList(stack() for _ in self.bands)
        self.conv_post = normed_conv(Conv2d(channels, 1, 3, padding=1), norm)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Waveform ``(B, 1, T)`` → logits ``(B, 1, frames, F')`` and the feature maps."""
        spec = _complex_spectrogram(
            x, self.window_length, self.hop_length, self.window_length, True, self.scale
        )  # (B, 2, frames, F)
        features, outs = [], []
        for (lo, hi), convs in zip(self.bands, self.band_convs):
            h = spec[..., lo:hi]  # (B, 2, frames, F_band)
            for conv in convs:
                h = F.leaky_relu(conv(h), self.negative_slope)  # (B, C, frames, F_band')
                features.append(h)
            outs.append(h)
        h = torch.cat(outs, dim=-1)  # (B, C, frames, sum of F_band')
        return self.conv_post(h), features
