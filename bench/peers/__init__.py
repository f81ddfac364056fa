"""Import the peer codec LMs of ``bench/lm_*_peers.py`` without their heavy dependencies.

The peers are real packages installed with ``pip install --no-deps`` (``moshi==0.2.13``,
``audiocraft==1.3.0``, ``MEGABYTE-pytorch==0.3.6``, plus einops and beartype). What they
import at package level but never run in a language model's forward, backward or generation
(checkpoint downloads, text tokenizers, audio file I/O, distributed helpers) is replaced by
*stand-ins*: empty modules registered in ``sys.modules`` whose every attribute is an inert
placeholder. A stand-in is registered only for a module that cannot be found, so an
installed package is always used as it is; nothing here is imported by ``lit_codec``.

- :func:`moshi_lm`: ``moshi.models.lm``. ``moshi/__init__`` imports ``huggingface_hub``,
  ``safetensors`` and ``sentencepiece`` (through its model loaders): stand-ins when absent.
- :func:`audiocraft_lm`: ``audiocraft.models.lm``. ``audiocraft/__init__`` imports every
  model and data set; the packages ``audiocraft``, ``audiocraft.models`` and
  ``audiocraft.data`` are registered as bare package shells (their files load on demand,
  their ``__init__`` modules do not run), and ``models/lm.py``'s own imports need stand-ins
  for ``flashy``, ``omegaconf``, ``av``, ``julius``, ``librosa``, ``torchaudio``, ``spacy``,
  ``num2words`` and ``transformers`` (where absent) and for ``xformers``: its attention calls
  ``xformers.ops.unbind`` (:func:`torch.unbind`) and, with ``memory_efficient=True``, imports
  ``LowerTriangularMask`` only to mark a causal mask, while its ``'torch'`` backend (the
  default) runs :func:`torch.nn.functional.scaled_dot_product_attention`.
- :func:`megabyte`: ``MEGABYTE_pytorch.MEGABYTE`` (needs only einops, beartype, packaging
  and tqdm, which are real).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path

import torch

__all__ = ["STAND_INS", "audiocraft_lm", "megabyte", "moshi_lm"]

STAND_INS: list[str] = []
"""Names of the modules this process replaced by stand-ins (for the scripts to print)."""


class _Placeholder:
    """Any attribute of a stand-in: a class that can be subclassed, called, indexed,
    used as a decorator or annotation, and does nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else self

    def __getattr__(self, name: str):
        return _Placeholder()

    def __class_getitem__(cls, item):
        return cls


class _StandIn(types.ModuleType):
    """A module whose missing attributes are placeholder classes (submodules resolve too)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        value = type(name, (_Placeholder,), {})
        setattr(self, name, value)
        return value


def _missing(name: str) -> bool:
    if name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # a parent is missing
        return True


def stand_in(name: str, **attributes) -> None:
    """Register an empty module ``name`` (and its parents) unless the real one exists."""
    if not _missing(name):
        return
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            module = _StandIn(sub)
            module.__spec__ = importlib.machinery.ModuleSpec(sub, None, is_package=True)
            module.__path__ = []  # a package: its submodules may be stand-ins too
            sys.modules[sub] = module
            if i > 1:
                setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)
            STAND_INS.append(sub)
    for key, value in attributes.items():
        setattr(sys.modules[name], key, value)


def _shell(package: str) -> None:
    """Register ``package`` (installed) as a bare package whose ``__init__`` does not run."""
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{package} is not installed (pip install --no-deps ...)")
    module = types.ModuleType(package)
    module.__path__ = list(spec.submodule_search_locations)
    module.__file__ = str(Path(module.__path__[0]) / "__init__.py")
    module.__package__ = package
    sys.modules[package] = module
    parent, _, child = package.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)


def moshi_lm() -> types.ModuleType:
    """``moshi.models.lm`` (kyutai's ``LMModel`` and ``LMGen``)."""
    for name in ("huggingface_hub", "safetensors", "safetensors.torch", "sentencepiece"):
        stand_in(name)
    return importlib.import_module("moshi.models.lm")


def _unavailable(*args, **kwargs):
    raise RuntimeError("xformers stand-in: use the 'torch' attention backend")


def audiocraft_lm() -> types.ModuleType:
    """``audiocraft.models.lm`` (MusicGen's ``LMModel``), without audiocraft's package imports."""
    stand_in(
        "xformers.ops",
        unbind=torch.unbind,
        memory_efficient_attention=_unavailable,
        LowerTriangularMask=type("LowerTriangularMask", (), {}),
    )
    for name in ("flashy", "flashy.distrib", "flashy.utils", "omegaconf", "av", "julius",
                 "librosa", "librosa.filters", "torchaudio", "torchaudio.transforms",
                 "torchaudio.functional", "spacy", "num2words", "transformers"):  # fmt: skip
        stand_in(name)
    for package in ("audiocraft", "audiocraft.models", "audiocraft.data"):
        _shell(package)
    return importlib.import_module("audiocraft.models.lm")


def megabyte() -> type:
    """``MEGABYTE_pytorch.MEGABYTE`` (lucidrains)."""
    return importlib.import_module("MEGABYTE_pytorch").MEGABYTE
