"""Tiny codecs built in memory for the inference tests (no training)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lit_codec import Codec
from lit_codec.nn import ResidualVectorQuantizer, SEANetGenerator
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
