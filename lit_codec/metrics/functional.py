"""Audio quality metrics as plain functions: numpy arrays in, a float (or ``None``) out.

Every function takes ``reference`` and ``degraded`` mono signals ``(T,)`` at one
``sample_rate`` and returns a float, or ``None`` when the pair cannot be scored (silent
reference, clip too short, no utterance found, NaN/inf samples): never NaN.

- PESQ (ITU-T P.862.2 wideband, P.862 narrowband) through the ``pesq`` package, the
  implementation torchmetrics and most codec papers use; resampled with soxr when needed.
- STOI and extended STOI (Taal et al. 2011, Jensen & Taal 2016) through ``pystoi``.
- SI-SDR (Le Roux et al., "SDR — half-baked or well done?", ICASSP 2019), zero-mean.
- Mel distance: descript-audio-codec's multi-scale mel L1 (linear and log10 magnitudes,
  seven window sizes, summed), :class:`~lit_codec.nn.losses.MultiScaleMelLoss` with its
  defaults — the ``rec/mel`` term of training.
- Log-spectral distance (Kuleshov et al. 2017, the audio super-resolution metric).
- ViSQOL v3 through ``visqol-python`` (a pure Python port of google/visqol 3.3.3), speech
  mode with the lattice mapper (the C++ default) and audio mode (SVR); see :func:`visqol_score`.

:func:`align` removes a constant delay first when the pair needs it (a codec that adds
latency, Opus, AAC); the metric functions themselves score the arrays as given, so that
their values equal direct calls of ``pesq.pesq`` and ``pystoi.stoi`` on the same arrays.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from visqol import VisqolApi

__all__ = [
    "HIGHER_IS_BETTER",
    "METRICS",
    "align",
    "band_level",
    "better_arrow",
    "check_metric_names",
    "is_silent",
    "log_spectral_distance",
    "mel_distance",
    "pesq_score",
    "score_pair",
    "si_sdr",
    "stoi_score",
    "visqol_score",
]

# A reference whose peak stays below this (-100 dBFS, under one 16-bit step) is silence.
SILENCE_PEAK = 1e-5
PESQ_MIN_SECONDS = 0.25  # the pesq package refuses shorter buffers


def _mono(x: Any, name: str) -> np.ndarray:
    """``x`` as a 1-D float array; float32/float64 arrays are passed through unchanged."""
    a = np.asarray(x)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)  # (T,)
    if a.ndim != 1:
        raise ValueError(f"{name} must be mono (T,), got shape {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return a


def _finite(*signals: np.ndarray) -> bool:
    return all(bool(np.isfinite(s).all()) for s in signals)


def is_silent(x: np.ndarray) -> bool:
    """True when ``x`` is empty or its peak is below :data:`SILENCE_PEAK`."""
    return x.size == 0 or float(np.max(np.abs(x))) < SILENCE_PEAK


def _same_length(reference: np.ndarray, degraded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(reference), len(degraded))
    return reference[:n], degraded[:n]


def _resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    if orig_rate == new_rate:
        return x
    import soxr

    return soxr.resample(x, orig_rate, new_rate, quality="HQ")


# --------------------------------------------------------------------------- alignment
def align(reference: Any, degraded: Any, max_delay: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Remove a constant delay between two signals and trim them to the same length.

    The delay is the lag in ``[-max_delay, max_delay]`` that maximises the cross-correlation
    (computed with FFTs). A positive delay means ``degraded`` lags ``reference``: its first
    ``delay`` samples are dropped; a negative one drops the reference's first samples.

    Args:
        reference: the reference signal ``(T,)``.
        degraded: the signal to align to it ``(T',)``.
        max_delay: largest delay searched, in samples (0: only trim to the same length).

    Returns:
        ``(reference, degraded, delay)``: both ``(N,)`` with ``N`` the overlap, and the delay
        in samples.
    """
    ref = _mono(reference, "reference")
    deg = _mono(degraded, "degraded")
    delay = 0
    if max_delay > 0 and not is_silent(ref) and not is_silent(deg) and _finite(ref, deg):
        import scipy.fft

        n = scipy.fft.next_fast_len(len(ref) + len(deg) - 1, real=True)
        spectrum = scipy.fft.rfft(deg.astype(np.float64), n) * np.conj(
            scipy.fft.rfft(ref.astype(np.float64), n)
        )  # (n // 2 + 1,)
        corr = scipy.fft.irfft(spectrum, n)  # (n,): corr[k] = sum_t deg[t + k] * ref[t]
        lags = np.arange(-min(max_delay, len(ref) - 1), min(max_delay, len(deg) - 1) + 1)
        delay = int(lags[np.argmax(corr[lags % n])])
    if delay > 0:
        deg = deg[delay:]
    elif delay < 0:
        ref = ref[-delay:]
    ref, deg = _same_length(ref, deg)
    return ref, deg, delay


# --------------------------------------------------------------------------- PESQ / STOI
def pesq_score(
    reference: Any, degraded: Any, sample_rate: int, mode: Literal["wb", "nb"] = "wb"
) -> float | None:
    """PESQ MOS-LQO of ``degraded`` against ``reference`` (``pesq.pesq``).

    Wideband works at 16 kHz: other rates are resampled with soxr. Narrowband scores 8 and
    16 kHz audio as given (P.862 defines both) and resamples other rates to 8 kHz.

    Args:
        reference: clean signal ``(T,)``.
        degraded: signal to score ``(T',)`` (time-aligned; PESQ tolerates small drifts).
        sample_rate: rate of both signals in Hz.
        mode: ``"wb"`` (P.862.2, range about 1.04–4.64) or ``"nb"`` (P.862 MOS-LQO).

    Returns:
        The score, or ``None`` for a silent reference, a clip shorter than 0.25 s, a pair in
        which PESQ finds no utterance, or NaN/inf samples.
    """
    import pesq

    if mode not in ("wb", "nb"):
        raise ValueError(f"mode must be 'wb' or 'nb', not {mode!r}")
    ref = _mono(reference, "reference")
    deg = _mono(degraded, "degraded")
    if mode == "wb":
        rate = 16000
    else:
        rate = sample_rate if sample_rate in (8000, 16000) else 8000
    if not _finite(ref, deg) or is_silent(ref):
        return None
    ref, deg = _resample(ref, sample_rate, rate), _resample(deg, sample_rate, rate)
    if min(len(ref), len(deg)) < PESQ_MIN_SECONDS * rate:
        return None
    try:
        return float(pesq.pesq(rate, ref, deg, mode))
    except (pesq.PesqError, ValueError):  # no utterance, too short; NaN inside (silent degraded)
        return None


def stoi_score(
    reference: Any, degraded: Any, sample_rate: int, extended: bool = False
) -> float | None:
    """STOI (or extended STOI) of ``degraded`` against ``reference`` (``pystoi.stoi``).

    Both signals are trimmed to the shorter length (pystoi needs equal lengths); pystoi
    resamples to 10 kHz itself.

    Args:
        reference: clean signal ``(T,)``.
        degraded: time-aligned signal to score ``(T',)``.
        sample_rate: rate of both signals in Hz.
        extended: extended STOI (Jensen & Taal 2016) instead of STOI.

    Returns:
        The score (STOI in [0, 1]), or ``None`` for a silent reference, NaN/inf samples, or
        fewer than 30 speech frames (about 0.4 s) left after pystoi drops silent frames.
    """
    from pystoi import stoi

    ref, deg = _same_length(_mono(reference, "reference"), _mono(degraded, "degraded"))
    if not _finite(ref, deg) or is_silent(ref):
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(stoi(ref, deg, sample_rate, extended=extended))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return None  # pystoi returns 1e-5 in that case
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- signal metrics
def _require_finite(reference: np.ndarray, degraded: np.ndarray) -> None:
    if reference.size == 0 or degraded.size == 0:
        raise ValueError("empty signal")
    if not _finite(reference, degraded):
        raise ValueError("signals hold NaN or infinite samples")


def si_sdr(reference: Any, degraded: Any) -> float:
    """Scale-invariant signal-to-distortion ratio in dB (Le Roux et al. 2019).

    With both signals trimmed to the shorter length and their means removed::

        alpha = <d, r> / ||r||^2,   SI-SDR = 10 log10(||alpha r||^2 / ||d - alpha r||^2)

    computed in float64 with ``eps`` (machine epsilon) added to the energies, so identical
    signals give a large finite value (about 150–300 dB) and silence gives 0 dB.

    Raises:
        ValueError: an empty signal or NaN/inf samples.
    """
    ref, deg = _same_length(_mono(reference, "reference"), _mono(degraded, "degraded"))
    _require_finite(ref, deg)
    eps = np.finfo(np.float64).eps
    r = ref.astype(np.float64) - ref.mean(dtype=np.float64)
    d = deg.astype(np.float64) - deg.mean(dtype=np.float64)
    alpha = (np.dot(d, r) + eps) / (np.dot(r, r) + eps)
    target = alpha * r
    noise = d - target
    return float(10.0 * np.log10((np.dot(target, target) + eps) / (np.dot(noise, noise) + eps)))


@lru_cache(maxsize=8)
def _mel_loss(sample_rate: int):
    from lit_codec.nn.losses import MultiScaleMelLoss

    return MultiScaleMelLoss(sample_rate).eval()


def mel_distance(reference: Any, degraded: Any, sample_rate: int) -> float:
    """Multi-scale mel distance (descript-audio-codec's mel loss; 0 for identical signals).

    The sum over window sizes 32…2048 of the L1 between mel magnitudes plus the L1 between
    their log10 (floored at 1e-5); see :class:`~lit_codec.nn.losses.MultiScaleMelLoss`.
    Signals are trimmed to the shorter length.

    Raises:
        ValueError: an empty signal or NaN/inf samples.
    """
    import torch

    ref, deg = _same_length(_mono(reference, "reference"), _mono(degraded, "degraded"))
    _require_finite(ref, deg)
    with torch.inference_mode():
        r = torch.as_tensor(ref, dtype=torch.float32)[None, None]  # (1, 1, T)
        d = torch.as_tensor(deg, dtype=torch.float32)[None, None]  # (1, 1, T)
        return float(_mel_loss(int(sample_rate))(d, r))


def _power_spectra(ref: np.ndarray, deg: np.ndarray, n_fft: int, hop_length: int):
    """Float64 STFT power of both signals (Hann window ``n_fft``): ``(2, F, frames)``."""
    import torch

    from lit_codec.nn.spectral import stft_magnitude

    with torch.inference_mode():
        both = torch.as_tensor(np.stack([ref, deg]), dtype=torch.float32)  # (2, T)
        return stft_magnitude(both, n_fft, hop_length).double().square()  # (2, F, frames)


def log_spectral_distance(
    reference: Any, degraded: Any, sample_rate: int, n_fft: int = 2048, hop_length: int = 512
) -> float:
    """Log-spectral distance (Kuleshov et al. 2017), in log10 units (bels); 0 when identical.

    ``mean_t sqrt(mean_f (log10 P_ref(t, f) - log10 P_deg(t, f))^2)`` over power spectra
    ``P = |STFT|^2 + 1e-10`` (Hann window ``n_fft``, hop ``hop_length``). Signals are trimmed
    to the shorter length. ``sample_rate`` is accepted for a uniform signature.

    Raises:
        ValueError: an empty signal or NaN/inf samples.
    """
    del sample_rate
    ref, deg = _same_length(_mono(reference, "reference"), _mono(degraded, "degraded"))
    _require_finite(ref, deg)
    power = _power_spectra(ref, deg, n_fft, hop_length) + 1e-10  # (2, F, frames)
    diff = power[0].log10() - power[1].log10()  # (F, frames)
    return float(diff.square().mean(dim=0).sqrt().mean())


def band_level(
    reference: Any,
    degraded: Any,
    sample_rate: int,
    low: float,
    high: float,
    n_fft: int = 1024,
    hop_length: int = 256,
    dynamic_range: float = 40.0,
) -> float | None:
    """How loud ``degraded`` is against ``reference`` in the band ``[low, high)`` Hz, in dB:
    0 at the right level, negative when the band comes out too quiet (muffled highs),
    positive when too loud.

    ``10 log10(sum P_deg / sum P_ref)`` of the band's STFT power (Hann window ``n_fft``, hop
    ``hop_length``) over the frames where the reference is within ``dynamic_range`` dB of
    its loudest frame (pauses do not count). Signals are trimmed to the shorter length.

    Returns:
        the level difference, or None where the band is not below the Nyquist frequency or
        the reference has no energy in it.
    """
    import torch

    if high > sample_rate / 2 + 1e-6:
        return None
    ref, deg = _same_length(_mono(reference, "reference"), _mono(degraded, "degraded"))
    _require_finite(ref, deg)
    if len(ref) < n_fft:
        return None
    power = _power_spectra(ref, deg, n_fft, hop_length)  # (2, F, frames)
    freqs = np.arange(power.shape[1]) * sample_rate / n_fft
    band = torch.as_tensor((freqs >= low) & (freqs < high))
    frame_energy = power[0].sum(dim=0)  # (frames,)
    level = 10 * torch.log10(frame_energy.clamp_min(1e-20))
    active = level > level.max() - dynamic_range
    ref_band = float(power[0][band][:, active].sum())
    deg_band = float(power[1][band][:, active].sum())
    if ref_band <= 1e-12:
        return None
    return 10 * math.log10(max(deg_band, 1e-20) / ref_band)


def _octave(low: float) -> Callable[[Any, Any, int], float | None]:
    def level(reference: Any, degraded: Any, sample_rate: int) -> float | None:
        return band_level(reference, degraded, sample_rate, low, 2 * low)

    level.__doc__ = f"band_level of the octave {low:g}-{2 * low:g} Hz."
    return level


# --------------------------------------------------------------------------- ViSQOL
_VISQOL: dict[str, VisqolApi] = {}


def _visqol_api(mode: str) -> VisqolApi:
    """One ViSQOL API object per mode and process (building one loads its models)."""
    api = _VISQOL.get(mode)
    if api is None:
        from visqol import VisqolApi
        from visqol.quality_mapper import has_lattice_runtime

        if mode == "speech" and not has_lattice_runtime():
            raise ImportError(
                "ViSQOL speech mode needs the lattice mapper: pip install 'visqol-python[lattice]'"
            )
        # it warns on every call for rates above 16 kHz in speech mode, which we do on purpose
        logging.getLogger("visqol.visqol_manager").setLevel(logging.ERROR)
        api = VisqolApi()
        with native_stderr_without(TFLITE_DELEGATE_NOTICE):
            api.create(mode=mode, use_lattice_model=True if mode == "speech" else None)
        _VISQOL[mode] = api
    return api


# TensorFlow Lite's C++ logger writes this on creating the lattice mapper's interpreter; no
# environment variable or Python logger reaches it.
TFLITE_DELEGATE_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextmanager
def native_stderr_without(*prefixes: bytes) -> Iterator[None]:
    """Run the block with the process's standard error (file descriptor 2, which native
    libraries write to) captured, then write every captured line back to it except those
    that start with one of ``prefixes``. Without a usable descriptor 2, runs it as it is."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, AttributeError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().splitlines(keepends=True)
            kept = b"".join(line for line in lines if not line.startswith(prefixes))
            if kept:
                os.write(2, kept)


def visqol_score(
    reference: Any,
    degraded: Any,
    sample_rate: int,
    mode: Literal["speech", "audio"] = "speech",
) -> float | None:
    """ViSQOL v3 MOS-LQO (1–5) of ``degraded`` against ``reference``.

    Speech mode uses the lattice mapper, as the C++ reference does by default. It scores
    audio at 16 kHz or above at its own rate, exactly as the C++ tool (its 21 gammatone bands
    stop at 8 kHz), and resamples lower rates up to 16 kHz. Audio mode works at 48 kHz and
    resamples everything else to it with soxr. ViSQOL aligns the pair itself.

    Args:
        reference: clean signal ``(T,)`` (mix stereo to mono by averaging, as ViSQOL does).
        degraded: signal to score ``(T',)``.
        sample_rate: rate of both signals in Hz.
        mode: ``"speech"`` or ``"audio"``.

    Returns:
        The MOS-LQO, or ``None`` for a silent reference, NaN/inf samples, or a pair ViSQOL
        cannot score (too short for one patch, silent degraded signal).
    """
    if mode not in ("speech", "audio"):
        raise ValueError(f"mode must be 'speech' or 'audio', not {mode!r}")
    ref = _mono(reference, "reference")
    deg = _mono(degraded, "degraded")
    if not _finite(ref, deg) or is_silent(ref) or deg.size == 0:
        return None
    api = _visqol_api(mode)
    rate = 48000 if mode == "audio" else max(16000, int(sample_rate))
    ref = _resample(ref.astype(np.float64), sample_rate, rate)
    deg = _resample(deg.astype(np.float64), sample_rate, rate)
    try:
        with np.errstate(all="ignore"):
            value = float(api.measure_from_arrays(ref, deg, rate).moslqo)
    except (ValueError, IndexError, ZeroDivisionError, FloatingPointError, RuntimeError):
        return None  # too short for a patch, no voice activity, ...
    return value if math.isfinite(value) else None


# --------------------------------------------------------------------------- registry
def _sisdr(reference: Any, degraded: Any, sample_rate: int) -> float:
    del sample_rate
    return si_sdr(reference, degraded)


METRICS: dict[str, Callable[[Any, Any, int], float | None]] = {
    "pesq": partial(pesq_score, mode="wb"),
    "pesq_nb": partial(pesq_score, mode="nb"),
    "stoi": partial(stoi_score, extended=False),
    "estoi": partial(stoi_score, extended=True),
    "sisdr": _sisdr,
    "mel": mel_distance,
    "lsd": log_spectral_distance,
    "visqol_speech": partial(visqol_score, mode="speech"),
    "visqol_audio": partial(visqol_score, mode="audio"),
    "level_1k": _octave(1000.0),
    "level_2k": _octave(2000.0),
    "level_4k": _octave(4000.0),
    "level_8k": _octave(8000.0),
}
"""Every metric by name: ``fn(reference, degraded, sample_rate) -> float | None``.
``level_<f>k`` is :func:`band_level` of the octave from ``f`` kHz (None past Nyquist)."""

HIGHER_IS_BETTER: dict[str, bool | None] = {
    "pesq": True,
    "pesq_nb": True,
    "stoi": True,
    "estoi": True,
    "sisdr": True,
    "mel": False,
    "lsd": False,
    "visqol_speech": True,
    "visqol_audio": True,
    "level_1k": None,
    "level_2k": None,
    "level_4k": None,
    "level_8k": None,
}
"""Whether a larger value is better (True), worse (False), or 0 is best (None: levels)."""


def better_arrow(metric: str) -> str:
    """``↑`` (higher is better), ``↓`` (lower is better) or ``→0`` (0 is best)."""
    better = HIGHER_IS_BETTER[metric]
    return "→0" if better is None else "↑" if better else "↓"


def check_metric_names(metrics: Sequence[str]) -> tuple[str, ...]:
    """The names, checked against :data:`METRICS` (a ``ValueError`` naming the valid ones)."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(
            f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}"
        )
    return tuple(metrics)


def score_pair(
    reference: Any,
    degraded: Any,
    sample_rate: int,
    metrics: Sequence[str],
    max_delay: int = 0,
) -> dict[str, float | None]:
    """Score one pair with the named metrics of :data:`METRICS`.

    Args:
        reference: clean signal ``(T,)``.
        degraded: signal to score ``(T',)``.
        sample_rate: rate of both signals in Hz.
        metrics: names from :data:`METRICS`.
        max_delay: when > 0, :func:`align` the pair first, searching delays up to this many
            samples; 0 scores the arrays as given.

    Returns:
        ``{name: score}``; ``None`` where the pair cannot be scored (never NaN).
    """
    names = check_metric_names(metrics)
    ref = _mono(reference, "reference")
    deg = _mono(degraded, "degraded")
    if max_delay > 0:
        ref, deg, _ = align(ref, deg, max_delay)
    if ref.size == 0 or deg.size == 0 or not _finite(ref, deg):
        return dict.fromkeys(names)
    out: dict[str, float | None] = {}
    for name in names:
        value = METRICS[name](ref, deg, sample_rate)
        out[name] = value if value is not None and math.isfinite(value) else None
    return out
