"""Audio quality and codebook metrics.

- :mod:`lit_codec.metrics.functional`: numpy in, float (or ``None``: cannot be scored)
  out — ``pesq_score``, ``stoi_score``, ``si_sdr``, ``mel_distance``,
  ``log_spectral_distance``, ``visqol_score``, ``align`` and the ``METRICS`` registry used by
  ``score_pair``, ``lit-codec score`` and ``lit-codec evaluate``.
- torchmetrics ``Metric``\\ s reduced across DDP ranks: :class:`PESQ`, :class:`STOI`,
  :class:`SISDR`, :class:`MelDistance`, :class:`LogSpectralDistance`, :class:`ViSQOL`
  (mean over scored clips, ``skipped`` counts the rest) and :class:`CodebookStatistics`.
- :mod:`lit_codec.metrics.report`: summaries, tables and the rate–distortion plot of
  ``lit-codec evaluate``.
"""

from __future__ import annotations

from lit_codec.metrics.base import MetricSummary, NothingScoredError, PairwiseMetric
from lit_codec.metrics.codebook import CodebookStatistics, CodebookStats
from lit_codec.metrics.functional import METRICS, align, score_pair
from lit_codec.metrics.pesq_stoi import PESQ, STOI
from lit_codec.metrics.signal import SISDR, LogSpectralDistance, MelDistance
from lit_codec.metrics.visqol import ViSQOL

__all__ = [
    "METRICS",
    "PESQ",
    "SISDR",
    "STOI",
    "CodebookStatistics",
    "CodebookStats",
    "LogSpectralDistance",
    "MelDistance",
    "MetricSummary",
    "NothingScoredError",
    "PairwiseMetric",
    "ViSQOL",
    "align",
    "score_pair",
]
