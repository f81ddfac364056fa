"""A preallocated key/value cache for cached (incremental) decoding of a transformer.

gpt-fast's static cache: every layer's keys and values live in two tensors allocated once,
``(depth, B, H, max_len, D)``, and each forward writes its chunk in place at positions
``length .. length + T - 1``. Nothing is concatenated or reallocated per token, so memory
is known up front and the decode loop makes no allocations the caller did not ask for.
``length`` is a Python int (the position offset of the next chunk), so reading it never
waits for the accelerator.

The caller owns the cache (Moshi's rule: streaming state is an object the caller holds,
not hidden module attributes) and passes it to :meth:`Transformer.forward
<lit_codec.nn.transformer.Transformer.forward>`, which writes every layer and then calls
:meth:`KVCache.advance`. A cache is for inference: run it under ``torch.no_grad()``
(the in-place writes would invalidate tensors autograd saved).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache"]


class KVCache:
    """Keys and values of every layer of one transformer for ``batch_size`` sequences.

    Args:
        depth: number of layers.
        batch_size: sequences decoded together ``B``.
        heads: attention heads ``H``.
        head_dim: channels per head ``D``.
        max_len: positions the cache holds; a forward past it raises.
        device: where the tensors live.
        dtype: dtype of keys and values (that of the activations).
    """

    def __init__(
        self,
        depth: int,
        batch_size: int,
        heads: int,
        head_dim: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (depth, batch_size, heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, H, max_len, D)
        self.values = torch.zeros(shape, device=device, dtype=dtype)  # (L, B, H, max_len, D)
        self.max_len = max_len
        self.length = 0  # positions written; the offset of the next chunk

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write a chunk's keys and values at ``length``; return all keys and values so far.

        Args:
            layer: index of the layer writing.
            k: ``(B, H, T, D)`` rotated keys of the chunk.
            v: ``(B, H, T, D)`` values of the chunk.

        Returns:
            keys and values ``(B, H, length + T, D)``, views into the cache.
        """
        start, stop = self.length, self.length + k.shape[2]
        if stop > self.max_len:
            raise ValueError(
                f"KV cache full: positions [{start}, {stop}) do not fit in max_len={self.max_len}"
            )
        self.keys[layer, :, :, start:stop] = k
        self.values[layer, :, :, start:stop] = v
        return self.keys[layer, :, :, :stop], self.values[layer, :, :, :stop]

    def advance(self, steps: int) -> None:
        """Mark ``steps`` more positions as written (after every layer wrote them)."""
        self.length += steps

    def reset(self) -> None:
        """Forget every position (the tensors are kept and overwritten by the next chunk)."""
        self.length = 0
