"""``TokenShardDataModule``: codec-LM task sequences from token shards, in token-budget batches."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from lit_codec.data.audio_dataset import FixedLengthLoader, count_training_batch, endless_loader
from lit_codec.data.shards import iter_tar_samples, load_index, split_from_root
from lit_codec.data.token_batch import TokenBatch
from lit_codec.data.token_stream import (
    SequenceMaker,
    TokenSequenceStream,
    decode_token_sample,
    empty_batch,
    eval_batches,
)
from lit_codec.lm.templates import TaskTemplate, load_templates
from lit_codec.lm.vocab import Vocabulary

__all__ = ["TokenShardDataModule"]

log = logging.getLogger(__name__)

TOKEN_INDEX_FORMAT = "lit-codec/token-shards"
EPOCH_PEEK = 200  # sequences read at set-up to estimate the batches of an epoch


class TokenShardDataModule(L.LightningDataModule):
    """:class:`~lit_codec.data.token_batch.TokenBatch` es of task sequences for ``CodecLM``.

    ``root`` is a directory made by ``data_prep/make_token_shards.py``: its ``index.json``
    holds the vocabulary (``self.vocabulary`` after ``setup``; ``CodecLM`` sizes its network
    from it), the task templates the samples were made for, and the shards of each split.

    Training: every sample read draws one of the tasks it serves, in proportion to
    ``tasks``' weights, and becomes that task's sequence; sequences are pooled, sorted by
    length and cut into batches of at most ``max_tokens`` padded frames (length
    bucketing), which go out in a shuffled order. Every rank yields the same number of
    batches per epoch (an endless stream cut into epochs), and a resumed run continues at
    the batch where the checkpoint was taken (``--ckpt_path last``).
    Validation/test: each sample once per task it serves, first ``max_seconds`` of
    prompts, the same batches in the same order every time; batches are dealt to the ranks
    in turn, and a rank short of one gets a filler batch that counts no token.

    Args:
        root: token-shard directory (holds ``index.json``).
        tasks: task -> sampling weight (tasks of the shards' index; weight 0 leaves a task
            out). None: every task of the shards, weight 1.
        max_tokens: padded frames per batch (sequences x longest sequence; each frame holds
            ``n_q`` tokens). A longer sequence is skipped with a warning.
        max_batch_size: at most this many sequences per batch (None: only the budget).
        pool: sequences bucketed together (per loader worker).
        num_workers: loader worker processes.
        batches_per_epoch: training batches per epoch and rank; None: about one pass over
            the training samples (estimated from the first sequences).
        max_eval_sequences: validation/test sequences at most (None: all).
        templates: a tasks YAML to use instead of the templates stored in the index (for a
            task that reads fields the shards already hold).
        seed: task draws, crops, shard order and bucket shuffling.
    """

    def __init__(
        self,
        root: str | None = None,
        tasks: Mapping[str, float] | None = None,
        max_tokens: int = 16000,
        max_batch_size: int | None = None,
        pool: int = 256,
        num_workers: int = 2,
        batches_per_epoch: int | None = None,
        max_eval_sequences: int | None = 512,
        templates: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        if max_tokens < 1:
            raise ValueError(f"data.max_tokens must be positive, got {max_tokens}")
        if tasks is not None:
            bad = {t: w for t, w in tasks.items() if not (isinstance(w, (int, float)) and w >= 0)}
            if bad or not any(w > 0 for w in tasks.values()):
                raise ValueError(f"data.tasks: weights must be >= 0 and one > 0, got {dict(tasks)}")
        self.root = root
        self.tasks = None if tasks is None else {str(t): float(w) for t, w in tasks.items()}
        self.max_tokens = int(max_tokens)
        self.max_batch_size = max_batch_size
        self.pool = pool
        self.num_workers = num_workers
        self.batches_per_epoch = batches_per_epoch
        self.max_eval_sequences = max_eval_sequences
        self.templates_path = templates
        self.seed = seed
        self.vocabulary: Vocabulary | None = None
        self.templates: dict[str, TaskTemplate] = {}
        self.weights: dict[str, float] = {}
        self.index: dict[str, Any] = {}
        self.skipped = 0
        self._eval: dict[str, list[TokenBatch]] = {}
        self._train_loader: FixedLengthLoader | None = None

    # ------------------------------------------------------------------ index and vocabulary
    def read_index(self) -> None:
        """Read ``root/index.json`` once: ``vocabulary``, ``templates`` and ``weights`` (the
        tasks with a weight > 0; every task of the shards when ``tasks`` is None)."""
        if self.vocabulary is not None:
            return
        if self.root is None:
            raise ValueError(
                "no data: set data.root to a directory made by data_prep/make_token_shards.py "
                "(e.g. --data.root quickstart/tokens_se)"
            )
        index = load_index(self.root)
        if index.get("format") != TOKEN_INDEX_FORMAT:
            raise ValueError(
                f"{self.root}/index.json is not a token-shard index (format {index.get('format')!r}): "
                "make token shards from audio shards with data_prep/make_token_shards.py"
            )
        vocabulary = Vocabulary.from_schema(index["vocabulary"])
        if vocabulary.hash != index.get("vocab_hash", vocabulary.hash):
            raise ValueError(
                f"{self.root}/index.json: its vocabulary hashes to {vocabulary.hash}, "
                f"but the index says {index['vocab_hash']} (edited by hand?)"
            )
        source = self.templates_path or index.get("templates")
        templates = load_templates(source) if source is not None else load_templates()
        shard_tasks = list(index.get("tasks", []))
        weights = dict(self.tasks) if self.tasks is not None else dict.fromkeys(shard_tasks, 1.0)
        unknown = [t for t in weights if t not in shard_tasks]
        if unknown:
            raise ValueError(
                f"data.tasks names {unknown}, which the shards in {self.root} were not made for "
                f"(their tasks: {shard_tasks}); remake them with make_token_shards.py --tasks"
            )
        for task in weights:
            if task not in templates:
                raise ValueError(
                    f"no template for task {task!r} in {source or 'recipes/lm/tasks.yaml'}"
                )
            if task not in vocabulary.tasks:
                raise ValueError(f"task {task!r} has no token in the shards' vocabulary")
        weights = {t: w for t, w in weights.items() if w > 0}  # weight 0: left out, validation too
        self.index, self.vocabulary = index, vocabulary
        self.templates = {t: templates[t] for t in weights}
        self.weights = weights

    def maker(self, random_crops: bool = True) -> SequenceMaker:
        self.read_index()
        return SequenceMaker(self.vocabulary, self.templates, self.weights, self.seed, random_crops)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        self.read_index()
        if stage in (None, "fit"):
            split_from_root(self.root, "train")  # fail at start-up, not in a worker
        splits = self.index.get("splits", {})
        if stage in (None, "fit", "validate") and "valid" in splits:
            self.eval_batches("valid")
        if stage in (None, "test") and "test" in splits:
            self.eval_batches("test")

    def eval_batches(self, split: str) -> list[TokenBatch]:
        """Every sequence of the tasks in ``split`` (``valid``, ``test``), batched under
        ``max_tokens`` in a fixed order; built once and kept."""
        if split not in self._eval:
            shards = split_from_root(self.root, split)
            batches, skipped = eval_batches(
                shards.urls, self.maker(random_crops=False), self.max_tokens,
                self.max_eval_sequences, self.max_batch_size,
            )  # fmt: skip
            self.skipped += skipped
            if not batches:
                raise ValueError(
                    f"{self.root}: no {split} sequence of the tasks {list(self.weights)}"
                )
            self._eval[split] = batches
        return self._eval[split]

    def _epoch_length(self, urls: list[str], world: int, num_samples: int) -> int:
        """Batches per rank that read about every training sample once."""
        if self.batches_per_epoch is not None:
            return max(1, int(self.batches_per_epoch))
        maker, frames, seen = self.maker(), 0, 0
        for raw in iter_tar_samples(urls[:4], lambda e: True):
            try:
                seq = maker.draw(decode_token_sample(raw))
            except ValueError:
                continue
            if seq is not None and len(seq) <= self.max_tokens:
                frames, seen = frames + len(seq), seen + 1
            if seen >= EPOCH_PEEK:
                break
        if seen == 0:
            raise ValueError(
                f"{self.root}: the first training shards hold no sequence of the tasks "
                f"{list(self.weights)} within data.max_tokens {self.max_tokens}"
            )
        per_batch = 0.9 * self.max_tokens  # bucketing leaves about a tenth as padding
        return max(1, math.floor(num_samples * frames / seen / per_batch / world))

    def train_dataloader(self) -> FixedLengthLoader:
        if self._train_loader is None:
            shards = split_from_root(self.root, "train")
            rank, world = self._rank_world()
            stream = TokenSequenceStream(
                shards.urls, self.maker(), self.max_tokens, self.max_batch_size,
                pool=self.pool, seed=self.seed, rank=rank, world_size=world,
            )  # fmt: skip
            length = self._epoch_length(shards.urls, world, shards.num_samples or len(shards.urls))
            self._train_loader = endless_loader(stream, self.num_workers, length)
        return self._train_loader

    def _eval_loader(self, split: str) -> DataLoader:
        batches = self.eval_batches(split)
        rank, world = self._rank_world()
        mine = batches[rank::world]
        per_rank = math.ceil(len(batches) / world)
        mine += [empty_batch(batches[0])] * (per_rank - len(mine))  # equal counts: FSDP needs them
        return DataLoader(mine, batch_size=None, shuffle=False, num_workers=0)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        count_training_batch(self._train_loader, self.trainer)
        return batch

    def describe(self) -> dict[str, object]:
        """Numbers worth printing or logging about the data."""
        splits = self.index.get("splits", {})
        return {
            "root": None if self.root is None else str(Path(self.root)),
            "tasks": self.weights or self.tasks,
            "max_tokens": self.max_tokens,
            "vocab_hash": None if self.vocabulary is None else self.vocabulary.hash,
            "samples": {k: v.get("num_samples") for k, v in splits.items()},
            "skipped": self.skipped,
        }
