"""Token shards -> task sequences -> token-budget batches (the engine of ``TokenShardDataModule``).

A token-shard sample (``data_prep/make_token_shards.py``) holds the codes of one clip, the
condition fields of the tasks it serves and a JSON record naming those tasks. Each time it
is read for training, one of its tasks is drawn (weights from the recipe) and the sample is
laid out as that task's sequence (:func:`~lit_codec.lm.sequence.build_sequence`); for
validation, every task it serves gives one sequence, in a fixed order.

Batches hold whole sequences under a token budget: ``sequences x longest <= max_tokens``
frames. Sequences are gathered in pools, sorted by length and cut greedily into batches
(length bucketing: sequences of similar length share a batch, so little is padding); the
batches of a pool go out in a shuffled order.
"""

from __future__ import annotations

import io
import json
import logging
import math
import random
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset

from lit_codec.data.shards import endless_samples, iter_tar_samples, reader_of
from lit_codec.data.token_batch import TokenBatch, collate_sequences
from lit_codec.lm.sequence import TaskSequence, build_sequence
from lit_codec.lm.templates import TaskTemplate
from lit_codec.lm.vocab import Vocabulary

__all__ = [
    "TokenSample",
    "SequenceMaker",
    "TokenSequenceStream",
    "budget_batches",
    "decode_token_sample",
    "empty_batch",
    "eval_batches",
]

log = logging.getLogger(__name__)


@dataclass
class TokenSample:
    """One token-shard sample, decoded.

    Args:
        key: the sample key.
        url: the shard it came from.
        meta: its JSON record (``tasks``, ``frames``, ``speaker``, ``text``, ...).
        fields: member name -> array (``codes`` ``(frames, n_q)`` int16, ``noisy_codes``,
            ``phones``, ...).
    """

    key: str
    url: str
    meta: dict[str, Any]
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        return list(self.meta.get("tasks", []))


def decode_token_sample(sample: Mapping[str, Any]) -> TokenSample:
    """A raw WebDataset sample (``{"__key__", "__url__", "json", "codes.npy", ...}``) decoded.

    Raises:
        ValueError: no JSON record, no codes, or a member that is not a readable ``.npy``
            (names the sample, the shard and the member).
    """
    key, url = sample.get("__key__", "?"), sample.get("__url__", "?")
    if "json" not in sample:
        raise ValueError(f"token sample {key} in {url} has no .json record")
    if "codes.npy" not in sample:
        raise ValueError(f"token sample {key} in {url} has no codes.npy")
    try:
        meta = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"token sample {key} in {url}: .json is not JSON ({err})") from None
    fields: dict[str, np.ndarray] = {}
    for name, data in sample.items():
        if not name.endswith(".npy"):
            continue
        try:
            fields[name[: -len(".npy")]] = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as err:  # numpy raises ValueError, OSError, EOFError...
            raise ValueError(
                f"token sample {key} in {url}: {name} is not a readable .npy ({err})"
            ) from None
    return TokenSample(key, url, meta, fields)


def budget_batches(
    lengths: Sequence[int], max_tokens: int, max_batch_size: int | None = None
) -> list[list[int]]:
    """Indices of ``lengths`` cut into batches with ``len(batch) * longest <= max_tokens``.

    Sorted by length (ties by index) and cut greedily, so sequences of similar length
    share a batch. A sequence longer than ``max_tokens`` is left out (the caller reports it).
    """
    order = sorted(
        (i for i, n in enumerate(lengths) if n <= max_tokens), key=lambda i: (lengths[i], i)
    )
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:  # ascending: the newcomer is the longest
        full = max_batch_size is not None and len(current) >= max_batch_size
        if current and (full or lengths[i] * (len(current) + 1) > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def _key_seed(*parts: Any) -> int:
    return zlib.crc32(json.dumps(parts, default=str).encode())


class SequenceMaker:
    """Lays token samples out as task sequences.

    Args:
        vocabulary: the shards' vocabulary.
        templates: task name -> template, for every task of ``weights``.
        weights: task -> sampling weight (> 0); a sample is drawn one of the tasks it serves
            (and ``weights`` lists), in proportion to the weights.
        seed: base seed of the task draws and crops (``(seed, pass, key)`` per sample).
        random_crops: crop over-long codec segments (prompts) at random; False: keep the
            first ``max_seconds`` (validation).
    """

    def __init__(
        self,
        vocabulary: Vocabulary,
        templates: Mapping[str, TaskTemplate],
        weights: Mapping[str, float],
        seed: int = 0,
        random_crops: bool = True,
    ):
        missing = [t for t in weights if t not in templates]
        if missing:
            raise ValueError(f"no template for tasks {missing}; templates: {sorted(templates)}")
        self.vocabulary = vocabulary
        self.templates = dict(templates)
        self.weights = {t: float(w) for t, w in weights.items() if w > 0}
        self.seed = seed
        self.random_crops = random_crops
        self.embedding_id = vocabulary.specials.get("<embedding>")

    def tasks_of(self, sample: TokenSample) -> list[str]:
        """The tasks of ``sample`` this maker builds, in its weights' order."""
        served = set(sample.tasks)
        return [t for t in self.weights if t in served]

    def draw(self, sample: TokenSample, draw: int = 0) -> TaskSequence | None:
        """One sequence of a task drawn for ``sample`` (None: it serves none of the tasks)."""
        tasks = self.tasks_of(sample)
        if not tasks:
            return None
        rng = np.random.default_rng(_key_seed(self.seed, draw, sample.key))
        w = np.array([self.weights[t] for t in tasks])
        task = tasks[int(rng.choice(len(tasks), p=w / w.sum()))] if len(tasks) > 1 else tasks[0]
        return self.build(sample, task, rng if self.random_crops else None)

    def build(
        self, sample: TokenSample, task: str, rng: np.random.Generator | None = None
    ) -> TaskSequence:
        """The sequence of ``task`` for ``sample``; errors name the sample and its shard."""
        try:
            return build_sequence(self.vocabulary, self.templates[task], sample.fields, rng=rng)
        except (KeyError, ValueError) as err:
            raise ValueError(
                f"token sample {sample.key} in {sample.url}, task {task}: {err}"
            ) from None

    def collate(self, sequences: Sequence[TaskSequence], keys: Sequence[str]) -> TokenBatch:
        return collate_sequences(sequences, keys, self.vocabulary.pad_id, self.embedding_id)


def empty_batch(batch: TokenBatch) -> TokenBatch:
    """``batch`` with no real token (masks all False): counts nothing in a loss or metric,
    but runs the same forward (the filler that gives every rank as many batches)."""
    off = torch.zeros_like(batch.mask)
    return replace(batch, mask=off, loss_mask=off.clone(), condition_mask=torch.zeros_like(batch.condition_mask),
                   tasks=list(batch.tasks), keys=[f"(filler) {k}" for k in batch.keys])  # fmt: skip


class _Problems:
    """Warns (first few in full), counts and carries on."""

    def __init__(self, what: str):
        self.what = what
        self.count = 0

    def __call__(self, exc: Exception) -> bool:
        self.count += 1
        if self.count <= 5 or math.log2(self.count).is_integer():
            log.warning("%s (%d so far): %s", self.what, self.count, exc)
        return True


class TokenSequenceStream(IterableDataset):
    """Endless stream of training :class:`TokenBatch` es under a token budget.

    Args:
        urls: the training shards.
        maker: builds the sequences (vocabulary, templates, task weights).
        max_tokens: padded frames per batch (``sequences x longest``).
        max_batch_size: at most this many sequences per batch (None: no limit).
        pool: sequences gathered, sorted and cut into batches at a time (the bucket);
            larger pools pad less and shuffle more.
        seed: shard order (shared by the ranks), pool shuffling (per reader).
        rank, world_size: this process's place among the data-parallel ranks.
    """

    def __init__(
        self,
        urls: Sequence[str],
        maker: SequenceMaker,
        max_tokens: int,
        max_batch_size: int | None = None,
        pool: int = 256,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        super().__init__()
        if not urls:
            raise ValueError("no training shards")
        self.urls = list(urls)
        self.maker = maker
        self.max_tokens = int(max_tokens)
        self.max_batch_size = max_batch_size
        self.pool = max(1, int(pool))
        self.seed = seed
        self.rank, self.world_size = rank, world_size

    def sequences(self, reader: int, readers: int) -> Iterator[tuple[str, TaskSequence]]:
        """(key, sequence) of this reader's samples, forever; bad samples are skipped and reported."""
        problems = _Problems("skipping a token sample")
        too_long = _Problems("skipping a sequence over the token budget")
        passes: dict[str, int] = {}  # key -> times seen: each pass draws anew
        for raw in endless_samples(self.urls, self.seed, reader, readers, problems):
            try:
                sample = decode_token_sample(raw)
                draw = passes.get(sample.key, 0)
                passes[sample.key] = draw + 1
                seq = self.maker.draw(sample, draw)
            except ValueError as err:
                problems(err)
                continue
            if seq is None:
                continue
            if len(seq) > self.max_tokens:
                too_long(ValueError(
                    f"{sample.key} ({seq.task}) has {len(seq)} frames, over data.max_tokens "
                    f"{self.max_tokens}: raise max_tokens or shorten the clips"
                ))  # fmt: skip
                continue
            yield sample.key, seq

    def __iter__(self) -> Iterator[TokenBatch]:
        reader, readers = reader_of(self.rank, self.world_size)
        rng = random.Random((self.seed + 1) * 7919 + reader)
        pool: list[tuple[str, TaskSequence]] = []
        for item in self.sequences(reader, readers):
            pool.append(item)
            if len(pool) < self.pool:
                continue
            batches = budget_batches(
                [len(s) for _, s in pool], self.max_tokens, self.max_batch_size
            )
            rng.shuffle(batches)
            for b in batches:
                yield self.maker.collate([pool[i][1] for i in b], [pool[i][0] for i in b])
            pool = []


def eval_batches(
    urls: Sequence[str],
    maker: SequenceMaker,
    max_tokens: int,
    max_sequences: int | None = None,
    max_batch_size: int | None = None,
) -> tuple[list[TokenBatch], int]:
    """Every (sample, task) sequence of ``urls`` in file order (at most ``max_sequences``),
    batched under the budget; the same batches every time. Returns the batches and how many
    samples or sequences were skipped (unreadable, or over the budget)."""
    problems = _Problems("skipping a validation token sample")
    keys: list[str] = []
    seqs: list[TaskSequence] = []
    for raw in iter_tar_samples(urls, problems):
        if max_sequences is not None and len(seqs) >= max_sequences:
            break
        try:
            sample = decode_token_sample(raw)
            for task in maker.tasks_of(sample):
                seqs.append(maker.build(sample, task))
                keys.append(sample.key)
        except ValueError as err:
            problems(err)
    seqs, keys = seqs[:max_sequences], keys[:max_sequences]
    lengths = [len(s) for s in seqs]
    over = sum(1 for n in lengths if n > max_tokens)
    if over:
        log.warning(
            "%d validation sequences are over data.max_tokens %d and left out", over, max_tokens
        )
    batches = budget_batches(lengths, max_tokens, max_batch_size)
    return [
        maker.collate([seqs[i] for i in b], [keys[i] for i in b]) for b in batches
    ], problems.count + over
