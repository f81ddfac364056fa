"""Checkpoint files that a crash cannot corrupt.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary
file lives in the system temp folder; on another file system the final "move" is a copy,
and a SIGKILL in the middle leaves half a ``last.ckpt``. :class:`AtomicCheckpointIO`
writes ``<name>.tmp-<pid>`` next to the target, fsyncs it, renames it over the target
(``os.replace`` is atomic within a file system) and fsyncs the folder: at any moment the
path holds either the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "atomic_torch_save", "atomic_write"]


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Write a file through ``write(f)`` into a temporary file beside it, then rename it over
    ``path``: readers see the old file or the whole new one, never a part. The file gets the
    mode of any new file (0o666 less the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename it over ``path``."""
    atomic_write(path, lambda f: torch.save(obj, f))


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic local writes (remote paths: Lightning's own writer)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        protocol = get_filesystem(path).protocol
        if "file" not in (protocol if isinstance(protocol, (tuple, list)) else (protocol,)):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)
