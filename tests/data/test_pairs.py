"""Pairs for the codec-LM tasks: seeded draws, SNR, room impulse responses, speakers, masks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lit_codec.data.pairs import (
    DrawError,
    PairMaker,
    PairSettings,
    draw_rng,
    fit_length,
    mask_span,
    masked_codes,
    mix_at_snr,
    power,
    reverberate,
    synthetic_noise,
    synthetic_rir,
)
from lit_codec.data.shard_catalog import SpeakerIndex


def test_draws_depend_on_seed_key_and_purpose_only():
    a = draw_rng(3, "utt1", "noisy").random(4)
    np.testing.assert_array_equal(a, draw_rng(3, "utt1", "noisy").random(4))
    for other in (
        draw_rng(4, "utt1", "noisy"),
        draw_rng(3, "utt2", "noisy"),
        draw_rng(3, "utt1", "prompt"),
    ):
        assert not np.array_equal(a, other.random(4))


@pytest.mark.parametrize("kind", ["white", "pink"])
@pytest.mark.parametrize("snr", [-5.0, 0.0, 17.5])
def test_mixture_has_the_drawn_snr(kind, snr):
    rng = np.random.default_rng(0)
    clean = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    noise = synthetic_noise(kind, 16000, rng)
    assert power(noise) == pytest.approx(1.0, rel=1e-3)
    mixture, gain = mix_at_snr(clean, noise, snr)
    assert gain == 0.0 and mixture.dtype == np.float32
    measured = 10 * math.log10(power(clean) / power(mixture - clean))
    assert measured == pytest.approx(snr, abs=1e-3)


def test_loud_mixture_is_scaled_down_as_a_whole():
    clean = np.full(100, 0.9, np.float32)
    mixture, gain = mix_at_snr(clean, np.ones(100, np.float32), 0.0)
    assert np.abs(mixture).max() == pytest.approx(0.999, abs=1e-6) and gain < 0


def test_pink_noise_falls_by_3_db_per_octave():
    spectrum = np.abs(np.fft.rfft(synthetic_noise("pink", 1 << 16, np.random.default_rng(1)))) ** 2
    low, high = spectrum[1000:2000].mean(), spectrum[4000:8000].mean()  # two octaves apart
    assert 10 * math.log10(low / high) == pytest.approx(6.0, abs=1.0)


def test_rir_decays_by_60_db_in_rt60_and_keeps_the_direct_path_aligned():
    rate, rt60, drr = 16000, 0.5, 3.0
    h = synthetic_rir(rate, rt60, drr, np.random.default_rng(0))
    assert h[0] == 1.0 and len(h) == math.ceil(1.2 * rt60 * rate)
    tail = h[1:].astype(np.float64)
    assert 10 * math.log10(1.0 / np.sum(tail**2)) == pytest.approx(drr, abs=1e-3)
    edc = np.cumsum((tail**2)[::-1])[::-1]  # Schroeder's energy decay curve
    db = 10 * np.log10(edc / edc[0])
    t = np.arange(len(db)) / rate
    fit = (db > -25) & (db < -5)  # T20, extrapolated to 60 dB
    slope = np.polyfit(t[fit], db[fit], 1)[0]
    assert -60 / slope == pytest.approx(rt60, rel=0.1)
    impulse = np.zeros(1000, np.float32)
    impulse[10] = 1.0
    wet = reverberate(impulse, h)
    assert len(wet) == 1000 and np.argmax(np.abs(wet)) == 10  # time-aligned with the dry signal


def test_fit_length_crops_tiles_or_places_in_silence():
    rng = np.random.default_rng(0)
    x = np.arange(1, 11, dtype=np.float32)
    assert len(fit_length(x, 4, rng)) == 4
    tiled = fit_length(x, 25, rng)
    assert len(tiled) == 25 and (tiled > 0).all()
    placed = fit_length(x, 25, rng, tile=False)
    assert np.count_nonzero(placed) == 10 and placed.sum() == x.sum()


def test_mask_span_and_masked_codes():
    rng = np.random.default_rng(0)
    for frames in (1, 7, 100):
        start, stop = mask_span(frames, (0.1, 0.5), rng)
        assert 0 <= start < stop <= frames and stop - start <= max(1, round(0.5 * frames))
    codes = np.arange(20, dtype=np.int16).reshape(10, 2)
    masked = masked_codes(codes, (2, 5))
    assert (masked[2:5] == -1).all() and (masked[:2] == codes[:2]).all() and (codes >= 0).all()


def test_speaker_index_draws():
    index = SpeakerIndex([0, 1, 2, 3, 4], ["a", "a", "b", None, "c"])
    rng = np.random.default_rng(0)
    assert {index.same_speaker(0, rng) for _ in range(5)} == {1}
    others = {index.other_speaker(0, rng) for _ in range(200)}
    assert others == {2, 3, 4}
    assert 3 not in {index.other_speaker(3, rng) for _ in range(50)}  # no speaker: any other
    with pytest.raises(DrawError, match="no other utterance"):
        index.same_speaker(2, rng)
    with pytest.raises(DrawError, match="no speaker"):
        index.same_speaker(3, rng)
    with pytest.raises(DrawError, match="no other speaker"):
        SpeakerIndex([0, 1], ["a", "a"]).other_speaker(0, rng)


def test_pair_maker_is_a_pure_function_of_seed_and_key():
    rate = 8000
    voices = {
        i: np.sin(np.arange(rate) * (0.05 + 0.01 * i)).astype(np.float32) * 0.3 for i in range(4)
    }
    index = SpeakerIndex(list(voices), ["a", "a", "b", "c"])
    make = lambda seed: PairMaker(  # noqa: E731
        PairSettings(seed=seed), rate, index, voices.__getitem__, lambda i: f"utt{i}"
    )
    first, again, other = make(0), make(0), make(1)
    for method in ("noisy", "mixture", "reverberant"):
        a, info = getattr(first, method)(0, voices[0])
        b, info_b = getattr(again, method)(0, voices[0])
        np.testing.assert_array_equal(a, b)
        assert info == info_b and len(a) == rate
        assert not np.array_equal(a, getattr(other, method)(0, voices[0])[0])
    prompt, info = first.prompt(0)
    assert info["key"] == "utt1" and len(prompt) == rate  # the utterance is shorter than 3 s
    assert first.mask(0, 50) == again.mask(0, 50)
