"""The torchmetrics Metrics: values equal the functions on cropped clips, unscorable clips
are skipped and counted, states reduce by summation (as across DDP ranks)."""

from pathlib import Path

import numpy as np
import pesq
import pytest
import soundfile as sf
import torch
from pystoi import stoi

from lit_codec.metrics import (
    PESQ,
    SISDR,
    STOI,
    LogSpectralDistance,
    MelDistance,
    NothingScoredError,
)
from lit_codec.metrics.functional import log_spectral_distance, mel_distance, si_sdr

SPEECH = Path(__file__).resolve().parents[2] / "data_prep" / "samples" / "speech" / "en"


@pytest.fixture(scope="module")
def batch():
    """Two 16 kHz speech clips padded into (2, 1, T), their noisy versions and lengths."""
    rng = np.random.default_rng(0)
    clips = [
        sf.read(p, dtype="float32")[0][: 16000 * n]
        for p, n in zip(sorted(SPEECH.glob("*.flac"))[:2], (2, 3))
    ]
    length = max(len(c) for c in clips)
    target = torch.zeros(2, 1, length)
    preds = torch.zeros(2, 1, length)
    for i, clip in enumerate(clips):
        target[i, 0, : len(clip)] = torch.from_numpy(clip)
        noisy = clip + 0.05 * np.abs(clip).max() * rng.standard_normal(len(clip)).astype(np.float32)
        preds[i, 0, : len(clip)] = torch.from_numpy(noisy)
        preds[i, 0, len(clip) :] = 0.5  # padding that must not be scored
    lengths = torch.tensor([len(c) for c in clips])
    return preds, target, lengths


def _pairs(preds, target, lengths):
    return [
        (target[i, 0, :n].numpy(), preds[i, 0, :n].numpy()) for i, n in enumerate(lengths.tolist())
    ]


def test_pesq_and_stoi_equal_direct_calls(batch):
    preds, target, lengths = batch
    pairs = _pairs(preds, target, lengths)
    metric = PESQ(16000)
    metric.update(preds, target, lengths)
    expected = np.mean([pesq.pesq(16000, r, d, "wb") for r, d in pairs])
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)
    for extended in (False, True):
        metric = STOI(16000, extended=extended)
        metric.update(preds, target, lengths)
        expected = np.mean([stoi(r, d, 16000, extended=extended) for r, d in pairs])
        assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)


def test_signal_metrics_equal_functions(batch):
    preds, target, lengths = batch
    pairs = _pairs(preds, target, lengths)
    for metric, fn in (
        (SISDR(), lambda r, d: si_sdr(r, d)),
        (MelDistance(16000), lambda r, d: mel_distance(r, d, 16000)),
        (LogSpectralDistance(16000), lambda r, d: log_spectral_distance(r, d, 16000)),
    ):
        metric.update(preds, target, lengths)
        assert float(metric.compute()) == pytest.approx(
            np.mean([fn(r, d) for r, d in pairs]), rel=1e-5
        )


def test_unscorable_clips_are_skipped_and_counted(batch):
    preds, target, lengths = batch
    metric = PESQ(16000)
    silent = torch.zeros_like(target[:1])
    metric.update(preds[:1], silent)  # silent reference: skipped
    metric.update(preds[:1, :, :1000], target[:1, :, :1000])  # 1/16 s: too short, skipped
    with pytest.raises(NothingScoredError):
        metric.compute()
    summary = metric.summary()
    assert summary.mean is None and summary.scored == 0 and summary.skipped == 2
    metric.update(preds[:1], target[:1], lengths[:1])
    assert float(metric.compute()) == pytest.approx(
        pesq.pesq(16000, *_pairs(preds[:1], target[:1], lengths[:1])[0])
    )
    summary = metric.summary()
    assert (summary.scored, summary.skipped, summary.std) == (1, 2, 0.0)
    assert not torch.isnan(metric.compute())


def test_states_add_up_across_processes(batch):
    """DDP reduces the states with their dist_reduce_fx (sum); merge_state applies the same."""
    preds, target, lengths = batch
    whole, rank0, rank1 = STOI(16000), STOI(16000), STOI(16000)
    whole.update(preds, target, lengths)
    rank0.update(preds[:1], target[:1], lengths[:1])
    rank1.update(preds[1:], target[1:], lengths[1:])
    rank1.update(torch.zeros_like(preds[:1]), torch.zeros_like(target[:1]))  # one skipped clip
    rank0.merge_state(rank1)
    assert float(rank0.compute()) == pytest.approx(float(whole.compute()))
    assert (int(rank0.scored), int(rank0.skipped)) == (2, 1)
    assert all(
        rank0._reductions[name] is not None for name in ("total", "total_sq", "scored", "skipped")
    )


def test_input_shapes_are_checked(batch):
    preds, target, _ = batch
    with pytest.raises(ValueError):
        SISDR().update(preds, target[:, :, :-1])
    with pytest.raises(ValueError):
        SISDR().update(preds.repeat(1, 2, 1), target.repeat(1, 2, 1))
