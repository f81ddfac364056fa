"""Seeded pairs for the codec-LM tasks: the degraded input a task conditions on, per sample.

Speech enhancement, target-speaker extraction, dereverberation, TTS/VC prompts and speech
editing learn from ``(condition, clean)`` pairs that corpora rarely hold; they are made
here from clean speech. Every draw comes from :func:`draw_rng`, a generator seeded by
``(seed, sample key, purpose)`` alone, so a sample gets the same pair whatever the worker
count or the order samples are processed in.

What each pair is:

- **noisy** (``se``): clean + noise at an SNR drawn uniformly in ``snr`` dB (power over the
  whole clip). The noise is a crop of a file from a noise folder or audio shards
  (:class:`NoiseBank`), or one of the built-in kinds: ``white``, ``pink`` (1/f power,
  shaped in the frequency domain), ``babble`` (the sum of 3 to 6 utterances of other
  speakers of the same split, each at a random level within 6 dB; in a split of one
  speaker, another of the kinds instead).
- **mixture** (``tse``): clean + one utterance of another speaker at a
  signal-to-interference ratio drawn in ``sir`` dB; with a **prompt** of the target speaker.
- **reverberant** (``dereverb``): clean convolved with a synthetic room impulse response
  (:func:`synthetic_rir`): a unit direct path, then after a 1-10 ms pre-delay a tail of
  Gaussian noise under an exponential envelope that falls by 60 dB in RT60 seconds
  (Polack's statistical model of diffuse reverberation), RT60 drawn in ``rt60`` and the
  direct-to-reverberant energy ratio in ``drr`` dB. The direct path sits at lag 0, so the
  reverberant and the dry signal are time-aligned; the tail past the clip is cut.
- **prompt** (``tts``, ``vc``, ``tse``, ``svs``): ``prompt_seconds`` of another utterance of
  the same speaker (a random crop when it is longer), drawn through a
  :class:`~lit_codec.data.shard_catalog.SpeakerIndex`.
- **masked span** (``speech_edit``): a span of ``mask_fraction`` (drawn) of the frames at a
  random place; its codes become -1 (the template's ``masked: true`` turns them into
  ``<mask>``).

A mixture whose peak would pass 0.999 is scaled down as a whole (its ``gain_db`` is recorded);
the clean target is never changed.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lit_codec.data.shard_catalog import DrawError, ShardCatalog, SpeakerIndex

__all__ = [
    "NOISE_KINDS",
    "DrawError",
    "NoiseBank",
    "PairMaker",
    "PairSettings",
    "draw_rng",
    "fit_length",
    "mask_span",
    "masked_codes",
    "mix_at_snr",
    "reverberate",
    "synthetic_noise",
    "synthetic_rir",
]

NOISE_KINDS = ("white", "pink", "babble")
PEAK = 0.999
_EPS = 1e-10


def draw_rng(seed: int, key: str, purpose: str) -> np.random.Generator:
    """The generator of one draw: a pure function of ``(seed, key, purpose)``."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}\0{purpose}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


@dataclass(frozen=True)
class PairSettings:
    """How pairs are drawn.

    Args:
        seed: the seed every draw derives from (with the sample key).
        snr: ``(low, high)`` dB of noisy speech.
        sir: ``(low, high)`` dB of target over interferer in a mixture.
        rt60: ``(low, high)`` seconds of the synthetic rooms.
        drr: ``(low, high)`` dB direct-to-reverberant ratio.
        prompt_seconds: the length of a prompt.
        mask_fraction: ``(low, high)`` share of the frames masked for speech editing.
        noise_kinds: built-in noises used when no noise bank is given; with a bank, noise
            comes from the bank.
        babble_talkers: ``(low, high)`` talkers in babble, both included.
    """

    seed: int = 0
    snr: tuple[float, float] = (0.0, 20.0)
    sir: tuple[float, float] = (-5.0, 5.0)
    rt60: tuple[float, float] = (0.2, 1.0)
    drr: tuple[float, float] = (0.0, 10.0)
    prompt_seconds: float = 3.0
    mask_fraction: tuple[float, float] = (0.1, 0.5)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    babble_talkers: tuple[int, int] = (3, 6)

    def __post_init__(self) -> None:
        for name in ("snr", "sir", "rt60", "drr", "mask_fraction", "babble_talkers"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"{name}: low {low} > high {high}")
        if not (0 < self.rt60[0] and 0 < self.mask_fraction[0] and self.mask_fraction[1] <= 1):
            raise ValueError("rt60 must be positive and mask_fraction within (0, 1]")
        unknown = sorted(set(self.noise_kinds) - set(NOISE_KINDS))
        if unknown or not self.noise_kinds:
            raise ValueError(f"noise kinds must be some of {NOISE_KINDS}, got {self.noise_kinds}")
        if not self.prompt_seconds > 0 or self.babble_talkers[0] < 1:
            raise ValueError("prompt_seconds must be positive and babble needs a talker")


# --------------------------------------------------------------------------- signals
def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A draw in ``[low, high]`` (``low`` itself when they are equal)."""
    low, high = bounds
    return float(low) if low == high else float(rng.uniform(low, high))


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64))) if len(x) else 0.0


def fit_length(x: np.ndarray, n: int, rng: np.random.Generator, tile: bool = True) -> np.ndarray:
    """``n`` samples of ``x``: a random crop when longer; when shorter, ``x`` repeated from a
    random phase (``tile``) or placed at a random offset in silence."""
    if len(x) >= n:
        start = int(rng.integers(len(x) - n + 1))
        return x[start : start + n]
    out = np.zeros(n, dtype=np.float32)
    if len(x) == 0:
        return out
    if tile:
        start = int(rng.integers(len(x)))
        reps = -(-(n + start) // len(x))
        return np.tile(x, reps)[start : start + n].astype(np.float32, copy=False)
    offset = int(rng.integers(n - len(x) + 1))
    out[offset : offset + len(x)] = x
    return out


def mix_at_snr(clean: np.ndarray, other: np.ndarray, snr_db: float) -> tuple[np.ndarray, float]:
    """``clean + g * other`` with ``g`` setting ``clean``'s power over ``other``'s to ``snr_db``,
    scaled down as a whole if its peak passes :data:`PEAK`.

    Returns:
        the mixture ``(T,)`` float32 and the gain in dB applied to it (0 or negative).
    """
    g = math.sqrt(power(clean) / max(power(other), _EPS) / 10 ** (snr_db / 10))
    mixture = clean.astype(np.float64) + g * other  # (T,)
    return _limit(mixture)


def _limit(x: np.ndarray) -> tuple[np.ndarray, float]:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > PEAK:
        return (x * (PEAK / peak)).astype(np.float32), 20 * math.log10(PEAK / peak)
    return x.astype(np.float32), 0.0


def synthetic_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` samples of unit-power ``white`` or ``pink`` (1/f power) Gaussian noise."""
    white = rng.standard_normal(n)
    if kind == "white":
        noise = white
    elif kind == "pink":
        spectrum = np.fft.rfft(white)  # (n // 2 + 1,)
        f = np.arange(len(spectrum), dtype=np.float64)
        f[0] = 1.0  # no infinite DC
        noise = np.fft.irfft(spectrum / np.sqrt(f), n)
    else:
        raise ValueError(f"unknown synthetic noise {kind!r} (white, pink)")
    return (noise / math.sqrt(max(power(noise), _EPS))).astype(np.float32)


def synthetic_rir(
    sample_rate: int, rt60: float, drr_db: float, rng: np.random.Generator
) -> np.ndarray:
    """A room impulse response of Polack's model (see the module docstring).

    Args:
        sample_rate: its rate.
        rt60: seconds for the tail to fall by 60 dB.
        drr_db: direct-path energy over tail energy.
        rng: the draws of the pre-delay and the tail.

    Returns:
        ``(L,)`` float32 with ``h[0] = 1`` (the direct path), ``L`` about ``1.2 * rt60``.
    """
    delay = int(rng.integers(int(0.001 * sample_rate), int(0.010 * sample_rate) + 1))
    length = max(delay + 2, int(math.ceil(1.2 * rt60 * sample_rate)))
    t = np.arange(length - delay) / sample_rate
    tail = rng.standard_normal(length - delay) * np.exp(-3 * math.log(10) * t / rt60)
    tail *= math.sqrt(10 ** (-drr_db / 10) / max(float(np.sum(tail**2)), _EPS))
    h = np.zeros(length)
    h[0] = 1.0
    h[delay:] = tail
    return h.astype(np.float32)


def reverberate(dry: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``dry * rir``, cut to ``len(dry)`` (the direct path at lag 0 keeps them aligned)."""
    from scipy.signal import fftconvolve

    return fftconvolve(dry.astype(np.float64), rir.astype(np.float64))[: len(dry)]


def mask_span(
    frames: int, fraction: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int]:
    """``(start, stop)`` of a span of a drawn share of ``frames`` (at least one frame)."""
    if frames <= 0:
        return 0, 0
    n = min(frames, max(1, round(uniform(rng, fraction) * frames)))
    start = int(rng.integers(frames - n + 1))
    return start, start + n


def masked_codes(codes: np.ndarray, span: tuple[int, int]) -> np.ndarray:
    """A copy of ``(frames, n_q)`` codes with the frames of ``span`` set to -1."""
    out = codes.copy()
    out[span[0] : span[1]] = -1
    return out


# --------------------------------------------------------------------------- noise bank
class NoiseBank:
    """Noise recordings, read one at a time and kept in a small per-process cache.

    Args:
        catalog: audio shards (:class:`ShardCatalog`) or None.
        files: audio file paths (when not shards), sorted.
        sample_rate: the rate noise is returned at (resampled with soxr).
        cache_samples: how many samples of decoded noise to keep per process.
    """

    def __init__(
        self,
        sample_rate: int,
        catalog: ShardCatalog | None = None,
        files: list[str] | None = None,
        cache_samples: int = 1 << 25,
    ):
        self.sample_rate = int(sample_rate)
        self.catalog = catalog
        self.files = list(files or [])
        self.cache_samples = cache_samples
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    @classmethod
    def from_path(cls, path: str | os.PathLike, sample_rate: int) -> NoiseBank:
        """A folder of audio files (searched recursively) or an audio-shard directory.

        Raises:
            FileNotFoundError: ``path`` does not exist or holds no audio.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"noise folder {path} does not exist")
        if (path / "index.json").is_file():
            bank = cls(sample_rate, catalog=ShardCatalog.build(path))
        else:
            from lit_codec.data.corpus import discover

            bank = cls(sample_rate, files=[i.path for i in discover([path], "folder").inputs])
        if len(bank) == 0:
            raise FileNotFoundError(f"noise folder {path} holds no audio")
        return bank

    def __len__(self) -> int:
        return len(self.catalog) if self.catalog is not None else len(self.files)

    def name(self, i: int) -> str:
        return self.catalog.entries[i].key if self.catalog is not None else self.files[i]

    def fingerprint(self) -> str:
        """Names, sizes and times of the recordings: changes when the bank does."""
        h = hashlib.sha256()
        if self.catalog is not None:
            for path in self.catalog.shards:
                st = os.stat(path)
                h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        for path in self.files:
            st = os.stat(path)
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]

    def read(self, i: int) -> np.ndarray:
        """Recording ``i``, mono ``(T,)`` float32 at :attr:`sample_rate`.

        Raises:
            ValueError: it cannot be decoded.
        """
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        from lit_codec.data.audio_io import AudioError, read_audio, resample, to_mono

        try:
            if self.catalog is not None:
                audio, rate = self.catalog.read_audio(i)
            else:
                decoded = read_audio(self.files[i], use_ffmpeg=False)
                audio, rate = to_mono(decoded.samples), decoded.sample_rate
        except AudioError as err:
            raise ValueError(str(err)) from err
        audio = resample(np.ascontiguousarray(audio, dtype=np.float32), rate, self.sample_rate)
        self._cache[i] = audio
        while (
            sum(len(a) for a in self._cache.values()) > self.cache_samples and len(self._cache) > 1
        ):
            self._cache.popitem(last=False)
        return audio


# --------------------------------------------------------------------------- pairs
class PairMaker:
    """The degraded inputs and prompts of samples of one split.

    Args:
        settings: the draws' ranges and seed.
        sample_rate: the audio rate.
        speakers: the split's speaker index.
        read_audio: catalog id -> ``(T,)`` float32 audio at ``sample_rate``.
        key_of: catalog id -> sample key (the draws are seeded by keys).
        noise: recordings to draw noise from; None: the built-in ``noise_kinds``.
    """

    def __init__(
        self,
        settings: PairSettings,
        sample_rate: int,
        speakers: SpeakerIndex,
        read_audio: Callable[[int], np.ndarray],
        key_of: Callable[[int], str],
        noise: NoiseBank | None = None,
    ):
        self.s = settings
        self.sample_rate = sample_rate
        self.speakers = speakers
        self.read_audio = read_audio
        self.key_of = key_of
        self.noise = noise

    def _rng(self, i: int, purpose: str) -> np.random.Generator:
        return draw_rng(self.s.seed, self.key_of(i), purpose)

    def noisy(self, i: int, clean: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Sample ``i``'s clean audio with noise at a drawn SNR; and what was drawn."""
        rng = self._rng(i, "noisy")
        snr = uniform(rng, self.s.snr)
        n = len(clean)
        if self.noise is not None:
            j = int(rng.integers(len(self.noise)))
            noise = fit_length(self.noise.read(j), n, rng)
            info: dict[str, Any] = {"kind": "recording", "noise": self.noise.name(j)}
        else:
            kinds = self.s.noise_kinds
            kind = kinds[int(rng.integers(len(kinds)))]
            info = {"kind": kind}
            if kind == "babble":
                try:
                    noise, keys = self._babble(i, n, rng)
                    info["talkers"] = keys
                except DrawError as err:  # a split of one speaker: another kind, if any
                    kinds = tuple(k for k in kinds if k != "babble")
                    if not kinds:
                        raise
                    kind = kinds[int(rng.integers(len(kinds)))]
                    info = {"kind": kind, "instead_of": f"babble: {err}"}
            if kind != "babble":
                noise = synthetic_noise(kind, n, rng)
        noisy, gain = mix_at_snr(clean, noise, snr)
        return noisy, {**info, "snr_db": round(snr, 3), "gain_db": round(gain, 3)}

    def _babble(self, i: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
        low, high = self.s.babble_talkers
        talkers = int(rng.integers(low, high + 1))
        total = np.zeros(n, dtype=np.float64)
        picked: list[int] = []
        for _ in range(talkers):
            j = self.speakers.other_speaker(i, rng, exclude=picked)
            picked.append(j)
            voice = fit_length(self.read_audio(j), n, rng)
            level = 10 ** (uniform(rng, (-6.0, 0.0)) / 20)
            total += level * voice / math.sqrt(max(power(voice), _EPS))
        return total.astype(np.float32), [self.key_of(j) for j in picked]

    def mixture(self, i: int, clean: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Sample ``i`` mixed with an utterance of another speaker at a drawn SIR."""
        rng = self._rng(i, "mixture")
        sir = uniform(rng, self.s.sir)
        j = self.speakers.other_speaker(i, rng)
        interferer = fit_length(self.read_audio(j), len(clean), rng, tile=False)
        mixture, gain = mix_at_snr(clean, interferer, sir)
        return mixture, {
            "interferer": self.key_of(j),
            "sir_db": round(sir, 3),
            "gain_db": round(gain, 3),
        }

    def reverberant(self, i: int, clean: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Sample ``i`` in a synthetic room of drawn RT60 and DRR."""
        rng = self._rng(i, "reverberant")
        rt60, drr = uniform(rng, self.s.rt60), uniform(rng, self.s.drr)
        wet, gain = _limit(reverberate(clean, synthetic_rir(self.sample_rate, rt60, drr, rng)))
        return wet, {"rt60": round(rt60, 4), "drr_db": round(drr, 3), "gain_db": round(gain, 3)}

    def prompt(self, i: int) -> tuple[np.ndarray, dict[str, Any]]:
        """``prompt_seconds`` of another utterance of sample ``i``'s speaker."""
        rng = self._rng(i, "prompt")
        j = self.speakers.same_speaker(i, rng)
        audio = self.read_audio(j)
        n = min(len(audio), int(round(self.s.prompt_seconds * self.sample_rate)))
        start = int(rng.integers(len(audio) - n + 1))
        return audio[start : start + n], {
            "key": self.key_of(j),
            "offset": round(start / self.sample_rate, 6),
            "seconds": round(n / self.sample_rate, 6),
        }

    def mask(self, i: int, frames: int) -> tuple[tuple[int, int], dict[str, Any]]:
        """The span of sample ``i``'s frames to mask."""
        span = mask_span(frames, self.s.mask_fraction, self._rng(i, "mask"))
        return span, {"start": span[0], "stop": span[1]}
