"""lit_codec.sniff: a file's kind from its content, whatever its name says."""

import pickle
import tarfile
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from lit_codec.sniff import KINDS, describe_file, file_kind


def _write(kind: str, path):
    """Write a small file of ``kind`` at ``path`` (whose name never tells the kind)."""
    tone = 0.1 * np.sin(np.arange(1600) / 5.0)  # (T,)
    if kind in ("wav", "flac", "ogg"):
        sf.write(path, tone, 16000, format=kind.upper())
    elif kind == "torch":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"a": Fraction(1, 2)}, protocol=4))
    elif kind == "safetensors":
        save_file({"w": torch.zeros(2)}, str(path))
    elif kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, codes=np.zeros((2, 3), np.int16))
    elif kind == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif kind == "damaged_zip":
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:2000])  # an interrupted copy
    elif kind == "tar":
        member = path.with_name("member.txt")
        member.write_text("x")
        with tarfile.open(path, "w") as tar:
            tar.add(member, arcname="a.txt")
    elif kind == "text":
        path.write_text("model:\n  init_args: {}\n" * 40)  # longer than what is read
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "unknown":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "folder":
        path.mkdir()


@pytest.mark.parametrize(
    "kind",
    ["wav", "flac", "ogg", "torch", "pickle", "safetensors", "npz", "npy", "damaged_zip", "tar",
     "text", "empty", "unknown", "folder"],
)  # fmt: skip
def test_kind_comes_from_the_content_not_the_name(kind, tmp_path):
    path = tmp_path / "model.ckpt"  # the same misleading name for every kind
    _write(kind, path)
    assert file_kind(path) == kind
    assert describe_file(path) == KINDS[kind]


def test_a_missing_file():
    assert file_kind("/nonexistent/codec.safetensors") == "missing"


def test_a_codec_export_under_another_name(tmp_path):
    from .tiny_codecs import export_denoising_codec

    export = export_denoising_codec(tmp_path / "codec.bin", 8000, (2, 4))
    assert file_kind(export) == "safetensors"
