"""ONNX export (lit_codec.onnx_export, ``lit-codec export --format onnx``) checked against
PyTorch with onnxruntime on the shipped speech samples.

Tolerance: the codes must be identical to :meth:`Codec.encode`'s; the waveform of
``decoder.onnx`` must be within ``ATOL = 1e-5`` (absolute, on audio of peak ~0.3-0.5) of
:meth:`Codec.decode`'s. Measured on these codecs: at most 1.5e-7 offline and 1.8e-7 through
the step graphs, so the tolerance leaves a margin of over 50x for other CPUs' kernels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lit_codec import Codec, onnx_runtime
from lit_codec.cli import main
from lit_codec.codec import load_audio
from lit_codec.onnx_export import DEFAULT_OPSET, FORMAT, OnnxExport, export_onnx

from .tiny_codecs import tiny_convnext_codec, tiny_seanet_codec

ATOL = 1e-5  # waveform, absolute (see the module docstring)
RATE = 8000
SPEECH = sorted((Path(__file__).resolve().parents[1] / "data_prep/samples/speech").rglob("*.flac"))

CODECS = {
    "seanet": lambda: tiny_seanet_codec("rvq"),
    "seanet_fsq": lambda: tiny_seanet_codec("fsq"),
    "convnext_causal": lambda: tiny_convnext_codec(causal=True),
    "convnext_centred": lambda: tiny_convnext_codec(causal=False),
}


@pytest.fixture(scope="module")
def speech() -> list[torch.Tensor]:
    """Two shipped speech clips at 8 kHz, mono float32 (T,)."""
    return [load_audio(path, RATE) for path in SPEECH[:2]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, tuple[Codec, OnnxExport]]:
    """Every codec of CODECS with all its codebooks exported (once per module)."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, build in CODECS.items():
        codec = build()
        out[name] = (codec, export_onnx(codec, root / name))
        assert not any("forward" in vars(m) for m in codec.modules())  # PyTorch's own again
    return out


def _batches(speech: list[torch.Tensor]) -> list[torch.Tensor]:
    """(1, 1, 20001): 2.5 s of one clip; (2, 1, 5555): 0.7 s of both (lengths not a
    multiple of any hop, to prove the dynamic batch and length axes)."""
    one = speech[0][:20001].view(1, 1, -1)
    two = torch.stack([speech[0][4000:9555], speech[1][:5555]])[:, None]
    return [one, two]


@pytest.mark.parametrize("name", list(CODECS))
def test_graphs_give_the_codes_and_audio_of_pytorch(name, exported, speech):
    codec, export = exported[name]
    encoder = ort.InferenceSession(str(export.encoder.path))
    decoder = ort.InferenceSession(str(export.decoder.path))
    for wav in _batches(speech):
        codes = codec.encode(wav)  # (B, 3, F)
        got = encoder.run(["codes"], {"audio": wav.numpy()})[0]
        assert got.dtype == np.int64 and got.shape == tuple(codes.shape)
        np.testing.assert_array_equal(got, codes.numpy())
        audio = codec.decode(codes)  # (B, 1, F * hop)
        decoded = decoder.run(["audio"], {"codes": codes.numpy()})[0]
        assert decoded.shape == tuple(audio.shape)
        np.testing.assert_allclose(decoded, audio.numpy(), atol=ATOL, rtol=0)
        assert np.abs(audio.numpy()).max() > 0.05  # a waveform worth comparing


@pytest.mark.parametrize("name", ["seanet", "convnext_causal"])
def test_graphs_are_valid_onnx_with_dynamic_batch_and_length(name, exported):
    codec, export = exported[name]
    meta = json.loads(export.metadata.read_text())
    assert meta["format"] == FORMAT == onnx_runtime.FORMAT  # the runner's copy of the name
    assert meta["sample_rate"] == RATE and meta["hop_length"] == codec.hop_length
    assert meta["n_q"] == 3 and meta["codebook_size"] == 32 and meta["opset"] == DEFAULT_OPSET
    assert meta["fingerprint"] == codec.fingerprint
    for graph in (export.encoder, export.decoder):
        model = onnx.load(str(graph.path))
        onnx.checker.check_model(model)
        assert {o.domain: o.version for o in model.opset_import}[""] == DEFAULT_OPSET
        for value in [*model.graph.input, *model.graph.output]:
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch" and dims[2].dim_param  # dynamic B and length
        assert meta["graphs"][graph.path.stem]["inputs"] == graph.inputs


def test_export_of_fewer_codebooks_gives_the_prefix(exported, speech, tmp_path):
    codec, _ = exported["seanet"]
    export = export_onnx(codec, tmp_path, n_q=2)
    wav = _batches(speech)[1]
    codes = ort.InferenceSession(str(export.encoder.path)).run(None, {"audio": wav.numpy()})[0]
    np.testing.assert_array_equal(codes, codec.encode(wav, n_q=2).numpy())
    audio = ort.InferenceSession(str(export.decoder.path)).run(None, {"codes": codes})[0]
    np.testing.assert_allclose(audio, codec.decode(torch.from_numpy(codes)).numpy(), atol=ATOL)
    assert json.loads(export.metadata.read_text())["kbps"] == pytest.approx(codec.bitrates()[1])


def _zero_state(session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    return {
        i.name: np.zeros(
            [d if isinstance(d, int) else batch for d in i.shape],
            dtype=np.int64 if "int64" in i.type else np.float32,
        )
        for i in session.get_inputs()[1:]
    }


def _run(session: ort.InferenceSession, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every output of one run, by name."""
    return dict(zip((o.name for o in session.get_outputs()), session.run(None, feed)))


def test_step_graphs_chain_like_codec_streaming(exported, speech):
    codec, export = exported["convnext_causal"]
    hop = codec.hop_length
    encoder = ort.InferenceSession(str(export.encoder_step.path))
    decoder = ort.InferenceSession(str(export.decoder_step.path))
    links_enc, links_dec = export.encoder_step.states, export.decoder_step.states
    assert set(links_enc) == {i.name for i in encoder.get_inputs()[1:]}
    wav = torch.stack([speech[0][: 6 * hop * 40], speech[1][: 6 * hop * 40]])[:, None]  # (2, 1, T)
    state_enc, state_dec = _zero_state(encoder, 2), _zero_state(decoder, 2)
    codes, audio, start = [], [], 0
    for frames in [1, 3, 2] * 40:  # whole frames per step, 1 to 3 at a time
        chunk = wav[..., start : start + frames * hop].numpy()
        start += frames * hop
        out = _run(encoder, {"audio": chunk, **state_enc})
        state_enc = {given: out[following] for given, following in links_enc.items()}
        codes.append(out["codes"])
        out = _run(decoder, {"codes": out["codes"], **state_dec})
        state_dec = {given: out[following] for given, following in links_dec.items()}
        audio.append(out["audio"])
    codes, audio = np.concatenate(codes, -1), np.concatenate(audio, -1)
    with codec.streaming(batch_size=2) as stream:
        streamed = [stream.encode(c) for c in wav.split(3 * hop, dim=-1)]
        reference = torch.cat([stream.decode(c) for c in streamed], dim=-1)
    np.testing.assert_array_equal(codes, torch.cat(streamed, dim=-1).numpy())
    np.testing.assert_array_equal(codes, codec.encode(wav).numpy())  # causal: as offline
    np.testing.assert_allclose(audio, reference.numpy(), atol=ATOL, rtol=0)


def test_step_graphs_only_for_a_causal_convnext(exported):
    for name, (_, export) in exported.items():
        graphs = json.loads(export.metadata.read_text())["graphs"]
        steps = name == "convnext_causal"
        assert (export.encoder_step is not None) == steps == ("decoder_step" in graphs)
        assert export.directory.joinpath("encoder_step.onnx").exists() == steps


# ---------------------------------------------------------------------------- the command
def _refused(args: list[str], capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A causal ConvNeXt codec exported as .safetensors (what `lit-codec export` reads)."""
    return tiny_convnext_codec(causal=True).export(
        tmp_path_factory.mktemp("ckpt") / "codec.safetensors"
    )


def test_cli_exports_onnx_at_a_bitrate(checkpoint, speech, tmp_path, capsys):
    out = tmp_path / "onnx"
    args = ["--format", "onnx", "--output", str(out), "--kbps", "5"]
    main(["export", "--ckpt", str(checkpoint), *args])
    codec = Codec.from_checkpoint(checkpoint)
    assert codec.resolve_n_q(kbps=5) == 2  # 5 bits x 500 frames/s = 2.5 kbps per codebook
    printed = capsys.readouterr().out
    assert f"exported codec {codec.fingerprint} to {out}" in printed and "2 codebooks" in printed
    meta = json.loads((out / "codec.json").read_text())
    assert meta["n_q"] == 2 and meta["fingerprint"] == codec.fingerprint
    assert sorted(p.name for p in out.iterdir()) == [
        "codec.json", "decoder.onnx", "decoder_step.onnx", "encoder.onnx", "encoder_step.onnx"
    ]  # fmt: skip
    wav = speech[1][:7777].view(1, 1, -1)
    encoder = ort.InferenceSession(str(out / "encoder.onnx"))
    np.testing.assert_array_equal(
        encoder.run(None, {"audio": wav.numpy()})[0], codec.encode(wav, n_q=2).numpy()
    )


def test_cli_keeps_safetensors_the_default(checkpoint, tmp_path):
    main(["export", "--ckpt", str(checkpoint), "--output", str(tmp_path / "c.safetensors")])
    assert (
        Codec.from_checkpoint(tmp_path / "c.safetensors").fingerprint
        == Codec.from_checkpoint(checkpoint).fingerprint
    )


def test_cli_refuses_bad_onnx_requests_with_status_2(checkpoint, tmp_path, capsys):
    a_file = tmp_path / "taken.onnx"
    a_file.write_text("x")
    out = str(tmp_path / "out")
    base = ["export", "--ckpt", str(checkpoint)]
    cases = {
        "is a file: --format onnx writes a folder": ["--format", "onnx", "--output", str(a_file)],
        "n_q must be in 1..3, not 4": ["--format", "onnx", "--output", out, "--n-q", "4"],
        "outside what this quantizer offers": ["--format", "onnx", "--output", out, "--kbps", "1"],
        "opset must be in 17..20, not 16": ["--format", "onnx", "--output", out, "--opset", "16"],
        "--n-q apply to --format onnx": ["--output", str(tmp_path / "c.safetensors"), "--n-q", "2"],
        "exports from the CPU": ["--format", "onnx", "--output", out, "--device", "cuda"],
    }
    for message, args in cases.items():
        err = _refused([*base, *args], capsys)
        assert err.startswith("lit-codec export: ") and message in err, err
    assert not (tmp_path / "out" / "codec.json").exists() and a_file.read_text() == "x"
    assert not (tmp_path / "c.safetensors").exists()
