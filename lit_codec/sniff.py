"""What a file is, from its first bytes: for error messages that say what was given.

    file_kind("speech.wav")          # "wav"
    describe_file("speech.wav")      # "a WAV audio file"
    describe_file("last.ckpt")       # "a PyTorch checkpoint"

The commands read a file only once it is known to be of the kind they expect, so that a
wrong argument is answered with what the file looks like and what was expected, never with
a loader's internals (numpy's advice to allow pickles, ``pop from empty list`` from
``torch.load``). Nothing here unpickles or decompresses: it reads at most the first 512
bytes, and the member names of a zip archive.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path

__all__ = ["KINDS", "describe_file", "file_kind"]

KINDS: dict[str, str] = {
    "missing": "nothing (no such file)",
    "folder": "a folder",
    "empty": "an empty file",
    "wav": "a WAV audio file",
    "flac": "a FLAC audio file",
    "ogg": "an Ogg audio file",
    "mp3": "an MP3 audio file",
    "aiff": "an AIFF audio file",
    "torch": "a PyTorch checkpoint",
    "pickle": "a Python pickle (an old-style torch.save file, or another pickle)",
    "safetensors": "a safetensors file",
    "npz": "a NumPy .npz archive",
    "npy": "a NumPy .npy array",
    "zip": "a zip archive",
    "damaged_zip": "a damaged or truncated zip archive (an interrupted copy?)",
    "tar": "a tar archive (a WebDataset shard?)",
    "gzip": "a gzip-compressed file",
    "hdf5": "an HDF5 file",
    "text": "a text file",
    "unknown": "binary data of an unknown kind",
}


def describe_file(path: str | os.PathLike) -> str:
    """What ``path`` looks like, in words: ``"a WAV audio file"`` (see :data:`KINDS`)."""
    return KINDS[file_kind(path)]


def file_kind(path: str | os.PathLike) -> str:
    """The kind of ``path``, a key of :data:`KINDS`, from its first bytes (not its name)."""
    path = Path(path)
    if path.is_dir():
        return "folder"
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        return "missing"
    if not head:
        return "empty"
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip_kind(path)
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "pickle"
    if _is_safetensors(head, path):
        return "safetensors"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:8] == b"\x89HDF\r\n\x1a\n":
        return "hdf5"
    if b"\x00" not in head:
        try:
            head.decode("utf-8")
            return "text"
        except UnicodeDecodeError as e:  # a multi-byte character cut at the 512th byte
            if e.start >= len(head) - 3:
                return "text"
    return "unknown"


def _zip_kind(path: Path) -> str:
    """``torch`` (torch.save's zip: ``<name>/data.pkl``), ``npz`` (only ``.npy`` members),
    ``zip``, or ``damaged_zip`` when its table of contents cannot be read."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return "damaged_zip"
    if any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        return "torch"
    if names and all(name.endswith(".npy") for name in names):
        return "npz"
    return "zip"


def _is_safetensors(head: bytes, path: Path) -> bool:
    """An 8-byte little-endian header length, then a JSON header that starts with ``{``."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= path.stat().st_size - 8
