"""A task template and a sample become one token sequence on a ``(frames, n_q)`` grid.

Layout (UniAudio's, one frame per row)::

    <start> <tts_task> <phone_start> p p p <phone_end> <prompt_start> c c <prompt_end>
    <audio_start> c c c c <audio_end> <end>

Codec segments fill all ``n_q`` codebooks of a frame. Every other token (specials, task,
segment markers, phones, MIDI, text, semantic tokens) sits in codebook 0 with ``<pad>`` in
the others, and ``mask`` is True only where a real token sits (UniAudio repeats the token
``n_q`` times instead). A continuous segment (T5 text embeddings) is a run of
``<embedding>`` frames whose vectors travel in ``continuous``.

``loss_mask`` marks the tokens the model learns to produce: the target segment's tokens,
its ``<X_end>`` marker and the final ``<end>`` (not ``<X_start>``: the template fixes it).
It marks the positions of those tokens; shifting inputs against labels is the model's job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lit_codec.lm.templates import SegmentTemplate, TaskTemplate
from lit_codec.lm.vocab import CODEC, EMBEDDING, UnknownName, Vocabulary

__all__ = [
    "MissingSampleField",
    "SegmentSpan",
    "TaskSequence",
    "build_sequence",
    "describe_sequence",
]


class MissingSampleField(KeyError):
    """A sample lacks the field a segment of its task reads."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class SegmentSpan:
    """Where a segment's content sits in a sequence.

    Args:
        name: segment name.
        modality: its modality.
        start: first content frame; ``<{name}_start>`` sits at ``start - 1``.
        stop: one past the last content frame; ``<{name}_end>`` sits at ``stop``.
        target: whether it is the task's target.
    """

    name: str
    modality: str
    start: int
    stop: int
    target: bool = False

    @property
    def frames(self) -> int:
        return self.stop - self.start


@dataclass
class TaskSequence:
    """One training sequence.

    Args:
        task: task name.
        ids: ``(L, n_q)`` int64 token ids.
        mask: ``(L, n_q)`` bool, True where a real token sits (False on ``<pad>`` fill).
        loss_mask: ``(L, n_q)`` bool, True on the tokens the model learns to produce.
        segments: the spans of the segments' content, in order.
        continuous: ``(L, D)`` float32 vectors of ``<embedding>`` frames (zero elsewhere),
            or None when the task has no embedding segment.
    """

    task: str
    ids: np.ndarray
    mask: np.ndarray
    loss_mask: np.ndarray
    segments: list[SegmentSpan]
    continuous: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def target(self) -> SegmentSpan:
        return next(s for s in self.segments if s.target)


def build_sequence(
    vocab: Vocabulary,
    template: TaskTemplate,
    sample: Mapping[str, Any],
    *,
    rng: np.random.Generator | None = None,
) -> TaskSequence:
    """Lay out ``<start> <task> (<seg_start> tokens <seg_end>)... <end>`` on the frame grid.

    Args:
        vocab: a vocabulary holding the template's task and segment markers
            (:func:`~lit_codec.lm.templates.vocabulary_for`).
        template: the task.
        sample: field -> array: codes ``(frames, n_q)`` for codec segments, 1-D int
            local values for token segments, float ``(T, D)`` for embedding segments.
        rng: where a codec segment is longer than its ``max_seconds``, a random crop drawn
            from it; None keeps the first ``max_seconds``.

    Returns:
        the sequence, ``L = 3 + sum(content frames + 2)`` frames.

    Raises:
        MissingSampleField: the sample lacks a segment's field (names task, segment, field).
        ValueError: a field of the wrong shape or out of its modality's range.
    """
    n_q, pad = vocab.codec.n_q, vocab.pad_id
    ids: list[np.ndarray] = []  # (frames, n_q) blocks
    mask: list[np.ndarray] = []
    loss: list[np.ndarray] = []
    vectors: list[tuple[int, np.ndarray]] = []  # (first frame, (T, D)) of embedding segments
    spans: list[SegmentSpan] = []
    position = 0

    def tokens(values: np.ndarray, target: bool = False) -> None:  # one token per frame, codebook 0
        nonlocal position
        block = np.full((len(values), n_q), pad, dtype=np.int64)  # (T, n_q)
        block[:, 0] = values
        real = np.zeros((len(values), n_q), dtype=bool)  # (T, n_q)
        real[:, 0] = True
        ids.append(block)
        mask.append(real)
        loss.append(real & target)
        position += len(values)

    tokens(np.array([vocab.special("<start>"), _task_id(vocab, template)]))
    for seg in template.segments:
        where = f"task {template.name!r}, segment {seg.name!r}"
        seg_start, seg_end = _segment_ids(vocab, seg, where)
        if seg.source not in sample:
            raise MissingSampleField(
                f"{where} reads sample field {seg.source!r}, which the sample lacks "
                f"(it has {sorted(sample)})"
            )
        tokens(np.array([seg_start]))
        start = position
        try:
            if seg.modality == CODEC:
                block, real = _codec_frames(vocab, seg, np.asarray(sample[seg.source]), rng)
                ids.append(block)
                mask.append(real)
                loss.append(real & seg.target)
                position += len(block)
            elif seg.modality == EMBEDDING:
                values = np.asarray(sample[seg.source], dtype=np.float32)
                if values.ndim != 2:
                    raise ValueError(f"embeddings must be (T, D), got shape {values.shape}")
                vectors.append((position, values))
                tokens(np.full(len(values), vocab.special("<embedding>")), seg.target)
            else:
                values = np.asarray(sample[seg.source])
                if values.ndim != 1:
                    raise ValueError(f"{seg.modality} tokens must be 1-D, got shape {values.shape}")
                tokens(vocab.encode(seg.modality, values), seg.target)
        except (ValueError, TypeError) as err:
            kind = TypeError if isinstance(err, TypeError) else ValueError
            raise kind(f"{where} (sample field {seg.source!r}): {err}") from err
        spans.append(SegmentSpan(seg.name, seg.modality, start, position, seg.target))
        tokens(np.array([seg_end]), seg.target)
    tokens(np.array([vocab.special("<end>")]), True)

    continuous = None
    if vectors:
        dims = {v.shape[1] for _, v in vectors}
        if len(dims) > 1:
            raise ValueError(
                f"task {template.name!r}: embedding segments of different widths {sorted(dims)}"
            )
        continuous = np.zeros((position, dims.pop()), dtype=np.float32)  # (L, D)
        for first, values in vectors:
            continuous[first : first + len(values)] = values
    return TaskSequence(
        task=template.name,
        ids=np.concatenate(ids),  # (L, n_q)
        mask=np.concatenate(mask),  # (L, n_q)
        loss_mask=np.concatenate(loss),  # (L, n_q)
        segments=spans,
        continuous=continuous,
    )


def _task_id(vocab: Vocabulary, template: TaskTemplate) -> int:
    try:
        return vocab.task_id(template.name)
    except KeyError as err:
        raise UnknownName(
            f"{err}; build the vocabulary with vocabulary_for(templates, ...)"
        ) from None


def _segment_ids(vocab: Vocabulary, seg: SegmentTemplate, where: str) -> tuple[int, int]:
    try:
        return vocab.segment_ids(seg.name)
    except KeyError as err:
        raise UnknownName(f"{where}: {err}") from None


def _codec_frames(
    vocab: Vocabulary, seg: SegmentTemplate, codes: np.ndarray, rng: np.random.Generator | None
) -> tuple[np.ndarray, np.ndarray]:
    """Ids ``(F, n_q)`` and real-token mask of a codec segment, cropped to ``max_seconds``."""
    n_q = vocab.codec.n_q
    if codes.ndim != 2 or codes.shape[1] != n_q:
        raise ValueError(f"codes must be (frames, {n_q}), got shape {codes.shape}")
    if seg.max_seconds is not None:
        keep = math.floor(seg.max_seconds * vocab.codec.frame_rate + 1e-6)
        if len(codes) > keep:
            offset = int(rng.integers(0, len(codes) - keep + 1)) if rng is not None else 0
            codes = codes[offset : offset + keep]  # (keep, n_q)
    real = np.ones(codes.shape, dtype=bool)  # (F, n_q)
    if not seg.masked:
        return vocab.codec_ids(codes), real
    hidden = codes < 0  # (F, n_q)
    rows = hidden.all(axis=1)  # (F,)
    if (hidden.any(axis=1) & ~rows).any():
        raise ValueError("a masked frame must have every codebook negative")
    ids = np.full(codes.shape, vocab.pad_id, dtype=np.int64)  # (F, n_q)
    ids[~rows] = vocab.codec_ids(codes[~rows])
    ids[rows, 0] = vocab.special("<mask>")
    real[rows, 1:] = False
    return ids, real


def describe_sequence(vocab: Vocabulary, seq: TaskSequence, first: int = 8) -> dict[str, Any]:
    """A JSON-able summary of a sequence (backs ``lit-codec tokens --json``).

    Args:
        vocab: the vocabulary the sequence was built with.
        seq: the sequence.
        first: how many of each segment's first real token ids to list.

    Returns:
        ``{"task", "vocab_hash", "frames", "n_q", "tokens", "loss_tokens", "prefix",
        "segments": [{"name", "modality", "target", "start", "stop", "frames",
        "first_ids"}], "suffix"}``; ``first_ids`` in frame order, codebooks within a frame.
    """
    segments = []
    for span in seq.segments:
        real = seq.ids[span.start : span.stop][
            seq.mask[span.start : span.stop]
        ]  # (tokens,) C order
        segments.append(
            {
                "name": span.name,
                "modality": span.modality,
                "target": span.target,
                "start": span.start,
                "stop": span.stop,
                "frames": span.frames,
                "first_ids": [int(i) for i in real[:first]],
            }
        )
    return {
        "task": seq.task,
        "vocab_hash": vocab.hash,
        "vocab_version": vocab.version,
        "frames": len(seq),
        "n_q": int(seq.ids.shape[1]),
        "tokens": int(seq.mask.sum()),
        "loss_tokens": int(seq.loss_mask.sum()),
        "prefix": [int(i) for i in seq.ids[:2, 0]],
        "segments": segments,
        "suffix": [int(i) for i in seq.ids[-2:, 0]],
        "continuous": None if seq.continuous is None else list(seq.continuous.shape),
    }
