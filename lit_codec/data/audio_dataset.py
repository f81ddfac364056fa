"""Datasets over audio shards: an endless shuffled training stream and a fixed evaluation set.

Training (:class:`AudioShardStream`): every pass over the data shuffles the
shard list with the same seed on every rank, deals shards to (rank, worker)
pairs — or, when there are fewer shards than readers, deals samples instead —
shuffles samples in a buffer, crops a random ``segment`` of each clip (padding
short clips, whose true length is kept) and batches inside the worker. The
stream never ends; :class:`FixedLengthLoader` cuts it into epochs of the same
number of batches on every rank, so DDP never waits on a rank that ran dry.

Evaluation (:class:`AudioClipDataset`): a map-style dataset of fixed
center crops read once, in shard order: the same clips and crops every time.

Corrupt shards and samples are skipped with a warning and counted; the count
travels with each batch (``AudioBatch.skipped``) to the main process.
"""

from __future__ import annotations

import io
import logging
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr
import torch
from torch.utils.data import Dataset, IterableDataset

from lit_codec.data.shards import decode_audio_sample, endless_samples, iter_tar_samples, reader_of

__all__ = [
    "AudioBatch",
    "AudioClipDataset",
    "AudioShardStream",
    "FixedLengthLoader",
    "collate_clips",
]

log = logging.getLogger(__name__)

AUDIO_MEMBERS = ("flac", "wav", "ogg", "mp3")


@dataclass
class AudioBatch:
    """A batch of mono clips."""

    audio: torch.Tensor  # (B, 1, T) float32
    lengths: torch.Tensor  # (B,) int64: samples of real audio; the rest is zero padding
    keys: list[str] = field(default_factory=list)
    skipped: int = 0  # corrupt samples skipped by the worker since its previous batch

    def __len__(self) -> int:
        return self.audio.shape[0]

    @property
    def mask(self) -> torch.Tensor:
        """(B, 1, T) bool: True where the audio is real."""
        t = torch.arange(self.audio.shape[-1], device=self.audio.device)
        return (t[None, :] < self.lengths[:, None])[:, None, :]  # (B, 1, T)

    def pin_memory(self) -> AudioBatch:
        return AudioBatch(
            self.audio.pin_memory(), self.lengths.pin_memory(), self.keys, self.skipped
        )


def crop_or_pad(audio: np.ndarray, length: int, offset: int) -> tuple[np.ndarray, int]:
    """``audio[offset:offset+length]``, zero-padded at the end; returns (clip, real length)."""
    clip = audio[offset : offset + length]
    real = len(clip)
    if real < length:
        clip = np.pad(clip, (0, length - real))
    return clip, real


def collate_clips(items: Sequence[tuple[str, np.ndarray, int]], skipped: int = 0) -> AudioBatch:
    """Stack ``(key, clip (T,), length)`` items of equal T into an :class:`AudioBatch`."""
    audio = torch.from_numpy(np.stack([clip for _, clip, _ in items]))[:, None, :]  # (B, 1, T)
    lengths = torch.tensor([n for _, _, n in items], dtype=torch.int64)
    return AudioBatch(audio, lengths, [k for k, _, _ in items], skipped)


class _SkipCounter:
    """Exception handler for webdataset that warns, counts and carries on."""

    def __init__(self):
        self.count = 0

    def __call__(self, exc: Exception) -> bool:
        self.count += 1
        log.warning("skipping unreadable shard data: %s", exc)
        return True


class AudioShardStream(IterableDataset):
    """Endless stream of training batches ``AudioBatch(audio (B, 1, segment))``.

    Args:
        urls: shard URLs (already expanded).
        sample_rate: the rate every sample must have; others are skipped as corrupt.
        segment: samples per crop.
        batch_size: clips per batch (per rank).
        shuffle_buffer: samples held for shuffling (0: no shuffling).
        seed: base seed; shard order is shared by all ranks, crops differ per reader.
        rank, world_size: this process's place among the data-parallel ranks.
        speed_range: ``(low, high)`` speed factors for speed perturbation (``None``: off).
            A factor ``s`` plays ``segment * s`` samples of the clip in ``segment`` samples:
            ``s < 1`` lowers pitch and formants together (a female voice towards a male
            one), ``s > 1`` raises them. Drawn log-uniformly, per crop.
        speed_probability: fraction of crops that are perturbed.
    """

    def __init__(
        self,
        urls: Sequence[str],
        sample_rate: int,
        segment: int,
        batch_size: int,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        speed_range: tuple[float, float] | None = None,
        speed_probability: float = 0.5,
    ):
        super().__init__()
        if speed_range is not None:
            low, high = (float(v) for v in speed_range)
            if not 0 < low <= high:
                raise ValueError(f"speed_range must be (low, high) with 0 < low <= high, got {speed_range}")
            speed_range = (low, high)
        if not 0 <= speed_probability <= 1:
            raise ValueError(f"speed_probability must be in [0, 1], got {speed_probability}")
        self.speed_range = speed_range
        self.speed_probability = speed_probability
        if not urls:
            raise ValueError("no training shards")
        self.urls = list(urls)
        self.sample_rate = sample_rate
        self.segment = segment
        self.batch_size = batch_size
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size

    def _samples(
        self, reader: int, readers: int, counter: _SkipCounter
    ) -> Iterator[tuple[str, str, bytes]]:
        """(key, url, encoded audio) of this reader's samples, pass after pass, forever."""
        for sample in endless_samples(self.urls, self.seed, reader, readers, counter):
            data = next((sample[k] for k in AUDIO_MEMBERS if k in sample), None)
            if data is None:
                counter(
                    ValueError(f"sample {sample['__key__']} in {sample['__url__']} has no audio member")
                )
                continue
            yield sample["__key__"], sample["__url__"], data

    def _speed(self, rng: random.Random) -> float:
        """The speed factor of the next crop (1: unchanged)."""
        if self.speed_range is None or rng.random() >= self.speed_probability:
            return 1.0
        low, high = self.speed_range
        return math.exp(rng.uniform(math.log(low), math.log(high)))

    def _crop(self, key: str, url: str, data: bytes, rng: random.Random) -> tuple[np.ndarray, int]:
        """Decode only a random ``segment`` of the clip (seeking in the FLAC), zero-padded.

        With speed perturbation, ``round(segment * s)`` samples are read and resampled to
        ``segment`` (soxr), so the crop still holds ``segment`` samples.
        """
        speed = self._speed(rng)
        need = max(1, round(self.segment * speed))
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate != self.sample_rate:
                raise ValueError(
                    f"sample {key} in {url} is {f.samplerate} Hz, not {self.sample_rate} Hz"
                )
            if f.channels != 1:
                raise ValueError(f"sample {key} in {url} has {f.channels} channels, not 1")
            offset = rng.randrange(f.frames - need + 1) if f.frames > need else 0
            f.seek(offset)
            audio = f.read(min(need, f.frames), dtype="float32", always_2d=True)[:, 0]
        if not np.isfinite(audio).all():
            raise ValueError(f"sample {key} in {url} holds NaN or inf")
        if need != self.segment:
            real = len(audio)
            audio = soxr.resample(audio, need, self.segment).astype(np.float32, copy=False)
            clip, _ = crop_or_pad(audio, self.segment, 0)
            return clip, min(self.segment, round(real / speed))
        return crop_or_pad(audio, self.segment, 0)

    def __iter__(self) -> Iterator[AudioBatch]:
        reader, readers = reader_of(self.rank, self.world_size)
        rng = random.Random((self.seed + 1) * 7919 + reader)
        counter = _SkipCounter()
        reported = 0
        buffer: list[tuple[str, str, bytes]] = []  # encoded samples: small, decoded only when used
        batch: list[tuple[str, np.ndarray, int]] = []
        for item in self._samples(reader, readers, counter):
            if self.shuffle_buffer > 1:
                buffer.append(item)
                if len(buffer) < self.shuffle_buffer:
                    continue
                j = rng.randrange(len(buffer))
                buffer[j], buffer[-1] = buffer[-1], buffer[j]
                item = buffer.pop()
            key, url, data = item
            try:
                clip, real = self._crop(key, url, data, rng)
            except Exception as e:  # a corrupt sample: skip, warn, count
                counter(e)
                continue
            batch.append((key, clip, real))
            if len(batch) == self.batch_size:
                yield collate_clips(batch, counter.count - reported)
                reported = counter.count
                batch = []


class AudioClipDataset(Dataset):
    """Deterministic evaluation clips: center crops of ``segment`` samples, in shard order.

    Args:
        urls: shard URLs.
        sample_rate: the rate every sample must have (a mismatch is an error).
        segment: samples per clip (None: whole clips, padded per batch).
        max_clips: read at most this many clips.
    """

    def __init__(
        self,
        urls: Sequence[str],
        sample_rate: int,
        segment: int | None,
        max_clips: int | None = None,
    ):
        self.items: list[tuple[str, np.ndarray, int]] = []
        counter = _SkipCounter()
        for sample in iter_tar_samples(list(urls), counter):
            if max_clips is not None and len(self.items) >= max_clips:
                break
            try:
                audio, rate, _ = decode_audio_sample(sample)
            except Exception as e:
                counter(e)
                continue
            if rate != sample_rate:
                raise ValueError(
                    f"{sample['__url__']} holds {rate} Hz audio but the model expects {sample_rate} Hz"
                )
            if segment is None:
                self.items.append((sample["__key__"], audio, len(audio)))
            else:
                offset = max(0, (len(audio) - segment) // 2)
                clip, real = crop_or_pad(audio, segment, offset)
                self.items.append((sample["__key__"], clip, real))
        self.skipped = counter.count
        if not self.items:
            raise ValueError(
                f"no readable clips in {len(urls)} shards such as {urls[0] if urls else '(none)'}"
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray, int]:
        return self.items[i]

    @staticmethod
    def collate(items: Sequence[tuple[str, np.ndarray, int]]) -> AudioBatch:
        """Batch clips, zero-padding to the longest (clips of one length stack as they are)."""
        longest = max(len(clip) for _, clip, _ in items)
        padded = [(k, np.pad(c, (0, longest - len(c))), n) for k, c, n in items]
        return collate_clips(padded)


class FixedLengthLoader:
    """Exactly ``length`` batches per epoch from an endless loader, continuing where the last epoch stopped.

    Stateful (Lightning saves ``state_dict`` in checkpoints): ``consumed`` counts the
    batches training actually used (the data module increments it as each batch is
    taken; batches prefetched but not used do not count). After ``load_state_dict`` the
    stream restarts from the beginning and skips that many batches, so a resumed run
    sees exactly the batches an uninterrupted run would (the stream is deterministic).
    """

    def __init__(self, loader, length: int):
        self.loader = loader
        self.length = max(1, int(length))
        self._iterator = None
        self.consumed = 0
        self._skip = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[AudioBatch]:
        if self._iterator is None:
            self._iterator = iter(self.loader)
            for _ in range(self._skip):  # fast-forward to where the checkpointed run was
                next(self._iterator)
            self._skip = 0
        for _ in range(self.length):
            yield next(self._iterator)

    def state_dict(self) -> dict[str, int]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consumed = int(state.get("consumed", 0))
        self._skip = self.consumed
        self._iterator = None


def endless_loader(stream: IterableDataset, num_workers: int, length: int) -> FixedLengthLoader:
    """``length`` batches per epoch of an endless batch ``stream`` (which batches itself),
    read by ``num_workers`` persistent worker processes (0: in this process)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=2 if num_workers > 0 else None,
    )
    return FixedLengthLoader(loader, length)


def count_training_batch(loader: FixedLengthLoader | None, trainer) -> None:
    """Count a batch handed to training (a data module's ``on_before_batch_transfer``): the
    position a resumed run skips to. Validation batches do not count."""
    if loader is not None and trainer is not None and getattr(trainer, "training", False):
        loader.consumed += 1


def batches_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Batches each rank yields per epoch: every sample seen about once, at least one batch."""
    return max(1, math.floor(num_samples / (batch_size * world_size)))
