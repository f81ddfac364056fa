"""Codecs that ship with the package, loadable by name with no training and no download.

``Codec.pretrained("speech16k")``, or ``--ckpt speech16k`` (or no ``--ckpt``) on
``lit-codec encode/decode/evaluate/info/export``. Each model is a compact export
(:mod:`lit_codec.compact`) beside a model card ``<name>.json``: how it was trained (recipe,
command, data, minutes, steps) and what it measured (``docs/<name>_report.md``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT", "PRETRAINED", "card", "is_pretrained_name", "pretrained_path"]

HERE = Path(__file__).resolve().parent

#: name -> what it is, in one line
PRETRAINED: dict[str, str] = {
    "speech16k": "16 kHz speech codec, 12 x 1024 codes at 50 frames/s: 1.5 / 3 / 6 kbps",
}
DEFAULT = "speech16k"


def is_pretrained_name(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a shipped model (and no file of that name exists here)."""
    return str(path) in PRETRAINED and not Path(path).exists()


def pretrained_path(name: str) -> Path:
    """The shipped file of ``name``; a clear error for an unknown name or a missing file."""
    if name not in PRETRAINED:
        known = ", ".join(sorted(PRETRAINED))
        raise ValueError(f"no shipped codec named {name!r}; shipped: {known}")
    path = HERE / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped codec {name!r} should be at {path} but is not: the installation is "
            f"incomplete (reinstall lit-codec; in a checkout, `git lfs`-free: the file is tracked "
            f"in git as lit_codec/pretrained/{name}.safetensors)"
        )
    return path


def card(name: str) -> dict[str, Any]:
    """The model card of ``name`` (training and measured figures), ``{}`` if none ships."""
    pretrained_path(name)  # the same errors for unknown names
    path = HERE / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
