"""Locating and reading the shards that ``data_prep/make_audio_shards.py`` writes.

A prepared directory holds ``index.json`` (shard names, sample counts and
seconds per split, the sample rate); explicit shard URLs may be brace patterns
(``data/train-{000000..000009}.tar``) or anything webdataset opens (``pipe:``
commands, ``https://`` and ``s3://`` URLs via their ``pipe:`` forms).
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "ShardSet",
    "decode_audio_sample",
    "endless_samples",
    "expand_urls",
    "iter_tar_samples",
    "load_index",
    "reader_of",
]


@dataclass
class ShardSet:
    """The shards of one split, where they came from, and what is known about them."""

    urls: list[str]
    source: str  # the directory or pattern, for messages
    num_samples: int | None  # None when no index.json says
    sample_rate: int | None
    seconds: float | None = None  # total audio, when index.json says


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Expand brace patterns (``a-{000..009}.tar``), local globs (``dir/train-*.tar``)
    and ``::``-separated lists."""
    import glob

    import braceexpand

    if isinstance(urls, str):
        urls = [urls]
    out: list[str] = []
    for u in urls:
        for part in str(u).split("::"):
            for url in braceexpand.braceexpand(part):
                if (
                    any(c in url for c in "*?[")
                    and "://" not in url
                    and not url.startswith("pipe:")
                ):
                    out.extend(sorted(glob.glob(url)))
                else:
                    out.append(url)
    return out


def load_index(root: str | os.PathLike) -> dict:
    """Read ``root/index.json`` with a clear error when it is missing or not ours."""
    root = Path(root)
    path = root / "index.json"
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist or is not a directory")
    if not path.is_file():
        tars = sorted(p.name for p in root.glob("*.tar"))
        hint = (
            f" (it holds {len(tars)} .tar files: pass them as shard URLs instead)" if tars else ""
        )
        raise FileNotFoundError(
            f"{root} has no index.json: prepare it with data_prep/make_audio_shards.py --output {root}{hint}"
        )
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def split_from_root(root: str | os.PathLike, split: str) -> ShardSet:
    """The shards of ``split`` listed in ``root/index.json`` (an error if the split has none)."""
    index = load_index(root)
    info = index.get("splits", {}).get(split)
    if not info or not info.get("shards"):
        have = ", ".join(
            f"{k} ({len(v.get('shards', []))} shards)" for k, v in index.get("splits", {}).items()
        )
        raise ValueError(
            f"{root} has no {split!r} shards (index.json lists: {have or 'no shards at all'})"
        )
    urls = [str(Path(root) / name) for name in info["shards"]]
    missing = [u for u in urls if not os.path.exists(u)]
    if missing:
        raise FileNotFoundError(
            f"{root}: index.json lists shards that do not exist: {', '.join(missing[:3])}"
        )
    return ShardSet(
        urls, str(root), int(info["num_samples"]), index.get("sample_rate"), info.get("seconds")
    )


def iter_tar_samples(urls: Sequence[str], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """Samples ``{"__key__", "__url__", "flac", "json", ...}`` of the given shards, in order.

    ``handler(exc)`` is called for a shard or member that cannot be read; return
    True to skip it and go on (the stream then continues with the next sample).
    """
    from webdataset.tariterators import group_by_keys, tar_file_expander, url_opener

    # webdataset's tarfile_samples, one shard at a time, so that each shard's file is closed
    # when its samples end or the consumer stops early (no unclosed-file ResourceWarning).
    for source in url_opener([{"url": u} for u in urls], handler=handler):
        try:
            yield from group_by_keys(tar_file_expander([source], handler=handler), handler=handler)
        finally:
            source["stream"].close()


def reader_of(rank: int, world_size: int) -> tuple[int, int]:
    """``(reader, readers)``: this DataLoader worker's place among all readers of all ranks."""
    from torch.utils.data import get_worker_info

    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info else (1, 0)
    return rank * workers + worker, world_size * workers


def endless_samples(
    urls: Sequence[str],
    seed: int,
    reader: int,
    readers: int,
    handler: Callable[[Exception], bool],
) -> Iterator[dict]:
    """The raw samples of one reader, pass after pass over the shards, forever.

    Each pass shuffles the shard order with ``(seed, pass)``, the same order for every
    reader; reader ``r`` of ``readers`` takes shards ``r, r + readers, ...`` (or, with fewer
    shards than readers, reads them all and keeps every ``readers``-th sample). Raises
    RuntimeError when three passes in a row yield nothing (every shard unreadable).
    """
    empty = 0
    for epoch in range(10**12):
        order = list(urls)
        random.Random(seed * 1_000_003 + epoch).shuffle(order)  # same order on every rank
        if len(order) >= readers:
            mine, keep = order[reader::readers], None
        else:
            mine, keep = order, reader
        yielded = False
        for i, sample in enumerate(iter_tar_samples(mine, handler)):
            if keep is not None and i % readers != keep:
                continue
            yielded = True
            yield sample
        empty = 0 if yielded else empty + 1
        if empty >= 3:
            raise RuntimeError(f"no readable samples in {len(mine)} shards such as {mine[0]}")


def decode_audio_sample(sample: dict) -> tuple[np.ndarray, int, dict]:
    """The audio ``(T,)`` float32, its rate and its metadata, from one shard sample."""
    audio_key = next((k for k in ("flac", "wav", "ogg", "mp3") if k in sample), None)
    if audio_key is None:
        raise ValueError(
            f"sample {sample.get('__key__')} in {sample.get('__url__')} has no audio member"
        )
    audio, rate = sf.read(io.BytesIO(sample[audio_key]), dtype="float32", always_2d=True)
    meta = json.loads(sample["json"]) if "json" in sample else {}
    if audio.shape[1] != 1:
        raise ValueError(
            f"sample {sample.get('__key__')} in {sample.get('__url__')} has {audio.shape[1]} channels, not 1"
        )
    if not np.isfinite(audio).all():
        raise ValueError(
            f"sample {sample.get('__key__')} in {sample.get('__url__')} holds NaN or inf"
        )
    return audio[:, 0], int(rate), meta
