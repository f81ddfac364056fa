"""SI-SDR, mel distance and log-spectral distance as torchmetrics ``Metric``\\ s.

Per-clip values from :mod:`lit_codec.metrics.functional` (SI-SDR of Le Roux et al. 2019,
descript-audio-codec's multi-scale mel distance, the log-spectral distance of Kuleshov et
al. 2017), averaged over clips and reduced across DDP ranks. These always score a finite
clip; only empty clips or NaN/inf samples are skipped.
"""

from __future__ import annotations

import numpy as np

from lit_codec.metrics.base import PairwiseMetric
from lit_codec.metrics.functional import log_spectral_distance, mel_distance, si_sdr

__all__ = ["LogSpectralDistance", "MelDistance", "SISDR"]


def _finite_pair(reference: np.ndarray, degraded: np.ndarray) -> bool:
    return (
        reference.size > 0
        and degraded.size > 0
        and bool(np.isfinite(reference).all() and np.isfinite(degraded).all())
    )


class SISDR(PairwiseMetric):
    """Mean scale-invariant SDR in dB (zero-mean signals), per clip then averaged."""

    higher_is_better = True

    def score(self, reference: np.ndarray, degraded: np.ndarray) -> float | None:
        return si_sdr(reference, degraded) if _finite_pair(reference, degraded) else None


class MelDistance(PairwiseMetric):
    """Mean multi-scale mel distance (descript-audio-codec's mel loss), lower is better.

    Args:
        sample_rate: rate of the audio in Hz (sets the mel filterbanks).
    """

    higher_is_better = False

    def __init__(self, sample_rate: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)

    def score(self, reference: np.ndarray, degraded: np.ndarray) -> float | None:
        if not _finite_pair(reference, degraded):
            return None
        return mel_distance(reference, degraded, self.sample_rate)


class LogSpectralDistance(PairwiseMetric):
    """Mean log-spectral distance in log10 units (2048-point STFT, hop 512), lower is better.

    Args:
        sample_rate: rate of the audio in Hz.
    """

    higher_is_better = False

    def __init__(self, sample_rate: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.sample_rate = int(sample_rate)

    def score(self, reference: np.ndarray, degraded: np.ndarray) -> float | None:
        if not _finite_pair(reference, degraded):
            return None
        return log_spectral_distance(reference, degraded, self.sample_rate)
