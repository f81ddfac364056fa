"""Export-friendly equivalents of lit-codec's layers and quantizers, for :mod:`lit_codec.onnx_export`.

Inside ``with exportable(generator):`` the layers of a generator compute the function they
always compute with operations the ONNX exporter and onnxruntime have;
:func:`quantizer_encode`/:func:`quantizer_decode` are the quantizers' ``encode``/``decode``
written the same way. Outside the block nothing changes. What replaces what:

- streamable convolutions: ``F.pad`` + ``F.conv1d`` / ``F.conv_transpose1d`` instead of the
  time-major block forms (the ``Conv``/``ConvTranspose`` ops); residual sums plainly added;
- activations and depthwise convolutions: out-of-place (no ``inplace`` writes, no custom
  autograd function);
- the STFT analysis and the inverse STFT: products with DFT matrices (the Hann window folded
  in) instead of ``torch.fft.rfft``/``irfft`` on complex tensors, which ONNX does not have
  (onnxruntime's ``DFT`` operator took 401 ms for 500 frames of 1280 samples on one thread,
  the matrix product 41 ms); frames and the overlap-add as shifted slices and pads of
  hop-sized blocks;
- the quantizers: the same nearest-code search (``||e||^2 - 2 x.e``, argmin), lookups and
  FSQ rounding, written without the caches and fast paths of the PyTorch modules;
- the ConvNeXt trunks run in float32 (a recipe's ``trunk_precision: bfloat16`` is an
  autocast that onnxruntime's CPU kernels do not take).

With a :class:`StepStates` (the step graphs of a causal ConvNeXt generator) the layers that carry
streaming state read it from the graph's inputs and leave the next one for its outputs:
:func:`step_states` names them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.nn.activations import ELU, Snake
from lit_codec.nn.conv import StreamingConv1d, StreamingConvTranspose1d
from lit_codec.nn.convnext import DepthwiseConv1d
from lit_codec.nn.convnext_codec import ConvNeXtEncoder
from lit_codec.nn.fsq import ResidualFSQ
from lit_codec.nn.quantization import ResidualVectorQuantizer
from lit_codec.nn.stft_head import MAX_LOG_MAGNITUDE, ISTFTHead, STFTFeatures

__all__ = [
    "BATCH",
    "StepStates",
    "exportable",
    "quantizer_decode",
    "quantizer_encode",
    "step_states",
]

BATCH = "batch"  # the name of the dynamic batch axis in state shapes


# --------------------------------------------------------------------------- quantizers
def quantizer_encode(quantizer: nn.Module, latent: Tensor, n_q: int) -> Tensor:
    """The codes (B, n_q, F) int64 of latents (B, D, F): :meth:`encode` of the quantizer,
    written with operations every ONNX runtime has."""
    if isinstance(quantizer, ResidualVectorQuantizer):
        return _rvq_encode(quantizer, latent, n_q)
    return _fsq_encode(quantizer, latent, n_q)


def quantizer_decode(quantizer: nn.Module, codes: Tensor) -> Tensor:
    """The latents (B, D, F) float32 of codes (B, n, F): :meth:`decode` of the quantizer."""
    if isinstance(quantizer, ResidualVectorQuantizer):
        return _rvq_decode(quantizer, codes)
    return _fsq_decode(quantizer, codes)


def _rvq_encode(q: ResidualVectorQuantizer, latent: Tensor, n_q: int) -> Tensor:
    batch, dim, frames = latent.shape
    residual = latent.float().transpose(1, 2).reshape(-1, dim)  # (B * F, D)
    codes = []
    for i in range(n_q):
        layer = q.layers[i]
        embed = layer.codebook.embed.detach()  # (K, d)
        embed_sq = embed.square().sum(1)  # (K,), as EuclideanCodebook.search_tables
        z = layer.project_in(residual)  # (B * F, d)
        idx = torch.addmm(embed_sq, z, embed.t(), alpha=-2.0).argmin(1)  # (B * F,)
        codes.append(idx)
        if i + 1 < n_q:
            residual = residual - layer.project_out(embed.index_select(0, idx))  # (B * F, D)
    stacked = torch.stack(codes)  # (n_q, B * F)
    return stacked.reshape(n_q, batch, frames).transpose(0, 1)  # (B, n_q, F)


def _rvq_decode(q: ResidualVectorQuantizer, codes: Tensor) -> Tensor:
    batch, n, frames = codes.shape
    out = None
    for i in range(n):
        layer = q.layers[i]
        rows = layer.codebook.embed.detach().index_select(0, codes[:, i].reshape(-1))  # (B*F, d)
        part = layer.project_out(rows)  # (B * F, D)
        out = part if out is None else out + part
    assert out is not None
    return out.reshape(batch, frames, -1).transpose(1, 2)  # (B, D, F)


def _fsq_encode(q: ResidualFSQ, latent: Tensor, n_q: int) -> Tensor:
    const = q._tables(latent.device)
    x = latent.float()
    if q.project_in is None:
        z = x + const.shift  # (B, d, F)
    else:
        bias = q.project_in.bias.float() + const.shift.view(-1)  # (d,)
        z = F.linear(x.transpose(1, 2), q.project_in.weight.float(), bias)  # (B, F, d)
        z = z.transpose(1, 2)  # (B, d, F)
    bounded = const.neg_offset + torch.tanh(z) * const.half_l  # (B, d, F) level units
    rounded = torch.round(bounded)  # stage 0: integers
    residual = bounded - rounded  # (B, d, F) in [-1/2, 1/2]
    digits = [rounded + const.half_width]  # n_q x (B, d, F) level indices
    for i in range(1, n_q):
        j = torch.round(const.centre[i] + residual * const.inv_step[i])
        j = torch.minimum(torch.maximum(j, const.zero), const.top)  # (B, d, F)
        residual = residual - (j - const.centre[i]) * const.step[i]
        digits.append(j)
    stacked = torch.stack(digits, dim=1)  # (B, n_q, d, F)
    return (stacked * const.basis_float).sum(2).long()  # (B, n_q, F)


def _fsq_decode(q: ResidualFSQ, codes: Tensor) -> Tensor:
    const = q._tables(codes.device)
    n = codes.shape[1]
    place = torch.div(codes.unsqueeze(2), const.basis, rounding_mode="floor")  # (B, n, d, F)
    digits = (place % const.levels_long).float()  # (B, n, d, F)
    value = ((digits - const.centre[:n]) * const.step[:n]).sum(1)  # (B, d, F)
    code = value * const.inv_half_width  # (B, d, F)
    if q.project_out is None:
        return code
    out = F.linear(code.transpose(1, 2), q.project_out.weight.float(), q.project_out.bias.float())
    return out.transpose(1, 2)  # (B, D, F)


# --------------------------------------------------------------------------- exportable layers
class StepStates:
    """The streaming state of a step graph, by name: what each stateful layer starts from
    (``given``, the graph's state inputs) and what it leaves for the next step (``next``)."""

    def __init__(self) -> None:
        self.given: dict[str, Tensor] = {}
        self.next: dict[str, Tensor] = {}


@contextmanager
def exportable(generator: nn.Module, states: StepStates | None = None) -> Iterator[nn.Module]:
    """Run ``generator``'s layers through export-friendly equivalents inside the block.

    Every :class:`StreamingConv1d`, :class:`StreamingConvTranspose1d`, ELU/Snake activation,
    :class:`DepthwiseConv1d`, :class:`STFTFeatures`, :class:`ISTFTHead` and the frames of a
    :class:`ConvNeXtEncoder` compute the same function with operations ONNX has (see the
    module docstring); ConvNeXt trunks run in float32. With ``states`` (the step graphs of a
    causal ConvNeXt generator, see :func:`step_states`) the layers that carry state read it
    from and leave it in ``states`` under their names. Everything is restored on exit.
    Offline (no ``states``) outputs equal the modules' own to float rounding.
    """
    patched: list[tuple[nn.Module, str]] = []
    precision: list[tuple[nn.Module, str]] = []

    def patch(module: nn.Module, name: str, fn) -> None:
        object.__setattr__(module, name, fn)  # an instance attribute shadows the method
        patched.append((module, name))

    try:
        for name, m in generator.named_modules():
            if isinstance(m, StreamingConv1d):
                patch(m, "forward", partial(_conv1d, m))
                patch(m, "forward_residual", partial(_conv1d_residual, m))
            elif isinstance(m, StreamingConvTranspose1d):
                patch(m, "forward", partial(_conv_transpose1d, m))
            elif isinstance(m, ELU):
                patch(m, "forward", _elu)
            elif isinstance(m, Snake):
                patch(m, "forward", partial(_snake, m))
            elif isinstance(m, DepthwiseConv1d):
                patch(m, "forward", partial(_depthwise, m, states, f"{name}.frames"))
            elif isinstance(m, STFTFeatures):
                patch(m, "forward", partial(_stft_features, m))
            elif isinstance(m, ISTFTHead):
                patch(m, "synthesize", partial(_synthesize, m, states, name))
            if isinstance(m, ConvNeXtEncoder):
                patch(m, "frames", partial(_frames, m, states, f"{name}.samples"))
            if hasattr(m, "trunk_precision"):
                precision.append((m, m.trunk_precision))
                m.trunk_precision = "float32"
        yield generator
    finally:
        for m, attribute in patched:
            object.__delattr__(m, attribute)
        for m, value in precision:
            m.trunk_precision = value


def step_states(generator: nn.Module, part: str) -> dict[str, tuple[list[int | str], torch.dtype]]:
    """The state of one streaming step of a causal ConvNeXt generator's ``part``
    (``"encoder"`` or ``"decoder"``): name -> (shape with ``"batch"`` first, dtype), in the
    order of the step graph's state inputs. All start at zero, as :meth:`Codec.streaming`'s.
    """
    specs: dict[str, tuple[list[int | str], torch.dtype]] = {}
    for name, m in generator.named_modules():
        if name != part and not name.startswith(part + "."):
            continue
        if isinstance(m, ConvNeXtEncoder):  # the samples the next analysis window starts with
            specs[f"{name}.samples"] = ([BATCH, m.n_fft - m.hop_length], torch.float32)
        elif isinstance(m, DepthwiseConv1d) and m.kernel_size > 1:  # its last input frames
            specs[f"{name}.frames"] = ([BATCH, m.kernel_size - 1, m.channels], torch.float32)
        elif isinstance(m, ISTFTHead):  # overlap-add beyond the emitted samples, their count
            specs[f"{name}.overlap"] = ([BATCH, (m.overlap - 1) * m.hop_length], torch.float32)
            specs[f"{name}.emitted"] = ([], torch.int64)
    return specs


def _conv1d(conv: StreamingConv1d, x: Tensor) -> Tensor:
    """:meth:`StreamingConv1d.forward` offline: (B, C_in, T) -> (B, C_out, ceil(T / stride))."""
    stride = conv.stride[0]
    padding = conv.padding_total
    left = padding if conv.causal else padding - padding // 2
    right = padding - left
    if stride > 1:  # zeros that complete a last partial window
        right = right + (-x.shape[-1]) % stride
    x = F.pad(x, (left, right))  # (B, C_in, T + left + right)
    return F.conv1d(x, conv.weight, conv.bias, stride, 0, conv.dilation, conv.groups)


def _conv1d_residual(
    conv: StreamingConv1d, x: Tensor, skip: Tensor, inplace: bool = False
) -> Tensor:
    """:meth:`StreamingConv1d.forward_residual`: ``skip + conv(x)``, out of place."""
    return _conv1d(conv, x) + skip  # (B, C_out, T)


def _conv_transpose1d(conv: StreamingConvTranspose1d, x: Tensor) -> Tensor:
    """:meth:`StreamingConvTranspose1d.forward` offline: (B, C_in, T) -> (B, C_out, T * stride)."""
    y = F.conv_transpose1d(x, conv.weight, conv.bias, conv.stride[0])  # (B, C_out, (T-1)s + K)
    padding = conv.padding_total
    left = 0 if conv.causal else padding - padding // 2
    right = padding - left
    return y[..., left : y.shape[-1] - right] if right else y[..., left:]  # (B, C_out, T * s)


def _elu(x: Tensor, inplace: bool = False) -> Tensor:
    return F.elu(x)


def _snake(act: Snake, x: Tensor, inplace: bool = False) -> Tensor:
    """:class:`Snake`, out of place: ``x + sin(alpha x)^2 / alpha``."""
    alpha = act.alpha  # (1, C, 1)
    return x + torch.sin(x * alpha).square() * (alpha + 1e-9).reciprocal()


def _depthwise(layer: DepthwiseConv1d, states: StepStates | None, key: str, x: Tensor) -> Tensor:
    """:meth:`DepthwiseConv1d.forward`: (B, T, C) -> (B, T, C); in a step graph the last
    ``kernel_size - 1`` input frames of the previous step come first and the new last ones
    are left for the next."""
    k = layer.kernel_size
    if states is not None and k > 1:
        x = torch.cat((states.given[key], x), dim=1)  # (B, K - 1 + T, C)
        states.next[key] = x[:, 1 - k :]  # (B, K - 1, C)
        left = right = 0
    elif layer.causal:
        left, right = k - 1, 0
    else:
        left = (k - 1) // 2
        right = k - 1 - left
    x = F.pad(x.transpose(1, 2), (left, right))  # (B, C, T + K - 1)
    y = F.conv1d(x, layer.weight, layer.bias, groups=layer.channels)  # (B, C, T)
    return y.transpose(1, 2)  # (B, T, C)


def _frames(encoder: ConvNeXtEncoder, states: StepStates | None, key: str, wav: Tensor) -> Tensor:
    """:meth:`ConvNeXtEncoder.frames`: (B, 1, T) -> (B, ceil(T / hop), n_fft) windows. In a
    step graph ``T`` is whole frames and the last ``n_fft - hop`` samples of the previous
    step come first."""
    hop, extra = encoder.hop_length, encoder.n_fft - encoder.hop_length
    x = wav[:, 0]  # (B, T)
    if states is not None:
        x = torch.cat((states.given[key], x), dim=1)  # (B, n_fft - hop + T)
        states.next[key] = x[:, x.shape[1] - extra :]  # (B, n_fft - hop)
    else:
        left = extra if encoder.causal else extra // 2
        x = F.pad(x, (left, extra - left + (-x.shape[1]) % hop))  # (B, (F - 1) * hop + n_fft)
    return _windows(x, encoder.n_fft, hop)


def _windows(x: Tensor, n_fft: int, hop: int) -> Tensor:
    """``x.unfold(1, n_fft, hop)`` of (B, (F - 1) * hop + n_fft) samples -> (B, F, n_fft), as
    ``r = ceil(n_fft / hop)`` shifted slices of hop-sized blocks."""
    r = -(-n_fft // hop)
    x = F.pad(x, (0, r * hop - n_fft))  # (B, (F + r - 1) * hop)
    blocks = x.reshape(x.shape[0], -1, hop)  # (B, F + r - 1, hop)
    parts = [blocks[:, i : blocks.shape[1] - (r - 1 - i)] for i in range(r)]  # r x (B, F, hop)
    return torch.cat(parts, dim=2)[..., :n_fft]  # (B, F, n_fft)


def _dft_basis(n_fft: int, window: Tensor) -> Tensor:
    """(n_fft, 2 * bins) real DFT of a windowed frame: ``frame @ basis = [Re X | Im X]``."""
    bins = n_fft // 2 + 1
    t = torch.arange(n_fft, dtype=torch.float64).view(-1, 1)  # (n_fft, 1)
    k = torch.arange(bins, dtype=torch.float64).view(1, -1)  # (1, bins)
    angle = 2 * math.pi * torch.remainder(t * k, n_fft) / n_fft  # (n_fft, bins), exact phase
    w = window.double().view(-1, 1)  # (n_fft, 1)
    return torch.cat((angle.cos() * w, -angle.sin() * w), dim=1).float()  # (n_fft, 2 * bins)


def _idft_basis(n_fft: int, window: Tensor) -> Tensor:
    """(2 * bins, n_fft): ``[Re X | Im X] @ basis`` is ``irfft(X, n_fft) * window`` (the
    imaginary parts of the DC and Nyquist bins are ignored, as ``irfft`` does)."""
    bins = n_fft // 2 + 1
    k = torch.arange(bins, dtype=torch.float64).view(-1, 1)  # (bins, 1)
    t = torch.arange(n_fft, dtype=torch.float64).view(1, -1)  # (1, n_fft)
    angle = 2 * math.pi * torch.remainder(k * t, n_fft) / n_fft  # (bins, n_fft)
    weight = torch.full((bins, 1), 2.0, dtype=torch.float64)  # each bin stands for +-k
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    scale = weight / n_fft * window.double().view(1, -1)  # (bins, n_fft)
    real, imag = angle.cos() * scale, -angle.sin() * scale
    imag[0] = 0.0
    if n_fft % 2 == 0:
        imag[-1] = 0.0
    return torch.cat((real, imag), dim=0).float()  # (2 * bins, n_fft)


def _stft_features(stft: STFTFeatures, frames: Tensor) -> Tensor:
    """:meth:`STFTFeatures.forward` with a DFT matrix: (B, F, n_fft) -> (B, F, channels)."""
    bins = stft.n_fft // 2 + 1
    spec = frames.float() @ _dft_basis(stft.n_fft, stft.window)  # (B, F, 2 * bins)
    real, imag = spec[..., :bins], spec[..., bins:]  # (B, F, bins) each
    magnitude = torch.sqrt(real * real + imag * imag).clamp_min(1e-5)  # (B, F, bins)
    parts = []
    if stft.kind != "compressed":
        parts.append(magnitude.log())
    if stft.kind != "log_magnitude":
        scale = magnitude.pow(stft.compression - 1.0)
        parts += [real * scale, imag * scale]
    return torch.cat(parts, dim=-1)  # (B, F, channels)


def _overlap_add(frames: Tensor, hop: int) -> Tensor:
    """:func:`lit_codec.nn.stft_head.overlap_add` as pads: (B, F, r * hop) -> (B, (F + r - 1) * hop)."""
    batch = frames.shape[0]
    r = frames.shape[2] // hop
    blocks = frames.reshape(batch, frames.shape[1], r, hop)  # (B, F, r, hop)
    out = None
    for i in range(r):  # block i of frame j lands on block j + i of the output
        part = F.pad(blocks[:, :, i], (0, 0, i, r - 1 - i))  # (B, F + r - 1, hop)
        out = part if out is None else out + part
    assert out is not None
    return out.reshape(batch, -1)  # (B, (F + r - 1) * hop)


def _synthesize(
    head: ISTFTHead, states: StepStates | None, name: str, log_magnitude: Tensor, phase: Tensor
) -> Tensor:
    """:meth:`ISTFTHead.synthesize` with an inverse-DFT matrix: (B, F, bins) twice ->
    (B, 1, F * hop). In a step graph the overlap-add tail and the count of samples emitted
    come from the previous step and the new ones are left for the next."""
    hop, r = head.hop_length, head.overlap
    magnitude = log_magnitude.float().clamp(max=MAX_LOG_MAGNITUDE).exp()  # (B, F, bins)
    phase = phase.float()
    spec = torch.cat((magnitude * phase.cos(), magnitude * phase.sin()), dim=-1)  # (B, F, 2*bins)
    wave = spec @ _idft_basis(head.n_fft, head.window)  # (B, F, n_fft), windowed
    wave = F.pad(wave, (0, r * hop - head.n_fft))  # (B, F, r * hop)
    summed = _overlap_add(wave, hop)  # (B, (F + r - 1) * hop)
    keep = (r - 1) * hop
    partial_head = head.inverse_envelope[:keep]  # (keep,): the first, partial samples
    steady = head.inverse_envelope[keep:]  # (hop,): one period of the rest
    if states is not None:
        tail, emitted = states.given[f"{name}.overlap"], states.given[f"{name}.emitted"]
        summed = torch.cat((summed[:, :keep] + tail, summed[:, keep:]), dim=1)  # (B, ...)
        length = summed.shape[1] - keep  # F * hop
        t = emitted + torch.arange(length, dtype=torch.long)  # (F * hop,) output sample indices
        index = torch.where(t < keep, t, keep + t % hop)  # into inverse_envelope
        y = summed[:, :length] * head.inverse_envelope[index]  # (B, F * hop)
        states.next[f"{name}.overlap"] = summed[:, length:]  # (B, (r - 1) * hop)
        states.next[f"{name}.emitted"] = emitted + length
        return y.unsqueeze(1)  # (B, 1, F * hop)
    length = summed.shape[1] - keep  # F * hop
    frames = phase.shape[1]
    if head.causal:
        inverse = torch.cat((partial_head, steady.repeat(frames)))[:length]  # (F * hop,)
        return (summed[:, :length] * inverse).unsqueeze(1)  # (B, 1, F * hop)
    left = (head.n_fft - hop) // 2
    squared = head.window_squared.expand(1, frames, -1)  # (1, F, r * hop)
    envelope = _overlap_add(squared, hop)[0, left : left + length]  # (F * hop,)
    y = summed[:, left : left + length] / head._floor(envelope)  # (B, F * hop)
    return y.unsqueeze(1)  # (B, 1, F * hop)
