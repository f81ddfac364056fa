"""Tiny codecs built in memory for the inference tests (no training)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lit_codec import Codec
from lit_codec.nn import ConvNeXtGenerator, ResidualFSQ, ResidualVectorQuantizer, SEANetGenerator
from lit_codec.nn.configurable import module_config


def export_denoising_codec(
    path: Path, sample_rate: int, strides: tuple[int, ...], film: str = "encoder"
) -> Path:
    """Export a tiny codec (2 x 16 codes) whose FiLM "denoise" entry is no longer the identity,
    so the flag changes what it computes; returns the ``.safetensors`` path."""
    torch.manual_seed(0)
    generator = SEANetGenerator(
        channels_enc=4, channels_dec=4, dimension=16, strides=strides, dilations=(1,), film=film
    )
    with torch.no_grad():
        generator.film.embedding.weight[1].uniform_(0.5, 1.5)
    frame_rate = sample_rate / math.prod(strides)
    rvq = ResidualVectorQuantizer(
        dim=16, n_q=2, codebook_size=16, frame_rate=frame_rate, kmeans_init=False
    )
    config = {
        "generator": module_config(generator),
        "quantizer": module_config(rvq),
        "sample_rate": sample_rate,
    }
    return Codec(generator, rvq, sample_rate, config).export(path)


def tiny_seanet_codec(quantizer: str = "rvq", seed: int = 0) -> Codec:
    """An 8 kHz SEANet codec (hop 8, 16-d latent) with 3 x 32 RVQ codes (``"rvq"``) or three
    FSQ stages of 5 x 5 x 5 levels (``"fsq"``); random weights, configuration recorded."""
    torch.manual_seed(seed)
    generator = SEANetGenerator(
        channels_enc=4, channels_dec=4, dimension=16, strides=(2, 4), dilations=(1, 3)
    )
    if quantizer == "fsq":
        q = ResidualFSQ(dim=16, levels=(5, 5, 5), n_q=3, frame_rate=1000.0)
    else:
        q = ResidualVectorQuantizer(
            dim=16, n_q=3, codebook_size=32, frame_rate=1000.0, kmeans_init=False
        )
    return _with_config(generator, q, 8000)


def tiny_convnext_codec(causal: bool = True, seed: int = 0) -> Codec:
    """An 8 kHz ConvNeXt codec (64-sample windows, hop 16, 2 + 2 blocks of width 16, 8-d
    latent) with 3 x 32 RVQ codes; random weights, configuration recorded."""
    torch.manual_seed(seed)
    generator = ConvNeXtGenerator(
        n_fft=64, hop_length=16, channels_enc=16, channels_dec=16, depth_enc=2, depth_dec=2,
        dimension=8, causal=causal,
    )  # fmt: skip
    q = ResidualVectorQuantizer(dim=8, n_q=3, codebook_size=32, frame_rate=500.0, kmeans_init=False)
    return _with_config(generator, q, 8000)


def _with_config(generator: torch.nn.Module, quantizer: torch.nn.Module, rate: int) -> Codec:
    config = {
        "generator": module_config(generator),
        "quantizer": module_config(quantizer),
        "sample_rate": rate,
    }
    return Codec(generator, quantizer, rate, config)
