"""Semantic tokenizer: audio -> one k-means cluster id per feature frame (HuBERT units).

``SemanticTokenizer(features, kmeans)`` chains an :class:`~lit_codec.tokenizers.features.AudioFeatures`
(MFCC, or SSL hidden states) and a :class:`~lit_codec.tokenizers.kmeans.KMeansQuantizer`
fitted on the same features (:func:`~lit_codec.tokenizers.kmeans.fit_kmeans`). The local
ids are the cluster indices ``0 .. k - 1``; the metadata names the features and the
k-means hash, so a vocabulary built on one k-means refuses tokens of another.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_codec.tokenizers.features import AudioFeatures, load_audio
from lit_codec.tokenizers.kmeans import KMeansQuantizer

__all__ = ["SemanticTokenizer"]


class SemanticTokenizer:
    """Audio -> ``(frames,)`` cluster ids at ``features.frame_rate``.

    Args:
        features: the frame features the k-means was fitted on.
        kmeans: a k-means file (``.safetensors`` from :meth:`KMeansQuantizer.save`) or a
            quantizer.

    Raises:
        ValueError: the k-means was fitted on features of another width, or (when its
            file records them) on features with other settings.
    """

    def __init__(self, features: AudioFeatures, kmeans: str | os.PathLike | KMeansQuantizer):
        if not isinstance(kmeans, KMeansQuantizer):
            kmeans = KMeansQuantizer.load(kmeans)
        if kmeans.dim != features.dim:
            raise ValueError(
                f"k-means {kmeans.hash} has {kmeans.dim}-d centroids but "
                f"{type(features).__name__} gives {features.dim}-d frames"
            )
        fitted_on = kmeans.info.get("features")
        if fitted_on is not None and _settings(fitted_on) != _settings(features.metadata()):
            raise ValueError(
                f"k-means {kmeans.hash} was fitted on features {fitted_on}, not on "
                f"{features.metadata()}"
            )
        self.features = features
        self.kmeans = kmeans

    @property
    def vocab_size(self) -> int:
        return self.kmeans.k

    @property
    def frame_rate(self) -> float:
        return self.features.frame_rate

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    def symbols(self) -> list[str]:
        """Cluster indices as strings: ``"0" .. "k-1"``."""
        return [str(i) for i in range(self.vocab_size)]

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "semantic",
            "frame_rate": self.frame_rate,
            "features": self.features.metadata(),
            "kmeans": self.kmeans.metadata(),
        }

    def encode(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int | None = None,
        n_frames: int | None = None,
    ) -> np.ndarray:
        """Cluster ids of audio.

        Args:
            audio: ``(T,)`` mono or ``(channels, T)``.
            sample_rate: its rate (resampled to the features' rate); default: the features'.
            n_frames: cut to, or pad by repeating the last frame up to, this many frames
                (the codec frames of the same audio).

        Returns:
            ``(frames,)`` int64 in ``[0, vocab_size)``.
        """
        ids = self.kmeans.predict(self.features(audio, sample_rate))  # (frames,)
        if n_frames is not None:
            ids = ids[:n_frames]
            if len(ids) < n_frames:
                fill = ids[-1] if len(ids) else 0
                ids = np.concatenate([ids, np.full(n_frames - len(ids), fill, dtype=np.int64)])
        return ids

    __call__ = encode

    def encode_file(self, path: str | os.PathLike, n_frames: int | None = None) -> np.ndarray:
        """Cluster ids of an audio file (see :meth:`encode`)."""
        return self.encode(load_audio(Path(path), self.sample_rate), n_frames=n_frames)


def _settings(metadata: dict[str, Any]) -> dict[str, Any]:
    """Feature metadata without the folder name of a checkpoint (its hashes identify it)."""
    return {key: value for key, value in metadata.items() if key != "model"}
