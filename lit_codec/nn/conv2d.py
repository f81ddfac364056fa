"""A 2-D convolution that stays correct in bfloat16 on CPU.

PyTorch's CPU bf16 convolution goes to oneDNN. On CPUs with AMX (and AVX-512 bf16), oneDNN
v3.12.0 as bundled with torch 2.13.0 picks its BRGEMM kernel (``brg_conv_fwd:avx10_1_512_amx``
in ``ONEDNN_VERBOSE=1``), which computes wrong values when the **innermost output dimension
is 1 and its stride is greater than 1**; the weight gradient of that case is wrong too.
The wrong values come from memory the kernel never wrote, so whether they are NaN/Inf
depends on what the process ran before, not on the input. Upstream: pytorch/pytorch#169688
(a fix for conv3d proposed in pytorch/pytorch#188426). float32, float16, a unit stride and an
output wider than 1 are correct (checked over kernels 1-9, strides 2-4, widths 1-9).

The STFT discriminators hit it at tiny band widths under ``bf16-mixed``: a band of 6 bins
becomes 3, 2, then 1 after the frequency-strided convs. :func:`conv2d` sidesteps the kernel
there: when the last output dimension is 1, the first output of a stride-1 convolution *is*
that output, so it convolves with stride 1 and keeps the first column. The extra columns
cost nothing worth measuring (the input is narrower than ``kernel + stride``) and every
other case calls ``F.conv2d`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Conv2d", "conv2d"]


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _runs_in_cpu_bf16(x: Tensor, weight: Tensor) -> bool:
    """Whether this convolution would run in bfloat16 on the CPU (explicitly or by autocast)."""
    if x.device.type != "cpu":
        return False
    if x.dtype == torch.bfloat16 or weight.dtype == torch.bfloat16:
        return True
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> Tensor:
    """``F.conv2d`` with numeric zero padding, exact also where CPU bf16 is not (see module).

    ``x`` (B, C_in, H, W), ``weight`` (C_out, C_in / groups, k_h, k_w) → (B, C_out, H', W').
    """
    (s_h, s_w), (p_h, p_w), (d_h, d_w) = _pair(stride), _pair(padding), _pair(dilation)
    if s_w > 1 and _runs_in_cpu_bf16(x, weight):
        out_w = (x.shape[-1] + 2 * p_w - d_w * (weight.shape[-1] - 1) - 1) // s_w + 1
        if out_w == 1:
            y = F.conv2d(
                x, weight, bias, (s_h, 1), (p_h, p_w), (d_h, d_w), groups
            )  # (B, C, H', W'')
            return y[..., :1]  # (B, C_out, H', 1)
    return F.conv2d(x, weight, bias, (s_h, s_w), (p_h, p_w), (d_h, d_w), groups)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (zero padding) computed by :func:`conv2d`; a drop-in for the discriminators.

    Weight norm and spectral norm parametrise it as they do ``nn.Conv2d``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError(
                "lit_codec.nn.conv2d.Conv2d takes numeric zero padding, got "
                f"padding={self.padding!r}, padding_mode={self.padding_mode!r}"
            )

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return conv2d(
            input, weight, bias, self.stride, self.padding, self.dilation, self.groups
        )  # (B, C_out, H', W')
