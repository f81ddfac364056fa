"""ViSQOL v3 as a torchmetrics ``Metric``, reduced across DDP ranks.

Scores each clip with :func:`~lit_codec.metrics.functional.visqol_score`, which calls
``visqol-python`` (a pure Python port of google/visqol 3.3.3 that reproduces the C++
conformance scores): speech mode with the lattice mapper at 16 kHz, or audio mode at 48 kHz.
One ViSQOL object per mode and process is built on first use and reused.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from lit_codec.metrics.base import PairwiseMetric
from lit_codec.metrics.functional import visqol_score

__all__ = ["ViSQOL"]


class ViSQOL(PairwiseMetric):
    """Mean ViSQOL MOS-LQO (1–5) over the clips ViSQOL can score.

    Args:
        sample_rate: rate of the audio in Hz. Speech mode scores rates of 16 kHz and above
            as given (as the C++ tool) and upsamples lower ones; audio mode resamples to 48 kHz.
        mode: ``"speech"`` (VAD, 21 bands up to 8 kHz, lattice mapper) or ``"audio"``
            (32 bands, SVR mapper; meant for music and general audio).
    """

    higher_is_better = True
    plot_lower_bound = 1.0
    plot_upper_bound = 5.0

    def __init__(
        self, sample_rate: int, mode: Literal["speech", "audio"] = "speech", **kwargs
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("speech", "audio"):
            raise ValueError(f"mode must be 'speech' or 'audio', not {mode!r}")
        self.sample_rate = int(sample_rate)
        self.mode = mode

    def score(self, reference: np.ndarray, degraded: np.ndarray) -> float | None:
        return visqol_score(reference, degraded, self.sample_rate, self.mode)
