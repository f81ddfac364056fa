"""lit_codec.metrics.functional: equal to direct pesq/pystoi calls, SI-SDR formula,
alignment, and unscorable inputs giving None (never NaN, never an exception)."""

import math
from pathlib import Path

import numpy as np
import pesq
import pytest
import soundfile as sf
import soxr
from pystoi import stoi

from lit_codec.metrics.functional import (
    METRICS,
    align,
    band_level,
    better_arrow,
    log_spectral_distance,
    mel_distance,
    pesq_score,
    score_pair,
    si_sdr,
    stoi_score,
    visqol_score,
)

SPEECH = (
    Path(__file__).resolve().parents[2]
    / "data_prep"
    / "samples"
    / "speech"
    / "en"
    / "en_agent-user.flac"
)


@pytest.fixture(scope="module")
def speech():
    """3 s of the shipped 16 kHz speech, and a noisy copy (about 20 dB SNR)."""
    audio, rate = sf.read(SPEECH, dtype="float32")
    assert rate == 16000
    clean = audio[: 3 * rate]
    noise = np.random.default_rng(0).standard_normal(len(clean)).astype(np.float32)
    noisy = clean + 0.1 * np.sqrt(np.mean(clean**2)) * noise
    return clean, noisy.astype(np.float32), rate


def test_registry_names():
    assert set(METRICS) == {
        "pesq",
        "pesq_nb",
        "stoi",
        "estoi",
        "sisdr",
        "mel",
        "lsd",
        "visqol_speech",
        "visqol_audio",
        "level_1k",
        "level_2k",
        "level_4k",
        "level_8k",
    }


def test_pesq_equals_direct_call(speech):
    clean, noisy, rate = speech
    assert pesq_score(clean, noisy, rate) == pesq.pesq(rate, clean, noisy, "wb")
    assert pesq_score(clean, noisy, rate, mode="nb") == pesq.pesq(rate, clean, noisy, "nb")
    assert 1.0 < pesq_score(clean, noisy, rate) < pesq_score(clean, clean, rate)


def test_pesq_resamples_other_rates_with_soxr(speech):
    clean, noisy, rate = speech
    up = [soxr.resample(x, rate, 48000) for x in (clean, noisy)]  # (T * 3,) each
    down = [soxr.resample(x, 48000, 16000, quality="HQ") for x in up]
    assert pesq_score(up[0], up[1], 48000) == pesq.pesq(16000, down[0], down[1], "wb")
    nb = [soxr.resample(x, 48000, 8000, quality="HQ") for x in up]
    assert pesq_score(up[0], up[1], 48000, mode="nb") == pesq.pesq(8000, nb[0], nb[1], "nb")


def test_stoi_equals_direct_call(speech):
    clean, noisy, rate = speech
    assert stoi_score(clean, noisy, rate) == stoi(clean, noisy, rate, extended=False)
    assert stoi_score(clean, noisy, rate, extended=True) == stoi(clean, noisy, rate, extended=True)
    assert stoi_score(clean, clean, rate) == pytest.approx(1.0, abs=1e-6)


def test_si_sdr_identical_signals_is_very_large(speech):
    clean, _, _ = speech
    assert si_sdr(clean, clean) > 100.0
    assert math.isfinite(si_sdr(clean, clean))


def test_si_sdr_matches_formula_and_is_scale_invariant(speech):
    clean, noisy, _ = speech
    r = clean.astype(np.float64) - clean.mean(dtype=np.float64)
    d = noisy.astype(np.float64) - noisy.mean(dtype=np.float64)
    target = (d @ r) / (r @ r) * r
    expected = 10 * np.log10((target @ target) / ((d - target) @ (d - target)))
    assert si_sdr(clean, noisy) == pytest.approx(expected, abs=1e-6)
    assert 15.0 < expected < 25.0  # about 20 dB of added noise
    assert si_sdr(clean, 0.3 * noisy) == pytest.approx(expected, abs=1e-6)


def test_align_removes_a_constant_delay(speech):
    clean, noisy, _ = speech
    late = np.concatenate([np.zeros(37, np.float32), noisy])  # degraded lags by 37 samples
    ref, deg, delay = align(clean, late, max_delay=200)
    assert delay == 37 and len(ref) == len(deg) == len(clean)
    np.testing.assert_array_equal(deg, noisy)
    ref, deg, delay = align(late, clean, max_delay=200)  # now the reference lags
    assert delay == -37
    np.testing.assert_array_equal(ref, noisy)
    _, _, delay = align(clean, late, max_delay=10)  # outside the searched range
    assert delay != 37
    ref, deg, delay = align(clean, late, max_delay=0)
    assert delay == 0 and len(ref) == len(deg) == len(clean)


def test_spectral_distances(speech):
    clean, noisy, rate = speech
    louder_noise = clean + 3 * (noisy - clean)
    assert mel_distance(clean, clean, rate) == 0.0
    assert log_spectral_distance(clean, clean, rate) == 0.0
    assert 0 < mel_distance(clean, noisy, rate) < mel_distance(clean, louder_noise, rate)
    assert (
        0
        < log_spectral_distance(clean, noisy, rate)
        < log_spectral_distance(clean, louder_noise, rate)
    )


def test_score_pair_aligns_and_scores(speech):
    clean, noisy, rate = speech
    late = np.concatenate([np.zeros(80, np.float32), noisy])
    scores = score_pair(clean, late, rate, ["pesq", "stoi", "sisdr"], max_delay=160)
    assert scores["pesq"] == pesq.pesq(rate, clean, noisy, "wb")
    assert scores["stoi"] == stoi(clean, noisy, rate)
    assert scores["sisdr"] == pytest.approx(si_sdr(clean, noisy))
    with pytest.raises(ValueError, match="unknown metric"):
        score_pair(clean, noisy, rate, ["pesq", "polqa"])


def test_unscorable_inputs_give_none(speech):
    clean, noisy, rate = speech
    silence = np.zeros(2 * rate, np.float32)
    short = clean[: rate // 10]  # 0.1 s
    assert pesq_score(silence, noisy[: 2 * rate], rate) is None  # silent reference
    assert pesq_score(clean, np.zeros_like(clean), rate) is None  # PESQ fails on a silent output
    assert pesq_score(short, short, rate) is None  # shorter than 0.25 s
    assert stoi_score(silence, noisy[: 2 * rate], rate) is None
    assert stoi_score(short, short, rate) is None  # too few frames for STOI
    assert stoi_score(clean, np.zeros_like(clean), rate) == 0.0  # a silent output is scorable
    assert visqol_score(silence, noisy[: 2 * rate], rate) is None
    assert visqol_score(short, short, rate) is None  # too short for one patch
    broken = noisy.copy()
    broken[100] = np.nan
    scores = score_pair(clean, broken, rate, list(METRICS))
    assert scores == dict.fromkeys(METRICS)
    scores = score_pair(silence, silence, rate, ["pesq", "stoi", "sisdr", "mel", "lsd"])
    assert scores["pesq"] is None and scores["stoi"] is None
    assert all(math.isfinite(scores[k]) for k in ("sisdr", "mel", "lsd"))


def test_band_levels_show_a_muffled_top_octave_and_nothing_else(speech):
    clean, _, rate = speech
    freqs = np.fft.rfftfreq(len(clean), 1 / rate)
    spectrum = np.fft.rfft(clean)
    muffled = np.fft.irfft(spectrum * np.where(freqs >= 4000, 10 ** (-6 / 20), 1.0), len(clean))
    levels = {m: METRICS[m](clean, muffled, rate) for m in ("level_1k", "level_2k", "level_4k")}
    assert abs(levels["level_1k"]) < 0.05 and abs(levels["level_2k"]) < 0.1
    assert levels["level_4k"] == pytest.approx(-6.0, abs=0.2)
    assert METRICS["level_8k"](clean, muffled, rate) is None  # 8-16 kHz is past 8 kHz Nyquist
    assert band_level(clean, 2 * clean, rate, 300, 3000) == pytest.approx(20 * math.log10(2))
    assert band_level(clean, np.zeros_like(clean), rate, 1000, 2000) <= -190  # silence: finite
    assert [better_arrow(m) for m in ("pesq", "mel", "level_4k")] == ["↑", "↓", "→0"]
    report = score_pair(clean, muffled, rate, ["level_4k", "stoi"])
    assert report["level_4k"] == pytest.approx(levels["level_4k"]) and report["stoi"] > 0.9
