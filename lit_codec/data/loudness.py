"""Integrated loudness (ITU-R BS.1770-4) and loudness normalisation of mono audio."""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

__all__ = ["integrated_loudness", "normalize_loudness"]

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0


def _k_weighting(sample_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two biquads of the K-weighting pre-filter, designed for any rate."""
    # stage 1: high shelf (head effects), stage 2: high pass (RLB curve)
    # (the formulation of libebur128, exact at 48 kHz and valid at other rates)
    gain_db, q1, fc1 = 3.99984385397, 0.7071752369554193, 1681.9744509555319
    q2, fc2 = 0.5003270373238773, 38.13547087602444
    k = math.tan(math.pi * fc1 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh**0.4996667741545416
    a0 = 1 + k / q1 + k * k
    shelf_b = np.array([vh + vb * k / q1 + k * k, 2 * (k * k - vh), vh - vb * k / q1 + k * k]) / a0
    shelf_a = np.array([a0, 2 * (k * k - 1), 1 - k / q1 + k * k]) / a0
    k = math.tan(math.pi * fc2 / sample_rate)
    a0 = 1 + k / q2 + k * k
    hp_b = np.array([1.0, -2.0, 1.0])
    hp_a = np.array([a0, 2 * (k * k - 1), 1 - k / q2 + k * k]) / a0
    return [(shelf_b, shelf_a), (hp_b, hp_a)]


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    """Gated integrated loudness of a mono ``(T,)`` signal in LUFS (``-inf`` if silent)."""
    x = audio.astype(np.float64)
    for b, a in _k_weighting(sample_rate):
        x = lfilter(b, a, x)
    block, step = int(0.4 * sample_rate), int(0.1 * sample_rate)
    if len(x) < block:
        powers = np.array([np.mean(x**2)])
    else:
        cumsum = np.concatenate([[0.0], np.cumsum(x**2)])
        starts = np.arange(0, len(x) - block + 1, step)
        powers = (cumsum[starts + block] - cumsum[starts]) / block
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(powers)
    gated = powers[loudness > ABSOLUTE_GATE_LUFS]
    if gated.size == 0:
        return float("-inf")
    relative = -0.691 + 10 * np.log10(gated.mean()) + RELATIVE_GATE_LU
    with np.errstate(divide="ignore"):
        gated = gated[-0.691 + 10 * np.log10(gated) > relative]
    return float(-0.691 + 10 * np.log10(gated.mean()))


def normalize_loudness(
    audio: np.ndarray, sample_rate: int, target_lufs: float, max_peak: float = 0.99
) -> tuple[np.ndarray, float]:
    """Scale to ``target_lufs``, lowering the gain if the peak would pass ``max_peak``.

    Returns the scaled signal and the gain applied in dB (0 for silence).
    """
    measured = integrated_loudness(audio, sample_rate)
    if not math.isfinite(measured):
        return audio, 0.0
    gain = 10 ** ((target_lufs - measured) / 20)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak * gain > max_peak and peak > 0:
        gain = max_peak / peak
    return (audio * gain).astype(np.float32), 20 * math.log10(gain)
