"""K-means over frame features: fit (k-means++ then mini-batch), save, load, quantize.

Semantic tokens are the nearest centroid of each feature frame (HuBERT's labels).
:func:`fit_kmeans` fits centroids on features from any iterable of ``(frames, dim)``
arrays: k-means++ initialisation (greedy, as scikit-learn) on a sample, then Lloyd
iterations when all frames fit in one batch, mini-batch updates with per-centroid
learning rates (Sculley, 2010) otherwise; several initialisations keep the lowest
inertia. Every draw comes from a seeded ``torch.Generator``: the same features and seed
give the same centroids, bit for bit, on CPU.

:class:`KMeansQuantizer` holds the centroids, saves them as ``.safetensors`` with the
fit's details in the header, and exposes :attr:`KMeansQuantizer.hash` (sha256 prefix of
the centroids' shape and float32 bytes): the id of the token set in the vocabulary
schema, the same for a fitted quantizer and its saved and reloaded copy.

``python -m lit_codec.tokenizers.kmeans AUDIO_DIR OUT.safetensors --k 500`` fits k-means
on the MFCCs of every audio file under a folder (:func:`main`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import struct
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lit_codec.tokenizers.base import sha256_bytes

__all__ = ["KMeansQuantizer", "fit_kmeans", "main"]

log = logging.getLogger(__name__)

FORMAT = "lit-codec/kmeans"


class KMeansQuantizer:
    """Feature frames -> index of the nearest centroid (squared Euclidean distance).

    Args:
        centroids: ``(k, dim)`` centroids.
        info: JSON-able details of the fit (features, frames, inertia, seed, ...).
    """

    def __init__(self, centroids: np.ndarray | torch.Tensor, info: dict[str, Any] | None = None):
        c = torch.as_tensor(np.asarray(centroids, dtype=np.float32))  # (k, dim)
        if c.ndim != 2 or c.shape[0] < 1 or c.shape[1] < 1:
            raise ValueError(f"centroids must be (k, dim), got shape {tuple(c.shape)}")
        if not torch.isfinite(c).all():
            raise ValueError("centroids must be finite")
        self.centroids = c.contiguous()
        self.info = json.loads(json.dumps(info or {}))
        self.path: Path | None = None

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def hash(self) -> str:
        """sha256 prefix of the centroids (shape and little-endian float32 bytes)."""
        header = FORMAT.encode() + struct.pack("<qq", self.k, self.dim)
        return sha256_bytes(header + self.centroids.numpy().astype("<f4").tobytes())

    def metadata(self) -> dict[str, Any]:
        """Kind, k, dim, hash, file name and the fit's details."""
        return {
            "kind": "kmeans",
            "k": self.k,
            "dim": self.dim,
            "hash": self.hash,
            "file": None if self.path is None else self.path.name,
            "fit": self.info,
        }

    def predict(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        """Nearest centroid per frame.

        Args:
            features: ``(frames, dim)``.

        Returns:
            ``(frames,)`` int64 in ``[0, k)``.
        """
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"features must be (frames, {self.dim}), got shape {tuple(x.shape)}")
        return _assign(x, self.centroids).numpy().astype(np.int64)

    __call__ = predict

    def inertia(self, features: np.ndarray | torch.Tensor) -> float:
        """Mean squared distance of frames to their nearest centroid."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32))
        return float(_inertia(x, self.centroids)) / max(len(x), 1)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.safetensors``: the centroids, and format, hash and fit details in the header."""
        from safetensors.torch import save_file

        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"k-means files end in .safetensors, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": FORMAT,
            "hash": self.hash,
            "info": json.dumps(self.info, sort_keys=True),
        }
        save_file({"centroids": self.centroids}, str(path), metadata=header)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> KMeansQuantizer:
        """Read a file written by :meth:`save`; checks its format and hash."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"k-means file {str(path)!r} does not exist; fit one with fit_kmeans(...).save(path) "
                f"or 'python -m lit_codec.tokenizers.kmeans AUDIO_DIR {path}'"
            )
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                centroids = f.get_tensor("centroids")
        except Exception as err:
            raise ValueError(f"cannot read k-means file {str(path)!r}: {err}") from err
        if header.get("format") != FORMAT:
            raise ValueError(
                f"{str(path)!r} is not a k-means file (format {header.get('format')!r})"
            )
        quantizer = cls(centroids, json.loads(header.get("info", "{}")))
        if header.get("hash") != quantizer.hash:
            raise ValueError(
                f"k-means file {str(path)!r} is corrupt: its centroids hash to {quantizer.hash}, "
                f"its header says {header.get('hash')}"
            )
        quantizer.path = path
        return quantizer


def fit_kmeans(
    features: Iterable[np.ndarray | torch.Tensor],
    k: int,
    *,
    batch_size: int = 10_000,
    max_iter: int = 100,
    n_init: int = 1,
    max_frames: int | None = 1_000_000,
    tol: float = 1e-4,
    seed: int = 0,
    info: dict[str, Any] | None = None,
) -> KMeansQuantizer:
    """Fit k-means on feature frames.

    Args:
        features: arrays of ``(frames, dim)``, e.g. one per utterance.
        k: number of centroids (token vocabulary size).
        batch_size: frames per mini-batch; with fewer frames in all, exact Lloyd iterations.
        max_iter: Lloyd iterations, or passes over the frames in mini-batches.
        n_init: initialisations to try; the one with the lowest inertia is kept.
        max_frames: at most this many frames are used, drawn at random (seeded) when
            there are more; ``None`` uses all. All arrays are held in memory first: pass
            a subset of the corpus (or every n-th frame) when it does not fit.
        tol: stop when the centroids move less than ``tol`` times the data variance
            (summed squared shift, as scikit-learn).
        seed: seed of every random draw.
        info: extra JSON-able details saved with the centroids (e.g. the features'
            metadata, which :class:`~lit_codec.tokenizers.semantic.SemanticTokenizer` checks).

    Returns:
        the fitted quantizer; ``info`` holds the frames used, the inertia and the settings.
    """
    arrays = [torch.as_tensor(np.asarray(a, dtype=np.float32)) for a in features]
    arrays = [a for a in arrays if a.numel()]
    if not arrays:
        raise ValueError("fit_kmeans: no feature frames given")
    dims = {a.shape[-1] for a in arrays}
    if any(a.ndim != 2 for a in arrays) or len(dims) != 1:
        raise ValueError(
            f"fit_kmeans: features must be (frames, dim) of one dim, got dims {sorted(dims)}"
        )
    x = torch.cat(arrays)  # (N, D)
    total = len(x)
    generator = torch.Generator().manual_seed(seed)
    if max_frames is not None and total > max_frames:
        x = x[torch.randperm(total, generator=generator)[:max_frames].sort().values]
    if not torch.isfinite(x).all():
        raise ValueError("fit_kmeans: features contain NaN or inf")
    if k < 1 or k > len(x):
        raise ValueError(f"fit_kmeans: k must be in [1, {len(x)}] (the number of frames), got {k}")
    tol_abs = tol * float(x.var(0).mean()) * x.shape[1]
    best, best_inertia = None, math.inf
    for _ in range(n_init):
        centroids = _kmeans_plus_plus(x, k, generator)
        if len(x) <= batch_size:
            centroids, steps = _lloyd(x, centroids, max_iter, tol_abs)
        else:
            centroids, steps = _minibatch(x, centroids, batch_size, max_iter, tol_abs, generator)
        inertia = float(_inertia(x, centroids)) / len(x)
        if inertia < best_inertia:
            best, best_inertia, best_steps = centroids, inertia, steps
    details = {
        "k": k,
        "frames": total,
        "frames_used": len(x),
        "inertia": best_inertia,
        "steps": best_steps,
        "algorithm": "lloyd" if len(x) <= batch_size else "minibatch",
        "batch_size": batch_size,
        "max_iter": max_iter,
        "n_init": n_init,
        "seed": seed,
        **(info or {}),
    }
    return KMeansQuantizer(best, details)


# -- the algorithm ---------------------------------------------------------------------

_CHUNK = 65_536  # frames per distance computation: bounds memory at CHUNK * k floats


def _distances(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances ``(n, k)`` of frames ``(n, D)`` to centroids ``(k, D)``."""
    d = (x * x).sum(1, keepdim=True) - 2 * x @ c.T + (c * c).sum(1)[None]  # (n, k)
    return d.clamp_(min=0)


def _assign(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid per frame: ``(n,)`` int64."""
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.int64)
    return torch.cat([_distances(part, c).argmin(1) for part in x.split(_CHUNK)])


def _inertia(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Summed squared distance of frames to their nearest centroid (float64)."""
    return sum(_distances(part, c).min(1).values.double().sum() for part in x.split(_CHUNK))


def _kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (2 + log k candidates per step) on at most 10·k + 10 000 frames."""
    n_sample = min(len(x), 10 * k + 10_000)
    sample = x[torch.randperm(len(x), generator=generator)[:n_sample]] if n_sample < len(x) else x
    trials = 2 + int(math.log(k))
    centroids = sample[torch.randint(len(sample), (1,), generator=generator)]  # (1, D)
    closest = _distances(sample, centroids)[:, 0].double()  # (n,)
    for _ in range(1, k):
        total = float(closest.sum())
        if total <= 0:  # fewer distinct frames than k: pick any
            candidates = torch.randint(len(sample), (trials,), generator=generator)
        else:
            candidates = torch.multinomial(
                closest / total, trials, replacement=True, generator=generator
            )
        d = _distances(sample, sample[candidates]).double()  # (n, trials)
        potential = torch.minimum(closest[:, None], d).sum(0)  # (trials,)
        best = int(potential.argmin())
        closest = torch.minimum(closest, d[:, best])
        centroids = torch.cat([centroids, sample[candidates[best]][None]])  # (i + 1, D)
    return centroids


def _lloyd(x: torch.Tensor, c: torch.Tensor, max_iter: int, tol: float) -> tuple[torch.Tensor, int]:
    """Exact k-means iterations; an empty cluster keeps its centroid."""
    steps = 0
    while steps < max_iter:
        steps += 1
        labels = _assign(x, c)
        sums = torch.zeros_like(c, dtype=torch.float64).index_add_(0, labels, x.double())  # (k, D)
        counts = torch.bincount(labels, minlength=len(c)).double()  # (k,)
        new = torch.where(
            counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c.double()
        ).float()
        shift = float((new - c).square().sum())
        c = new
        if shift <= tol:
            break
    return c, steps


def _minibatch(
    x: torch.Tensor,
    c: torch.Tensor,
    batch_size: int,
    max_iter: int,
    tol: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, int]:
    """Mini-batch k-means (Sculley 2010): centroid ``j`` moves toward its batch mean with rate
    ``n_j / count_j``, ``count_j`` being every frame it has received so far."""
    c = c.double()
    counts = torch.zeros(len(c), dtype=torch.float64)
    steps_per_pass = math.ceil(len(x) / batch_size)
    step = 0
    for _ in range(max_iter):
        order = torch.randperm(len(x), generator=generator)
        moved = 0.0
        for batch in order.split(batch_size):
            step += 1
            xb = x[batch].double()  # (B, D)
            labels = _assign(xb.float(), c.float())
            sums = torch.zeros_like(c).index_add_(0, labels, xb)  # (k, D)
            n = torch.bincount(labels, minlength=len(c)).double()  # (k,)
            counts += n
            seen = n > 0
            old = c.clone()
            c[seen] += (sums[seen] - n[seen, None] * c[seen]) / counts[seen, None]
            moved += float((c - old).square().sum())
        if moved / steps_per_pass <= tol:
            break
    return c.float(), step


# -- command line ----------------------------------------------------------------------

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")


def main(argv: Sequence[str] | None = None) -> int:
    """Fit k-means on the MFCC features of every audio file under a folder and save it.

    Example::

        python -m lit_codec.tokenizers.kmeans data/wavs kmeans_mfcc_100.safetensors --k 100
    """
    from lit_codec.tokenizers.features import MFCCFeatures

    parser = argparse.ArgumentParser(
        prog="python -m lit_codec.tokenizers.kmeans",
        description="Fit k-means semantic tokens on MFCC (+deltas) features of audio files "
        "(HuBERT's first iteration) and write the centroids as .safetensors.",
    )
    parser.add_argument("audio_dir", type=Path, help="folder searched recursively for audio files")
    parser.add_argument("output", type=Path, help="the .safetensors file to write")
    parser.add_argument("--k", type=int, default=100, help="number of clusters (default 100)")
    parser.add_argument(
        "--sample-rate", type=int, default=16000, help="feature rate (default 16000)"
    )
    parser.add_argument(
        "--hop-length", type=int, default=320, help="samples per frame (default 320)"
    )
    parser.add_argument(
        "--normalize", action="store_true", help="per-utterance mean/variance normalisation"
    )
    parser.add_argument("--max-files", type=int, default=None, help="use at most this many files")
    parser.add_argument(
        "--max-frames", type=int, default=1_000_000, help="frames sampled for the fit"
    )
    parser.add_argument("--batch-size", type=int, default=10_000, help="frames per mini-batch")
    parser.add_argument("--max-iter", type=int, default=100, help="iterations / passes")
    parser.add_argument("--n-init", type=int, default=1, help="initialisations tried")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    if not args.audio_dir.is_dir():
        parser.error(f"{args.audio_dir} is not a folder")
    files = sorted(p for p in args.audio_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if args.max_files is not None:
        files = files[: args.max_files]
    if not files:
        parser.error(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {args.audio_dir}")
    mfcc = MFCCFeatures(args.sample_rate, args.hop_length, normalize=args.normalize)
    feats, skipped = [], 0
    for path in files:
        try:
            feats.append(mfcc.from_file(path))
        except ValueError as err:
            log.warning("skipping %s", err)
            skipped += 1
    quantizer = fit_kmeans(
        feats,
        args.k,
        batch_size=args.batch_size,
        max_iter=args.max_iter,
        n_init=args.n_init,
        max_frames=args.max_frames,
        seed=args.seed,
        info={"features": mfcc.metadata(), "files": len(feats)},
    )
    quantizer.save(args.output)
    print(
        f"k-means k={quantizer.k} dim={quantizer.dim} on {quantizer.info['frames_used']} frames "
        f"of {len(feats)} files ({skipped} unreadable): inertia {quantizer.info['inertia']:.4g}, "
        f"hash {quantizer.hash} -> {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
