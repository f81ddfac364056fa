"""Rotary position embeddings (RoPE, Su et al., 2021, "RoFormer").

Attention sees positions only through the rotation of queries and keys: channel pair
``(i, i + D/2)`` of a head of width ``D`` is rotated by the angle ``p * base^(-2i/D)`` at
position ``p`` (the "rotate half" layout of GPT-NeoX, LLaMA and litgpt). The dot product
of a query at ``p`` and a key at ``p'`` then depends on ``p - p'`` only, so a KV cache
stores rotated keys and a chunk decoded at offset ``L`` needs nothing but its absolute
positions ``L .. L + T - 1``.

The angles are computed for the positions a call needs (``T`` of them, ``D/2`` each):
there is no table to outgrow and nothing to store in a checkpoint.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["RotaryEmbedding", "apply_rotary"]


class RotaryEmbedding(nn.Module):
    """Cosines and sines of the rotary angles of a run of positions.

    Args:
        head_dim: channels ``D`` of one attention head (even).
        base: the angle of channel pair ``i`` turns ``base^(-2i/D)`` radians per position;
            larger bases reach longer contexts (10 000 in RoFormer and LLaMA).
    """

    def __init__(self, head_dim: int, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head width, not {head_dim}")
        self.head_dim = head_dim
        self.base = float(base)
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        # derived from the arguments: not part of a checkpoint
        self.register_buffer("inv_freq", inv_freq.float(), persistent=False)  # (D/2,)

    def forward(
        self, length: int, offset: int = 0, dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """Cosines and sines of positions ``offset .. offset + length - 1``.

        Returns:
            ``(cos, sin)``, each ``(length, D)`` in ``dtype`` (default float32), the ``D/2``
            angles repeated once for each half of the head.
        """
        positions = torch.arange(
            offset, offset + length, device=self.inv_freq.device, dtype=torch.float32
        )  # (T,)
        angles = torch.outer(positions, self.inv_freq)  # (T, D/2)
        angles = torch.cat((angles, angles), dim=-1)  # (T, D)
        dtype = dtype or torch.float32
        return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate queries or keys ``(B, H, T, D)`` by the angles ``cos, sin`` ``(T, D)``.

    The result has the dtype of ``x`` (the angles are cast to it).
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, D/2) each
    rotated = torch.cat((-x2, x1), dim=-1)  # (B, H, T, D)
    return x * cos + rotated * sin
