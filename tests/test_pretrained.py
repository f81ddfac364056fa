"""The shipped speech codec (``speech16k``): loads by name, codes speech well, installs.

The figures are checked on clips the repository ships (data_prep/samples/speech), so a
change that breaks inference (a layer, the compact weights, the STFT head) shows here.
The thresholds sit a little under what the shipped model measured on these clips (its
model card, lit_codec/pretrained/speech16k.json, and docs/speech16k_report.md).
"""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lit_codec import Codec
from lit_codec.cli import main
from lit_codec.pretrained import PRETRAINED, card, pretrained_path

REPO = Path(__file__).resolve().parents[1]
CLIPS = [REPO / "data_prep/samples/speech" / p for p in (
    "en/en_vm-newpassword.flac", "es/es_vm-delete.flac", "fr/fr_confbridge-lock-extended.flac")]  # fmt: skip
# PESQ-WB of the shipped model on CLIPS, mean, at 1.5 / 3 / 6 kbps, less a margin of about
# 0.2 for platform differences (measured 2026-12-08: 1.98 / 2.68 / 3.17, STOI 0.947 at 6 kbps;
# the model shipped before it measured 1.91 / 2.38 / 2.93, STOI 0.932)
FLOOR = {1.5: 1.8, 3.0: 2.45, 6.0: 2.95}


@pytest.fixture(scope="module")
def codec():
    return Codec.pretrained("speech16k")


def test_it_ships_and_describes_itself(codec):
    assert set(PRETRAINED) == {"speech16k"}
    path = pretrained_path("speech16k")
    assert path.stat().st_size < 16e6  # a compact file, not the 68 MB of float32 weights
    assert codec.sample_rate == 16000 and codec.frame_rate == 50 and codec.n_q == 12
    assert codec.bitrates()[-1] == pytest.approx(6.0)
    info = card("speech16k")
    for key in ("description", "training", "recipe", "weights", "report", "results"):
        assert info.get(key), key
    assert (REPO / info["report"]).is_file()
    assert Codec.from_checkpoint("speech16k").fingerprint == codec.fingerprint


@pytest.mark.parametrize("clip", CLIPS, ids=lambda p: p.parent.name)
def test_clips_exist(clip):
    assert clip.is_file(), clip


def test_quality_on_shipped_clips_rises_with_bitrate(codec):
    from pesq import pesq
    from pystoi import stoi

    scores = {kbps: [] for kbps in FLOOR}
    stois = []
    for clip in CLIPS:
        ref, rate = sf.read(clip, dtype="float32")
        assert rate == 16000
        with torch.inference_mode():
            for kbps in FLOOR:
                codes = codec.encode(torch.from_numpy(ref), n_q=codec.resolve_n_q(kbps=kbps))
                out = codec.decode(codes)[0, 0, : len(ref)].numpy()
                assert np.isfinite(out).all()
                scores[kbps].append(pesq(16000, ref, out, "wb"))
                if kbps == 6.0:
                    stois.append(stoi(ref, out, 16000))
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    assert means[1.5] < means[3.0] < means[6.0], means
    for kbps, floor in FLOOR.items():
        assert means[kbps] >= floor, (kbps, means)
    assert np.mean(stois) >= 0.93


def test_cli_defaults_to_the_shipped_codec(tmp_path, capsys):
    codes, out = tmp_path / "c.npz", tmp_path / "d.wav"
    main(["encode", "--input", str(CLIPS[0]), "--output", str(codes), "--kbps", "3"])
    main(["decode", "--input", str(codes), "--output", str(out)])
    assert sf.info(out).samplerate == 16000
    assert sf.info(out).frames == sf.info(CLIPS[0]).frames
    main(["info", "speech16k"])
    text = capsys.readouterr().out
    assert "speech16k:" in text and "trained:" in text and "12 x 1024 codes" in text


def test_an_unknown_name_is_refused(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["info", "speech48k"])
    assert e.value.code == 2
    assert "speech48k" in capsys.readouterr().err
    with pytest.raises(ValueError, match="shipped: speech16k"):
        pretrained_path("speech48k")


def test_a_file_named_like_a_shipped_codec_wins(tmp_path, monkeypatch):
    from .tiny_codecs import tiny_seanet_codec

    tiny = tiny_seanet_codec()
    tiny.export(tmp_path / "speech16k")
    monkeypatch.chdir(tmp_path)
    assert Codec.from_checkpoint("speech16k").fingerprint == tiny.fingerprint


@pytest.mark.slow
def test_the_wheel_carries_the_model(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("lit_codec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "lit_codec/pretrained/speech16k.safetensors" in names
    assert "lit_codec/pretrained/speech16k.json" in names
    assert json.loads(zipfile.ZipFile(wheel).read("lit_codec/pretrained/speech16k.json"))
