"""LightningModules: orchestration of networks they receive ready-made."""

from lit_codec.models.codec_gan import CodecGAN, CodecOutput, NonFiniteLossError

__all__ = ["CodecGAN", "CodecOutput", "NonFiniteLossError"]
