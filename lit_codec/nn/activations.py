"""Activations of the SEANet generator: ELU (SoundStream, EnCodec) and Snake (BigVGAN, DAC).

Snake is ``x + 1/alpha * sin(alpha * x)^2`` with a learnable ``alpha`` per channel
(Ziyin et al. 2020, "Neural networks fail to learn periodic functions and how to fix it";
used by BigVGAN and descript-audio-codec). Both modules accept ``inplace=True`` from their
caller, who knows when the input is its own intermediate; Snake honours it only when no
gradient is being recorded (its backward needs the input).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ELU", "Snake", "make_activation"]


class ELU(nn.Module):
    """ELU with ``alpha = 1`` whose caller decides per call whether to work in place."""

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Apply ELU to ``x`` (any shape); overwrite it when ``inplace``."""
        return F.elu(x, inplace=inplace)


class Snake(nn.Module):
    """Snake activation ``x + 1/alpha * sin(alpha * x)^2`` with one learnable ``alpha`` per channel.

    Args:
        channels: the number of channels (dimension 1 of the input).
        alpha: initial value of every ``alpha`` (the period is ``pi / alpha``).
    """

    def __init__(self, channels: int, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1, channels, 1), float(alpha)))  # (1, C, 1)

    def forward(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Apply Snake to ``x`` (B, C, T); overwrite it when ``inplace`` and no grad is recorded."""
        alpha = self.alpha
        inv_alpha = (alpha + 1e-9).reciprocal()  # (1, C, 1)
        if torch.is_grad_enabled() and (x.requires_grad or alpha.requires_grad):
            return x + inv_alpha * torch.sin(alpha * x).pow(2)
        s = torch.mul(x, alpha).sin_().square_().mul_(inv_alpha)  # (B, C, T), one new tensor
        return x.add_(s) if inplace else s.add_(x)


def make_activation(name: Literal["elu", "snake"], channels: int) -> nn.Module:
    """The activation called ``name`` for ``channels`` channels."""
    if name == "elu":
        return ELU()
    if name == "snake":
        return Snake(channels)
    raise ValueError(f"unknown activation {name!r}; choose 'elu' or 'snake'")
