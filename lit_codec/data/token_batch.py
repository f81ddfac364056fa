"""A batch of codec-LM task sequences, as the data module hands it to ``CodecLM``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from lit_codec.lm.sequence import TaskSequence

__all__ = ["TokenBatch", "collate_sequences"]


@dataclass
class TokenBatch:
    """Task sequences right-padded to the longest, as frame grids.

    Shapes: ``B`` sequences, ``F`` frames (the longest), ``n_q`` codebooks, ``D`` the width
    of continuous condition frames.

    Attributes:
        ids: ``(B, F, n_q)`` int64 global vocabulary ids; ``<pad>`` after each sequence's end
            and wherever a frame holds no token.
        mask: ``(B, F, n_q)`` bool, True where a real token sits.
        loss_mask: ``(B, F, n_q)`` bool, True on the target segment's tokens (and its closing
            markers): what a prefix-LM loss counts.
        condition_mask: ``(B, F)`` bool, True on the frames of condition segments (markers
            excluded): what condition dropout replaces by the null condition.
        lengths: ``(B,)`` int64 frames of each sequence before padding.
        tasks: task name of each sequence.
        keys: sample key of each sequence.
        continuous: ``(B, F, D)`` float32 continuous condition frames (T5), or None when no
            sequence of the batch has any.
        is_continuous: ``(B, F)`` bool, True where ``continuous`` holds a frame (None with it).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    loss_mask: torch.Tensor
    condition_mask: torch.Tensor
    lengths: torch.Tensor
    tasks: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    continuous: torch.Tensor | None = None
    is_continuous: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def frames(self) -> int:
        """Padded frames per sequence ``F``."""
        return int(self.ids.shape[1])

    def to(self, device: torch.device | str) -> TokenBatch:
        """The same batch with every tensor on ``device``."""
        moved = {
            name: (value.to(device) if isinstance(value, torch.Tensor) else value)
            for name, value in self.__dict__.items()
        }
        return TokenBatch(**moved)

    def pin_memory(self) -> TokenBatch:
        """Pinned host copies (the DataLoader's ``pin_memory=True``)."""
        pinned = {
            name: (value.pin_memory() if isinstance(value, torch.Tensor) else value)
            for name, value in self.__dict__.items()
        }
        return TokenBatch(**pinned)


def collate_sequences(
    sequences: Sequence[TaskSequence],
    keys: Sequence[str],
    pad_id: int = 0,
    embedding_id: int | None = None,
) -> TokenBatch:
    """Right-pad ``sequences`` into one :class:`TokenBatch`.

    Args:
        sequences: built by :func:`lit_codec.lm.sequence.build_sequence`.
        keys: the sample key of each sequence.
        pad_id: the vocabulary's ``<pad>``.
        embedding_id: the vocabulary's ``<embedding>`` (marks continuous frames in codebook
            0); None: frames whose continuous vector is not all zero.
    """
    if not sequences:
        raise ValueError("collate_sequences needs at least one sequence")
    if len(keys) != len(sequences):
        raise ValueError(f"{len(keys)} keys for {len(sequences)} sequences")
    n_q = sequences[0].ids.shape[1]
    longest = max(len(s) for s in sequences)
    b = len(sequences)
    ids = np.full((b, longest, n_q), pad_id, dtype=np.int64)
    mask = np.zeros((b, longest, n_q), dtype=bool)
    loss_mask = np.zeros((b, longest, n_q), dtype=bool)
    condition = np.zeros((b, longest), dtype=bool)
    widths = {s.continuous.shape[1] for s in sequences if s.continuous is not None}
    if len(widths) > 1:
        raise ValueError(f"continuous frames of different widths in one batch: {sorted(widths)}")
    continuous = np.zeros((b, longest, widths.pop()), np.float32) if widths else None
    is_continuous = np.zeros((b, longest), dtype=bool) if continuous is not None else None
    for i, seq in enumerate(sequences):
        if seq.ids.shape[1] != n_q:
            raise ValueError(f"sequence {keys[i]} has {seq.ids.shape[1]} codebooks, not {n_q}")
        n = len(seq)
        ids[i, :n] = seq.ids
        mask[i, :n] = seq.mask
        loss_mask[i, :n] = seq.loss_mask
        for span in seq.segments:
            if not span.target:
                condition[i, span.start : span.stop] = True
        if continuous is not None and seq.continuous is not None:
            rows = np.asarray(seq.continuous, dtype=np.float32)  # (n, D): zeros off its segment
            continuous[i, :n] = rows
            marked = seq.ids[:, 0] == embedding_id if embedding_id is not None else None
            is_continuous[i, :n] = marked if marked is not None else np.abs(rows).sum(axis=1) > 0  # type: ignore[index]
    return TokenBatch(
        ids=torch.from_numpy(ids),
        mask=torch.from_numpy(mask),
        loss_mask=torch.from_numpy(loss_mask),
        condition_mask=torch.from_numpy(condition),
        lengths=torch.tensor([len(s) for s in sequences], dtype=torch.int64),
        tasks=[s.task for s in sequences],
        keys=list(keys),
        continuous=None if continuous is None else torch.from_numpy(continuous),
        is_continuous=None if is_continuous is None else torch.from_numpy(is_continuous),
    )
