"""Plain PyTorch building blocks. Nothing in this package imports Lightning."""

from lit_codec.nn.configurable import Configurable, build_module, module_config

__all__ = ["Configurable", "build_module", "module_config"]
