"""``PairwiseMetric``: the torchmetrics base of the per-clip quality metrics.

Each clip of a batch is scored on the CPU by a function of
:mod:`lit_codec.metrics.functional`; the metric keeps the sum of the scores, the sum of
their squares, how many clips it scored and how many it had to skip. All four states are
summed across DDP ranks (``dist_reduce_fx="sum"``), so the mean and standard deviation are
exact over every clip of every rank, as torchmetrics reduces its own metrics.

A clip the metric cannot score (silence, too short, no utterance) is counted in
``skipped`` and left out of the mean: a logged mean is never NaN and never pulled towards
an invented value. When nothing at all was scored, :meth:`PairwiseMetric.compute` raises
:class:`NothingScoredError` (every rank raises together, since the states are synced first);
:meth:`PairwiseMetric.summary` never raises and gives ``mean=None`` instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["MetricSummary", "NothingScoredError", "PairwiseMetric"]


class NothingScoredError(RuntimeError):
    """``compute()`` of a metric that could not score any clip (all were skipped)."""


@dataclass
class MetricSummary:
    """Mean and spread of a metric over the scored clips, and how many were skipped."""

    mean: float | None  # None when no clip was scored
    std: float | None  # population standard deviation; None when no clip was scored
    scored: int
    skipped: int


class PairwiseMetric(Metric):
    """Mean of a per-clip score over the clips that can be scored.

    Subclasses implement :meth:`score`. ``update`` takes batches of predictions and targets;
    ``lengths`` crops the padding of each clip before scoring.
    """

    full_state_update = False
    is_differentiable = False

    total: Tensor
    total_sq: Tensor
    scored: Tensor
    skipped: Tensor

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("scored", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("skipped", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def score(self, reference: np.ndarray, degraded: np.ndarray) -> float | None:
        """The score of one clip ``(T,)``, or ``None`` when it cannot be scored."""
        raise NotImplementedError

    def update(self, preds: Tensor, target: Tensor, lengths: Tensor | None = None) -> None:
        """Score every clip of a batch.

        Args:
            preds: reconstructions ``(B, 1, T)`` or ``(B, T)``.
            target: references, same shape as ``preds``.
            lengths: valid samples of each clip ``(B,)``; ``None`` scores all ``T`` samples.
        """
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        if preds.dim() == 3:
            if preds.shape[1] != 1:
                raise ValueError(f"expected mono audio (B, 1, T), got {tuple(preds.shape)}")
            preds, target = preds[:, 0], target[:, 0]  # (B, T)
        if preds.dim() != 2:
            raise ValueError(f"expected (B, 1, T) or (B, T), got {tuple(preds.shape)}")
        deg = preds.detach().float().cpu().numpy()  # (B, T)
        ref = target.detach().float().cpu().numpy()  # (B, T)
        n = [deg.shape[1]] * deg.shape[0] if lengths is None else [int(v) for v in lengths]
        total = total_sq = 0.0
        scored = skipped = 0
        for i in range(deg.shape[0]):
            value = self.score(ref[i, : n[i]], deg[i, : n[i]])
            if value is None or not math.isfinite(value):
                skipped += 1
            else:
                total += value
                total_sq += value * value
                scored += 1
        self.total += total
        self.total_sq += total_sq
        self.scored += scored
        self.skipped += skipped

    def compute(self) -> Tensor:
        """Mean score over the scored clips (a float32 scalar).

        Raises:
            NothingScoredError: when every clip was skipped (use :meth:`summary` to get
                ``mean=None`` instead).
        """
        if int(self.scored) == 0:
            raise NothingScoredError(
                f"{type(self).__name__}: no clip could be scored ({int(self.skipped)} skipped)"
            )
        return (self.total / self.scored).float()

    def summary(self) -> MetricSummary:
        """Mean, standard deviation and counts over all ranks; never raises for no scores.

        Under DDP every rank must call it (it syncs the states, like ``compute``).
        """
        with self.sync_context():
            scored, skipped = int(self.scored), int(self.skipped)
            if scored == 0:
                return MetricSummary(None, None, 0, skipped)
            mean = float(self.total) / scored
            var = max(float(self.total_sq) / scored - mean * mean, 0.0)
            return MetricSummary(mean, math.sqrt(var), scored, skipped)
