"""PESQ and STOI as torchmetrics ``Metric``\\ s, reduced across DDP ranks.

Thin wrappers of :func:`~lit_codec.metrics.functional.pesq_score` (the ``pesq`` package:
ITU-T P.862.2 wideband at 16 kHz, P.862 narrowband) and
:func:`~lit_codec.metrics.functional.stoi_score` (``pystoi``: STOI, Taal et al. 2011, and
extended STOI, Jensen & Taal 2016), in the way torchmetrics' own ``audio`` metrics wrap them,
but skipping and counting the clips these cannot score instead of failing or returning NaN.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lit_codec.metrics.base import PairwiseMetric
from lit_codec.metrics.functional import pesq_score, stoi_score

__all__ = ["PESQ", "STOI"]


class PESQ(PairwiseMetric):
    """Mean PESQ MOS-LQO over the clips PESQ can score.

    Args:
        sample_rate: rate of the audio in Hz; resampled with soxr to 16 kHz for wideband
            (to 8 kHz for narrowband unless it is 8 or 16 kHz).
        mode: ``"wb"`` (wideband, P.862.2) or ``"nb"`` (narrowband, P.862).
    """

    higher_is_better = True
    plot_lower_bound = 1.0
    plot_upper_bound = 4.64

    def __init__(self, sample_rate: int, mode: Literal["wb", "nb"] = "wb", **kwargs) -> None:
        super().__init__(**kwargs)
        if mode not in ("wb", "nb"):
            raise ValueError(f"mode must be 'wb' or 'nb', not {mode!r}")
        self.sample_rate = int(sample_rate)
        self.mode = mode

    def score(self, reference: np.ndarray, degraded: np.ndarray) -> float | None:
        return pesq_score(reference, degraded, self.sample_rate, self.mode)


class STOI(PairwiseMetric):
    """Mean STOI (or extended STOI) over the clips with enough speech frames.

    Args:
        sample_rate: rate of the audio in Hz (pystoi resamples to 10 kHz itself).
        extended: extended STOI instead of STOI.
    """

    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(self, sample_rate: int, extended: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)
        self.extended = extended

    def score(self, reference: np.ndarray, degraded: np.ndarray) -> float | None:
        return stoi_score(reference, degraded, self.sample_rate, self.extended)
