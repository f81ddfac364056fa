"""A tiny codec GAN for fast tests."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from lit_codec.models import CodecGAN
from lit_codec.nn import (
    CombinedDiscriminator,
    MultiScaleMelLoss,
    MultiScaleWaveformDiscriminator,
    ResidualVectorQuantizer,
    SEANetGenerator,
    STFTDiscriminator,
)

RATE = 8000
STRIDES = (2, 4)


def tiny_gan(**kwargs) -> CodecGAN:
    hop = 8
    generator = SEANetGenerator(
        channels_enc=4,
        channels_dec=4,
        dimension=16,
        strides=STRIDES,
        dilations=(1, 3),
        film=kwargs.pop("film", "none"),
    )
    quantizer = ResidualVectorQuantizer(
        dim=16, n_q=3, codebook_size=32, frame_rate=RATE / hop, threshold_ema_dead_code=0.0
    )
    discriminator = CombinedDiscriminator(
        [
            MultiScaleWaveformDiscriminator(scales=2, channels=2, max_channels=16),
            STFTDiscriminator(n_fft=256, hop_length=64, win_length=256, channels=2, max_channels=8),
        ]
    )
    mel = MultiScaleMelLoss(RATE, window_lengths=(64, 256), n_mels=(10, 20))
    kwargs.setdefault("discriminator_start_step", 0)
    return CodecGAN(generator, quantizer, discriminator, sample_rate=RATE, mel_loss=mel, **kwargs)


class NoiseClips(Dataset):
    """Random clips (B, 1, T) with a little structure."""

    def __init__(self, n: int = 16, length: int = 800, nan_at: int | None = None):
        g = torch.Generator().manual_seed(1)
        t = torch.arange(length) / RATE
        self.clips = [
            (
                0.3 * torch.sin(2 * torch.pi * (200 + 50 * i) * t)
                + 0.05 * torch.randn(length, generator=g)
            )[None]
            for i in range(n)
        ]
        if nan_at is not None:
            self.clips[nan_at] = self.clips[nan_at].clone().fill_(float("nan"))

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, i):
        return self.clips[i]


def loader(n: int = 16, batch_size: int = 4, **kw) -> DataLoader:
    return DataLoader(NoiseClips(n, **kw), batch_size=batch_size)
