"""Random access to audio shards, and the speaker index built in the same pass.

Token-shard preparation needs, for each sample, *other* samples: a prompt of the same
speaker, an interfering talker, babble. :meth:`ShardCatalog.build` reads every shard of an
audio-shard directory (``data_prep/make_audio_shards.py``) once, in order, and keeps per
sample only where its members lie in the tar (offset and size) and the few metadata it is
drawn by (speaker, length): the audio stays on disk and is read back one sample at a time
with a seek (:meth:`ShardCatalog.read_audio`). Tar members of one sample are grouped by
webdataset's convention (the key is the name up to the first dot of its base name).

:class:`SpeakerIndex` maps each speaker of a split to its samples and draws, from a given
``numpy`` generator, another sample of the same speaker or one of another speaker.
"""

from __future__ import annotations

import json
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit_codec.data.prepare import SPLITS
from lit_codec.data.shards import decode_audio_sample, load_index

__all__ = ["CatalogEntry", "CatalogProblem", "DrawError", "ShardCatalog", "SpeakerIndex"]

AUDIO_MEMBERS = ("flac", "wav", "ogg", "mp3")
_REJECTION_TRIES = 64


class DrawError(ValueError):
    """No sample fits a draw (no other utterance of a speaker, a single speaker, ...).

    Attributes:
        reason: a short, stable cause for reports (``"no other utterance of the speaker"``).
        detail: the specifics.
    """

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(reason + (f" ({detail})" if detail else ""))


@dataclass(frozen=True)
class CatalogEntry:
    """Where one sample lies and what it is drawn by.

    Args:
        key: the sample key.
        split: ``train``, ``valid`` or ``test``.
        shard: index of its shard in :attr:`ShardCatalog.shards`.
        audio: ``(offset, size)`` of the audio member's bytes in the shard.
        audio_ext: the audio member's extension (``flac``).
        meta: ``(offset, size)`` of the json member's bytes.
        speaker: the speaker, when the json names one.
        num_samples: audio length in samples, as the json says (0 when it does not).
    """

    key: str
    split: str
    shard: int
    audio: tuple[int, int]
    audio_ext: str
    meta: tuple[int, int]
    speaker: str | None
    num_samples: int


@dataclass(frozen=True)
class CatalogProblem:
    """A sample the catalog could not take: ``{key, shard, reason, detail}`` for reports."""

    key: str
    shard: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "shard": self.shard, "reason": self.reason, "detail": self.detail}


@dataclass
class ShardCatalog:
    """Every sample of a set of audio shards, readable one at a time.

    Args:
        shards: shard paths, in catalog order.
        entries: the samples, in shard and member order.
        problems: samples left out (no audio or json member, unreadable json, duplicate key).
        sample_rate: the rate ``index.json`` gives, if any.
    """

    shards: list[str]
    entries: list[CatalogEntry]
    problems: list[CatalogProblem] = field(default_factory=list)
    sample_rate: int | None = None

    def __post_init__(self) -> None:
        self._files: dict[int, Any] = {}  # open shard files of this process

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, root: str | os.PathLike, splits: Iterable[str] | None = None) -> ShardCatalog:
        """Catalog the shards ``root/index.json`` lists (of ``splits``; default: all).

        Raises:
            FileNotFoundError: no ``index.json``, or a listed shard is missing.
        """
        index = load_index(root)
        wanted = list(splits) if splits is not None else list(index.get("splits", {}))
        shards = []
        for split in sorted(wanted, key=lambda s: (SPLITS.index(s) if s in SPLITS else 9, s)):
            for name in index.get("splits", {}).get(split, {}).get("shards", []):
                path = Path(root) / name
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{root}: index.json lists {name}, which does not exist"
                    )
                shards.append((split, str(path)))
        return cls.from_shards(shards, index.get("sample_rate"))

    @classmethod
    def from_shards(
        cls, shards: Iterable[tuple[str, str]], sample_rate: int | None = None
    ) -> ShardCatalog:
        """Catalog ``(split, path)`` shards in the order given."""
        shards = list(shards)
        entries: list[CatalogEntry] = []
        problems: list[CatalogProblem] = []
        seen: set[str] = set()
        for number, (split, path) in enumerate(shards):
            for key, members, problem in _scan(path):
                if problem:
                    problems.append(CatalogProblem(key, Path(path).name, *problem))
                    continue
                if key in seen:
                    problems.append(
                        CatalogProblem(
                            key, Path(path).name, "duplicate key", "a sample earlier has it"
                        )
                    )
                    continue
                seen.add(key)
                ext, audio = next((e, members[e]) for e in AUDIO_MEMBERS if e in members)
                meta, speaker, length = members["json"]
                entries.append(CatalogEntry(key, split, number, audio, ext, meta, speaker, length))
        return cls([p for _, p in shards], entries, problems, sample_rate)

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.entries)

    def ids(self, split: str) -> list[int]:
        """Catalog ids of a split's samples, in order."""
        return [i for i, e in enumerate(self.entries) if e.split == split]

    def splits(self) -> list[str]:
        return list(dict.fromkeys(e.split for e in self.entries))

    def shard_name(self, i: int) -> str:
        return Path(self.shards[self.entries[i].shard]).name

    def _read(self, shard: int, where: tuple[int, int]) -> bytes:
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = open(self.shards[shard], "rb")  # noqa: SIM115 - cached
        f.seek(where[0])
        return f.read(where[1])

    def read_meta(self, i: int) -> dict[str, Any]:
        """The json metadata of sample ``i``."""
        e = self.entries[i]
        return json.loads(self._read(e.shard, e.meta))

    def read_audio(self, i: int) -> tuple[np.ndarray, int]:
        """The audio ``(T,)`` float32 of sample ``i`` and its rate.

        Raises:
            ValueError: the audio cannot be decoded, is not mono, or holds NaN/inf.
        """
        e = self.entries[i]
        sample = {"__key__": e.key, "__url__": self.shards[e.shard]}
        sample[e.audio_ext] = self._read(e.shard, e.audio)
        try:
            audio, rate, _ = decode_audio_sample(sample)
        except ValueError:
            raise
        except Exception as err:  # libsndfile's own errors
            raise ValueError(f"sample {e.key}: undecodable audio ({err})") from err
        return audio, rate

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __getstate__(self) -> dict[str, Any]:  # open files stay with their process
        state = dict(self.__dict__)
        state["_files"] = {}
        return state

    def speaker_index(self, split: str) -> SpeakerIndex:
        """The speakers of a split and their samples."""
        ids = self.ids(split)
        return SpeakerIndex(ids, [self.entries[i].speaker for i in ids], self)


def _scan(path: str):
    """``(key, {ext: (offset, size)}, problem)`` per sample of one tar, in member order;
    the json entry is ``((offset, size), speaker, num_samples)``."""
    samples: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            if "." not in base:
                continue
            key, ext = base.split(".", 1)
            if key not in samples:
                samples[key] = {}
                order.append(key)
            where = (member.offset_data, member.size)
            if ext == "json":
                f_pos = f.tell()
                f.seek(member.offset_data)
                data = f.read(member.size)
                f.seek(f_pos)
                try:
                    meta = json.loads(data)
                    speaker = meta.get("speaker")
                    where = (
                        where,
                        None if speaker is None else str(speaker),
                        int(meta.get("num_samples") or 0),
                    )
                except (ValueError, TypeError, AttributeError) as err:
                    samples[key]["__problem__"] = (
                        "unreadable metadata",
                        f"{type(err).__name__}: {err}",
                    )
                    continue
            samples[key][ext.lower()] = where
    for key in order:
        members = samples[key]
        problem = members.pop("__problem__", None)
        if problem is None and "json" not in members:
            problem = ("no metadata", "the sample has no .json member")
        if problem is None and not any(e in members for e in AUDIO_MEMBERS):
            problem = (
                "no audio",
                f"the sample has none of {', '.join('.' + e for e in AUDIO_MEMBERS)}",
            )
        yield key, members, problem


class SpeakerIndex:
    """Speaker -> samples of one split, and seeded draws from it.

    Samples without a speaker belong to no speaker: a draw of "the same speaker" fails for
    them, and every other sample counts as "another speaker".

    Args:
        ids: catalog ids of the split's samples.
        speakers: the speaker of each (None when unknown).
        catalog: the catalog, for :meth:`keys`.
    """

    def __init__(
        self, ids: list[int], speakers: list[str | None], catalog: ShardCatalog | None = None
    ):
        self.ids = np.asarray(ids, dtype=np.int64)  # (N,)
        self._speaker_of = dict(zip(ids, speakers))
        self._by_speaker: dict[str, list[int]] = {}
        for i, s in zip(ids, speakers):
            if s is not None:
                self._by_speaker.setdefault(s, []).append(i)
        self.catalog = catalog

    def __len__(self) -> int:
        return len(self._by_speaker)

    @property
    def speakers(self) -> list[str]:
        return sorted(self._by_speaker)

    def keys(self, speaker: str) -> list[str]:
        """The sample keys of a speaker, in catalog order."""
        ids = self._by_speaker.get(speaker, [])
        return [self.catalog.entries[i].key for i in ids] if self.catalog else [str(i) for i in ids]

    def speaker(self, i: int) -> str | None:
        return self._speaker_of.get(i)

    def same_speaker(self, i: int, rng: np.random.Generator) -> int:
        """Another sample of the speaker of sample ``i``.

        Raises:
            DrawError: the sample has no speaker, or its speaker no other sample here.
        """
        speaker = self._speaker_of.get(i)
        if speaker is None:
            raise DrawError("no speaker", "the sample's metadata names no speaker")
        others = [j for j in self._by_speaker[speaker] if j != i]
        if not others:
            raise DrawError(
                "no other utterance of the speaker",
                f"speaker {speaker!r} has one sample in the split",
            )
        return others[int(rng.integers(len(others)))]

    def other_speaker(self, i: int, rng: np.random.Generator, exclude: Iterable[int] = ()) -> int:
        """A sample of another speaker than sample ``i``'s (any other sample when unknown).

        Raises:
            DrawError: every sample of the split is of that speaker (or excluded).
        """
        speaker = self._speaker_of.get(i)
        banned = {i, *exclude}

        def fits(j: int) -> bool:
            return j not in banned and (speaker is None or self._speaker_of.get(j) != speaker)

        for _ in range(_REJECTION_TRIES):
            j = int(self.ids[rng.integers(len(self.ids))]) if len(self.ids) else -1
            if j >= 0 and fits(j):
                return j
        candidates = [int(j) for j in self.ids if fits(int(j))]
        if not candidates:
            raise DrawError(
                "no other speaker", f"every sample of the split is of speaker {speaker!r}"
            )
        return candidates[int(rng.integers(len(candidates)))]
