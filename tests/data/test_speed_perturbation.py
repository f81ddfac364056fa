"""Speed perturbation of training crops: pitch moves by the drawn factor, lengths hold."""

import numpy as np
import pytest
import soundfile as sf

from lit_codec.data import AudioShardDataModule
from lit_codec.data.audio_dataset import AudioShardStream
from lit_codec.data.prepare import PrepareSettings, prepare_shards

RATE = 16000


@pytest.fixture(scope="module")
def sine_shards(tmp_path_factory):
    """12 clips of a 1 kHz sine, 2 s each."""
    root = tmp_path_factory.mktemp("sines")
    t = np.arange(2 * RATE) / RATE
    for i in range(12):
        sf.write(root / f"sine{i}.wav", (0.3 * np.sin(2 * np.pi * 1000 * t + i)).astype(np.float32), RATE)
    out = tmp_path_factory.mktemp("sine_shards")
    prepare_shards([root], out, PrepareSettings(valid_fraction=0.2, test_fraction=0.0),
                   progress=False, workers=1)  # fmt: skip
    return out


def _peak_hz(clip: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(clip * np.hanning(len(clip))))
    return float(np.argmax(spectrum)) * RATE / len(clip)


def _batches(root, count=2, **kw):
    dm = AudioShardDataModule(root=str(root), sample_rate=RATE, segment_seconds=0.5, batch_size=4,
                              num_workers=0, shuffle_buffer=0, samples_per_epoch=1000, **kw)  # fmt: skip
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    return [next(it) for _ in range(count)]


@pytest.mark.parametrize("speed", [0.8, 1.25])
def test_every_crop_moves_pitch_by_the_speed_factor(sine_shards, speed):
    for batch in _batches(sine_shards, speed_range=(speed, speed), speed_probability=1.0):
        assert batch.audio.shape == (4, 1, RATE // 2)
        assert batch.lengths.tolist() == [RATE // 2] * 4
        for clip in batch.audio[:, 0].numpy():
            assert np.isfinite(clip).all()
            assert _peak_hz(clip) == pytest.approx(1000 * speed, abs=4)


def test_off_by_default_and_at_probability_zero(sine_shards):
    for kw in ({}, {"speed_range": (0.7, 0.7), "speed_probability": 0.0}):
        for batch in _batches(sine_shards, **kw):
            assert [_peak_hz(c) for c in batch.audio[:, 0].numpy()] == pytest.approx([1000] * 4, abs=4)


def test_half_the_crops_at_probability_one_half(sine_shards):
    peaks = [_peak_hz(c) for b in _batches(sine_shards, count=10, speed_range=(0.8, 0.8))
             for c in b.audio[:, 0].numpy()]  # fmt: skip
    moved = sum(abs(p - 800) < 4 for p in peaks)
    assert sum(abs(p - 1000) < 4 for p in peaks) + moved == 40
    assert 10 <= moved <= 30


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="speed_range"):
        AudioShardStream(["x.tar"], RATE, 100, 2, speed_range=(1.2, 0.8))
    with pytest.raises(ValueError, match="speed_probability"):
        AudioShardStream(["x.tar"], RATE, 100, 2, speed_range=(0.8, 1.2), speed_probability=2)
