"""``AudioShardDataModule``: batches of audio crops from WebDataset shards."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from lit_codec.data.audio_dataset import (
    AudioBatch,
    AudioClipDataset,
    AudioShardStream,
    FixedLengthLoader,
    batches_per_epoch,
    count_training_batch,
    endless_loader,
)
from lit_codec.data.shards import (
    ShardSet,
    expand_urls,
    iter_tar_samples,
    load_index,
    split_from_root,
)

__all__ = ["AudioShardDataModule"]

log = logging.getLogger(__name__)


class AudioShardDataModule(L.LightningDataModule):
    """Audio crops ``AudioBatch(audio (B, 1, T) float32, lengths (B,))`` for codec training.

    Give either ``root`` (a directory prepared by ``data_prep/make_audio_shards.py``;
    its ``index.json`` names the shards of each split) or explicit shard URLs per
    split (brace patterns or anything webdataset opens, e.g. ``pipe:aws s3 cp ... -``).

    Training batches are random crops from shuffled shards; every rank yields the
    same number of batches per epoch (``samples_per_epoch / (batch_size * world_size)``).
    Validation and test use the same center crops, in the same order, every time.

    Args:
        root: prepared shard directory (holds index.json).
        train_shards: training shard URLs (instead of, or overriding, ``root``).
        val_shards: validation shard URLs.
        test_shards: test shard URLs.
        sample_rate: rate the model expects; shards at another rate are refused (no resampling).
        segment_seconds: length of training crops.
        eval_segment_seconds: length of validation/test crops (None: whole clips, padded per batch).
        hop_length: crops are rounded down to a multiple of this (the codec's hop).
        batch_size: training clips per batch, per rank.
        eval_batch_size: validation/test clips per batch (default: batch_size).
        num_workers: loader worker processes.
        shuffle_buffer: samples held in each worker's shuffle buffer.
        samples_per_epoch: training crops per epoch over all ranks (default: as many as cover
            the training audio once, from index.json; without one, the number of clips,
            counted once by reading the shards).
        max_eval_clips: read at most this many validation/test clips.
        seed: seed of shard order, shuffling and crops.
        speed_range: ``(low, high)``: speed perturbation of training crops (pitch and
            formants move together; e.g. ``[0.75, 1.15]`` turns female voices towards male
            ones), drawn log-uniformly; ``None`` (default): off. Validation and test
            clips are never perturbed.
        speed_probability: fraction of training crops perturbed when ``speed_range`` is set.
    """

    def __init__(
        self,
        root: str | None = None,
        train_shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        test_shards: str | list[str] | None = None,
        sample_rate: int = 16000,
        segment_seconds: float = 1.0,
        eval_segment_seconds: float | None = 3.0,
        hop_length: int = 1,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        shuffle_buffer: int = 500,
        samples_per_epoch: int | None = None,
        max_eval_clips: int | None = 256,
        seed: int = 0,
        speed_range: tuple[float, float] | None = None,
        speed_probability: float = 0.5,
    ):
        super().__init__()
        self.root = root
        self.shard_urls = {"train": train_shards, "valid": val_shards, "test": test_shards}
        self.sample_rate = sample_rate
        self.hop_length = max(1, int(hop_length))
        self.segment = self._samples(segment_seconds)
        self.eval_segment = (
            None if eval_segment_seconds is None else self._samples(eval_segment_seconds)
        )
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.shuffle_buffer = shuffle_buffer
        self.samples_per_epoch = samples_per_epoch
        self.max_eval_clips = max_eval_clips
        self.seed = seed
        self.speed_range = None if speed_range is None else tuple(speed_range)
        self.speed_probability = speed_probability
        self.corrupt_samples_skipped = 0
        self._eval_sets: dict[str, AudioClipDataset] = {}
        self._train_loader: FixedLengthLoader | None = None

    def _samples(self, seconds: float) -> int:
        n = int(round(seconds * self.sample_rate)) // self.hop_length * self.hop_length
        if n <= 0:
            raise ValueError(
                f"{seconds} s at {self.sample_rate} Hz is shorter than one hop ({self.hop_length})"
            )
        return n

    # ------------------------------------------------------------------ shards
    def shard_set(self, split: str) -> ShardSet:
        """The shards of ``split`` ("train", "valid" or "test"), checked against the sample rate."""
        urls = self.shard_urls[split]
        if urls is not None:
            expanded = expand_urls(urls)
            if not expanded:
                raise ValueError(f"data.{split}_shards {urls!r} names no shards")
            local_dir = Path(expanded[0]).parent
            count, rate, seconds = None, None, None
            index_path = local_dir / "index.json"
            if (
                "://" not in expanded[0]
                and not expanded[0].startswith("pipe:")
                and index_path.is_file()
            ):
                index = load_index(local_dir)
                rate = index.get("sample_rate")
                names = {Path(u).name for u in expanded}
                info = index.get("splits", {}).get(split, {})
                if names == set(info.get("shards", [])):
                    count, seconds = info.get("num_samples"), info.get("seconds")
            shards = ShardSet(expanded, str(urls), count, rate, seconds)
        elif self.root is not None:
            shards = split_from_root(self.root, split)
        else:
            raise ValueError(f"no {split} data: set data.root or data.{split}_shards")
        if shards.sample_rate is None:
            shards.sample_rate = self._peek_rate(shards)
        if shards.sample_rate != self.sample_rate:
            raise ValueError(
                f"{shards.source} holds {shards.sample_rate} Hz audio but the model expects {self.sample_rate} Hz; "
                "prepare the shards again with --sample-rate "
                f"{self.sample_rate} or train a {shards.sample_rate} Hz recipe (no resampling at load time)"
            )
        return shards

    @staticmethod
    def _peek_rate(shards: ShardSet) -> int | None:
        import io

        import soundfile as sf

        for sample in iter_tar_samples(shards.urls[:1], lambda e: True):
            for key in ("flac", "wav", "ogg", "mp3"):
                if key in sample:
                    return sf.info(io.BytesIO(sample[key])).samplerate
        raise ValueError(f"no readable sample in the first shard of {shards.source}")

    def _count(self, shards: ShardSet) -> int:
        """Crops per epoch: enough to cover the training audio once (at least one per clip)."""
        if self.samples_per_epoch is not None:
            return self.samples_per_epoch
        if shards.num_samples is not None:
            crops = int(shards.seconds * self.sample_rate / self.segment) if shards.seconds else 0
            return max(shards.num_samples, crops)
        log.info(
            "counting the samples of %d shards (set data.samples_per_epoch to skip this)",
            len(shards.urls),
        )
        return sum(1 for _ in iter_tar_samples(shards.urls, lambda e: True))

    # ------------------------------------------------------------------ Lightning hooks
    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def setup(self, stage: str | None = None) -> None:
        if self.root is None and not any(self.shard_urls.values()):
            raise ValueError(
                "no data: set data.root (a directory prepared by data_prep/make_audio_shards.py, e.g. "
                "--data.root quickstart/shards) or shard URLs (data.train_shards, data.val_shards)"
            )
        if stage in (None, "fit"):
            self.shard_set("train")  # fail at start-up, not in a worker
        if stage in (None, "fit", "validate") and (self.root or self.shard_urls["valid"]):
            self._eval_set("valid")
        if stage in (None, "test", "predict") and (self.root or self.shard_urls["test"]):
            self._eval_set("test")

    def _eval_set(self, split: str) -> AudioClipDataset:
        if split not in self._eval_sets:
            shards = self.shard_set(split)
            self._eval_sets[split] = AudioClipDataset(
                shards.urls, self.sample_rate, self.eval_segment, self.max_eval_clips
            )
            self.corrupt_samples_skipped += self._eval_sets[split].skipped
        return self._eval_sets[split]

    def train_dataloader(self) -> FixedLengthLoader:
        if self._train_loader is None:
            shards = self.shard_set("train")
            rank, world = self._rank_world()
            stream = AudioShardStream(
                shards.urls,
                self.sample_rate,
                self.segment,
                self.batch_size,
                shuffle_buffer=self.shuffle_buffer,
                seed=self.seed,
                rank=rank,
                world_size=world,
                speed_range=self.speed_range,
                speed_probability=self.speed_probability,
            )
            length = batches_per_epoch(self._count(shards), self.batch_size, world)
            self._train_loader = endless_loader(stream, self.num_workers, length)
        return self._train_loader

    def _eval_loader(self, split: str) -> DataLoader:
        return DataLoader(
            self._eval_set(split),
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=0,
            collate_fn=AudioClipDataset.collate,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("valid")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The test clips (``lit-codec predict`` encodes and decodes them)."""
        return self._eval_loader("test")

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        count_training_batch(self._train_loader, self.trainer)
        if isinstance(batch, AudioBatch) and batch.skipped:
            self.corrupt_samples_skipped += batch.skipped
            log.warning("%d corrupt samples skipped so far", self.corrupt_samples_skipped)
        return batch

    def describe(self) -> dict[str, object]:
        """Numbers worth printing or logging about the data."""
        return {
            "sample_rate": self.sample_rate,
            "segment_samples": self.segment,
            "batch_size": self.batch_size,
            "corrupt_samples_skipped": self.corrupt_samples_skipped,
        }
