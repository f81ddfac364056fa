"""lit-codec: neural audio codecs and codec language models with PyTorch Lightning."""

__version__ = "0.1.0.dev0"
