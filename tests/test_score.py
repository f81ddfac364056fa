"""`lit-codec score` (lit_codec.scoring.score_main) on files, folders, JSON and bad input."""

import json
from pathlib import Path

import numpy as np
import pesq
import pytest
import soundfile as sf
import soxr
from pystoi import stoi

from lit_codec.metrics.functional import align
from lit_codec.scoring import load_pair, score_main

SPEECH = Path(__file__).resolve().parents[1] / "data_prep" / "samples" / "speech" / "en"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A 16 kHz mono FLAC reference and a degraded 48 kHz stereo WAV, 12.5 ms late, noisy."""
    root = tmp_path_factory.mktemp("score")
    clean, rate = sf.read(sorted(SPEECH.glob("*.flac"))[0], dtype="float32")
    clean = clean[: 3 * rate]
    noisy = clean + 0.01 * np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    late = np.concatenate([np.zeros(200, np.float32), noisy])  # 12.5 ms at 16 kHz
    up = soxr.resample(late, rate, 48000)
    sf.write(root / "ref.flac", clean, rate)
    sf.write(root / "deg.wav", np.stack([up, up], axis=1), 48000, subtype="FLOAT")
    return root / "ref.flac", root / "deg.wav"


def test_score_pair_json_equals_direct_calls(pair, capsys):
    ref_path, deg_path = pair
    status = score_main(
        [
            "--reference",
            str(ref_path),
            "--degraded",
            str(deg_path),
            "--metrics",
            "pesq,stoi,sisdr",
            "--json",
        ]
    )
    assert status == 0
    out = json.loads(capsys.readouterr().out)
    result = out["pairs"][0]
    assert result["sample_rate"] == 16000
    assert result["delay_ms"] == pytest.approx(12.5, abs=0.2)
    # the same arrays lit-codec scores, given to pesq and pystoi directly
    ref, deg, rate = load_pair(ref_path, deg_path)
    ref, deg, _ = align(ref, deg, int(0.25 * rate))
    assert result["scores"]["pesq"] == pesq.pesq(rate, ref, deg, "wb")
    assert result["scores"]["stoi"] == stoi(ref, deg, rate)
    assert result["scores"]["sisdr"] > 20.0
    assert out["summary"]["pesq"]["scored"] == 1 and out["summary"]["pesq"]["skipped"] == 0


def test_score_prints_a_table(pair, capsys):
    ref_path, deg_path = pair
    assert (
        score_main(
            ["--reference", str(ref_path), "--degraded", str(deg_path), "--metrics", "stoi,mel"]
        )
        == 0
    )
    out = capsys.readouterr().out
    header, rule, row = out.strip().splitlines()
    assert header.split() == ["pair", "delay", "ms", "stoi", "mel"]
    assert row.split()[0] == "ref.flac" and 0.9 < float(row.split()[2]) <= 1.0


def test_score_two_folders(tmp_path, pair, capsys):
    ref_path, deg_path = pair
    refs, degs = tmp_path / "refs", tmp_path / "degs"
    (refs / "sub").mkdir(parents=True)
    (degs / "sub").mkdir(parents=True)
    clean, rate = sf.read(ref_path, dtype="float32")
    for name in ("a", "sub/b"):
        sf.write(refs / f"{name}.wav", clean, rate)
    sf.write(degs / "a.flac", clean, rate)  # identical: paired by name across formats
    sf.write(degs / "sub" / "b.wav", np.zeros_like(clean), rate)  # silent output
    sf.write(refs / "lonely.wav", clean, rate)  # no partner: reported, the rest scored
    status = score_main(
        ["--reference", str(refs), "--degraded", str(degs), "--metrics", "pesq,stoi", "--json"]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert "lonely" in captured.err
    out = json.loads(captured.out)
    by_name = {p["name"]: p for p in out["pairs"]}
    assert set(by_name) == {"a", "sub/b"}
    assert by_name["a"]["scores"]["pesq"] > 4.5
    assert by_name["sub/b"]["scores"]["pesq"] is None  # PESQ cannot score a silent output
    assert out["summary"]["pesq"] == {
        "mean": by_name["a"]["scores"]["pesq"],
        "std": 0.0,
        "scored": 1,
        "skipped": 1,
    }
    assert out["summary"]["stoi"]["scored"] == 2


def test_unreadable_files_and_bad_arguments(tmp_path, pair, capsys):
    ref_path, _ = pair
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    assert score_main(["--reference", str(ref_path), "--degraded", str(text)]) == 2
    assert f"cannot read {text}: not audio" in capsys.readouterr().err
    assert (
        score_main(["--reference", str(ref_path), "--degraded", str(tmp_path / "missing.wav")]) == 2
    )
    assert "missing.wav" in capsys.readouterr().err
    assert (
        score_main(
            ["--reference", str(ref_path), "--degraded", str(ref_path), "--metrics", "pesq,mos"]
        )
        == 2
    )
    assert "unknown metric(s) mos" in capsys.readouterr().err
