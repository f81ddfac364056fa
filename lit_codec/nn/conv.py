"""Streamable 1-D convolutions: causal or centred padding, weight norm, chunked inference.

Follows the padding rules of EnCodec's ``SConv1d``/``SConvTranspose1d``
(facebookresearch/encodec, ``encodec/modules/conv.py``) and adds what Moshi/Mimi's
streaming convolutions add: a stateful mode in which chunks of any size go in and the
concatenated outputs equal the offline output.

Offline, with ``K = (kernel_size - 1) * dilation + 1``:

- a causal convolution pads ``K - stride`` zeros on the left (and, like EnCodec, the few
  zeros on the right that complete a last partial window when the length is not a
  multiple of the stride), so ``T`` samples give ``ceil(T / stride)`` frames and frame ``j``
  sees only samples ``< (j + 1) * stride``;
- a non-causal convolution splits the same padding between both sides;
- a transposed convolution gives ``T * stride`` samples: it trims ``K - stride`` samples on
  the right (causal) or on both sides (non-causal).

Streaming (``with streaming(model, batch_size):``): each causal convolution keeps the tail
of its input it still needs and emits every output frame that is complete; each transposed
convolution emits ``T * stride`` samples for ``T`` frames and keeps its last input frames.
Streaming is for inference: the weights are read once when it starts. A model that knows
its layers streams faster through *step programs* (:class:`~lit_codec.nn.frame_stepper.FrameStepper`, used by SEANet's
encoder and decoder): the operations of one step of whole frames, recorded once with every
buffer and weight matrix prepared, then replayed for each chunk (see "step programs" below).

Speed (CPU inference, where codecs are used most): activations are kept *time-major* in
memory (channels last; shapes stay ``(B, C, T)``, only strides differ, ``.contiguous()``
gives the usual layout). Long signals run through oneDNN's 2-D convolution on
``(B, C, 1, T)`` views, whose kernels read that layout without reordering; causal padding
happens inside the convolution instead of in a padded copy. Strided convolutions run on
blocks of ``stride`` samples (space to depth) and transposed ones produce blocks of
``stride`` samples (depth to space), both free views of time-major tensors and faster than
the strided and transposed kernels. Pointwise convolutions, one-channel inputs (the
waveform) and small streamed chunks run as one matrix product over unfolded windows.
:func:`fold_weight_norm` replaces the weight-norm parametrisation by plain weights stored
in the layout the kernels read. Measured in ``bench/codec_speed.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from lit_codec.nn.conv2d import conv2d

__all__ = [
    "StreamingConv1d",
    "StreamingConvTranspose1d",
    "StreamingModule",
    "fold_weight_norm",
    "is_streaming",
    "streaming",
]


class StreamingModule(nn.Module):
    """Base of modules that carry state from one chunk to the next in streaming mode.

    Subclasses implement :meth:`_start_streaming` and :meth:`_stop_streaming`;
    :func:`streaming` calls them on every such module of a tree. Outside streaming mode
    the module works offline on whole signals.
    """

    # The per-stream state, a plain object (updating it per chunk skips the cost of
    # nn.Module.__setattr__): a _State, or a FrameStepper; None when working offline.
    _stream: object | None = None  # _State, or lit_codec.nn.frame_stepper.FrameStepper

    @property
    def _streaming(self) -> bool:
        return self._stream is not None

    def _start_streaming(self, batch_size: int) -> None:
        raise NotImplementedError

    def _stop_streaming(self) -> None:
        self._stream = None


@contextmanager
def streaming(module: nn.Module, batch_size: int = 1) -> Iterator[nn.Module]:
    """Put every :class:`StreamingModule` of ``module`` in streaming mode for the block.

    Inside the block each call processes the next chunk of one continuous signal per batch
    row; on exit (even on error) all state is dropped and the modules work offline again.
    Streaming is for inference (run it under ``torch.inference_mode()``): the weights are
    read once on entry, so do not change them inside the block.

    Args:
        module: the root of the module tree (a generator, an encoder, one convolution...).
        batch_size: the number of independent streams processed together; every chunk must
            have this batch size.

    Raises:
        ValueError: if a module is non-causal (it would need future samples) or the tree is
            already streaming.
    """
    modules = [m for m in module.modules() if isinstance(m, StreamingModule)]
    for m in modules:
        if not getattr(m, "causal", True):
            raise ValueError(
                f"{type(m).__name__} is not causal and cannot stream: it needs future samples. "
                "Build the model with causal=True to use streaming."
            )
        if m._streaming:
            raise ValueError(f"{type(m).__name__} is already in streaming mode")
    try:
        for m in modules:
            m._start_streaming(batch_size)
        yield module
    finally:
        for m in modules:
            m._stop_streaming()


def is_streaming(module: nn.Module) -> bool:
    """Whether any :class:`StreamingModule` of ``module`` is in streaming mode."""
    return any(m._streaming for m in module.modules() if isinstance(m, StreamingModule))


# In streaming mode, a chunk whose unfolded input (frames x window x channels) has at most
# this many elements is convolved as one matrix product (PyTorch's convolution falls back to
# a slow path for small inputs), a larger one by oneDNN's convolution.
_MATMUL_MAX = 1 << 17


class _State:
    """What a convolution carries between chunks: its input tail, and its weights read once."""

    __slots__ = ("tail", "matrix", "weight", "bias")

    def __init__(
        self,
        tail: torch.Tensor,
        matrix: torch.Tensor | None,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> None:
        self.tail = tail  # (B, L, C_in)
        self.matrix = matrix  # for the matrix-product path
        self.weight = weight  # for the convolution path (4-D, channels last)
        self.bias = bias


def _time_major(w: torch.Tensor) -> torch.Tensor:
    """Same values, stored so that ``w.unsqueeze(2)`` is channels-last 4-D (no copy in conv)."""
    return w.transpose(1, 2).contiguous().transpose(1, 2)


def _unfold_matmul(
    x: torch.Tensor, frames: int, window: int, step: int, dilation: int, matrix: torch.Tensor, bias
) -> torch.Tensor:
    """Windows of ``x`` (B, L, C) times ``matrix`` (C_out, K * C): (B, C_out, frames).

    Window ``j`` is ``x[:, j * step : j * step + window : dilation]``, flattened tap-major.
    """
    batch = x.shape[0]
    windows = x.unfold(1, window, step)  # (B, frames, C, window)
    if dilation > 1:
        windows = windows[..., ::dilation]  # (B, frames, C, K)
    # A free view for pointwise convolutions, else the one copy (im2col). Kept 2-D: a 3-D
    # product may pick another kernel depending on requires_grad, and folding the weight
    # norm would then change the rounding of the result.
    windows = windows.transpose(2, 3).reshape(batch * frames, -1)  # (B * frames, K * C)
    y = F.linear(windows, matrix, bias)  # (B * frames, C_out)
    return y.view(batch, frames, -1).transpose(1, 2)  # (B, C_out, frames)


class StreamingConv1d(StreamingModule, nn.Conv1d):
    """1-D convolution with causal (default) or centred padding, optionally weight-normed.

    Output length is ``ceil(T / stride)``. In streaming mode (causal only) chunks of any
    length, also 0 or fewer than ``stride`` samples, go in and every complete output frame
    comes out; the input tail still needed is kept for the next chunk.

    A causal strided convolution runs on blocks of ``stride`` samples (space to depth: a
    free view of time-major activations) as a stride-1 convolution over
    ``ceil(kernel_size / stride)`` blocks, which oneDNN computes faster than the strided form.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: taps of the kernel.
        stride: down-sampling factor.
        dilation: spacing between taps.
        groups: channel groups (``in_channels`` and ``out_channels`` must divide by it).
        bias: learn an additive bias.
        causal: pad on the left only, so no output depends on a later input sample.
        weight_norm: reparametrise the weight as direction times norm (per output channel).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        causal: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.causal = causal
        self.effective_kernel_size = (kernel_size - 1) * dilation + 1
        self.padding_total = self.effective_kernel_size - stride
        if self.padding_total < 0:
            raise ValueError(
                f"stride {stride} exceeds the effective kernel size {self.effective_kernel_size}: "
                "samples would be skipped"
            )
        # Offline compute path: a matrix product for pointwise convolutions (no copy on
        # time-major activations) and one input channel (the waveform: several times faster
        # than oneDNN's kernel); blocks of `stride` samples for causal strided ones; else a
        # plain convolution.
        self._matmul = groups == 1 and (kernel_size == 1 or in_channels == 1)
        blocked = not self._matmul and causal and stride > 1 and dilation == 1 and groups == 1
        self._blocks = -(-kernel_size // stride) if blocked else 0
        # Samples one output frame reads (the block form rounds the kernel up to whole blocks).
        self._window = self._blocks * stride if blocked else self.effective_kernel_size
        if weight_norm:
            _weight_norm(self, "weight", dim=0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", causal={self.causal}"

    def _start_streaming(self, batch_size: int) -> None:
        weight = self.weight
        matrix = self._matrix(weight) if self.groups == 1 else None
        # The causal left padding is the first tail: the first chunk starts like a signal.
        tail = weight.new_zeros(batch_size, self._window - self.stride[0], self.in_channels)
        self._stream = _State(tail, matrix, self._weight_4d(weight), self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` (B, C_in, T) to (B, C_out, ceil(T / stride)).

        In streaming mode: (B, C_in, n) -> (B, C_out, m), m >= 0 the newly complete frames.
        """
        stride = self.stride[0]
        x = x.transpose(1, 2)  # (B, T, C_in): contiguous for time-major activations
        state = self._stream
        if state is not None:
            if state.tail.shape[1]:
                x = torch.cat((state.tail, x), dim=1)  # (B, L, C_in)
            frames = max(0, (x.shape[1] - self._window) // stride + 1)
            state.tail = x[:, frames * stride :]  # (B, L - frames * stride, C_in)
            if frames == 0:
                return x.new_empty(x.shape[0], self.out_channels, 0)
            x = x[:, : (frames - 1) * stride + self._window]  # (B, L', C_in)
            if state.matrix is not None and (
                self._matmul or frames * self._window * self.in_channels <= _MATMUL_MAX
            ):
                return self._unfold_matmul(x, frames, state.matrix)
            return self._convolve(x, frames, 0, 0, state.weight)
        length = x.shape[1]
        frames = -(-length // stride)  # ceil(T / stride)
        # Like EnCodec, zeros on the right complete a last partial window (none for stride 1).
        extra = frames * stride - length
        padding = self.padding_total
        if self._blocks:
            left, right = self._window - stride, extra
        else:
            left = padding if self.causal else padding - padding // 2
            right = padding - left + extra
        if self._matmul:
            if left or right:
                x = F.pad(x, (0, 0, left, right))  # (B, L + left + right, C_in)
            return self._unfold_matmul(x, frames, self._matrix(self.weight))
        return self._convolve(x, frames, left, right, self._weight_4d(self.weight))

    def forward_residual(
        self, x: torch.Tensor, skip: torch.Tensor, inplace: bool = False
    ) -> torch.Tensor:
        """``skip + self(x)``: a residual connection after a pointwise convolution.

        At inference (no gradient, no autocast) a pointwise convolution computes ``skip + bias``
        in one pass and accumulates the product into it (``addmm_``): one pass over memory
        fewer than convolving (which broadcasts the bias) and adding the skip. With
        ``inplace`` (the caller owns ``skip`` and no longer needs it) and a time-major skip,
        that sum is formed in the skip's own memory: no new tensor. Elsewhere (training,
        autocast, streaming, other convolutions) it is ``self(x).add_(skip)``.

        Args:
            x: (B, C_in, T) input of the convolution.
            skip: (B, C_out, T) what its output is added to (left untouched unless ``inplace``).
            inplace: the fast path may overwrite ``skip`` with the result.

        Returns:
            (B, C_out, T), time-major in memory on the fast path.
        """
        if (
            torch.is_grad_enabled()
            or self._stream is not None
            or self.kernel_size[0] != 1
            or self.groups != 1
            or torch.is_autocast_enabled(x.device.type)
            or not x.dtype == skip.dtype == self.weight.dtype
        ):
            return self(x).add_(skip)
        batch, _, frames = x.shape
        skip_t = skip.transpose(1, 2)  # (B, T, C_out)
        if inplace and skip_t.is_contiguous():
            out = skip_t if self.bias is None else skip_t.add_(self.bias)
        else:
            out = skip.new_empty(batch, frames, self.out_channels)  # (B, T, C_out)
            if self.bias is None:
                out.copy_(skip_t)
            else:
                torch.add(skip_t, self.bias, out=out)
        rows = x.transpose(1, 2).reshape(batch * frames, -1)  # (B*T, C_in): free when time-major
        out.view(batch * frames, -1).addmm_(rows, self._matrix(self.weight).t())
        return out.transpose(1, 2)  # (B, C_out, T)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight as the (C_out, window taps * C_in) matrix of the matrix-product path."""
        if self._blocks and self._window > self.kernel_size[0]:
            weight = F.pad(weight, (self._window - self.kernel_size[0], 0))  # oldest taps zero
        return weight.transpose(1, 2).reshape(self.out_channels, -1)  # a view once folded

    def _weight_4d(self, weight: torch.Tensor) -> torch.Tensor:
        """The weight of the 2-D convolution: (C_out, s * C_in, 1, m) in the block form."""
        if not self._blocks:
            return weight.unsqueeze(2)  # (C_out, C_in / groups, 1, K)
        matrix = self._matrix(weight).view(self.out_channels, self._blocks, -1)  # (C_out, m, s*C)
        return matrix.transpose(1, 2).unsqueeze(2)  # (C_out, s * C_in, 1, m): a view once folded

    def _unfold_matmul(self, x: torch.Tensor, frames: int, matrix: torch.Tensor) -> torch.Tensor:
        dilation = 1 if self._blocks else self.dilation[0]
        return _unfold_matmul(x, frames, self._window, self.stride[0], dilation, matrix, self.bias)

    def _convolve(
        self, x: torch.Tensor, frames: int, left: int, right: int, weight: torch.Tensor
    ) -> torch.Tensor:
        """The ``frames`` outputs of the 2-D convolution on ``x`` (B, L, C_in), zero-padded.

        Padding inside the convolution (both sides) spares a padded copy of the input; the
        surplus frames it adds on the right are dropped.
        """
        stride, dilation = self.stride[0], self.dilation[0]
        if self._blocks:
            if right:
                x = F.pad(x, (0, 0, 0, right))  # (B, whole blocks, C_in)
            x = x.reshape(x.shape[0], -1, stride * self.in_channels)  # (B, L / s, s * C_in)
            left, stride = left // stride, 1
        elif left < right:
            x = F.pad(x, (0, 0, left, right))  # (B, L + left + right, C_in)
            left = 0
        y = conv2d(  # bf16-safe when one strided output frame remains (see lit_codec.nn.conv2d)
            x.transpose(1, 2).unsqueeze(2),  # (B, C, 1, L): channels last
            weight,
            self.bias,
            stride=(1, stride),
            padding=(0, left),
            dilation=(1, dilation),
            groups=self.groups,
        )  # (B, C_out, 1, >= frames)
        return y[..., :frames].squeeze(2)  # (B, C_out, frames)


class StreamingConvTranspose1d(StreamingModule, nn.ConvTranspose1d):
    """Transposed 1-D convolution (up-sampling by ``stride``): T frames give T * stride samples.

    The ``kernel_size - stride`` samples of overlap beyond ``T * stride`` are trimmed on the
    right (causal) or split between both ends (non-causal).

    It runs as a stride-1 convolution over the last ``m = ceil(kernel_size / stride)`` input
    frames that outputs a block of ``stride`` samples per frame (depth to space: a free view
    of time-major activations). This is faster than oneDNN's transposed convolution, and a
    causal one streams like any causal convolution: it keeps its last ``m - 1`` input frames.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: taps of the kernel (at least ``stride``).
        stride: up-sampling factor.
        bias: learn an additive bias.
        causal: trim on the right only, so no output depends on a later input frame.
        weight_norm: reparametrise the weight as direction times norm (per input channel,
            as EnCodec does).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        causal: bool = True,
        weight_norm: bool = True,
    ) -> None:
        if kernel_size < stride:
            raise ValueError(f"kernel_size {kernel_size} < stride {stride} leaves gaps")
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, bias=bias)
        self.causal = causal
        self.padding_total = kernel_size - stride
        self._blocks = -(-kernel_size // stride)  # input frames one output block depends on
        if weight_norm:
            _weight_norm(self, "weight", dim=0)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", causal={self.causal}"

    def _start_streaming(self, batch_size: int) -> None:
        weight, bias = self._block_weight()
        matrix = weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)  # (s * C_out, m * C_in)
        tail = weight.new_zeros(batch_size, self._blocks - 1, self.in_channels)  # past frames
        self._stream = _State(tail, matrix, weight, bias)

    def _block_weight(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Weight (s * C_out, C_in, 1, m), channels last, and bias (s * C_out,) of the block form."""
        stride, kernel_size, blocks = self.stride[0], self.kernel_size[0], self._blocks
        weight = self.weight  # (C_in, C_out, K)
        if blocks * stride > kernel_size:
            weight = F.pad(weight, (0, blocks * stride - kernel_size))  # (C_in, C_out, m * s)
        # Output sample r of block j takes tap i * s + r from input frame j - i; the block
        # convolution's tap 0 reads the oldest frame, hence the flip.
        weight = weight.reshape(self.in_channels, self.out_channels, blocks, stride)
        weight = weight.permute(3, 1, 2, 0).flip(2)  # (s, C_out, m, C_in)
        weight = weight.reshape(stride * self.out_channels, 1, blocks, self.in_channels)
        bias = None if self.bias is None else self.bias.repeat(stride)  # (s * C_out,)
        return weight.permute(0, 3, 1, 2), bias  # (s * C_out, C_in, 1, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Up-sample ``x`` (B, C_in, T) to (B, C_out, T * stride); the same per chunk when streaming."""
        frames = x.shape[-1]
        if frames == 0:
            return x.new_empty(x.shape[0], self.out_channels, 0)
        state = self._stream
        if state is not None:
            x = x.transpose(1, 2)  # (B, T, C_in)
            if self._blocks > 1:
                x = torch.cat((state.tail, x), dim=1)  # (B, m - 1 + T, C_in)
                state.tail = x[:, frames:]  # (B, m - 1, C_in)
            if frames * self._blocks * self.in_channels <= _MATMUL_MAX:
                y = _unfold_matmul(x, frames, self._blocks, 1, 1, state.matrix, state.bias)
                return self._to_samples(y)  # (B, C_out, T * stride)
            y = F.conv2d(x.transpose(1, 2).unsqueeze(2), state.weight, state.bias)  # (B, s*C, 1, T)
            return self._to_samples(y.squeeze(2))  # (B, C_out, T * stride)
        weight, bias = self._block_weight()
        # Zero frames on both sides give all T + m - 1 blocks the overlap reaches.
        y = F.conv2d(x.unsqueeze(2), weight, bias, padding=(0, self._blocks - 1)).squeeze(2)
        if self.causal:
            return self._to_samples(y[..., :frames])  # (B, C_out, T * stride)
        left = self.padding_total - self.padding_total // 2
        return self._to_samples(y)[..., left : left + frames * self.stride[0]]  # (B, C_out, T * s)

    def _to_samples(self, y: torch.Tensor) -> torch.Tensor:
        """Blocks (B, s * C_out, n) to samples (B, C_out, n * s): a view when time-major."""
        y = y.transpose(1, 2)  # (B, n, s * C_out)
        return y.reshape(y.shape[0], -1, self.out_channels).transpose(1, 2)  # (B, C_out, n * s)


_CONVS = (StreamingConv1d, StreamingConvTranspose1d)


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Replace weight-norm parametrisations by plain weights, for fast inference.

    Every :class:`StreamingConv1d`/:class:`StreamingConvTranspose1d` under ``module`` gets a
    plain ``weight`` parameter holding the value the parametrisation computed (outputs do
    not change beyond float rounding), stored in the time-major layout the convolutions
    read without copying. Convolutions without weight norm are only re-laid-out. A
    weight-normed ``nn.Linear`` (the quantizer's projections) gets its plain weight too.
    Works in place and returns ``module``; training it afterwards trains plain weights. Safe
    on a ``copy.deepcopy`` of a model: the original keeps its weight norm.
    """
    for m in module.modules():
        if isinstance(m, nn.Linear) and parametrize.is_parametrized(m, "weight"):
            with torch.no_grad():
                weight = m.weight.detach().clone()
                _drop_weight_parametrization(m)
                m.weight = nn.Parameter(weight)
            continue
        if not isinstance(m, _CONVS):
            continue
        with torch.no_grad():
            weight = _time_major(m.weight.detach())
            if parametrize.is_parametrized(m, "weight"):
                _drop_weight_parametrization(m)
            m.weight = nn.Parameter(weight)
    return module


def _drop_weight_parametrization(m: nn.Module) -> None:
    # parametrize.remove_parametrizations deletes the ``weight`` property from the
    # module's parametrised class, which deep copies of the module share: folding a copy
    # would break the original. Restoring the plain class leaves that class alone.
    if set(m.parametrizations.keys()) == {"weight"}:
        del m.parametrizations
        m.__class__ = type(m).__bases__[0]
    else:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
