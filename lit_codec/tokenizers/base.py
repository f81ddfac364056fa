"""What every condition tokenizer offers, and the small helpers they share.

A condition tokenizer turns one modality (text, phones, MIDI, audio) into *local* ids
``0 .. vocab_size - 1``; :class:`lit_codec.lm.vocab.Vocabulary` maps them into the global
id space of the codec LM. Each one exposes:

- ``vocab_size``: the number of local ids;
- ``symbols()``: one readable string per local id (``symbols()[i]`` names id ``i``);
- ``metadata()``: a JSON-able dict saved in the vocabulary schema (tokenizer kind, phone
  inventory, k-means hash, ...), enough to tell whether two token sets are compatible.

A condition *encoder* (:class:`ConditionEncoder`, e.g. the T5 text encoder) returns
continuous frames ``(frames, dim)`` instead of ids; it has ``dim`` and ``metadata()``.

Nothing here downloads anything: optional packages are imported on first use through
:func:`require`, whose error names the pip package to install.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

__all__ = ["ConditionEncoder", "ConditionTokenizer", "require", "sha256_bytes", "sha256_file"]

HASH_CHARS = 16  # hex digits of sha256 kept in metadata: 64 bits, like Vocabulary.hash


@runtime_checkable
class ConditionTokenizer(Protocol):
    """A modality -> local ids ``[0, vocab_size)``."""

    @property
    def vocab_size(self) -> int: ...

    def symbols(self) -> list[str]: ...

    def metadata(self) -> dict[str, Any]: ...


@runtime_checkable
class ConditionEncoder(Protocol):
    """A modality -> continuous frames ``(frames, dim)`` float32."""

    @property
    def dim(self) -> int: ...

    def metadata(self) -> dict[str, Any]: ...


def require(module: str, pip: str, what: str) -> ModuleType:
    """Import an optional dependency or say which pip package provides it.

    Args:
        module: the module to import, e.g. ``"sentencepiece"``.
        pip: what to install, e.g. ``"sentencepiece"`` or ``"phonemizer espeakng-loader"``.
        what: who needs it, for the message, e.g. ``"BPETokenizer"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{what} needs the Python package {module!r}: pip install {pip}") from err


def sha256_bytes(data: bytes) -> str:
    """The first :data:`HASH_CHARS` hex digits of the sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()[:HASH_CHARS]


def sha256_file(path: str | os.PathLike) -> str:
    """The first :data:`HASH_CHARS` hex digits of the sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:HASH_CHARS]
