"""``lit-codec generate`` end to end: a tiny CodecLM trained through the CLI on token shards
of the tiny codec, then enhancement of a clip, decoded by that codec."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from lit_codec.data.token_shards import TokenShardSettings, make_token_shards

from ..data.corpus_factory import tone
from ..data.token_factory import RATE, export_tiny_codec, make_audio_shards
from ..tiny_codecs import tiny_seanet_codec

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    from lit_codec.cli import main, recipe_chain

    root = tmp_path_factory.mktemp("generate")
    codec = export_tiny_codec(root / "codec.safetensors")
    audio = make_audio_shards(root, valid_fraction=0.25, split_by="speaker")
    tokens = root / "tokens"
    make_token_shards(TokenShardSettings(str(audio), str(tokens), codec=str(codec), tasks=("se",),
                                         shard_max_samples=4, workers=1, progress=False))  # fmt: skip
    configs = []
    for _, content in recipe_chain(REPO / "recipes" / "lm" / "se" / "debug.yaml"):
        configs += ["--config", yaml.safe_dump(content, sort_keys=False)]
    main(["fit", *configs, "--data.root", str(tokens), "--data.max_tokens", "7000", "--data.num_workers", "0",
          "--trainer.max_steps", "2", "--trainer.default_root_dir", str(root / "run"), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false", "--trainer.num_sanity_val_steps", "0",
          "--trainer.val_check_interval", "2", "--model.init_args.scheduler.init_args.total_steps", "2",
          "--config", yaml.safe_dump({"trainer": {"callbacks": [
              {"class_path": "lit_codec.callbacks.GeneratorStepCheckpoint",
               "init_args": {"every_n_generator_steps": 0, "every_n_train_steps": 2, "save_last": True}}]}})])  # fmt: skip
    clip = root / "noisy.wav"
    sf.write(clip, tone(0.2, RATE, seed=3), RATE)
    return {
        "ckpt": root / "run" / "checkpoints" / "last.ckpt",
        "codec": codec,
        "clip": clip,
        "root": root,
        "audio": audio,
        "tokens": tokens,
    }


def generate(*args: str, command: str = "generate") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lit_codec.cli", command, *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO)  # fmt: skip


def test_enhancement_writes_audio_and_codes_of_the_codec(trained, tmp_path):
    out, codes = tmp_path / "clean.wav", tmp_path / "clean.npz"
    proc = generate("--ckpt", str(trained["ckpt"]), "--codec", str(trained["codec"]), "--task", "se",
                    "--input", str(trained["clip"]), "--output", str(out), "--codes-output", str(codes),
                    "--max-seconds", "0.05", "--seed", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    audio, rate = sf.read(out)
    saved = np.load(codes)
    frames = saved["codes"].shape[1]
    assert rate == RATE and 0 < frames <= 50 and saved["codes"].shape[0] == 3
    assert len(audio) == frames * 8 and np.isfinite(audio).all()  # hop 8
    assert ((saved["codes"] >= 0) & (saved["codes"] < 32)).all()
    again = tmp_path / "again.npz"
    proc = generate("--ckpt", str(trained["ckpt"]), "--codec", str(trained["codec"]), "--task", "se", "--input",
                    str(trained["clip"]), "--output", str(tmp_path / "b.wav"), "--codes-output", str(again),
                    "--max-seconds", "0.05", "--seed", "1", "--no-cache")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.array_equal(np.load(again)["codes"], saved["codes"])  # the cache changes nothing
    streamed = tmp_path / "streamed.wav"
    proc = generate("--ckpt", str(trained["ckpt"]), "--codec", str(trained["codec"]), "--task", "se",
                    "--input", str(trained["clip"]), "--output", str(streamed), "--max-seconds", "0.05",
                    "--seed", "1", "--stream")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "streamed, first audio after" in proc.stdout
    np.testing.assert_allclose(sf.read(streamed)[0], audio, atol=2 / 32768)  # the offline audio


def refused(capsys, *args: str) -> str:
    """Run ``lit-codec generate`` in this process (refusals need no fresh interpreter):
    the exit code must be 2; returns what it printed on stderr."""
    from lit_codec.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["generate", *args])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_a_mismatched_codec_and_missing_or_extra_conditions_are_refused(trained, tmp_path, capsys):
    other = tiny_seanet_codec(seed=1).export(tmp_path / "other.safetensors")
    common = ["--ckpt", str(trained["ckpt"]), "--task", "se", "--output", str(tmp_path / "x.wav")]
    err = refused(capsys, *common, "--codec", str(other), "--input", str(trained["clip"]))
    assert "fingerprint" in err and "is not the codec" in err
    err = refused(capsys, *common, "--codec", str(trained["codec"]))
    assert "needs --input" in err and "noisy (noisy_codes)" in err
    err = refused(
        capsys,
        *common,
        "--codec",
        str(trained["codec"]),
        "--input",
        str(trained["clip"]),
        "--text",
        "hi",
    )
    assert "does not take --text" in err
    err = refused(
        capsys, *common, "--codec", str(trained["codec"]), "--task", "tts", "--text", "hi"
    )
    assert "not trained for task 'tts'" in err
    assert not (tmp_path / "x.wav").exists()


def test_evaluate_lm_scores_the_lm_beside_the_degraded_input_and_the_codec_ceiling(
    trained, tmp_path
):
    out = tmp_path / "report"
    proc = generate("--ckpt", str(trained["ckpt"]), "--codec", str(trained["codec"]), "--task", "se",
                    "--input", str(trained["audio"]), "--split", "valid", "--max-clips", "3", "--snr", "5", "--noise-kinds", "white",
                    "--metrics", "stoi,sisdr", "--write-audio", "1", "--batch-size", "2",
                    "--tokens", str(trained["tokens"]), "--output", str(out), command="evaluate-lm")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    systems = {s["system"]: s for s in report["systems"]}
    assert list(systems) == ["degraded", "codec(clean)", "codec(degraded)", "lm"]
    assert all(s["clips"] == 3 for s in systems.values()) and report["clips"]["count"] == 3
    # white noise mixed at 5 dB: each noisy input's SI-SDR against its clean clip is the SNR
    # (white noise is nearly orthogonal to a clip; pink noise on a short tone is not)
    noisy = [r for r in report["per_clip"] if r["system"] == "degraded"]
    assert len(noisy) == 3
    assert all(r["drawn"]["noise"] == "white" and r["drawn"]["snr_db"] == 5.0 for r in noisy)
    assert all(abs(r["scores"]["sisdr"] - 5.0) < 0.2 for r in noisy), [r["scores"] for r in noisy]
    for name in ("codec(degraded)", "lm"):
        accuracy = systems[name]["token_accuracy"]
        assert len(accuracy) == 3 and all(0.0 <= a <= 1.0 for a in accuracy)
    assert all(r["frames"] > 0 for r in report["per_clip"] if r["system"] == "lm")
    figures = report["teacher_forced"]
    assert figures["sequences"] > 0 and min(figures["tokens"]) > 0
    assert all(0.0 <= a <= 1.0 for a in figures["accuracy"]) and min(figures["perplexity"]) >= 1.0
    assert "| lm |" in (out / "report.md").read_text() and (out / "report.png").stat().st_size > 0
    written = sorted(p.name for p in (out / "audio").rglob("*.wav"))
    assert written == [
        "clean.wav",
        "codec_clean.wav",
        "codec_degraded.wav",
        "degraded.wav",
        "lm.wav",
    ]

    proc = generate("--ckpt", str(trained["ckpt"]), "--codec", str(trained["codec"]), "--task", "tse",
                    "--input", str(trained["audio"]), "--output", str(tmp_path / "x"), command="evaluate-lm")  # fmt: skip
    assert proc.returncode == 2 and "time-aligned tasks" in proc.stderr
