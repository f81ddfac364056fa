"""Waveform-domain discriminators: MelGAN's multi-scale and HiFi-GAN's multi-period critics.

- :class:`MultiScaleWaveformDiscriminator`: MelGAN's multi-scale discriminator (Kumar et al.
  2019, ``descriptinc/melgan-neurips``), the waveform critic of SoundStream.
- :class:`MultiPeriodDiscriminator`: HiFi-GAN's multi-period discriminator (Kong et al. 2020,
  ``jik876/hifi-gan``), as used by descript-audio-codec.

Both follow the interface of :mod:`lit_codec.nn.discriminators` (import them from there):
waveform ``(B, 1, T)`` in, a :class:`~lit_codec.nn.discriminators.DiscriminatorOutput` out.
"""

from __future__ import annotations

import math

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

__all__ = ["MultiPeriodDiscriminator", "MultiScaleWaveformDiscriminator"]


def _pad_reflect(x: Tensor, left: int, right: int) -> Tensor:
    """Reflection padding of the last axis; zeros when the signal is too short to reflect."""
    mode = "reflect" if x.shape[-1] > max(left, right) else "constant"
    return F.pad(x, (left, right), mode=mode)


# ---------------------------------------------------------------------------------------------
# MelGAN multi-scale waveform discriminator
# ---------------------------------------------------------------------------------------------


class MultiScaleWaveformDiscriminator(Configurable, nn.Module):
    """MelGAN's multi-scale waveform discriminator.

    The same architecture (separate weights) looks at the waveform average-pooled 1×, 2×, 4×,
    …: a conv with kernel 15, strided grouped convs (kernel ``10 * stride + 1``), a conv with
    kernel 5, then a conv with kernel 3 to one channel of logits ``(B, 1, T')`` per scale.

    Args:
        scales: number of scales; scale ``k`` sees the waveform down-sampled by ``2 ** k``
            (average pooling, kernel 4, stride 2, as MelGAN).
        channels: channels of the first conv; the strided convs multiply them by their stride.
        max_channels: cap on the channels of any layer.
        downsample_factors: stride of each strided conv (one layer per entry).
        groups_growth: input channels per group in the strided convs (MelGAN: 4), so the
            number of groups grows with the channels.
        norm: weight parametrisation of every conv.
        negative_slope: LeakyReLU slope.
    """

    def __init__(
        self,
        scales: int = 3,
        channels: int = 16,
        max_channels: int = 1024,
        downsample_factors: tuple[int, ...] = (4, 4, 4, 4),
        groups_growth: int = 4,
        norm: Norm = "weight_norm",
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales must be >= 1, got {scales}")
        self.nets = nn.ModuleList(
            _WaveformScale(
                channels, max_channels, downsample_factors, groups_growth, norm, negative_slope
            )
            for _ in range(scales)
        )
        self.names = [f"msd_{2**k}x" for k in range(scales)]

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """Waveform ``(B, 1, T)`` → per scale ``k`` logits ``(B, 1, ~T / 2**k / prod(strides))``."""
        check_waveform(x)
        logits, features = [], []
        for k, net in enumerate(self.nets):
            if k > 0:
                x = F.avg_pool1d(x, 4, stride=2, padding=1, count_include_pad=False)  # (B, 1, T/2)
            out, feats = net(x)
            logits.append(out)
            features.append(feats)
        return DiscriminatorOutput(logits, features, list(self.names))


class _WaveformScale(Configurable, nn.Module):
    """One scale of :class:`MultiScaleWaveformDiscriminator` (MelGAN's ``NLayerDiscriminator``)."""

    def __init__(
        self,
        channels: int,
        max_channels: int,
        downsample_factors: tuple[int, ...],
        groups_growth: int,
        norm: Norm,
        negative_slope: float,
    ) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        convs = [normed_conv(nn.Conv1d(1, channels, 15), norm)]
        ch = channels
        for stride in downsample_factors:
            out = min(ch * stride, max_channels)
            # MelGAN's groups (in_channels // 4), reduced to a divisor of both channel counts.
            groups = math.gcd(max(1, ch // groups_growth), math.gcd(ch, out))
            conv = nn.Conv1d(ch, out, 10 * stride + 1, stride, padding=5 * stride, groups=groups)
            convs.append(normed_conv(conv, norm))
            ch = out
        out = min(ch * 2, max_channels)
        convs.append(normed_conv(nn.Conv1d(ch, out, 5, padding=2), norm))
        self.convs = nn.ModuleList(convs)
        self.conv_post = normed_conv(nn.Conv1d(out, 1, 3, padding=1), norm)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Waveform ``(B, 1, T)`` → logits ``(B, 1, T')`` and the feature maps."""
        h = _pad_reflect(x, 7, 7)  # (B, 1, T + 14)
        features = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), self.negative_slope)  # (B, C, T_layer)
            features.append(h)
        return self.conv_post(h), features


# ---------------------------------------------------------------------------------------------
# HiFi-GAN multi-period discriminator
# ---------------------------------------------------------------------------------------------


class MultiPeriodDiscriminator(Configurable, nn.Module):
    """HiFi-GAN's multi-period discriminator.

    For period ``p`` the waveform is reflection-padded to a multiple of ``p`` and folded into
    ``(B, 1, T / p, p)``; 2-D convs with kernel ``(kernel_size, 1)`` (stride ``stride`` in all
    but the last) then see every ``p``-th sample, and a ``(3, 1)`` conv gives logits
    ``(B, 1, T', p)``.

    Args:
        periods: one sub-discriminator per period.
        channels: channels ``C`` of the first conv.
        channel_mults: output channels of each conv as multiples of ``C`` (HiFi-GAN: 32,
            128, 512, 1024, 1024).
        max_channels: cap on the channels of any layer.
        kernel_size: kernel length along time.
        stride: time stride of every conv but the last.
        norm: weight parametrisation of every conv.
        negative_slope: LeakyReLU slope (HiFi-GAN: 0.1).
    """

    def __init__(
        self,
        periods: tuple[int, ...] = (2, 3, 5, 7, 11),
        channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 4, 16, 32, 32),
        max_channels: int = 1024,
        kernel_size: int = 5,
        stride: int = 3,
        norm: Norm = "weight_norm",
        negative_slope: float = 0.1,
    ) -> None:
        super().__init__()
        self.nets = nn.ModuleList(
            _PeriodNet(
                p, channels, channel_mults, max_channels, kernel_size, stride, norm, negative_slope
            )
            for p in periods
        )
        self.names = [f"mpd_p{p}" for p in periods]

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """Waveform ``(B, 1, T)`` → per period ``p`` logits ``(B, 1, T', p)``."""
        return run_sub_discriminators(self.nets, self.names, x)


class _PeriodNet(Configurable, nn.Module):
    """One period of :class:`MultiPeriodDiscriminator` (HiFi-GAN's ``DiscriminatorP``)."""

    def __init__(
        self,
        period: int,
        channels: int,
        channel_mults: tuple[int, ...],
        max_channels: int,
        kernel_size: int,
        stride: int,
        norm: Norm,
        negative_slope: float,
    ) -> None:
        super().__init__()
        if period < 1:
            raise ValueError(f"periods must be >= 1, got {period}")
        self.period = period
        self.negative_slope = negative_slope
        convs, ch = [], 1
        for i, mult in enumerate(channel_mults):
            out = min(channels * mult, max_channels)
            s = stride if i < len(channel_mults) - 1 else 1
            conv = Conv2d(ch, out, (kernel_size, 1), (s, 1), padding=(kernel_size // 2, 0))
            convs.append(normed_conv(conv, norm))
            ch = out
        self.convs = nn.ModuleList(convs)
        self.conv_post = normed_conv(Conv2d(ch, 1, (3, 1), padding=(1, 0)), norm)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Waveform ``(B, 1, T)`` → logits ``(B, 1, T', p)`` and the feature maps."""
        b, _, t = x.shape
        pad = (-t) % self.period
        h = _pad_reflect(x, 0, pad)  # (B, 1, T + pad)
        h = h.reshape(b, 1, (t + pad) // self.period, self.period)  # (B, 1, T / p, p)
        features = []
        for conv in self.convs:
            h = F.leaky_relu(conv(h), self.negative_slope)  # (B, C, T_layer, p)
            features.append(h)
        return self.conv_post(h), features
