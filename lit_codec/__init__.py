"""lit-codec: neural audio codecs and codec language models with PyTorch Lightning."""

from __future__ import annotations

__version__ = "0.1.0.dev0"

__all__ = ["Codec", "__version__"]


def __getattr__(name: str):
    if name == "Codec":  # lazy: importing lit_codec stays cheap
        from lit_codec.codec import Codec

        return Codec
    raise AttributeError(f"module 'lit_codec' has no attribute {name!r}")
