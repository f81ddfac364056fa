"""OnnxCodec (lit_codec.onnx_runtime): exported codecs run by onnxruntime, offline and
streaming, without torch; and its refusals. Tolerance as in ``test_onnx_export.py``: codes
identical to PyTorch's, audio within 1e-5."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lit_codec.codec import load_audio
from lit_codec.onnx_export import export_onnx
from lit_codec.onnx_runtime import OnnxCodec

from .tiny_codecs import tiny_convnext_codec, tiny_seanet_codec

ATOL = 1e-5
REPO = Path(__file__).resolve().parents[1]
SPEECH = sorted((REPO / "data_prep/samples/speech").rglob("*.flac"))


@pytest.fixture(scope="module")
def wav() -> np.ndarray:
    """1.2 s of shipped speech at 8 kHz, float32 (T,)."""
    return load_audio(SPEECH[2], 8000)[:9601].numpy()


@pytest.fixture(scope="module")
def convnext(tmp_path_factory):
    """A causal ConvNeXt codec and its export (with step graphs)."""
    codec = tiny_convnext_codec(causal=True, seed=3)
    return codec, export_onnx(codec, tmp_path_factory.mktemp("convnext")).directory


@pytest.fixture(scope="module")
def seanet(tmp_path_factory):
    codec = tiny_seanet_codec(seed=4)
    return codec, export_onnx(codec, tmp_path_factory.mktemp("seanet"), n_q=2).directory


def test_encode_and_decode_like_the_codec(seanet, wav):
    codec, directory = seanet
    onnx_codec = OnnxCodec(directory)
    assert (onnx_codec.sample_rate, onnx_codec.hop_length, onnx_codec.n_q) == (8000, 8, 2)
    assert onnx_codec.fingerprint == codec.fingerprint and not onnx_codec.streams
    assert onnx_codec.kbps == pytest.approx(codec.bitrates()[1])
    codes = onnx_codec.encode(wav)  # (T,) -> (1, 2, F)
    np.testing.assert_array_equal(codes, codec.encode(wav, n_q=2).numpy())
    batch = np.stack([wav, wav[::-1]])  # (2, T)
    np.testing.assert_array_equal(onnx_codec.encode(batch), codec.encode(batch, n_q=2).numpy())
    audio = onnx_codec.decode(codes[0])  # (n_q, F) -> (1, 1, F * hop)
    expected = codec.decode(torch.from_numpy(codes)).numpy()
    assert audio.shape == expected.shape == (1, 1, 9608)
    np.testing.assert_allclose(audio, expected, atol=ATOL, rtol=0)
    assert onnx_codec.encode(np.zeros((3, 0), np.float32)).shape == (3, 2, 0)
    assert onnx_codec.decode(np.zeros((3, 2, 0), np.int64)).shape == (3, 1, 0)


@pytest.mark.parametrize("chunk", [37, 160])  # not whole frames (hop 16), and 10 frames
def test_streams_like_codec_streaming(convnext, wav, chunk):
    codec, directory = convnext
    batch = np.stack([wav, wav[::-1] * 0.5])[:, None]  # (2, 1, T)
    codes, audio = [], []
    with OnnxCodec(directory).streaming(batch_size=2) as stream:
        for start in range(0, batch.shape[-1], chunk):
            codes.append(stream.encode(batch[..., start : start + chunk]))
            audio.append(stream.decode(codes[-1]))
        codes.append(stream.flush())
        audio.append(stream.decode(codes[-1]))
    reference_codes, reference_audio = [], []
    with codec.streaming(batch_size=2) as stream:
        for piece in torch.from_numpy(batch).split(chunk, dim=-1):
            reference_codes.append(stream.encode(piece))
            reference_audio.append(stream.decode(reference_codes[-1]))
        reference_codes.append(stream.flush())
        reference_audio.append(stream.decode(reference_codes[-1]))
    codes = np.concatenate(codes, -1)
    np.testing.assert_array_equal(codes, torch.cat(reference_codes, -1).numpy())
    np.testing.assert_array_equal(codes, codec.encode(batch).numpy())  # causal: as offline
    np.testing.assert_allclose(
        np.concatenate(audio, -1), torch.cat(reference_audio, -1).numpy(), atol=ATOL, rtol=0
    )


def test_runs_without_torch(seanet, wav, tmp_path):
    codec, directory = seanet
    np.save(tmp_path / "wav.npy", wav)
    script = (
        "import sys, numpy as np\n"
        "from lit_codec.onnx_runtime import OnnxCodec\n"
        f"c = OnnxCodec({str(directory)!r})\n"
        f"codes = c.encode(np.load({str(tmp_path / 'wav.npy')!r}))\n"
        f"np.save({str(tmp_path / 'codes.npy')!r}, codes)\n"
        "assert c.decode(codes).shape == (1, 1, codes.shape[-1] * c.hop_length)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO)
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), codec.encode(wav, n_q=2).numpy())


def test_refuses_what_is_not_an_export(seanet, convnext, tmp_path):
    _, directory = seanet
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        OnnxCodec(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no codec.json"):
        OnnxCodec(tmp_path)
    (tmp_path / "codec.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not lit-codec's ONNX metadata"):
        OnnxCodec(tmp_path)
    onnx_codec = OnnxCodec(directory)
    bad_codes = {
        "(1, 3, 4)": np.zeros((1, 3, 4), np.int64),  # three codebooks for an export of two
        "(1, 2, 4)": np.full((1, 2, 4), 32, np.int64),  # outside the codebook
    }
    for shape, codes in bad_codes.items():
        with pytest.raises(ValueError, match=re.escape(f"codes of shape {shape} do not fit")):
            onnx_codec.decode(codes)
    with pytest.raises(ValueError, match="must be integers"):
        onnx_codec.decode(np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ValueError, match=r"expected audio \(T,\), \(B, T\) or \(B, 1, T\)"):
        onnx_codec.encode(np.zeros((2, 2, 5), np.float32))
    with pytest.raises(ValueError, match="no streaming step graphs"), onnx_codec.streaming():
        pass
    with OnnxCodec(convnext[1]).streaming(batch_size=2) as stream:
        with pytest.raises(ValueError, match="streaming 2 streams, got a chunk of batch 1"):
            stream.encode(np.zeros(40, np.float32))
