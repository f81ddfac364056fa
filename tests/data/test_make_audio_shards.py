import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lit_codec.data.prepare import PrepareSettings, plan_segments, prepare_shards

from .corpus_factory import tone, write_bad, write_good

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "data_prep" / "make_audio_shards.py"


def run_script(*args, check_rc=None):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--no-progress", "--workers", "2", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stdout + proc.stderr
    return proc


def read_shards(out: Path) -> dict[str, tuple[dict, np.ndarray, int]]:
    """Every sample of every shard, read with tarfile + soundfile only."""
    samples = {}
    for tar_path in sorted(out.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            if name.endswith(".json"):
                key = name[: -len(".json")]
                audio, rate = sf.read(io.BytesIO(members[key + ".flac"]), always_2d=True)
                samples[key] = (json.loads(data), audio, rate)
    return samples


@pytest.fixture(scope="module")
def messy_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    good = write_good(root / "good")
    bad = write_bad(root / "bad")
    return root, good, bad


def test_every_good_file_lands_and_every_bad_one_is_reported(messy_corpus, tmp_path):
    root, good, bad = messy_corpus
    out = tmp_path / "shards"
    proc = run_script("--input", root, "--output", out, "--max-seconds", "10", "--valid-fraction", "0.2",
                      "--test-fraction", "0.1", check_rc=0)  # fmt: skip
    last = proc.stdout.strip().splitlines()[-1]
    assert f"{len(good)} of {len(good) + len(bad)} files went in, {len(bad)} skipped" in last
    assert re.search(
        r"hours per split: train \d+\.\d{3} h, valid \d+\.\d{3} h, test \d+\.\d{3} h", last
    )

    samples = read_shards(out)
    by_source: dict[str, list] = {}
    for meta, audio, rate in samples.values():
        assert rate == 16000 and audio.shape[1] == 1  # mono at the target rate
        assert meta["sample_rate"] == 16000 and meta["num_samples"] == audio.shape[0]
        assert abs(meta["duration"] - audio.shape[0] / 16000) < 1e-5
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01
        by_source.setdefault(meta["source"], []).append((meta, audio))
    assert set(by_source) == set(good)  # every good file, nothing else
    for source, pieces in by_source.items():
        total = sum(m["num_samples"] for m, _ in pieces) / 16000
        assert total == pytest.approx(good[source], abs=0.01), (
            source
        )  # nothing lost in segmentation
        assert all(m["duration"] <= 10.0 for m, _ in pieces)
        offsets = sorted(m["offset_samples"] for m, _ in pieces)
        assert offsets[0] == 0
    long = [p for p in by_source if "long_25s" in p][0]
    assert len(by_source[long]) == 3
    stereo = [m for p, ps in by_source.items() if "STEREO" in p for m, _ in ps][0]
    assert stereo["orig_channels"] == 2 and stereo["orig_sample_rate"] == 44100

    report = json.loads((out / "report.json").read_text())
    reported = {e["path"]: e for e in report["skipped_files"]}
    assert set(reported) == set(bad)
    for path, word in bad.items():
        text = (reported[path]["reason"] + " " + reported[path]["detail"]).lower()
        assert word.lower() in text, (path, reported[path])

    index = json.loads((out / "index.json").read_text())
    assert index["sample_rate"] == 16000 and index["settings"]["max_seconds"] == 10.0
    total_samples = sum(s["num_samples"] for s in index["splits"].values())
    assert total_samples == len(samples)
    for split, info in index["splits"].items():
        assert all(
            name.startswith(split + "-") and (out / name).exists() for name in info["shards"]
        )
    assert not list(out.glob("*.tmp"))


def test_strict_exits_non_zero_when_something_was_skipped(messy_corpus, tmp_path):
    root, _, _ = messy_corpus
    proc = run_script(
        "--input",
        root / "bad",
        "--input",
        root / "good" / "a",
        "--output",
        tmp_path / "o",
        "--strict",
    )
    assert proc.returncode == 1
    assert "skipped" in proc.stdout.strip().splitlines()[-1]
    run_script("--input", root / "good" / "a", "--output", tmp_path / "o2", "--strict", check_rc=0)


def test_shards_open_with_plain_webdataset(messy_corpus, tmp_path):
    root, good, _ = messy_corpus
    out = tmp_path / "shards"
    run_script("--input", root / "good", "--output", out, "--all-to", "train", check_rc=0)
    code = textwrap.dedent(
        f"""
        import io, json, sys, glob
        import soundfile as sf, webdataset as wds
        assert not any(m.startswith("lit_codec") for m in sys.modules)
        n = 0
        for s in wds.WebDataset(sorted(glob.glob("{out}/train-*.tar")), shardshuffle=False):
            audio, rate = sf.read(io.BytesIO(s["flac"]))
            meta = json.loads(s["json"])
            assert rate == meta["sample_rate"] == 16000 and len(audio) == meta["num_samples"]
            n += 1
        assert not any(m.startswith("lit_codec") for m in sys.modules)
        print(n)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert (
        int(proc.stdout)
        == json.loads((out / "index.json").read_text())["splits"]["train"]["num_samples"]
    )


def _tar_contents(out: Path) -> dict[str, bytes]:
    contents = {}
    for tar_path in sorted(out.glob("*.tar")):
        contents[tar_path.name] = tar_path.read_bytes()
    return contents


@pytest.mark.slow
def test_interrupted_run_resumes_to_identical_shards(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(40):
        path = corpus / f"spk{i % 4}" / f"utt{i:03d}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(1.0 + (i % 5) * 0.3, 24000, 1 + i % 2, seed=i), 24000, format="FLAC")
    args = [
        "--input",
        corpus,
        "--shard-max-samples",
        "2",
        "--valid-fraction",
        "0.1",
        "--test-fraction",
        "0.1",
    ]
    reference = tmp_path / "reference"
    run_script(*args, "--output", reference, check_rc=0)

    resumed = tmp_path / "resumed"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--no-progress",
        "--workers",
        "1",
        *map(str, args),
        "--output",
        str(resumed),
    ]
    kills = 0
    for wanted in (3, 8):  # kill twice, after some shards are finished
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if len(list(resumed.glob("*.tar"))) >= wanted:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        killed = proc.wait() == -signal.SIGKILL
        if killed:
            assert not (resumed / "index.json").exists()
        for tar_path in resumed.glob("*.tar"):  # every final name is a complete shard
            with tarfile.open(tar_path) as tar:
                assert len(tar.getmembers()) % 2 == 0
    assert kills >= 1, "the run finished before it could be interrupted"
    run_script(*args, "--output", resumed, check_rc=0)
    assert _tar_contents(resumed) == _tar_contents(reference)
    for name in ("index.json", "report.json"):
        assert json.loads((resumed / name).read_text()) == json.loads(
            (reference / name).read_text()
        )


def test_rerun_with_other_settings_is_refused_without_overwrite(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    sf.write(corpus / "a.wav", tone(1.0, 16000), 16000)
    out = tmp_path / "o"
    run_script("--input", corpus, "--output", out, check_rc=0)
    proc = run_script("--input", corpus, "--output", out, "--sample-rate", "24000")
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    run_script(
        "--input", corpus, "--output", out, "--sample-rate", "24000", "--overwrite", check_rc=0
    )
    assert json.loads((out / "index.json").read_text())["sample_rate"] == 24000


def test_segments_are_cut_at_quiet_points():
    rate = 1000
    audio = np.ones(25 * rate, dtype=np.float32)
    audio[8200:8300] = 0.0  # a pause inside the first window's second half
    pieces = plan_segments(audio, rate, max_seconds=10, min_seconds=1)
    assert pieces[0][1] in range(8200, 8301)
    assert all(b - a <= 10 * rate for a, b in pieces)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(audio)
    assert all(pieces[i][1] == pieces[i + 1][0] for i in range(len(pieces) - 1))
    assert plan_segments(audio[:5000], rate, 10, 1) == [(0, 5000)]


def test_loudness_normalisation_and_24_bit(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    sf.write(corpus / "quiet.wav", tone(3.0, 16000, level=0.02), 16000)
    out = prepare_shards([corpus], tmp_path / "o", PrepareSettings(loudness_lufs=-23.0, bit_depth=24, all_to="train"),
                         progress=False, workers=1)  # fmt: skip
    assert out.files_used == 1
    ((meta, audio, _),) = read_shards(tmp_path / "o").values()
    from lit_codec.data.loudness import integrated_loudness

    assert integrated_loudness(audio[:, 0], 16000) == pytest.approx(-23.0, abs=0.2)
    assert meta["gain_db"] > 10
    with tarfile.open(tmp_path / "o" / "train-000000.tar") as tar:
        flac = [m for m in tar.getmembers() if m.name.endswith(".flac")][0]
        assert sf.info(io.BytesIO(tar.extractfile(flac).read())).subtype == "PCM_24"


def test_bs1770_loudness_of_a_full_scale_sine():
    from lit_codec.data.loudness import integrated_loudness

    rate = 48000
    t = np.arange(rate * 5) / rate
    assert integrated_loudness(np.sin(2 * np.pi * 997 * t), rate) == pytest.approx(-3.01, abs=0.05)
    assert integrated_loudness(np.zeros(rate), rate) == float("-inf")
