"""ViSQOL called the way lit-codec calls it reproduces the C++ conformance scores (within
0.01) of the pairs shipped in tests/metrics/data (see its README)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lit_codec.metrics import ViSQOL
from lit_codec.metrics.functional import native_stderr_without, visqol_score
from lit_codec.scoring import score_main

DATA = Path(__file__).resolve().parent / "data"
SPEECH = (
    Path(__file__).resolve().parents[2]
    / "data_prep"
    / "samples"
    / "speech"
    / "en"
    / "en_agent-user.flac"
)


def _score_cli(reference: str, degraded: str, metric: str, capsys) -> float:
    status = score_main(
        [
            "--reference",
            str(DATA / reference),
            "--degraded",
            str(DATA / degraded),
            "--metrics",
            metric,
            "--json",
        ]
    )
    assert status == 0
    return json.loads(capsys.readouterr().out)["pairs"][0]["scores"][metric]


def test_speech_conformance_lattice(capsys):
    assert (
        abs(
            _score_cli("CA01_01.wav", "transcoded_CA01_01.wav", "visqol_speech", capsys)
            - 3.3129234313964844
        )
        < 0.01
    )
    reference, rate = sf.read(DATA / "CA01_01.wav")
    assert rate == 48000
    assert abs(visqol_score(reference, reference, rate, mode="speech") - 4.505550384521484) < 0.01


def test_metric_class_equals_function():
    reference, rate = sf.read(SPEECH, dtype="float32")
    reference = reference[: 2 * rate]  # 2 s at 16 kHz
    degraded = reference + 0.003 * np.random.default_rng(0).standard_normal(len(reference)).astype(
        np.float32
    )
    metric = ViSQOL(rate, mode="speech")
    metric.update(torch.from_numpy(degraded)[None, None], torch.from_numpy(reference)[None, None])
    assert float(metric.compute()) == pytest.approx(
        visqol_score(reference, degraded, rate), abs=1e-6
    )
    assert int(metric.skipped) == 0 and 1.0 < float(metric.compute()) < 4.5


@pytest.mark.slow
def test_audio_conformance(capsys):
    score = _score_cli(
        "guitar48_stereo.wav", "guitar48_stereo_64kbps_aac.wav", "visqol_audio", capsys
    )
    assert abs(score - 4.349722308064298) < 0.01


def test_native_stderr_without_drops_only_the_named_lines(capfd):
    with native_stderr_without(b"INFO: Created", b"noise"):
        os.write(2, b"INFO: Created a delegate\nkept from C\nnoise\n")  # as C++ writes
        print("kept from Python", file=sys.stderr)
    os.write(2, b"INFO: Created after the block\n")
    lines = capfd.readouterr().err.splitlines()  # (pytest takes Python's lines by another way)
    assert sorted(lines) == ["INFO: Created after the block", "kept from C", "kept from Python"]


def test_visqol_speech_mode_starts_without_tflite_notice():
    # TensorFlow Lite says so once per process: a fresh one
    code = "from lit_codec.metrics.functional import _visqol_api; _visqol_api('speech')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "TensorFlow Lite" not in done.stderr  # "INFO: Created TensorFlow Lite XNNPACK ..."
