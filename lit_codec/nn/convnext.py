"""ConvNeXt trunk at frame rate: the body of the ConvNeXt codec generator.

A trunk is Vocos's backbone (Siuzdak 2023, "Vocos: Closing the gap between time-domain and
Fourier-based neural vocoders", ``vocos/models.py``), itself a 1-D ConvNeXt (Liu et al. 2022):
an input embedding, a LayerNorm, ``depth`` ConvNeXt blocks (depthwise convolution over time,
LayerNorm, pointwise MLP with GELU, layer scale, residual) and a final LayerNorm. Parameter
names follow Vocos (``dwconv``, ``norm``, ``pwconv1``, ``pwconv2``, ``gamma``); the only
difference is the embedding, a linear layer (a 1x1 convolution) instead of Vocos's kernel 7.

Activations are time-major, ``(B, T, C)``: the linear layers and LayerNorms work on the last
dimension, and the depthwise convolution reads the same memory as a channels-last
``(B, C, 1, T)`` image, which oneDNN's depthwise kernel takes without reordering; its
backward is this module's own (PyTorch's CPU backward computes the bias and weight gradients
of a depthwise convolution on slow paths, pytorch/pytorch#13716). Measured on one thread
(``bench/frame_codec_speed.py --sections depthwise``: 384 channels, kernel 7, 8 x 50 and
1 x 500 frames; forward / forward + backward, float32): ``Conv1d`` on a contiguous
``(B, C, T)`` copy, as Vocos runs it, 0.69-0.95 / 4.3-5.0 ms; ``Conv1d`` on the
channels-last view 0.62-0.87 / 4.5-4.7 ms; ``conv2d`` on the channels-last image with
PyTorch's backward 0.42-0.43 / 3.0-3.3 ms (5.0-6.5 ms under bf16 autocast); the same with
the backward here 0.35-0.37 / 1.7-2.0 ms (2.0-2.2 ms in bf16); 7 shifted products 1.8-2.1 /
4.9-6.1 ms; ``unfold`` 2.8-3.3 / 9.2-9.6 ms. All agree to float rounding.

Causal trunks pad the depthwise convolution on the left only and stream: inside
:func:`lit_codec.nn.conv.streaming` each :class:`DepthwiseConv1d` keeps its last
``kernel_size - 1`` input frames, and every other layer works frame by frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lit_codec.nn.conv import StreamingModule

__all__ = ["ConvNeXtBlock", "ConvNeXtTrunk", "DepthwiseConv1d"]


class ConvNeXtTrunk(nn.Module):
    """Embedding, LayerNorm, ConvNeXt blocks, final LayerNorm: ``(B, T, C_in) -> (B, T, C)``.

    Args:
        in_channels: features per input frame.
        channels: width of the trunk (Vocos: 512; the codec: 384).
        depth: number of ConvNeXt blocks.
        mlp_ratio: hidden width of each block's MLP, in multiples of ``channels``.
        kernel_size: kernel of each block's depthwise convolution (frames).
        causal: pad the depthwise convolutions on the left only (no look-ahead; streamable).
        layer_scale: initial value of each block's layer scale; ``None``: ``1 / depth``
            (Vocos).
    """

    def __init__(
        self,
        in_channels: int,
        channels: int = 384,
        depth: int = 8,
        mlp_ratio: float = 3.0,
        kernel_size: int = 7,
        causal: bool = False,
        layer_scale: float | None = None,
    ) -> None:
        super().__init__()
        scale = 1.0 / max(depth, 1) if layer_scale is None else layer_scale
        self.embed = nn.Linear(in_channels, channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(channels, mlp_ratio, kernel_size, causal, scale) for _ in range(depth)
        )
        self.final_norm = nn.LayerNorm(channels, eps=1e-6)
        for m in self.modules():  # Vocos's initialisation
            if isinstance(m, (nn.Linear, DepthwiseConv1d)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C_in) frames -> (B, T, C) features (also chunk by chunk when streaming)."""
        x = self.norm(self.embed(x))  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.final_norm(x)


class ConvNeXtBlock(nn.Module):
    """``x + gamma * pwconv2(gelu(pwconv1(norm(dwconv(x)))))`` over ``(B, T, C)``.

    Args:
        channels: width ``C``.
        mlp_ratio: the MLP's hidden width is ``round(mlp_ratio * channels)``.
        kernel_size: kernel of the depthwise convolution.
        causal: left padding only.
        layer_scale: initial value of the per-channel output scale ``gamma``.
    """

    def __init__(
        self,
        channels: int,
        mlp_ratio: float = 3.0,
        kernel_size: int = 7,
        causal: bool = False,
        layer_scale: float = 0.125,
    ) -> None:
        super().__init__()
        hidden = int(round(mlp_ratio * channels))
        self.dwconv = DepthwiseConv1d(channels, kernel_size, causal)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pwconv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden, channels)
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        h = self.norm(self.dwconv(x))  # (B, T, C)
        h = self.pwconv2(self.act(self.pwconv1(h)))  # (B, T, hidden) -> (B, T, C)
        return x + self.gamma * h


@dataclass
class _History:
    """Streaming state of a causal depthwise convolution: its last input frames."""

    frames: torch.Tensor | None = None  # (B, kernel_size - 1, C), made on the first chunk


class DepthwiseConv1d(StreamingModule):
    """Depthwise convolution over time of time-major activations ``(B, T, C)``.

    One filter of ``kernel_size`` frames per channel, with bias; ``T`` frames in, ``T``
    out: zero padding ``kernel_size - 1`` on the left (causal) or split between both sides
    (more on the right for an even kernel). The weight is stored as ``nn.Conv1d``'s
    ``(C, 1, kernel_size)``, so weights of Vocos's ``dwconv`` load unchanged.

    Args:
        channels: channels ``C`` (one filter each).
        kernel_size: filter length in frames.
        causal: left padding only; frame ``t`` of the output sees input frames ``<= t``.
    """

    def __init__(self, channels: int, kernel_size: int = 7, causal: bool = False) -> None:
        super().__init__()
        if kernel_size < 1:
            raise ValueError(f"kernel_size must be >= 1, not {kernel_size}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.causal = causal
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def _start_streaming(self, batch_size: int) -> None:
        self._stream = _History()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); streaming: the next frames of each stream -> as many."""
        k = self.kernel_size
        if self._stream is not None:
            state = self._stream
            if state.frames is None:
                state.frames = x.new_zeros(x.shape[0], k - 1, x.shape[2])  # (B, K - 1, C)
            x = torch.cat((state.frames, x), dim=1)  # (B, K - 1 + T, C)
            state.frames = x[:, x.shape[1] - (k - 1) :].clone()  # (B, K - 1, C)
            left = right = 0
        elif self.causal:
            left, right = k - 1, 0
        else:
            left = (k - 1) // 2
            right = k - 1 - left
        if torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad):
            if left or right:
                x = F.pad(x, (0, 0, left, right))  # (B, T + K - 1, C)
            return _DepthwiseConv.apply(x, self.weight, self.bias)  # (B, T, C)
        if left != right:
            x = F.pad(x, (0, 0, left, right))  # (B, T + K - 1, C)
            left = 0
        return _depthwise(x, self.weight, self.bias, left)  # (B, T, C)


def _depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int = 0):
    """oneDNN's depthwise convolution of time-major ``x`` (B, T', C) read as a channels-last
    image; ``padding`` zeros on both sides."""
    image = x.transpose(1, 2).unsqueeze(2)  # (B, C, 1, T'): channels-last memory
    y = F.conv2d(image, weight.unsqueeze(2), bias, padding=(0, padding), groups=weight.shape[0])
    return y.squeeze(2).transpose(1, 2)  # (B, T' + 2 * padding - K + 1, C)


class _DepthwiseConv(torch.autograd.Function):
    """Depthwise convolution of padded time-major input, with a faster backward.

    PyTorch's CPU backward of a depthwise convolution computes the bias gradient and (worse
    in bf16) the weight gradient on slow paths (pytorch/pytorch#13716). Here the input
    gradient is the depthwise convolution of the output gradient with the flipped filters,
    the weight gradient ``kernel_size`` channel-wise dot products in float32, the bias
    gradient a sum. ``bench/frame_codec_speed.py --sections depthwise`` measures it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, T + K - 1, C) zero-padded, weight (C, 1, K), bias (C,) -> (B, T, C)."""
        ctx.save_for_backward(x, weight)
        return _depthwise(x, weight, bias)  # (B, T, C)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        k, frames = weight.shape[-1], grad.shape[1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            padded = F.pad(grad, (0, 0, k - 1, k - 1))  # (B, T + 2K - 2, C)
            grad_x = _depthwise(padded, weight.flip(-1).to(grad.dtype), None)  # (B, T + K - 1, C)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            g = grad.float()  # (B, T, C)
            if ctx.needs_input_grad[1]:
                xf = x.float()  # (B, T + K - 1, C)
                taps = [(xf[:, i : i + frames] * g).sum((0, 1)) for i in range(k)]  # K x (C,)
                grad_w = torch.stack(taps, dim=1).unsqueeze(1).to(weight.dtype)  # (C, 1, K)
            if ctx.needs_input_grad[2]:
                grad_b = g.sum((0, 1))  # (C,)
        return grad_x, grad_w, grad_b
