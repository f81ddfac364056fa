"""``lit-codec fit-kmeans``: k-means semantic units on features of audio clips or shards.

    lit-codec fit-kmeans --input data/speech_16k --split train --output kmeans_mfcc100.safetensors --k 100
    lit-codec fit-kmeans --input wavs/ --output km.safetensors --k 500 --ssl-model hubert_base/ --layer 6

Features are MFCC + deltas (39-d, HuBERT's first iteration; no pretrained model) or the
hidden states of a HuBERT / wav2vec2 model in a local folder (``--ssl-model``). The file it
writes is loaded by :class:`lit_codec.tokenizers.KMeansQuantizer` and referenced, with its
hash, by the vocabulary schema of token shards (``data_prep/make_token_shards.py
--kmeans``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_codec.commands.common import run_guarded

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The options of ``lit-codec fit-kmeans``."""
    p = argparse.ArgumentParser(
        prog="lit-codec fit-kmeans",
        description="fit k-means semantic units on MFCC or SSL features of audio clips or shards",
    )
    p.add_argument("--input", required=True,
                   help="folder of audio files, prepared shard directory, or shard files")  # fmt: skip
    p.add_argument("--split", default="train", help="split of a shard directory (default train)")
    p.add_argument("--output", required=True, type=Path, help=".safetensors file to write")
    p.add_argument("--k", type=int, default=100, help="number of units (default 100)")
    p.add_argument("--ssl-model", default=None,
                   help="local HuBERT / wav2vec2 folder (default: MFCC features)")  # fmt: skip
    p.add_argument("--layer", type=int, default=6, help="--ssl-model: hidden layer (default 6)")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--hop-length", type=int, default=320,
                   help="MFCC samples per frame (default 320: 50 frames/s at 16 kHz)")  # fmt: skip
    p.add_argument("--max-clips", type=int, default=None, help="use at most this many clips")
    p.add_argument("--max-frames", type=int, default=1_000_000, help="frames sampled for the fit")
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    return p


def run(a: argparse.Namespace) -> None:
    """Fit and save; print what was fitted."""
    from lit_codec.evaluate import iter_clips
    from lit_codec.tokenizers.features import MFCCFeatures, SSLFeatures
    from lit_codec.tokenizers.kmeans import fit_kmeans

    if a.k < 2:
        raise ValueError(f"--k must be at least 2, got {a.k}")
    if not Path(a.input).exists() and not any(c in a.input for c in "{*:"):
        raise FileNotFoundError(f"--input {a.input} does not exist")
    features = (
        SSLFeatures(a.ssl_model, layer=a.layer)
        if a.ssl_model
        else MFCCFeatures(a.sample_rate, a.hop_length)
    )
    skipped: list[str] = []
    feats = [
        features(clip.audio, features.sample_rate)
        for clip in iter_clips(a.input, features.sample_rate, split=a.split, max_clips=a.max_clips,
                               on_error=lambda name, reason: skipped.append(f"{name}: {reason}"))
    ]  # fmt: skip
    if not feats:
        raise ValueError(f"no readable clips in {a.input} (split {a.split})")
    quantizer = fit_kmeans(feats, a.k, max_iter=a.max_iter, max_frames=a.max_frames, seed=a.seed,
                           info={"features": features.metadata(), "clips": len(feats),
                                 "source": str(a.input)})  # fmt: skip
    quantizer.save(a.output)
    for line in skipped:
        print(f"skipped {line}")
    print(
        f"k-means k={quantizer.k} dim={quantizer.dim} on {quantizer.info['frames_used']} frames "
        f"of {len(feats)} clips ({len(skipped)} unreadable): hash {quantizer.hash} -> {a.output}"
    )


def main(argv: list[str]) -> None:
    """``lit-codec fit-kmeans ARGS``."""
    run_guarded("fit-kmeans", run, parser().parse_args(argv))
