"""SEANet encoder and decoder: the convolutional generator of SoundStream.

Follows SoundStream (Zeghidour et al. 2021, "SoundStream: An End-to-End Neural Audio Codec",
section 3.1 and figure 3, including FiLM conditioning for denoising) and EnCodec's SEANet
(facebookresearch/encodec, ``encodec/modules/seanet.py``): with one residual unit of kernel 3
and ``residual_compress=2`` the blocks here are exactly EnCodec's (without its LSTM).

Read top to bottom: :class:`SEANetGenerator` (what the codec uses: ``encode``/``decode``,
FiLM, streaming), then :class:`SEANetEncoder`, :class:`SEANetDecoder`, and their blocks.

Every convolution is a causal (by default) :class:`~lit_codec.nn.conv.StreamingConv1d`, so
the whole generator streams: see :meth:`SEANetGenerator.encode`. In streaming mode the
encoder and the decoder each run whole frames through recorded step programs
(:class:`~lit_codec.nn.frame_stepper.FrameStepper`; ``_record_step`` lists their layers), which
costs far fewer operations per chunk than streaming convolution by convolution.
Activations are kept time-major in memory (see :mod:`lit_codec.nn.conv`); call
:func:`~lit_codec.nn.conv.fold_weight_norm` on a trained generator before inference.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lit_codec.nn.activations import make_activation
from lit_codec.nn.configurable import Configurable
from lit_codec.nn.conv import StreamingConv1d, StreamingConvTranspose1d, StreamingModule, streaming
from lit_codec.nn.frame_stepper import FrameStepper, StepActivation, StepBuilder

__all__ = ["FiLM", "SEANetDecoder", "SEANetEncoder", "SEANetGenerator"]


class SEANetGenerator(Configurable, nn.Module):
    """SoundStream's encoder and decoder, with optional FiLM conditioning for denoising.

    ``encode`` maps a waveform (B, 1, T) to one ``dimension``-sized embedding every
    ``hop_length`` samples; ``decode`` maps embeddings back to ``hop_length`` samples each.

    Streaming: inside ``with generator.streaming(batch_size):`` (or
    :func:`lit_codec.nn.conv.streaming`), ``encode`` takes consecutive chunks of any length
    and returns only the frames completed so far, and ``decode`` takes consecutive frames
    and returns their samples. The concatenated outputs equal offline processing. Latency is
    one frame: frame ``j`` is emitted as soon as samples ``[0, (j + 1) * hop_length)`` have
    arrived, and decoding frame ``j`` gives its ``hop_length`` samples at once.

    Args:
        channels_enc: channels after the encoder's first convolution (``C_enc``); doubled
            by every down-sampling block.
        channels_dec: channels before the decoder's last convolution (``C_dec``); the decoder
            starts with ``channels_dec * 2 ** len(strides)``.
        dimension: size ``D`` of each embedding (the quantizer's dimension).
        strides: down-sampling factors in encoder order; their product is the hop length
            ``M`` (samples per frame). The decoder up-samples by them in reverse order.
        kernel_size: kernel of the first convolution of encoder and decoder.
        last_kernel_size: kernel of the last convolution of encoder and decoder.
        residual_kernel_size: kernel of the dilated convolution of each residual unit.
        dilations: one residual unit per dilation in every block (SoundStream: 1, 3, 9).
        residual_compress: a residual unit's hidden channels are its channels divided by
            this (EnCodec: 2; SoundStream: 1).
        activation: ``"elu"`` (SoundStream, EnCodec) or ``"snake"`` (BigVGAN, DAC).
        causal: pad every convolution on the left only: no look-ahead, streamable.
        weight_norm: weight-normalise every convolution (fold it for inference).
        film: where a denoising flag conditions the model by FiLM: ``"none"``, on the
            encoder output (``"encoder"``) or on the decoder input (``"decoder"``).
    """

    def __init__(
        self,
        channels_enc: int = 32,
        channels_dec: int = 32,
        dimension: int = 128,
        strides: tuple[int, ...] = (2, 4, 5, 8),
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 7,
        dilations: tuple[int, ...] = (1, 3, 9),
        residual_compress: int = 1,
        activation: Literal["elu", "snake"] = "elu",
        causal: bool = True,
        weight_norm: bool = True,
        film: Literal["none", "encoder", "decoder"] = "none",
    ) -> None:
        super().__init__()
        if film not in ("none", "encoder", "decoder"):
            raise ValueError(f"film must be 'none', 'encoder' or 'decoder', not {film!r}")
        shared = dict(
            dimension=dimension,
            strides=tuple(strides),
            kernel_size=kernel_size,
            last_kernel_size=last_kernel_size,
            residual_kernel_size=residual_kernel_size,
            dilations=tuple(dilations),
            residual_compress=residual_compress,
            activation=activation,
            causal=causal,
            weight_norm=weight_norm,
        )
        self.encoder = SEANetEncoder(channels=channels_enc, **shared)
        self.decoder = SEANetDecoder(channels=channels_dec, **shared)
        self.film_position = film
        self.film = FiLM(dimension) if film != "none" else None

    @property
    def hop_length(self) -> int:
        """Samples per frame: the product of the strides."""
        return self.encoder.hop_length

    @property
    def dimension(self) -> int:
        """Size of each embedding."""
        return self.encoder.dimension

    @contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[SEANetGenerator]:
        """Stream ``encode``/``decode`` for the block (see the class docstring)."""
        with streaming(self, batch_size):
            yield self

    def encode(self, wav: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a waveform.

        Offline the waveform is zero-padded on the right to a multiple of ``hop_length``. In
        streaming mode the chunk is *not* padded: only the frames it completes come out
        (possibly none), the remaining samples wait for the next chunk; to flush the last
        partial frame, send the zeros that complete it.

        Args:
            wav: (B, 1, T) waveform, or in streaming mode the next chunk (B, 1, n), n >= 0.
            condition: (B,) denoising flags, 1 to denoise, 0 (or ``None``) to reconstruct;
                used when ``film="encoder"``.

        Returns:
            (B, D, ceil(T / hop_length)) embeddings; in streaming mode (B, D, m), m >= 0.
        """
        if not self.encoder.conv_in._streaming:
            pad = -wav.shape[-1] % self.hop_length
            if pad:
                wav = F.pad(wav, (0, pad))  # (B, 1, frames * hop)
        latent = self.encoder(wav)  # (B, D, frames)
        if self.film is not None and self.film_position == "encoder":
            latent = self.film(latent, condition)
        return latent

    def decode(self, latent: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Synthesise ``hop_length`` samples per embedding.

        Args:
            latent: (B, D, F) embeddings (quantized); in streaming mode the next frames.
            condition: (B,) denoising flags as in :meth:`encode`; used when ``film="decoder"``.

        Returns:
            (B, 1, F * hop_length) waveform.
        """
        if self.film is not None and self.film_position == "decoder":
            latent = self.film(latent, condition)
        return self.decoder(latent)

    def forward(self, wav: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Encode then decode without quantization: (B, 1, T) -> (B, 1, ceil(T / M) * M)."""
        return self.decode(self.encode(wav, condition), condition)


class FiLM(nn.Module):
    """Feature-wise linear modulation by a binary flag (SoundStream's denoising switch).

    Each flag value has a learned per-channel scale and shift, both initialised to the
    identity (scale 1, shift 0), so a new model behaves as if unconditioned.

    Args:
        channels: channels of the modulated features.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.embedding = nn.Embedding(2, 2 * channels)  # flag -> (scale, shift)
        with torch.no_grad():
            self.embedding.weight[:, :channels] = 1.0
            self.embedding.weight[:, channels:] = 0.0

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Modulate ``x`` (B, C, T) by ``condition`` (B,) flags in {0, 1} (``None``: all 0)."""
        if condition is None:
            condition = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        scale, shift = self.embedding(condition.long()).unsqueeze(-1).chunk(2, dim=1)  # (B, C, 1)
        return torch.addcmul(shift, x, scale)  # (B, C, T)


class SEANetEncoder(Configurable, StreamingModule):
    """SEANet encoder: waveform (B, 1, T) to embeddings (B, D, T / hop_length).

    A convolution to ``channels``, then per stride a block of residual units followed by an
    activation and a strided convolution (kernel ``2 * stride``) doubling the channels, then
    an activation and a convolution to ``dimension``. The input length must be a multiple
    of ``hop_length`` for exact frame alignment (:meth:`SEANetGenerator.encode` pads).

    Args:
        channels: channels after the first convolution.
        dimension: size of each output embedding.
        strides: down-sampling factors, in the order they are applied.
        kernel_size: kernel of the first convolution.
        last_kernel_size: kernel of the last convolution.
        residual_kernel_size: kernel of each residual unit's dilated convolution.
        dilations: one residual unit per dilation in each block.
        residual_compress: hidden channels of a residual unit = its channels // this.
        activation: ``"elu"`` or ``"snake"``.
        causal: left padding only (streamable).
        weight_norm: weight-normalise every convolution.
    """

    def __init__(
        self,
        channels: int = 32,
        dimension: int = 128,
        strides: tuple[int, ...] = (2, 4, 5, 8),
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 7,
        dilations: tuple[int, ...] = (1, 3, 9),
        residual_compress: int = 1,
        activation: Literal["elu", "snake"] = "elu",
        causal: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.dimension = dimension
        self.hop_length = math.prod(strides)
        conv = dict(causal=causal, weight_norm=weight_norm)
        unit = dict(compress=residual_compress, activation=activation, **conv)
        self.conv_in = StreamingConv1d(1, channels, kernel_size, **conv)
        self.blocks = nn.ModuleList()
        for stride in strides:
            self.blocks.append(
                EncoderBlock(channels, stride, dilations, residual_kernel_size, **unit)
            )
            channels *= 2
        self.activation = make_activation(activation, channels)
        self.conv_out = StreamingConv1d(channels, dimension, last_kernel_size, **conv)

    def _start_streaming(self, batch_size: int) -> None:
        like = self.conv_out.bias if self.conv_out.bias is not None else self.conv_out.weight
        self._stream = FrameStepper(
            self._record_step, batch_size, self.hop_length, self.dimension, like
        )

    def _record_step(self, b: StepBuilder, frames: int) -> None:
        """The streaming step of ``frames`` frames (see :class:`~lit_codec.nn.frame_stepper.FrameStepper`)."""
        x = b.conv(None, self.conv_in, length=frames * self.hop_length)
        for block in self.blocks:
            for unit in block.residuals:
                x = unit.record_step(b, x)
            x = b.conv(x, block.downsample, block.activation, inplace=True)
        b.conv(x, self.conv_out, self.activation, inplace=True, final=True)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, D, T / hop_length) embeddings (time-major in memory).

        In streaming mode: the next chunk (B, 1, n) -> the frames it completes (B, D, m).
        """
        if self._stream is not None:
            return self._stream(wav)
        x = self.conv_in(wav)  # (B, C, T)
        for block in self.blocks:
            x = block(x)  # (B, 2C, T / stride)
        return self.conv_out(self.activation(x, inplace=True))  # (B, D, frames)


class SEANetDecoder(Configurable, StreamingModule):
    """SEANet decoder: embeddings (B, D, F) to waveform (B, 1, F * hop_length).

    A convolution to ``channels * 2 ** len(strides)``, then per stride (in reverse order) an
    activation and a transposed convolution (kernel ``2 * stride``) halving the channels,
    followed by residual units, then an activation and a convolution to one channel.

    Args:
        channels: channels before the last convolution.
        dimension: size of each input embedding.
        strides: down-sampling factors in *encoder* order; applied reversed.
        kernel_size: kernel of the first convolution.
        last_kernel_size: kernel of the last convolution.
        residual_kernel_size: kernel of each residual unit's dilated convolution.
        dilations: one residual unit per dilation in each block.
        residual_compress: hidden channels of a residual unit = its channels // this.
        activation: ``"elu"`` or ``"snake"``.
        causal: left padding / right trimming only (streamable).
        weight_norm: weight-normalise every convolution.
    """

    def __init__(
        self,
        channels: int = 32,
        dimension: int = 128,
        strides: tuple[int, ...] = (2, 4, 5, 8),
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        residual_kernel_size: int = 7,
        dilations: tuple[int, ...] = (1, 3, 9),
        residual_compress: int = 1,
        activation: Literal["elu", "snake"] = "elu",
        causal: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.dimension = dimension
        self.hop_length = math.prod(strides)
        conv = dict(causal=causal, weight_norm=weight_norm)
        unit = dict(compress=residual_compress, activation=activation, **conv)
        channels_in = channels * 2 ** len(strides)
        self.conv_in = StreamingConv1d(dimension, channels_in, kernel_size, **conv)
        self.blocks = nn.ModuleList()
        for stride in reversed(strides):
            self.blocks.append(
                DecoderBlock(channels_in, stride, dilations, residual_kernel_size, **unit)
            )
            channels_in //= 2
        self.activation = make_activation(activation, channels_in)
        self.conv_out = StreamingConv1d(channels_in, 1, last_kernel_size, **conv)

    def _start_streaming(self, batch_size: int) -> None:
        like = self.conv_out.bias if self.conv_out.bias is not None else self.conv_out.weight
        self._stream = FrameStepper(self._record_step, batch_size, 1, 1, like)

    def _record_step(self, b: StepBuilder, frames: int) -> None:
        """The streaming step of ``frames`` frames (see :class:`~lit_codec.nn.frame_stepper.FrameStepper`)."""
        x = b.conv(None, self.conv_in, length=frames)
        for block in self.blocks:
            x = b.conv_transposed(x, block.upsample, block.activation, inplace=True)
            for unit in block.residuals:
                x = unit.record_step(b, x)
        b.conv(x, self.conv_out, self.activation, inplace=True, final=True)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, D, F) embeddings -> (B, 1, F * hop_length) waveform (also per chunk when streaming)."""
        if self._stream is not None:
            return self._stream(latent)
        x = self.conv_in(latent)  # (B, C * 2**n, F)
        for block in self.blocks:
            x = block(x)  # (B, C', F * stride)
        return self.conv_out(self.activation(x, inplace=True))  # (B, 1, F * hop)


class EncoderBlock(nn.Module):
    """Residual units, then activation and down-sampling by ``stride`` doubling the channels.

    Internal block: its input must be an intermediate of the encoder (it may be overwritten).
    ``unit`` holds the residual units' options (see :class:`ResidualUnit`).
    """

    def __init__(
        self, channels: int, stride: int, dilations: tuple[int, ...], kernel_size: int, **unit
    ) -> None:
        super().__init__()
        self.residuals = nn.ModuleList(
            ResidualUnit(channels, kernel_size, dilation, **unit) for dilation in dilations
        )
        self.activation = make_activation(unit["activation"], channels)
        self.downsample = StreamingConv1d(
            channels,
            2 * channels,
            2 * stride,
            stride=stride,
            causal=unit["causal"],
            weight_norm=unit["weight_norm"],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, 2C, T / stride)."""
        for unit in self.residuals:
            x = unit(x, inplace=True)  # (B, C, T)
        return self.downsample(self.activation(x, inplace=True))  # (B, 2C, T / stride)


class DecoderBlock(nn.Module):
    """Activation, up-sampling by ``stride`` halving the channels, then residual units.

    Internal block: its input must be an intermediate of the decoder (it may be overwritten).
    ``unit`` holds the residual units' options (see :class:`ResidualUnit`).
    """

    def __init__(
        self, channels: int, stride: int, dilations: tuple[int, ...], kernel_size: int, **unit
    ) -> None:
        super().__init__()
        self.activation = make_activation(unit["activation"], channels)
        self.upsample = StreamingConvTranspose1d(
            channels,
            channels // 2,
            2 * stride,
            stride=stride,
            causal=unit["causal"],
            weight_norm=unit["weight_norm"],
        )
        self.residuals = nn.ModuleList(
            ResidualUnit(channels // 2, kernel_size, dilation, **unit) for dilation in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, F) -> (B, C / 2, F * stride)."""
        x = self.upsample(self.activation(x, inplace=True))  # (B, C / 2, F * stride)
        for unit in self.residuals:
            x = unit(x, inplace=True)  # (B, C / 2, F * stride)
        return x


class ResidualUnit(nn.Module):
    """Pre-activation residual unit: x + conv1x1(act(conv_k,d(act(x)))), identity skip.

    The dilated convolution maps ``channels`` to ``channels // compress`` hidden channels;
    the 1x1 convolution maps back.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilation: int,
        *,
        compress: int,
        activation: str,
        causal: bool,
        weight_norm: bool,
    ) -> None:
        super().__init__()
        hidden = channels // compress
        conv = dict(causal=causal, weight_norm=weight_norm)
        self.activation1 = make_activation(activation, channels)
        self.conv1 = StreamingConv1d(channels, hidden, kernel_size, dilation=dilation, **conv)
        self.activation2 = make_activation(activation, hidden)
        self.conv2 = StreamingConv1d(hidden, channels, 1, **conv)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """(B, C, T) -> (B, C, T); ``x`` is left untouched unless ``inplace``, when (at
        inference) the result may be formed in its memory."""
        h = self.conv1(self.activation1(x))  # (B, C / compress, T)
        h = self.activation2(h, inplace=True)
        return self.conv2.forward_residual(h, x, inplace=inplace)  # (B, C, T)

    def record_step(self, b: StepBuilder, x: StepActivation) -> StepActivation:
        """Record this unit in a streaming step program: skip and bias join the 1x1 product."""
        x = b.align(x, self.conv1)
        h = b.conv(x, self.conv1, self.activation1, ones=True)
        return b.pointwise_residual(h, self.conv2, self.activation2, x)
