"""ConvNeXt codec generator: STFT frames -> ConvNeXt -> latent -> ConvNeXt -> inverse STFT.

A frame-rate alternative to SEANet (:mod:`lit_codec.nn.seanet`) with the same interface
(``encode``/``decode``/``hop_length``/``dimension``/``streaming``), usable as ``generator:``
of :class:`~lit_codec.models.CodecGAN` by ``class_path``. The encoder takes STFT features
(:class:`~lit_codec.nn.stft_head.STFTFeatures`) of one ``n_fft`` window per hop, embeds them
and runs a ConvNeXt trunk (:class:`~lit_codec.nn.convnext.ConvNeXtTrunk`), then projects to
the ``dimension``-sized latent and normalises it over channels (a LayerNorm without affine
parameters: without it the first codebook collapsed). The decoder runs a second trunk on the
latent and Vocos's inverse-STFT head (:class:`~lit_codec.nn.stft_head.ISTFTHead`).

Every layer works at the frame rate (50 frames/s at 16 kHz with hop 320): only the STFT and
the inverse STFT touch samples, so the cost per second of audio hardly depends on the sample
rate (``bench/frame_codec_speed.py``). At the defaults (n_fft 1280, hop 320, width 384, 8 + 8
blocks, MLP x3, latent 128) the generator has 15.58 M parameters.

Precision: the trunks follow the surrounding autocast (``trunk_precision="auto"``: bf16 under
``trainer.precision: bf16-mixed``), or force bf16 / float32 whatever the trainer does, or take
whichever the hardware runs faster (``"fastest"``: bf16 on GPUs that have it and on CPUs with
AMX or AVX-512 BF16, where it halves a step; float32 on other CPUs, where bf16 is emulated
and 15x slower, measured on an AVX2-only AMD EPYC); the
STFT, the latent projection and norm, and the head (its linear layer, exp, cos, sin and the
inverse STFT) always run in float32 with autocast disabled.

Read top to bottom: :class:`ConvNeXtGenerator`, :class:`ConvNeXtEncoder`, :class:`ConvNeXtDecoder`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lit_codec.nn.configurable import Configurable
from lit_codec.nn.conv import StreamingModule, streaming
from lit_codec.nn.convnext import ConvNeXtTrunk
from lit_codec.nn.seanet import FiLM
from lit_codec.nn.stft_head import FeatureKind, ISTFTHead, STFTFeatures

__all__ = ["ConvNeXtDecoder", "ConvNeXtEncoder", "ConvNeXtGenerator"]

TrunkPrecision = Literal["auto", "float32", "bfloat16", "fastest"]


class ConvNeXtGenerator(Configurable, nn.Module):
    """ConvNeXt encoder and decoder over STFT frames, with optional FiLM conditioning.

    ``encode`` maps a waveform (B, 1, T) to one ``dimension``-sized embedding every
    ``hop_length`` samples (``ceil(T / hop_length)`` frames); ``decode`` maps embeddings
    back to ``hop_length`` samples each.

    Streaming (``causal=True`` only): inside ``with generator.streaming(batch_size):`` (or
    :func:`lit_codec.nn.conv.streaming`, which :meth:`lit_codec.Codec.streaming` uses),
    ``encode`` takes consecutive chunks of any length and returns the frames they complete,
    and ``decode`` takes consecutive frames and returns their samples; the concatenated
    outputs equal offline processing up to float rounding. Latency is one frame, as for
    SEANet: frame ``j`` is emitted once samples ``[0, (j + 1) * hop_length)`` have arrived,
    and decoding it completes samples ``[j * hop_length, (j + 1) * hop_length)``.

    Args:
        n_fft: STFT window and FFT size of the analysis and of the synthesis.
        hop_length: samples per frame (320 at 16 kHz: 50 frames/s).
        features: encoder input per STFT bin: ``"both"`` (log-magnitude and compressed
            real/imaginary parts), ``"log_magnitude"`` or ``"compressed"``.
        compression: exponent of the compressed magnitude (see
            :class:`~lit_codec.nn.stft_head.STFTFeatures`).
        channels_enc: width of the encoder's ConvNeXt trunk.
        channels_dec: width of the decoder's ConvNeXt trunk.
        depth_enc: ConvNeXt blocks of the encoder.
        depth_dec: ConvNeXt blocks of the decoder.
        mlp_ratio: hidden width of each block's MLP in multiples of the trunk's width.
        kernel_size: kernel of every depthwise convolution, in frames.
        dimension: size ``D`` of each embedding (the quantizer's dimension).
        causal: no look-ahead anywhere (left-padded STFT frames and depthwise convolutions,
            causal overlap-add); needed for streaming. ``False``: centred frames.
        layer_scale: initial layer scale of every block; ``None``: ``1 / depth`` (Vocos).
        trunk_precision: ``"auto"``: the trunks run under whatever autocast is active (bf16
            under ``bf16-mixed``); ``"bfloat16"``: always under bf16 autocast;
            ``"float32"``: never under autocast; ``"fastest"``: bf16 where the hardware
            runs it natively (:func:`native_bf16`), float32 elsewhere.
        film: where a denoising flag conditions the model by FiLM: ``"none"``, on the
            encoder output (``"encoder"``) or on the decoder input (``"decoder"``).
    """

    def __init__(
        self,
        n_fft: int = 1280,
        hop_length: int = 320,
        features: FeatureKind = "both",
        compression: float = 0.3,
        channels_enc: int = 384,
        channels_dec: int = 384,
        depth_enc: int = 8,
        depth_dec: int = 8,
        mlp_ratio: float = 3.0,
        kernel_size: int = 7,
        dimension: int = 128,
        causal: bool = False,
        layer_scale: float | None = None,
        trunk_precision: TrunkPrecision = "auto",
        film: Literal["none", "encoder", "decoder"] = "none",
    ) -> None:
        super().__init__()
        if film not in ("none", "encoder", "decoder"):
            raise ValueError(f"film must be 'none', 'encoder' or 'decoder', not {film!r}")
        shared = dict(
            n_fft=n_fft,
            hop_length=hop_length,
            mlp_ratio=mlp_ratio,
            kernel_size=kernel_size,
            dimension=dimension,
            causal=causal,
            layer_scale=layer_scale,
            trunk_precision=trunk_precision,
        )
        self.encoder = ConvNeXtEncoder(
            features=features,
            compression=compression,
            channels=channels_enc,
            depth=depth_enc,
            **shared,
        )
        self.decoder = ConvNeXtDecoder(channels=channels_dec, depth=depth_dec, **shared)
        self.causal = causal
        self.film_position = film
        self.film = FiLM(dimension) if film != "none" else None

    @property
    def hop_length(self) -> int:
        """Samples per frame."""
        return self.encoder.hop_length

    @property
    def dimension(self) -> int:
        """Size of each embedding."""
        return self.encoder.dimension

    @contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[ConvNeXtGenerator]:
        """Stream ``encode``/``decode`` for the block (see the class docstring)."""
        if not self.causal:
            raise ValueError(
                "this ConvNeXtGenerator has causal=False and cannot stream: its STFT frames, "
                "convolutions and overlap-add look ahead. Build it with causal=True to stream."
            )
        with streaming(self, batch_size):
            yield self

    def encode(self, wav: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Embed a waveform.

        Offline the waveform is zero-padded on the right to a multiple of ``hop_length``. In
        streaming mode the chunk is not padded: only the frames it completes come out
        (possibly none); to flush the last partial frame, send the zeros that complete it.

        Args:
            wav: (B, 1, T) waveform, or in streaming mode the next chunk (B, 1, n), n >= 0.
            condition: (B,) denoising flags, 1 to denoise, 0 (or ``None``) to reconstruct;
                used when ``film="encoder"``.

        Returns:
            (B, D, ceil(T / hop_length)) float32 embeddings; streaming: (B, D, m), m >= 0.
        """
        latent = self.encoder(wav).transpose(1, 2)  # (B, D, F)
        if self.film is not None and self.film_position == "encoder":
            latent = self.film(latent, condition)
        return latent

    def decode(self, latent: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Synthesise ``hop_length`` samples per embedding.

        Args:
            latent: (B, D, F) embeddings (quantized); in streaming mode the next frames.
            condition: (B,) denoising flags as in :meth:`encode`; used when ``film="decoder"``.

        Returns:
            (B, 1, F * hop_length) float32 waveform.
        """
        if self.film is not None and self.film_position == "decoder":
            latent = self.film(latent, condition)
        return self.decoder(latent.transpose(1, 2))  # (B, F, D) -> (B, 1, F * hop)

    def forward(self, wav: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Encode then decode without quantization: (B, 1, T) -> (B, 1, ceil(T / M) * M)."""
        return self.decode(self.encode(wav, condition), condition)


def _check_precision(precision: str) -> None:
    if precision not in ("auto", "float32", "bfloat16", "fastest"):
        raise ValueError(
            f"trunk_precision must be 'auto', 'float32', 'bfloat16' or 'fastest', not {precision!r}"
        )


def native_bf16(device_type: str) -> bool:
    """Whether ``device_type`` computes bf16 matrix products natively (not emulated).

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and later). CPU: AMX tiles or
    AVX-512 BF16; on AVX2-only CPUs oneDNN converts every bf16 operand to float32 and back,
    which made the recipe's generator step 15x slower than in float32.
    """
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def trunk_autocast(precision: TrunkPrecision, device_type: str) -> AbstractContextManager:
    """The autocast context a trunk runs in for ``trunk_precision`` (see the generator)."""
    _check_precision(precision)
    if precision == "fastest":
        precision = "bfloat16" if native_bf16(device_type) else "float32"
    if precision == "auto":
        return nullcontext()
    if precision == "float32":
        return torch.autocast(device_type=device_type, enabled=False)
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)


@dataclass
class _Samples:
    """Streaming state of a causal encoder: the samples the next frame window starts with."""

    batch: int
    pending: torch.Tensor | None = None  # (B, < n_fft), made on the first chunk


class ConvNeXtEncoder(Configurable, StreamingModule):
    """STFT features, ConvNeXt trunk, projection and non-affine LayerNorm: (B, 1, T) -> (B, F, D).

    Frames: ``F = ceil(T / hop_length)`` windows of ``n_fft`` samples (the input is
    zero-padded on the right to ``F * hop_length``, and by ``n_fft - hop_length`` zeros
    around it: all on the left when causal, so frame ``j`` ends at sample ``(j + 1) *
    hop_length``, else split so it is centred on hop ``j``).

    Args:
        n_fft: STFT window and FFT size.
        hop_length: samples per frame.
        features: per-bin input features (see :class:`~lit_codec.nn.stft_head.STFTFeatures`).
        compression: exponent of the compressed magnitude.
        channels: width of the trunk.
        depth: ConvNeXt blocks.
        mlp_ratio: MLP width in multiples of ``channels``.
        kernel_size: depthwise kernel in frames.
        dimension: size of each output embedding.
        causal: no look-ahead (streamable).
        layer_scale: initial layer scale (``None``: ``1 / depth``).
        trunk_precision: autocast of the trunk (see :class:`ConvNeXtGenerator`).
    """

    def __init__(
        self,
        n_fft: int = 1280,
        hop_length: int = 320,
        features: FeatureKind = "both",
        compression: float = 0.3,
        channels: int = 384,
        depth: int = 8,
        mlp_ratio: float = 3.0,
        kernel_size: int = 7,
        dimension: int = 128,
        causal: bool = False,
        layer_scale: float | None = None,
        trunk_precision: TrunkPrecision = "auto",
    ) -> None:
        super().__init__()
        if not 0 < hop_length <= n_fft:
            raise ValueError(f"need 0 < hop_length <= n_fft, got hop {hop_length}, n_fft {n_fft}")
        _check_precision(trunk_precision)
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.dimension = dimension
        self.causal = causal
        self.trunk_precision = trunk_precision
        self.features = STFTFeatures(n_fft, features, compression)
        self.trunk = ConvNeXtTrunk(
            self.features.channels, channels, depth, mlp_ratio, kernel_size, causal, layer_scale
        )
        self.project = nn.Linear(channels, dimension)
        self.latent_norm = nn.LayerNorm(dimension, elementwise_affine=False)

    def _start_streaming(self, batch_size: int) -> None:
        self._stream = _Samples(batch_size)

    def frames(self, wav: torch.Tensor) -> torch.Tensor:
        """The analysis frames of a waveform: (B, 1, T) -> (B, ceil(T / hop), n_fft)
        (streaming: the frames this chunk completes, (B, m, n_fft))."""
        hop, extra = self.hop_length, self.n_fft - self.hop_length
        x = wav[:, 0]  # (B, T)
        if self._stream is not None:
            state = self._stream
            if x.shape[0] != state.batch:
                raise ValueError(
                    f"streaming {state.batch} streams, got a chunk of batch {x.shape[0]}"
                )
            if state.pending is None:
                state.pending = x.new_zeros(x.shape[0], extra)  # (B, n_fft - hop): left padding
            x = torch.cat((state.pending, x), dim=1)  # (B, pending + n)
            count = max(0, (x.shape[1] - self.n_fft) // hop + 1)  # complete windows
            state.pending = x[:, count * hop :].clone()  # (B, < n_fft): the next window's start
            if count == 0:
                return x.new_zeros(x.shape[0], 0, self.n_fft)  # (B, 0, n_fft)
            x = x[:, : (count - 1) * hop + self.n_fft]  # (B, (m - 1) * hop + n_fft)
            return x.unfold(1, self.n_fft, hop)  # (B, m, n_fft)
        right = -x.shape[1] % hop
        left = extra if self.causal else extra // 2
        x = F.pad(x, (left, right + extra - left))  # (B, F * hop + n_fft - hop)
        return x.unfold(1, self.n_fft, hop)  # (B, F, n_fft)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, ceil(T / hop), D) float32 embeddings, time-major.

        In streaming mode: the next chunk (B, 1, n) -> the frames it completes (B, m, D).
        """
        frames = self.frames(wav)  # (B, F, n_fft)
        if frames.shape[1] == 0:  # a streamed chunk that completes no frame
            return frames.new_zeros(frames.shape[0], 0, self.dimension, dtype=torch.float32)
        features = self.features(frames)  # (B, F, C_features)
        with trunk_autocast(self.trunk_precision, wav.device.type):
            h = self.trunk(features)  # (B, F, C)
        with torch.autocast(device_type=wav.device.type, enabled=False):
            return self.latent_norm(self.project(h.float()))  # (B, F, D)


class ConvNeXtDecoder(Configurable, nn.Module):
    """ConvNeXt trunk and inverse-STFT head: (B, F, D) embeddings -> (B, 1, F * hop_length).

    Args:
        n_fft: STFT window and FFT size of the synthesis.
        hop_length: samples per frame.
        channels: width of the trunk.
        depth: ConvNeXt blocks.
        mlp_ratio: MLP width in multiples of ``channels``.
        kernel_size: depthwise kernel in frames.
        dimension: size of each input embedding.
        causal: no look-ahead (streamable); causal frame placement in the head.
        layer_scale: initial layer scale (``None``: ``1 / depth``).
        trunk_precision: autocast of the trunk (see :class:`ConvNeXtGenerator`).
    """

    def __init__(
        self,
        n_fft: int = 1280,
        hop_length: int = 320,
        channels: int = 384,
        depth: int = 8,
        mlp_ratio: float = 3.0,
        kernel_size: int = 7,
        dimension: int = 128,
        causal: bool = False,
        layer_scale: float | None = None,
        trunk_precision: TrunkPrecision = "auto",
    ) -> None:
        super().__init__()
        _check_precision(trunk_precision)
        self.hop_length = hop_length
        self.dimension = dimension
        self.causal = causal
        self.trunk_precision = trunk_precision
        self.trunk = ConvNeXtTrunk(
            dimension, channels, depth, mlp_ratio, kernel_size, causal, layer_scale
        )
        self.head = ISTFTHead(channels, n_fft, hop_length, causal)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, F, D) embeddings, time-major -> (B, 1, F * hop) float32 waveform (also per
        chunk when streaming)."""
        if latent.shape[1] == 0:
            return latent.new_zeros(latent.shape[0], 1, 0, dtype=torch.float32)
        with trunk_autocast(self.trunk_precision, latent.device.type):
            h = self.trunk(latent)  # (B, F, C)
        return self.head(h)  # (B, 1, F * hop)
