"""Frame features of audio for semantic tokens: MFCC (built in) and SSL hidden states.

Semantic tokens are k-means clusters of frame features (HuBERT, Hsu et al. 2021): its
first iteration clusters MFCCs, later ones the hidden states of a HuBERT layer. Both are
here behind one interface, :class:`AudioFeatures`: ``features(audio, sample_rate)`` ->
``(frames, dim)`` float32 at ``frame_rate`` frames per second.

- :class:`MFCCFeatures`: 13 MFCCs + deltas + delta-deltas (39-d), computed with
  ``torch.stft`` and a mel filterbank: Kaldi's recipe as HuBERT's first iteration used it,
  at any hop (320 samples at 16 kHz = 50 frames/s, the rate of the codec frames).
- :class:`SSLFeatures`: the hidden states of one layer of a HuBERT / wav2vec2 / WavLM
  checkpoint loaded by ``transformers`` from a local folder (nothing is downloaded).

Audio is read with soundfile and resampled with soxr (:func:`load_audio`).
"""

from __future__ import annotations

import abc
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr
import torch

from lit_codec.tokenizers.base import require, sha256_file

__all__ = ["AudioFeatures", "MFCCFeatures", "SSLFeatures", "load_audio"]


def load_audio(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """A file as mono float32 at ``sample_rate``.

    Args:
        path: any file libsndfile reads.
        sample_rate: the rate to resample to (soxr, high quality).

    Returns:
        ``(T,)`` float32.
    """
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"cannot read audio file {str(path)!r}: {err}") from err
    return _resample(audio.mean(axis=1), rate, sample_rate)


def _resample(audio: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    if rate != sample_rate:
        audio = soxr.resample(audio, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(audio, dtype=np.float32)


class AudioFeatures(abc.ABC):
    """Audio -> ``(frames, dim)`` float32 features at :attr:`frame_rate`.

    Subclasses set :attr:`sample_rate` and implement :meth:`compute`, :attr:`dim`,
    :attr:`frame_rate` and :meth:`metadata`.
    """

    sample_rate: int

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Width of a feature frame."""

    @property
    @abc.abstractmethod
    def frame_rate(self) -> float:
        """Frames per second."""

    @abc.abstractmethod
    def compute(self, audio: torch.Tensor) -> torch.Tensor:
        """Features of mono audio at :attr:`sample_rate`: ``(T,)`` -> ``(frames, dim)``."""

    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """JSON-able description: kind and every setting that changes the features."""

    def __call__(
        self, audio: np.ndarray | torch.Tensor, sample_rate: int | None = None
    ) -> np.ndarray:
        """Features of audio.

        Args:
            audio: ``(T,)`` mono or ``(channels, T)`` (averaged to mono).
            sample_rate: its rate; resampled when it differs from :attr:`sample_rate`.
                Default: already at :attr:`sample_rate`.

        Returns:
            ``(frames, dim)`` float32.
        """
        if isinstance(audio, torch.Tensor):
            audio = audio.detach().cpu().float().numpy()
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 2:
            audio = audio.mean(axis=0)  # (C, T) -> (T,)
        if audio.ndim != 1:
            raise ValueError(f"audio must be (T,) or (channels, T), got shape {audio.shape}")
        audio = _resample(audio, sample_rate or self.sample_rate, self.sample_rate)
        with torch.inference_mode():
            return self.compute(torch.from_numpy(audio)).float().cpu().numpy()

    def from_file(self, path: str | os.PathLike) -> np.ndarray:
        """Features of an audio file: ``(frames, dim)`` float32."""
        return self(load_audio(path, self.sample_rate))


class MFCCFeatures(AudioFeatures):
    """MFCC + deltas + delta-deltas, the features of HuBERT's first k-means iteration.

    Kaldi's recipe without dither: pre-emphasis, Hamming window, power spectrum, log of a
    triangular mel filterbank (HTK mel scale), DCT-II, cepstral lifter; then regression
    deltas over ±2 frames, twice. Frame ``i`` is centred on sample ``i * hop_length``;
    ``T`` samples give ``ceil(T / hop_length)`` frames, like a codec with that hop.

    Args:
        sample_rate: rate the features are computed at (input is resampled to it).
        hop_length: samples between frames (320 at 16 kHz = 50 frames/s).
        win_length: analysis window in samples (400 = 25 ms at 16 kHz).
        n_fft: FFT size (>= win_length).
        n_mels: mel bands (Kaldi's default, 23).
        n_mfcc: cepstral coefficients kept, c0 included.
        f_min: lowest mel band edge in Hz.
        f_max: highest mel band edge in Hz; default: Nyquist.
        deltas: append deltas and delta-deltas (``dim = 3 * n_mfcc``).
        normalize: subtract each utterance's mean and divide by its std, per dimension.
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        hop_length: int = 320,
        win_length: int = 400,
        n_fft: int = 512,
        n_mels: int = 23,
        n_mfcc: int = 13,
        f_min: float = 20.0,
        f_max: float | None = None,
        deltas: bool = True,
        normalize: bool = False,
    ):
        if n_fft < win_length:
            raise ValueError(f"n_fft ({n_fft}) must be >= win_length ({win_length})")
        if n_mfcc > n_mels:
            raise ValueError(f"n_mfcc ({n_mfcc}) must be <= n_mels ({n_mels})")
        self.sample_rate = sample_rate
        self.hop_length = hop_length
        self.win_length = win_length
        self.n_fft = n_fft
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        self.f_min = f_min
        self.f_max = f_max if f_max is not None else sample_rate / 2
        self.deltas = deltas
        self.normalize = normalize
        self.window = torch.hamming_window(win_length, periodic=False, dtype=torch.float64)
        self.mel = _mel_filterbank(n_fft, n_mels, sample_rate, f_min, self.f_max)  # (n_mels, F)
        dct = _dct_matrix(n_mels, n_mfcc)  # (n_mels, n_mfcc)
        lifter = 1 + 11.0 * torch.sin(math.pi * torch.arange(n_mfcc, dtype=torch.float64) / 22)
        self.dct = dct * lifter  # Kaldi's cepstral lifter, Q = 22

    @property
    def dim(self) -> int:
        return self.n_mfcc * (3 if self.deltas else 1)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "mfcc",
            "sample_rate": self.sample_rate,
            "hop_length": self.hop_length,
            "win_length": self.win_length,
            "n_fft": self.n_fft,
            "n_mels": self.n_mels,
            "n_mfcc": self.n_mfcc,
            "f_min": self.f_min,
            "f_max": self.f_max,
            "deltas": self.deltas,
            "normalize": self.normalize,
        }

    def compute(self, audio: torch.Tensor) -> torch.Tensor:
        """``(T,)`` mono audio -> ``(ceil(T / hop_length), dim)`` float32."""
        x = audio.double()  # (T,)
        n_frames = max(1, math.ceil(len(x) / self.hop_length))
        x = torch.cat([x[:1], x[1:] - 0.97 * x[:-1]])  # pre-emphasis
        pad_mode = "reflect" if len(x) > self.n_fft // 2 else "constant"
        spec = torch.stft(
            x,
            self.n_fft,
            self.hop_length,
            self.win_length,
            self.window,
            center=True,
            pad_mode=pad_mode,
            return_complex=True,
        )  # (F, frames)
        power = spec.abs().square()[:, :n_frames]  # (F, frames)
        if power.shape[1] < n_frames:  # audio shorter than a hop: pad with silence frames
            power = torch.nn.functional.pad(power, (0, n_frames - power.shape[1]))
        logmel = torch.log(torch.clamp(self.mel @ power, min=1e-10))  # (n_mels, frames)
        mfcc = (self.dct.T @ logmel).T  # (frames, n_mfcc)
        if self.deltas:
            d1 = _deltas(mfcc)
            mfcc = torch.cat([mfcc, d1, _deltas(d1)], dim=1)  # (frames, 3 * n_mfcc)
        if self.normalize:
            mfcc = (mfcc - mfcc.mean(0)) / mfcc.std(0, unbiased=False).clamp(min=1e-5)
        return mfcc.float()


def _hz_to_mel(hz: torch.Tensor | float) -> torch.Tensor:
    return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def _mel_filterbank(
    n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float
) -> torch.Tensor:
    """Triangular filters evenly spaced on the HTK mel scale: ``(n_mels, n_fft // 2 + 1)``."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft  # (F,)
    edges = torch.linspace(float(_hz_to_mel(f_min)), float(_hz_to_mel(f_max)), n_mels + 2)
    mel = _hz_to_mel(freqs)  # (F,)
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1)
    up = (mel[None] - left) / (centre - left)  # (n_mels, F)
    down = (right - mel[None]) / (right - centre)  # (n_mels, F)
    return torch.clamp(torch.minimum(up, down), min=0.0)


def _dct_matrix(n_mels: int, n_mfcc: int) -> torch.Tensor:
    """Orthonormal DCT-II basis: ``(n_mels, n_mfcc)``."""
    n = torch.arange(n_mels, dtype=torch.float64)[:, None]
    k = torch.arange(n_mfcc, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi / n_mels * (n + 0.5) * k) * math.sqrt(2.0 / n_mels)
    basis[:, 0] /= math.sqrt(2.0)
    return basis


def _deltas(x: torch.Tensor, window: int = 2) -> torch.Tensor:
    """Regression deltas over ``±window`` frames (edges repeated): ``(frames, d)`` -> same."""
    padded = torch.cat([x[:1].expand(window, -1), x, x[-1:].expand(window, -1)])  # (frames + 2w, d)
    n = len(x)
    num = sum(
        k * (padded[window + k : window + k + n] - padded[window - k : window - k + n])
        for k in range(1, window + 1)
    )
    return num / (2 * sum(k * k for k in range(1, window + 1)))


class SSLFeatures(AudioFeatures):
    """Hidden states of one layer of a local HuBERT / wav2vec2 / WavLM checkpoint.

    Args:
        model_dir: folder with ``config.json`` and the weights (``save_pretrained`` output or
            a ``huggingface-cli download`` of e.g. ``facebook/hubert-base-ls960``).
        layer: hidden state to return: 0 is the input of the first transformer layer,
            ``i`` the output of layer ``i`` (HuBERT-base's second iteration used 6; 9 is common).
        sample_rate: rate the model expects; default: ``sampling_rate`` of the folder's
            ``preprocessor_config.json``, else 16000.
        normalize: normalise each input to zero mean and unit variance (wav2vec2-large
            checkpoints expect it); default: ``do_normalize`` of ``preprocessor_config.json``,
            else False.
        device: where the model runs.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        layer: int = 6,
        sample_rate: int | None = None,
        normalize: bool | None = None,
        device: str = "cpu",
    ):
        path = Path(model_dir)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"SSLFeatures: no checkpoint in {str(path)!r} (config.json missing). Pass "
                f"model_dir= a local folder holding config.json and the weights of a HuBERT / "
                f"wav2vec2 model, e.g. written by save_pretrained or 'huggingface-cli download "
                f"facebook/hubert-base-ls960 --local-dir DIR'; nothing is downloaded at run time."
            )
        transformers = require("transformers", "transformers", "SSLFeatures")
        preprocessor = path / "preprocessor_config.json"
        settings = json.loads(preprocessor.read_text()) if preprocessor.is_file() else {}
        self.model_dir = path
        self.sample_rate = int(sample_rate or settings.get("sampling_rate", 16000))
        self.normalize = bool(
            settings.get("do_normalize", False) if normalize is None else normalize
        )
        self.device = torch.device(device)
        self.model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        self.model.eval().requires_grad_(False).to(self.device)
        config = self.model.config
        n_layers = int(config.num_hidden_layers)
        if not 0 <= layer <= n_layers:
            raise ValueError(f"layer must be in [0, {n_layers}] for {path.name}, got {layer}")
        self.layer = layer
        self._hop = int(np.prod(config.conv_stride))

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self._hop

    def metadata(self) -> dict[str, Any]:
        weights = sorted(self.model_dir.glob("*.safetensors")) or sorted(
            self.model_dir.glob("*.bin")
        )
        return {
            "kind": "ssl",
            "model": self.model_dir.name,
            "model_type": self.model.config.model_type,
            "layer": self.layer,
            "dim": self.dim,
            "sample_rate": self.sample_rate,
            "frame_rate": self.frame_rate,
            "normalize": self.normalize,
            "config_hash": sha256_file(self.model_dir / "config.json"),
            "weights_hash": {w.name: sha256_file(w) for w in weights},
        }

    def compute(self, audio: torch.Tensor) -> torch.Tensor:
        """``(T,)`` mono audio -> ``(frames, hidden_size)``; ``frames ≈ T / hop - 1/4``
        (the convolutional front end's valid frames: pad or cut to align with a codec)."""
        x = audio.float().to(self.device)[None]  # (1, T)
        if self.normalize:
            x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
        out = self.model(x, output_hidden_states=True)
        return out.hidden_states[self.layer][0]  # (frames, hidden_size)
