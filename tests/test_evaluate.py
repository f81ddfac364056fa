"""`lit-codec evaluate` (lit_codec.evaluate.evaluate_main) on a 2-step debug codec, and the
Opus baseline (lit_codec.baselines)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from lit_codec.baselines import OpusUnavailableError, ogg_packet_sizes, opus_backend, opus_roundtrip
from lit_codec.evaluate import evaluate_main
from lit_codec.metrics.functional import align

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO / "data_prep" / "samples" / "speech" / "en"
HAS_OPUS_TOOLS = bool(shutil.which("opusenc") and shutil.which("opusdec"))


@pytest.fixture(scope="module")
def checkpoint(sample_shards, tmp_path_factory):
    """A 16 kHz debug codec trained for 2 steps (4 codebooks of 256: 0.4 kbps each)."""
    from lit_codec.cli import main

    root = tmp_path_factory.mktemp("debug_run")
    main(
        [
            "fit", "--config", str(REPO / "recipes" / "codec" / "debug.yaml"),
            "--data.root", str(sample_shards), "--trainer.max_steps", "2",
            "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--data.num_workers", "0",
        ]
    )  # fmt: skip
    return root / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two 2-second speech clips, one at 16 kHz (FLAC) and one at 24 kHz (WAV)."""
    folder = tmp_path_factory.mktemp("clips")
    files = sorted(SPEECH.glob("*.flac"))[:2]
    audio, rate = sf.read(files[0], dtype="float32")
    sf.write(folder / "a.flac", audio[: 2 * rate], rate)
    audio, rate = sf.read(files[1], dtype="float32")
    import soxr

    sf.write(folder / "b.wav", soxr.resample(audio[: 2 * rate], rate, 24000), 24000)
    return folder


def _evaluate(checkpoint, clips, output, *extra):
    args = [
        "--ckpt",
        str(checkpoint),
        "--input",
        str(clips),
        "--output",
        str(output),
        "--workers",
        "0",
    ]
    return evaluate_main(args + ["--kbps", "0.4,1.6", "--metrics", "pesq,stoi,sisdr", *extra])


def test_evaluate_writes_report_and_resumes(checkpoint, clips, tmp_path, capsys):
    out = tmp_path / "report"
    assert _evaluate(checkpoint, clips, out) == 0
    report = json.loads((out / "report.json").read_text())
    assert [s["label"] for s in report["systems"]] == ["codec@0.4kbps", "codec@1.6kbps"]
    assert report["clips"]["count"] == 2 and report["clips"]["seconds"] == pytest.approx(4.0)
    for system in report["systems"]:
        assert system["clips"] == 2 and system["actual_kbps"] == system["kbps"]
        for metric in ("pesq", "stoi", "sisdr"):
            summary = system["metrics"][metric]
            assert summary["scored"] + summary["skipped"] == 2
            assert summary["mean"] is None or np.isfinite(summary["mean"])
        book = system["codebook"]
        assert book["clips"] == 2 and book["kbps"] == pytest.approx(system["kbps"])
        assert 0 <= book["entropy_kbps"] <= book["kbps"] and len(book["usage"]) == system["n_q"]
    assert {(r["clip"], r["label"]) for r in report["per_clip"]} == {
        (c, s) for c in ("a.flac", "b.wav") for s in ("codec@0.4kbps", "codec@1.6kbps")
    }
    markdown = (out / "report.md").read_text()
    assert "| codec@0.4kbps | 0.40 | 2 |" in markdown and "pesq ↑" in markdown
    with Image.open(out / "rate_distortion.png") as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 200
    lines = (out / "clips.jsonl").read_text().splitlines()
    assert len(lines) == 4
    capsys.readouterr()
    # a second run finds every (clip, bitrate) done and does no codec work
    (out / "report.json").unlink()
    assert _evaluate(checkpoint, clips, out) == 0
    assert (out / "clips.jsonl").read_text().splitlines() == lines
    assert "0 evaluated now, 4 taken from" in capsys.readouterr().out
    assert json.loads((out / "report.json").read_text())["per_clip"] == report["per_clip"]


def test_evaluate_resumes_an_interrupted_run(checkpoint, clips, tmp_path, capsys):
    out = tmp_path / "report"
    assert _evaluate(checkpoint, clips, out) == 0
    lines = (out / "clips.jsonl").read_text().splitlines()
    # as if killed after the first row, in the middle of writing the second
    (out / "clips.jsonl").write_text(lines[0] + "\n" + lines[1][:25])
    capsys.readouterr()
    assert _evaluate(checkpoint, clips, out) == 0
    assert "evaluated now, 1 taken from" in capsys.readouterr().out
    resumed = (out / "clips.jsonl").read_text().splitlines()
    assert len(resumed) == 4 and resumed[0] == lines[0]
    assert all(json.loads(line) for line in resumed)


def test_evaluate_refuses_mixing_codecs_and_bad_arguments(checkpoint, clips, tmp_path, capsys):
    out = tmp_path / "report"
    assert _evaluate(checkpoint, clips, out, "--max-clips", "1") == 0
    rows = [json.loads(line) for line in (out / "clips.jsonl").read_text().splitlines()]
    rows[0]["fingerprint"] = "0123456789abcdef"
    (out / "clips.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    capsys.readouterr()
    assert _evaluate(checkpoint, clips, out) == 2
    assert "holds results of another codec" in capsys.readouterr().err
    args = [
        "--ckpt",
        str(checkpoint),
        "--input",
        str(clips),
        "--output",
        str(tmp_path / "x"),
        "--workers",
        "0",
    ]
    assert evaluate_main([*args, "--kbps", "0.1"]) == 2
    assert "0.1 kbps" in capsys.readouterr().err
    assert evaluate_main([*args, "--baseline", "mp3"]) == 2
    assert "unknown baseline 'mp3'" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_shards_in_worker_processes(checkpoint, sample_shards, tmp_path):
    out = tmp_path / "report"
    args = [
        "--ckpt",
        str(checkpoint),
        "--input",
        str(sample_shards),
        "--split",
        "valid",
        "--output",
        str(out),
    ]
    assert (
        evaluate_main(
            [*args, "--kbps", "0.8", "--metrics", "stoi,mel", "--max-clips", "3", "--workers", "2"]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["clips"]["count"] == 3 and len(report["per_clip"]) == 3
    assert report["systems"][0]["metrics"]["mel"]["scored"] == 3


@pytest.mark.skipif(not HAS_OPUS_TOOLS, reason="opus-tools (opusenc, opusdec) not installed")
def test_evaluate_with_opus_baseline(checkpoint, clips, tmp_path):
    out = tmp_path / "report"
    assert (
        _evaluate(
            checkpoint, clips, out, "--baseline", "opus", "--opus-kbps", "6,12", "--max-clips", "1"
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    opus = {s["label"]: s for s in report["systems"] if s["family"] == "opus"}
    assert set(opus) == {"opus@6kbps", "opus@12kbps"}
    for system in opus.values():
        assert system["actual_kbps"] == pytest.approx(system["kbps"], rel=0.25)
    assert (
        opus["opus@12kbps"]["metrics"]["pesq"]["mean"]
        > opus["opus@6kbps"]["metrics"]["pesq"]["mean"]
        > 1.5
    )
    assert report["baselines"] == {"opus": "opus-tools"}
    with Image.open(out / "rate_distortion.png") as image:
        assert image.format == "PNG"


@pytest.mark.skipif(not HAS_OPUS_TOOLS, reason="opus-tools (opusenc, opusdec) not installed")
def test_opus_roundtrip_keeps_length_and_alignment():
    audio, rate = sf.read(sorted(SPEECH.glob("*.flac"))[0], dtype="float32")
    audio = audio[: 2 * rate]
    out = opus_roundtrip(audio, rate, 8.0)
    assert out.audio.shape == audio.shape and out.audio.dtype == np.float32
    assert 6.0 < out.kbps < 10.0 and out.target_kbps == 8.0
    _, _, delay = align(audio, out.audio, max_delay=rate // 10)
    assert abs(delay) <= 4  # pre-skip and soxr's delay are compensated


def test_ogg_packet_sizes():
    def page(lacing: list[int]) -> bytes:
        return b"OggS" + bytes(22) + bytes([len(lacing)]) + bytes(lacing) + bytes(sum(lacing))

    # a 300-byte packet spans two lacing values (255 + 45); the second page holds 19 and 0 bytes
    assert ogg_packet_sizes(page([255, 45, 10]) + page([19, 0])) == [300, 10, 19, 0]
    with pytest.raises(ValueError):
        ogg_packet_sizes(b"RIFF" + bytes(40))


def test_missing_opus_tools_give_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither opus-tools nor ffmpeg on the PATH
    with pytest.raises(OpusUnavailableError, match="opus-tools"):
        opus_backend()


def test_noisy_mix_is_deterministic_and_at_the_asked_snr():
    from lit_codec.evaluate import noisy_mix

    clean = 0.1 * np.sin(np.linspace(0, 400, 16000, dtype=np.float32))
    noisy, reference = noisy_mix(clean, "clip-a", 5.0)
    again, _ = noisy_mix(clean, "clip-a", 5.0)
    other, _ = noisy_mix(clean, "clip-b", 5.0)
    assert np.array_equal(noisy, again) and not np.array_equal(noisy, other)
    assert np.array_equal(reference, clean)  # no peak over 1: the clean clip as it is
    snr = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
    assert snr == pytest.approx(5.0, abs=0.01)
    loud, loud_reference = noisy_mix(8 * clean, "clip-a", 0.0, "white")  # peak above 1: scaled
    assert np.abs(loud).max() == pytest.approx(1.0) and np.abs(loud_reference).max() < 1.0


def test_evaluate_a_denoising_codec_on_noisy_inputs(checkpoint, clips, tmp_path, capsys):
    from .tiny_codecs import export_denoising_codec

    denoiser = export_denoising_codec(tmp_path / "denoiser.safetensors", 16000, (4, 8))
    out = tmp_path / "report"
    args = ["--ckpt", str(denoiser), "--input", str(clips), "--output", str(out), "--workers", "0",
            "--metrics", "stoi,sisdr", "--noise-snr", "5", "--denoise"]  # fmt: skip
    assert evaluate_main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["noise"] == {"snr_db": 5.0, "kind": "pink"}
    systems = {s["label"]: s for s in report["systems"]}
    assert list(systems) == ["noisy-input", "codec@2kbps", "codec+denoise@2kbps", "codec@4kbps",
                             "codec+denoise@4kbps"]  # fmt: skip
    # the uncoded mix scored against the clean clips: SI-SDR near the SNR asked for
    assert systems["noisy-input"]["metrics"]["sisdr"]["mean"] == pytest.approx(5.0, abs=0.5)
    assert systems["noisy-input"]["actual_kbps"] is None
    flag_on, flag_off = (
        systems[f"{f}@4kbps"]["metrics"]["sisdr"]["mean"] for f in ("codec+denoise", "codec")
    )
    assert flag_on != flag_off  # the flag reaches the codec
    assert "pink noise at 5 dB SNR" in (out / "report.md").read_text()
    capsys.readouterr()
    assert evaluate_main(args) == 0  # resumed: every row reused
    assert "0 evaluated now, 10 taken from" in capsys.readouterr().out
    assert evaluate_main([*args[:-2], "10", "--denoise"]) == 0  # other inputs: nothing reused
    assert "10 evaluated now, 0 taken from" in capsys.readouterr().out
    no_flag = [*args[:1], str(checkpoint), *args[2:5], str(tmp_path / "x"), "--denoise"]
    assert evaluate_main(no_flag) == 2
    assert "not trained to denoise" in capsys.readouterr().err
