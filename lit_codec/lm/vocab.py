"""The codec language model's vocabulary: one id space for every token it reads or writes.

UniAudio (Yang et al., 2023) turns each task into next-token prediction over one sequence
``[condition, target]``; phonemes, MIDI, text, semantic tokens and codec codes share one
vocabulary, and special tokens mark the task and every segment. The layout is
ESPnet-style, ranges in allocation order::

    specials   <pad>=0 <start> <end> <mask> <unk> <embedding>, then spare reserved slots
    segments   <phone_start> <phone_end> <prompt_start> <prompt_end> ...
    tasks      <tts_task> <vc_task> ...
    codec      n_q * codebook_size ids: code c of codebook q is codec.start + q * codebook_size + c
    phone, midi, text, semantic, ...   one range per modality, sizes given at build time
    tasks.v2, segments.v2, f0, ...     what later versions add, appended after the rest

Append-only and versioned: :meth:`Vocabulary.extend` fills free slots of existing ranges
(the reserved specials) or appends new ranges, and bumps the version, so no id ever moves:
a model trained on version n reads every sequence built with version n, and growing its
embedding table by the appended rows is all a newer version asks of it. Specials, segment
markers and tasks are therefore *not* contiguous across versions: a schema is a list of
ranges plus the name -> id maps.

:meth:`Vocabulary.schema` is a JSON-able dict that also carries the codec the codes came
from (fingerprint, rates, ``n_q``, codebook size) and opaque per-modality metadata (a phone
set per language, ...); :attr:`Vocabulary.hash` is the first 16 hex digits of the sha256 of
its canonical JSON. :meth:`Vocabulary.check_compatible` refuses another vocabulary with a
:class:`VocabularyMismatch` that names both hashes and the first entry that differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_SPECIALS",
    "EMBEDDING",
    "CodecInfo",
    "DecodedToken",
    "Range",
    "UnknownName",
    "Vocabulary",
    "VocabularyMismatch",
    "schema_hash",
]

FORMAT = "lit-codec/vocabulary"
# <embedding>: placeholder id of a frame whose content is a continuous vector (T5 text)
DEFAULT_SPECIALS = ("<pad>", "<start>", "<end>", "<mask>", "<unk>", "<embedding>")
SPECIAL_SLOTS = 32  # size of the first specials range: room for later specials
EMBEDDING = "embedding"  # the pseudo-modality of continuous segments: no id range of its own
CODEC = "codec"
RANGE_KINDS = ("special", "segment", "task", "modality")
_TOKEN_RANGES = {"special": "specials", "segment": "segments", "task": "tasks"}
# the order in which check_compatible looks for the first difference: meaning first
_DIFF_ORDER = (
    "format",
    "codec",
    "ranges",
    "specials",
    "segments",
    "tasks",
    "metadata",
    "size",
    "version",
)
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_SPECIAL = re.compile(r"<[a-z0-9_]+>")


class VocabularyMismatch(ValueError):
    """Two vocabularies (or a vocabulary and a saved schema) differ.

    Attributes:
        expected: hash of the vocabulary that checked.
        actual: hash of the other one.
        difference: the first differing entry, e.g. ``codec.n_q: 8 != 12``.
    """

    def __init__(self, expected: str, actual: str, difference: str, detail: str = ""):
        self.expected, self.actual, self.difference = expected, actual, difference
        super().__init__(
            f"vocabulary mismatch: {expected} != {actual}{detail}; first difference: {difference}"
        )


class UnknownName(KeyError):
    """A token, task, segment or modality name the vocabulary does not hold."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class CodecInfo:
    """The codec whose codes the vocabulary holds: codes only mean something to it.

    Args:
        fingerprint: ``Codec.fingerprint`` of the codec (configuration and weights).
        sample_rate: audio samples per second.
        frame_rate: code frames per second (``sample_rate / hop_length``).
        n_q: number of codebooks per frame.
        codebook_size: codes per codebook.
    """

    fingerprint: str
    sample_rate: int
    frame_rate: float
    n_q: int
    codebook_size: int

    def __post_init__(self) -> None:
        # canonical types: 75 and 75.0 must hash alike
        object.__setattr__(self, "fingerprint", str(self.fingerprint))
        for name in ("sample_rate", "n_q", "codebook_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value <= 0:
                raise ValueError(f"codec {name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))
        if not float(self.frame_rate) > 0:
            raise ValueError(f"codec frame_rate must be positive, got {self.frame_rate!r}")
        object.__setattr__(self, "frame_rate", float(self.frame_rate))

    @classmethod
    def from_codec(cls, codec: Any) -> CodecInfo:
        """The info of a :class:`lit_codec.codec.Codec` (or anything with the same attributes)."""
        return cls(
            codec.fingerprint, codec.sample_rate, codec.frame_rate, codec.n_q, codec.codebook_size
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Range:
    """A block of consecutive ids ``[start, start + size)``.

    Args:
        name: unique name; a modality range is named after its modality.
        kind: ``special``, ``segment``, ``task`` or ``modality``.
        start: first id.
        size: number of ids.
    """

    name: str
    kind: str
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class DecodedToken:
    """What one id means.

    Args:
        kind: ``special``, ``segment``, ``task``, or the modality name (``codec``, ``phone``, ...).
        modality: the modality of a modality id, else None.
        codebook: the codebook of a codec id, else None.
        value: the local value: the code within its codebook, the phone/MIDI/text/semantic
            index, or the offset of a special/segment/task id in its range.
        name: the token's name for specials, segment markers and tasks (``<phone_start>``,
            ``<tts_task>``), else None.
    """

    kind: str
    modality: str | None
    codebook: int | None
    value: int
    name: str | None = None


def _canonical(schema: Mapping[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def schema_hash(schema: Mapping[str, Any]) -> str:
    """First 16 hex digits of the sha256 of the schema's canonical JSON (``hash`` key ignored)."""
    body = {k: v for k, v in schema.items() if k != "hash"}
    return hashlib.sha256(_canonical(body).encode()).hexdigest()[:16]


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """Path and values of the first entry where ``a`` and ``b`` differ, or None."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        keys = list(a) + [k for k in b if k not in a]
        if not path:
            keys.sort(key=lambda k: _DIFF_ORDER.index(k) if k in _DIFF_ORDER else len(_DIFF_ORDER))
        for key in keys:
            where = f"{path}.{key}" if path else str(key)
            if key not in a:
                return f"{where}: <missing> != {_short(b[key])}"
            if key not in b:
                return f"{where}: {_short(a[key])} != <missing>"
            found = _first_difference(a[key], b[key], where)
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        for i in range(max(len(a), len(b))):
            where = f"{path}[{i}]"
            if i >= len(a):
                return f"{where}: <missing> != {_short(b[i])}"
            if i >= len(b):
                return f"{where}: {_short(a[i])} != <missing>"
            found = _first_difference(a[i], b[i], where)
            if found:
                return found
        return None
    if a != b or type(a) is not type(b):  # 75 vs 75.0 hash differently
        return f"{path}: {_short(a)} != {_short(b)}"
    return None


class Vocabulary:
    """The versioned, append-only id layout of the codec LM.

    Build one with :meth:`build` (or :func:`lit_codec.lm.templates.vocabulary_for` from the
    task templates), grow it with :meth:`extend`, store it with :meth:`save` / :meth:`load`.
    The constructor takes the layout as it is and validates it; it allocates nothing.

    Args:
        codec: the codec whose codes the ``codec`` range holds.
        ranges: every range in allocation order; consecutive, starting at id 0.
        specials: special token name (``<pad>``) -> id.
        segments: segment name (``phone``) -> (id of ``<phone_start>``, id of ``<phone_end>``).
        tasks: task name (``tts``) -> id of ``<tts_task>``.
        metadata: modality name -> opaque JSON dict (e.g. ``{"languages": {"en": [...]}}``).
        version: 1 for a built vocabulary, +1 per :meth:`extend` that added something.
    """

    def __init__(
        self,
        codec: CodecInfo,
        ranges: Iterable[Range],
        specials: Mapping[str, int],
        segments: Mapping[str, tuple[int, int]],
        tasks: Mapping[str, int],
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        version: int = 1,
    ):
        self.codec = codec
        self.ranges = tuple(ranges)
        self.version = int(version)
        self._specials = {n: int(i) for n, i in sorted(specials.items(), key=lambda kv: kv[1])}
        self._segments = {
            n: (int(s), int(e)) for n, (s, e) in sorted(segments.items(), key=lambda kv: kv[1][0])
        }
        self._tasks = {n: int(i) for n, i in sorted(tasks.items(), key=lambda kv: kv[1])}
        # a private JSON copy: opaque, but it must serialise and must not change under us
        self._metadata = json.loads(json.dumps(dict(metadata or {}), sort_keys=True))
        self._validate()
        self._by_name = {r.name: r for r in self.ranges}
        self._starts = np.array([r.start for r in self.ranges], dtype=np.int64)
        self._tokens: dict[int, tuple[str, str]] = {}  # id -> (kind, token name)
        self._tokens.update({i: ("special", n) for n, i in self._specials.items()})
        for name, (s, e) in self._segments.items():
            self._tokens[s] = ("segment", f"<{name}_start>")
            self._tokens[e] = ("segment", f"<{name}_end>")
        self._tokens.update({i: ("task", f"<{n}_task>") for n, i in self._tasks.items()})
        self._hash = schema_hash(self.schema())

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        codec: CodecInfo,
        modalities: Mapping[str, int] | None = None,
        *,
        tasks: Iterable[str] = (),
        segments: Iterable[str] = (),
        specials: Iterable[str] = (),
        special_slots: int = SPECIAL_SLOTS,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Vocabulary:
        """A version-1 vocabulary: specials, segment markers, tasks, codec, then each modality.

        Args:
            codec: the codec whose codes it holds (``n_q * codebook_size`` ids).
            modalities: token modality -> number of values (``{"phone": 72, "midi": 128}``),
                allocated in this order after the codec.
            tasks: task names; each gets ``<{name}_task>``.
            segments: segment names; each gets ``<{name}_start>`` and ``<{name}_end>``.
            specials: specials beyond :data:`DEFAULT_SPECIALS` (``<sep>``).
            special_slots: size of the specials range, spare slots included.
            metadata: modality -> opaque JSON dict (phone set per language, ...).
        """
        names = list(dict.fromkeys([*DEFAULT_SPECIALS, *specials]))
        if len(names) > special_slots:
            raise ValueError(f"{len(names)} specials do not fit in {special_slots} special slots")
        segments, tasks = list(dict.fromkeys(segments)), list(dict.fromkeys(tasks))
        ranges: list[Range] = []

        def allocate(name: str, kind: str, size: int) -> int:
            start = ranges[-1].stop if ranges else 0
            ranges.append(Range(name, kind, start, int(size)))
            return start

        allocate("specials", "special", special_slots)
        start = allocate("segments", "segment", 2 * len(segments)) if segments else 0
        segment_ids = {n: (start + 2 * i, start + 2 * i + 1) for i, n in enumerate(segments)}
        start = allocate("tasks", "task", len(tasks)) if tasks else 0
        task_ids = {n: start + i for i, n in enumerate(tasks)}
        allocate(CODEC, "modality", codec.n_q * codec.codebook_size)
        for modality, size in (modalities or {}).items():
            allocate(modality, "modality", size)
        return cls(
            codec,
            ranges,
            {n: i for i, n in enumerate(names)},
            segment_ids,
            task_ids,
            metadata,
            version=1,
        )

    def extend(
        self,
        *,
        tasks: Iterable[str] = (),
        segments: Iterable[str] = (),
        modalities: Mapping[str, int] | None = None,
        specials: Iterable[str] = (),
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Vocabulary:
        """A new vocabulary, version + 1, that holds these too; no existing id moves.

        New specials, segment markers and tasks take the free slots of existing ranges of
        their kind first (the reserved specials), then a new range appended after every
        other (``tasks.v2``); a new modality gets a new range at the end. Names already
        present are skipped; if nothing is new, ``self`` is returned unchanged.

        Args:
            tasks: task names to add.
            segments: segment names to add (two markers each).
            modalities: token modality -> size to add; an existing modality must keep its size.
            specials: special token names to add (``<sep>``).
            metadata: metadata of modalities that have none yet; existing entries never change.
        """
        new_specials = [n for n in dict.fromkeys(specials) if n not in self._specials]
        new_segments = [n for n in dict.fromkeys(segments) if n not in self._segments]
        new_tasks = [n for n in dict.fromkeys(tasks) if n not in self._tasks]
        new_modalities = {}
        for name, size in (modalities or {}).items():
            have = self._by_name.get(name)
            if have is None:
                new_modalities[name] = int(size)
            elif have.kind != "modality" or have.size != size:
                raise ValueError(
                    f"cannot extend modality {name!r} to size {size}: it exists as {have.kind} "
                    f"range of size {have.size}, and ids never move (add a new modality instead)"
                )
        new_metadata = dict(self._metadata)
        for name, value in (metadata or {}).items():
            if name in self._metadata and self._metadata[name] != json.loads(json.dumps(value)):
                raise ValueError(
                    f"metadata of modality {name!r} is part of version {self.version} and "
                    "cannot change; add a new modality instead"
                )
            new_metadata[name] = value
        if (
            not (new_specials or new_segments or new_tasks or new_modalities)
            and new_metadata == self._metadata
        ):
            return self
        version = self.version + 1
        ranges = list(self.ranges)
        used = set(self._tokens)

        def take(kind: str, count: int) -> list[int]:
            free = [
                i for r in ranges if r.kind == kind for i in range(r.start, r.stop) if i not in used
            ][:count]
            if len(free) < count:
                start = ranges[-1].stop
                ranges.append(
                    Range(f"{_TOKEN_RANGES[kind]}.v{version}", kind, start, count - len(free))
                )
                free += range(start, start + count - len(free))
            used.update(free)
            return free

        specials_ = dict(self._specials)
        specials_.update(zip(new_specials, take("special", len(new_specials))))
        segments_ = dict(self._segments)
        ids = take("segment", 2 * len(new_segments))
        segments_.update({n: (ids[2 * i], ids[2 * i + 1]) for i, n in enumerate(new_segments)})
        tasks_ = dict(self._tasks)
        tasks_.update(zip(new_tasks, take("task", len(new_tasks))))
        for name, size in new_modalities.items():
            ranges.append(Range(name, "modality", ranges[-1].stop, size))
        return Vocabulary(self.codec, ranges, specials_, segments_, tasks_, new_metadata, version)

    # ------------------------------------------------------------------ schema
    def schema(self) -> dict[str, Any]:
        """The whole layout as a JSON-able dict; :meth:`from_schema` rebuilds it exactly."""
        return {
            "format": FORMAT,
            "version": self.version,
            "size": self.size,
            "codec": self.codec.to_dict(),
            "ranges": [
                {"name": r.name, "kind": r.kind, "start": r.start, "size": r.size}
                for r in self.ranges
            ],
            "specials": dict(self._specials),
            "segments": {n: [s, e] for n, (s, e) in self._segments.items()},
            "tasks": dict(self._tasks),
            "metadata": json.loads(json.dumps(self._metadata)),
        }

    @classmethod
    def from_schema(cls, schema: Mapping[str, Any]) -> Vocabulary:
        """Rebuild a vocabulary from :meth:`schema` (as saved: a ``hash`` key is checked).

        Raises:
            ValueError: the schema is malformed, or its ``hash`` is not the hash of its content.
        """
        if schema.get("format") != FORMAT:
            raise ValueError(
                f"not a vocabulary schema: format {schema.get('format')!r} != {FORMAT!r}"
            )
        try:
            vocab = cls(
                CodecInfo(**schema["codec"]),
                [Range(r["name"], r["kind"], r["start"], r["size"]) for r in schema["ranges"]],
                schema["specials"],
                {n: tuple(ids) for n, ids in schema["segments"].items()},
                schema["tasks"],
                schema.get("metadata"),
                schema["version"],
            )
        except (KeyError, TypeError) as err:
            raise ValueError(f"malformed vocabulary schema: {err!r}") from err
        if "size" in schema and schema["size"] != vocab.size:
            raise ValueError(
                f"vocabulary schema says size {schema['size']}, its ranges end at {vocab.size}"
            )
        stored = schema.get("hash")
        if stored is not None and stored != vocab.hash:
            raise ValueError(
                f"vocabulary schema hash {stored} does not match its content ({vocab.hash}): "
                "the file was edited; rebuild it instead"
            )
        return vocab

    @property
    def hash(self) -> str:
        """First 16 hex digits of the sha256 of the canonical JSON of :meth:`schema`."""
        return self._hash

    def check_compatible(self, other: Vocabulary | Mapping[str, Any]) -> None:
        """Refuse anything but this exact vocabulary.

        Args:
            other: a vocabulary, or a schema dict (e.g. the one stored with a checkpoint).

        Raises:
            VocabularyMismatch: naming both hashes and the first entry that differs.
        """
        theirs = other.schema() if isinstance(other, Vocabulary) else dict(other)
        theirs.pop("hash", None)
        their_hash = schema_hash(theirs)
        if their_hash == self.hash:
            return
        mine = self.schema()
        difference = (
            _first_difference(mine, theirs) or "<none: equal values of different JSON types>"
        )
        detail = f" (version {self.version} vs {theirs.get('version', '?')})"
        raise VocabularyMismatch(self.hash, their_hash, difference, detail)

    def check_extends(self, base: Vocabulary) -> None:
        """Refuse unless this vocabulary is ``base`` or grew from it (:meth:`extend`): the
        same codec, every range of ``base`` in place, every special, segment marker and
        task of ``base`` at the same id, its modality metadata unchanged.

        Raises:
            VocabularyMismatch: naming both hashes and the first entry of ``base`` that moved.
        """

        def refuse(difference: str) -> None:
            raise VocabularyMismatch(
                base.hash, self.hash, difference, " (the second does not extend the first)"
            )

        if self.codec != base.codec:
            refuse(f"codec: {base.codec} != {self.codec}")
        mine = {r.name: r for r in self.ranges}
        for r in base.ranges:
            if mine.get(r.name) != r:
                refuse(f"ranges.{r.name}: {r} != {mine.get(r.name)}")
        for kind, theirs, ours in (
            ("specials", base._specials, self._specials),
            ("segments", base._segments, self._segments),
            ("tasks", base._tasks, self._tasks),
        ):
            for name, ids in theirs.items():
                if ours.get(name) != ids:
                    refuse(f"{kind}.{name}: {ids} != {ours.get(name)}")
        for name, value in base._metadata.items():
            if self._metadata.get(name) != value:
                refuse(f"metadata.{name} changed")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the schema (plus its ``hash``) as JSON; replaces ``path`` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps({**self.schema(), "hash": self.hash}, indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save` (its hash is checked)."""
        return cls.from_schema(json.loads(Path(path).read_text()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.hash == self.hash

    def __hash__(self) -> int:
        return hash(self._hash)

    def __repr__(self) -> str:
        return f"Vocabulary(version={self.version}, size={self.size}, hash={self.hash!r})"

    # ------------------------------------------------------------------ layout
    @property
    def size(self) -> int:
        """Number of ids (one past the largest): the rows of the LM's embedding table."""
        return self.ranges[-1].stop if self.ranges else 0

    def __len__(self) -> int:
        return self.size

    @property
    def pad_id(self) -> int:
        return self._specials["<pad>"]

    @property
    def specials(self) -> dict[str, int]:
        return dict(self._specials)

    @property
    def tasks(self) -> dict[str, int]:
        return dict(self._tasks)

    @property
    def segments(self) -> dict[str, tuple[int, int]]:
        return dict(self._segments)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names in allocation order (``codec`` first)."""
        return tuple(r.name for r in self.ranges if r.kind == "modality")

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._metadata))

    def range(self, name: str) -> Range:
        """The range called ``name`` (a modality, ``specials``, ``tasks.v2``, ...)."""
        if name not in self._by_name:
            raise UnknownName(
                f"no range {name!r} in vocabulary {self.hash} (ranges: {list(self._by_name)})"
            )
        return self._by_name[name]

    def codebook_range(self, q: int) -> tuple[int, int]:
        """``(start, stop)`` ids of codebook ``q``: the logits slice of its head."""
        if not 0 <= q < self.codec.n_q:
            raise ValueError(f"codebook {q} out of range [0, {self.codec.n_q})")
        start = self._by_name[CODEC].start + q * self.codec.codebook_size
        return start, start + self.codec.codebook_size

    # ------------------------------------------------------------------ encoding
    def special(self, name: str) -> int:
        """Id of a special token, ``<start>`` (the brackets may be left out)."""
        key = name if name.startswith("<") else f"<{name}>"
        if key not in self._specials:
            raise UnknownName(f"no special token {name!r} (specials: {list(self._specials)})")
        return self._specials[key]

    def task_id(self, task: str) -> int:
        """Id of ``<{task}_task>``."""
        if task not in self._tasks:
            raise UnknownName(
                f"vocabulary {self.hash} (version {self.version}) has no task {task!r} "
                f"(tasks: {list(self._tasks)}); add it with extend(tasks=[{task!r}])"
            )
        return self._tasks[task]

    def segment_ids(self, segment: str) -> tuple[int, int]:
        """Ids of ``<{segment}_start>`` and ``<{segment}_end>``."""
        if segment not in self._segments:
            raise UnknownName(
                f"vocabulary {self.hash} (version {self.version}) has no segment {segment!r} "
                f"(segments: {list(self._segments)}); add it with extend(segments=[{segment!r}])"
            )
        return self._segments[segment]

    def _modality(self, modality: str) -> Range:
        found = self._by_name.get(modality)
        if found is None or found.kind != "modality":
            raise UnknownName(f"no modality {modality!r} (modalities: {list(self.modalities)})")
        return found

    def encode(self, modality: str, values: np.ndarray) -> np.ndarray:
        """Ids of local values of a modality; for ``codec``, see :meth:`codec_ids`.

        Args:
            modality: ``phone``, ``midi``, ``text``, ``semantic``, ... or ``codec``.
            values: integers in ``[0, size of the modality)``, any shape.

        Returns:
            int64 ids of the same shape.
        """
        if modality == CODEC:
            return self.codec_ids(values)
        found = self._modality(modality)
        values = _integers(values, modality)
        bad = (values < 0) | (values >= found.size)
        if bad.any():
            raise ValueError(
                f"{modality} value {int(values[bad][0])} out of range: the modality has "
                f"{found.size} values [0, {found.size})"
            )
        return values.astype(np.int64) + found.start

    def codec_ids(self, codes: np.ndarray) -> np.ndarray:
        """Ids of codec codes: ``codec.start + q * codebook_size + code``.

        Args:
            codes: ``(..., n_q)`` codes in ``[0, codebook_size)``, codebook ``q`` in column ``q``.

        Returns:
            ``(..., n_q)`` int64 ids.
        """
        codes = _integers(codes, CODEC)
        n_q, size = self.codec.n_q, self.codec.codebook_size
        if codes.ndim < 1 or codes.shape[-1] != n_q:
            raise ValueError(f"codec codes must be (frames, {n_q}), got shape {codes.shape}")
        bad = (codes < 0) | (codes >= size)
        if bad.any():
            raise ValueError(
                f"codec value {int(codes[bad][0])} out of range: each codebook has {size} "
                f"codes [0, {size})"
            )
        offsets = self._by_name[CODEC].start + np.arange(n_q, dtype=np.int64) * size  # (n_q,)
        return codes.astype(np.int64) + offsets  # (..., n_q)

    def codes_from_ids(self, ids: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`codec_ids`: ``(..., n_q)`` ids -> codes; refuses any other id."""
        ids = _integers(ids, "ids")
        n_q, size = self.codec.n_q, self.codec.codebook_size
        if ids.ndim < 1 or ids.shape[-1] != n_q:
            raise ValueError(f"codec ids must be (frames, {n_q}), got shape {ids.shape}")
        local = ids.astype(np.int64) - self._by_name[CODEC].start  # (..., n_q)
        codes = local - np.arange(n_q, dtype=np.int64) * size  # (..., n_q)
        bad = (codes < 0) | (codes >= size)
        if bad.any():
            raise ValueError(f"id {int(ids[bad][0])} is not a code of its column's codebook")
        return codes

    def decode(self, ids: np.ndarray) -> list[DecodedToken]:
        """What every id means, in C order of ``ids``.

        Raises:
            ValueError: an id outside every range, or a reserved slot no token holds.
        """
        flat = _integers(ids, "ids").reshape(-1).astype(np.int64)
        bad = (flat < 0) | (flat >= self.size)
        if bad.any():
            raise ValueError(
                f"id {int(flat[bad][0])} is outside every range (ids are [0, {self.size}))"
            )
        which = np.searchsorted(self._starts, flat, side="right") - 1
        size = self.codec.codebook_size
        out = []
        for i, r in zip(flat.tolist(), which.tolist()):
            found = self.ranges[r]
            local = i - found.start
            if found.kind == "modality":
                if found.name == CODEC:
                    q, code = divmod(local, size)
                    out.append(DecodedToken(CODEC, CODEC, q, code))
                else:
                    out.append(DecodedToken(found.name, found.name, None, local))
                continue
            token = self._tokens.get(i)
            if token is None:
                raise ValueError(
                    f"id {i} is a reserved slot of range {found.name!r} that no token holds"
                )
            out.append(DecodedToken(token[0], None, None, local, token[1]))
        return out

    def describe(self) -> str:
        """A human-readable table of the layout: ranges, codec, tokens, hash."""
        c = self.codec
        lines = [
            f"vocabulary version {self.version}  hash {self.hash}  {self.size} ids",
            f"codec {c.fingerprint}: {c.sample_rate} Hz, {c.frame_rate:g} frames/s, "
            f"{c.n_q} codebooks x {c.codebook_size} codes",
            "",
            f"{'range':<16} {'kind':<9} {'start':>8} {'stop':>8} {'size':>8}  used",
        ]
        for r in self.ranges:
            used = (
                r.size if r.kind == "modality" else sum(r.start <= i < r.stop for i in self._tokens)
            )
            lines.append(f"{r.name:<16} {r.kind:<9} {r.start:>8} {r.stop:>8} {r.size:>8}  {used}")
        lines += [
            "",
            "specials: " + " ".join(f"{n}={i}" for n, i in self._specials.items()),
            "segments: " + " ".join(f"{n}={s}/{e}" for n, (s, e) in self._segments.items()),
            "tasks:    " + " ".join(f"{n}={i}" for n, i in self._tasks.items()),
        ]
        if self._metadata:
            lines.append("metadata: " + ", ".join(sorted(self._metadata)))
        return "\n".join(lines)

    # ------------------------------------------------------------------ checks
    def _validate(self) -> None:
        if self.version < 1:
            raise ValueError(f"vocabulary version must be >= 1, got {self.version}")
        position, names = 0, set()
        for r in self.ranges:
            if r.kind not in RANGE_KINDS:
                raise ValueError(
                    f"range {r.name!r}: unknown kind {r.kind!r} (kinds: {RANGE_KINDS})"
                )
            if r.start != position or r.size <= 0:
                raise ValueError(
                    f"range {r.name!r} [{r.start}, {r.stop}) must start at {position} and be non-empty"
                )
            if r.name in names:
                raise ValueError(f"two ranges are called {r.name!r}")
            if r.kind == "modality" and (not _NAME.fullmatch(r.name) or r.name == EMBEDDING):
                raise ValueError(
                    f"bad modality name {r.name!r} (lowercase identifier, not {EMBEDDING!r})"
                )
            names.add(r.name)
            position = r.stop
        codec = [r for r in self.ranges if r.name == CODEC and r.kind == "modality"]
        expected = self.codec.n_q * self.codec.codebook_size
        if len(codec) != 1 or codec[0].size != expected:
            raise ValueError(f"the vocabulary needs one 'codec' modality range of {expected} ids")
        missing = [n for n in DEFAULT_SPECIALS if n not in self._specials]
        if missing or self._specials["<pad>"] != 0:
            raise ValueError(
                f"specials must hold {list(DEFAULT_SPECIALS)} with <pad> = 0 (missing {missing})"
            )
        owners: dict[int, str] = {}
        entries = [("special", n, i) for n, i in self._specials.items()]
        entries += [("segment", n, i) for n, ids in self._segments.items() for i in ids]
        entries += [("task", n, i) for n, i in self._tasks.items()]
        for kind, name, i in entries:
            pattern = _SPECIAL if kind == "special" else _NAME
            if not pattern.fullmatch(name):
                raise ValueError(f"bad {kind} name {name!r}")
            if not any(r.kind == kind and r.start <= i < r.stop for r in self.ranges):
                raise ValueError(f"{kind} {name!r} has id {i}, outside every {kind} range")
            if i in owners:
                raise ValueError(f"id {i} is held by both {owners[i]} and {kind} {name!r}")
            owners[i] = f"{kind} {name!r}"
        modalities = {r.name for r in self.ranges if r.kind == "modality"}
        for name, value in self._metadata.items():
            if name not in modalities:
                raise ValueError(
                    f"metadata for {name!r}, which is not a modality of the vocabulary"
                )
            if not isinstance(value, dict):
                raise ValueError(
                    f"metadata of {name!r} must be a JSON object, got {type(value).__name__}"
                )


def _integers(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{what} must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False) if array.size == 0 else array
