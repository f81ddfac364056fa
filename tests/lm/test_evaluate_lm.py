"""The degradations and token figures of ``lit-codec evaluate-lm`` (the command itself runs
end to end in test_generate_cli.py)."""

from __future__ import annotations

import numpy as np
import pytest

from lit_codec.evaluate_lm import degrade, fit_to, token_accuracy
from lit_codec.metrics.functional import si_sdr

RATE = 16000


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (
        0.3 * envelope * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))
    ).astype(np.float32)


def test_noise_is_mixed_at_the_drawn_snr_and_depends_only_on_seed_and_clip():
    clean = speech_like()
    noisy, drawn = degrade("se", "clip-a", clean, RATE, seed=3, snr=(2.0, 12.0))
    again, drawn_again = degrade("se", "clip-a", clean, RATE, seed=3, snr=(2.0, 12.0))
    other, _ = degrade("se", "clip-b", clean, RATE, seed=3, snr=(2.0, 12.0))
    assert np.array_equal(noisy, again) and drawn == drawn_again
    assert not np.array_equal(noisy, other)
    assert 2.0 <= drawn["snr_db"] <= 12.0 and drawn["noise"] in ("white", "pink")
    assert si_sdr(clean, noisy) == pytest.approx(drawn["snr_db"], abs=0.2)
    assert noisy.dtype == np.float32 and np.abs(noisy).max() <= 1.0


def test_reverberation_keeps_the_clip_aligned_and_its_length():
    clean = (0.1 * np.random.default_rng(1).standard_normal(RATE)).astype(np.float32)  # no period
    wet, drawn = degrade("dereverb", "clip-a", clean, RATE, rt60=(0.5, 0.5), drr=(3.0, 3.0))
    assert wet.shape == clean.shape and drawn["rt60"] == 0.5
    lag = np.argmax(np.correlate(wet[:4000], clean[:4000], mode="full")) - 3999
    assert lag == 0  # the direct path at lag 0: scored without a delay search
    assert si_sdr(clean, wet) < 10.0  # the tail is there


def test_tasks_without_a_degraded_audio_input_are_refused():
    with pytest.raises(ValueError, match="time-aligned tasks"):
        degrade("tts", "clip", speech_like(), RATE)


def test_token_accuracy_counts_missing_frames_as_misses():
    reference = np.array([[1, 2], [3, 4], [5, 6], [7, 8]])
    hits, frames = token_accuracy(reference[:2], reference)
    assert hits.tolist() == [2, 2] and frames.tolist() == [4, 4]
    longer = np.concatenate([reference, reference])
    hits, frames = token_accuracy(longer, reference)
    assert hits.tolist() == [4, 4] and frames.tolist() == [8, 8]
    assert fit_to(np.ones(3, np.float32), 5).tolist() == [1, 1, 1, 0, 0]
    assert fit_to(np.ones(7, np.float32), 5).tolist() == [1] * 5
