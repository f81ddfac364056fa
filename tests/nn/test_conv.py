"""Tests of the streamable convolutions: padding rules, streaming, weight-norm folding."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from lit_codec.nn import conv as conv_module
from lit_codec.nn.activations import ELU, Snake
from lit_codec.nn.conv import (
    StreamingConv1d,
    StreamingConvTranspose1d,
    fold_weight_norm,
    is_streaming,
    streaming,
)
from lit_codec.nn.frame_stepper import FrameStepper


def reference_conv(m: StreamingConv1d, x: torch.Tensor) -> torch.Tensor:
    """EnCodec's rule: K - stride zeros (left, or split), plus zeros completing the last window."""
    k = (m.kernel_size[0] - 1) * m.dilation[0] + 1
    s = m.stride[0]
    total = k - s
    frames = -(-x.shape[-1] // s)
    extra = (frames - 1) * s + k - total - x.shape[-1]
    left = total if m.causal else total - total // 2
    x = F.pad(x, (left, total - left + extra))
    return F.conv1d(x, m.weight, m.bias, stride=s, dilation=m.dilation[0], groups=m.groups)


def reference_transposed(m: StreamingConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    y = F.conv_transpose1d(x, m.weight, m.bias, stride=m.stride[0])
    total = m.kernel_size[0] - m.stride[0]
    left = 0 if m.causal else total - total // 2
    return y[..., left : left + x.shape[-1] * m.stride[0]]


def time_major(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).contiguous().transpose(1, 2)


CONV_CASES = [
    # in, out, kernel, stride, dilation, groups
    (3, 5, 7, 1, 1, 1),
    (4, 6, 3, 1, 3, 1),
    (4, 8, 4, 2, 1, 1),
    (3, 6, 10, 5, 1, 1),
    (1, 4, 7, 1, 1, 1),  # one input channel: a matrix product over unfolded windows
    (4, 2, 1, 1, 1, 1),  # pointwise: a matrix product
    (4, 4, 3, 1, 1, 2),
    (2, 3, 2, 2, 1, 1),
]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_padding_rule(case, causal):
    cin, cout, k, s, d, g = case
    m = StreamingConv1d(cin, cout, k, stride=s, dilation=d, groups=g, causal=causal)
    for length in (s * 9, s * 9 + 1, 23):
        x = time_major(torch.randn(2, cin, length))
        y = m(x)
        assert y.shape == (2, cout, -(-length // s))
        torch.testing.assert_close(y, reference_conv(m, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", [(4, 3, 4, 2), (5, 2, 10, 5), (3, 3, 3, 1), (2, 4, 7, 3)])
def test_transposed_matches_trimming_rule(case, causal):
    cin, cout, k, s = case
    m = StreamingConvTranspose1d(cin, cout, k, stride=s, causal=causal)
    x = time_major(torch.randn(2, cin, 11))
    y = m(x)
    assert y.shape == (2, cout, 11 * s)
    torch.testing.assert_close(y, reference_transposed(m, x), atol=1e-5, rtol=1e-5)


def test_causal_conv_has_no_look_ahead():
    m = StreamingConv1d(2, 3, 8, stride=4)
    x = torch.randn(1, 2, 64)
    t = 37
    x2 = x.clone()
    x2[..., t:] += torch.randn_like(x2[..., t:])
    y, y2 = m(x), m(x2)
    first_changed = t // 4  # the frame whose window [j*s, (j+1)*s) holds sample t
    torch.testing.assert_close(y[..., :first_changed], y2[..., :first_changed])
    assert not torch.allclose(y[..., first_changed], y2[..., first_changed])


def random_chunks(total: int, sizes: tuple[int, ...], seed: int) -> list[int]:
    rng = random.Random(seed)
    out = []
    while sum(out) < total:
        out.append(min(rng.choice(sizes), total - sum(out)))
    return out


def stream(module: torch.nn.Module, x: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    outputs, start = [], 0
    with streaming(module, batch_size=x.shape[0]):
        assert is_streaming(module)
        for n in chunks:
            outputs.append(module(x[..., start : start + n]))
            start += n
    assert not is_streaming(module)
    return torch.cat(outputs, dim=-1)


# Streamed chunks run as a matrix product when small (the default here), else as oneDNN's
# convolution: 0 forces the latter.
MATMUL_MAX = [conv_module._MATMUL_MAX, 0]


@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("matmul_max", MATMUL_MAX)
def test_conv_streaming_equals_offline(case, seed, matmul_max, monkeypatch):
    monkeypatch.setattr(conv_module, "_MATMUL_MAX", matmul_max)
    cin, cout, k, s, d, g = case
    m = StreamingConv1d(cin, cout, k, stride=s, dilation=d, groups=g)
    x = torch.randn(2, cin, s * 40)
    chunks = random_chunks(x.shape[-1], (0, 1, s - 1 or 1, s, 7, 3 * s + 1, 50), seed)
    with torch.no_grad():
        offline = m(x)
        online = stream(m, x, chunks)
    assert online.shape == offline.shape
    assert (online - offline).abs().max() < 1e-5


@pytest.mark.parametrize("case", [(4, 3, 4, 2), (5, 2, 10, 5), (3, 3, 3, 1), (2, 4, 7, 3)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("matmul_max", MATMUL_MAX)
def test_transposed_streaming_equals_offline(case, bias, matmul_max, monkeypatch):
    monkeypatch.setattr(conv_module, "_MATMUL_MAX", matmul_max)
    cin, cout, k, s = case
    m = StreamingConvTranspose1d(cin, cout, k, stride=s, bias=bias)
    x = torch.randn(2, cin, 30)
    chunks = random_chunks(x.shape[-1], (0, 1, 2, 5, 13), seed=3)
    with torch.no_grad():
        offline = m(x)
        online = stream(m, x, chunks)
    assert online.shape == offline.shape
    assert (online - offline).abs().max() < 1e-5


def test_streaming_emits_frames_as_soon_as_complete():
    m = StreamingConv1d(1, 2, 8, stride=4)
    with torch.no_grad(), streaming(m):
        assert m(torch.randn(1, 1, 3)).shape[-1] == 0  # fewer samples than the stride
        assert m(torch.randn(1, 1, 1)).shape[-1] == 1  # frame 0 needs samples [0, 4)
        assert m(torch.randn(1, 1, 0)).shape[-1] == 0
        assert m(torch.randn(1, 1, 9)).shape[-1] == 2  # 13 samples: frames 1 and 2


def test_streaming_restarts_clean_and_refuses_nesting():
    m = StreamingConv1d(2, 2, 5, stride=1)
    x = torch.randn(1, 2, 20)
    with torch.no_grad():
        first = stream(m, x, [7, 13])
        second = stream(m, x, [20])
        torch.testing.assert_close(first, second)
        torch.testing.assert_close(m(x), second, atol=1e-6, rtol=1e-6)
        with streaming(m), pytest.raises(ValueError, match="already"):
            with streaming(m):
                pass


@pytest.mark.parametrize(
    "module",
    [
        lambda: StreamingConv1d(2, 2, 3, causal=False),
        lambda: StreamingConvTranspose1d(2, 2, 4, stride=2, causal=False),
    ],
)
def test_non_causal_refuses_streaming(module):
    m = module()
    with pytest.raises(ValueError, match="not causal"):
        with streaming(m):
            pass
    assert not is_streaming(m)


def test_fold_weight_norm_keeps_outputs():
    layers = torch.nn.Sequential(
        StreamingConv1d(3, 8, 5, stride=1),
        StreamingConv1d(8, 8, 4, stride=2),
        StreamingConvTranspose1d(8, 4, 4, stride=2),
        StreamingConv1d(4, 2, 1, weight_norm=False),
    )
    # Move the weight-norm magnitudes away from their initial values.
    with torch.no_grad():
        for p in layers.parameters():
            p.mul_(1.5)
    x = torch.randn(2, 3, 64)
    with torch.no_grad():
        before = layers(x)
        assert any("original0" in k for k in layers.state_dict())
        fold_weight_norm(layers)
        after = layers(x)
    assert not any("original" in k for k in layers.state_dict())
    assert all(isinstance(m.weight, torch.nn.Parameter) for m in layers)
    assert (after - before).abs().max() < 1e-6


def test_gradients_reach_weight_norm_parameters():
    layers = torch.nn.Sequential(
        StreamingConv1d(2, 4, 4, stride=2), StreamingConvTranspose1d(4, 2, 4, stride=2)
    )
    layers(torch.randn(2, 2, 32)).square().mean().backward()
    for name, p in layers.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_invalid_geometry_is_refused():
    with pytest.raises(ValueError, match="stride"):
        StreamingConv1d(1, 1, 2, stride=3)
    with pytest.raises(ValueError, match="kernel_size"):
        StreamingConvTranspose1d(1, 1, 2, stride=3)


class StepToy(torch.nn.Module):
    """Layers a step program records: convolutions in both layouts (channels x time when a
    frame has more time steps than channels), a transposed one, a residual 1x1 product with
    its bias and skip folded in, ELU and Snake."""

    def __init__(self) -> None:
        super().__init__()
        self.a = StreamingConv1d(1, 3, 3, dilation=2)  # 4 steps/frame >= 3 channels: (C, T)
        self.b = StreamingConv1d(3, 12, 8, stride=4)  # 1 step/frame < 12 channels: (T, C)
        self.c = StreamingConvTranspose1d(12, 6, 6, stride=4)  # (T, C), 2 kept frames
        self.d = StreamingConv1d(6, 3, 3, dilation=3)  # (C, T): its skip input is re-laid out
        self.e = StreamingConv1d(3, 6, 1)
        self.f = StreamingConv1d(6, 2, 5)
        self.elu, self.snake = ELU(), Snake(3)
        with torch.no_grad():
            self.snake.alpha.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.b(F.elu(self.a(x)))
        c = self.c(F.elu(b))
        r = c + self.e(self.snake(self.d(F.elu(c))))
        return self.f(F.elu(r))

    def record_step(self, s, frames: int) -> None:
        x = s.conv(None, self.a, length=4 * frames)
        x = s.conv(x, self.b, self.elu, inplace=True)
        x = s.conv_transposed(x, self.c, self.elu, inplace=True)
        x = s.align(x, self.d)
        h = s.conv(x, self.d, self.elu, ones=True)
        x = s.pointwise_residual(h, self.e, self.snake, x)
        s.conv(x, self.f, self.elu, inplace=True, final=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_frame_stepper_equals_offline(seed):
    toy = StepToy()
    x = torch.randn(2, 1, 4 * 70)
    chunks = random_chunks(x.shape[-1], (0, 1, 3, 4, 9, 4 * 8 + 1, 4 * 23), seed)
    with torch.no_grad():
        offline = toy(x)
        stepper = FrameStepper(toy.record_step, 2, 4, 2, toy.f.weight)
        online = torch.cat([stepper(c) for c in x.split(chunks, dim=-1)], dim=-1)
    assert online.shape == offline.shape == (2, 2, 4 * 70)
    assert (online - offline).abs().max() < 1e-5
    assert {frames for frames, _ in stepper.programs} == {1, 2, 4, 8}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("time_major", [True, False])
def test_forward_residual_fast_path_equals_conv_plus_skip(bias, time_major):
    torch.manual_seed(0)
    conv = StreamingConv1d(6, 10, 1, bias=bias)
    fold_weight_norm(conv)
    x = torch.randn(2, 6, 50)
    skip = torch.randn(2, 10, 50)
    if time_major:
        x, skip = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (x, skip))
    kept = skip.clone()
    with torch.no_grad():
        expected = conv(x) + skip
        fast = conv.forward_residual(x, skip)  # inference: skip + bias, then addmm_
    slow = conv.forward_residual(x, skip)  # with autograd: conv(x).add_(skip)
    assert fast.shape == slow.shape == (2, 10, 50)
    torch.testing.assert_close(fast, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(slow.detach(), expected, atol=1e-6, rtol=0)
    assert torch.equal(skip, kept)  # the skip is left untouched
    slow.sum().backward()
    assert conv.weight.grad is not None


def test_forward_residual_inplace_reuses_a_time_major_skip():
    torch.manual_seed(0)
    conv = StreamingConv1d(6, 10, 1)
    fold_weight_norm(conv)
    x = torch.randn(2, 6, 50)
    skip = torch.randn(2, 50, 10).transpose(1, 2)  # (B, C, T), time-major in memory
    expected = conv(x).detach() + skip
    with torch.no_grad():
        out = conv.forward_residual(x, skip, inplace=True)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert out.data_ptr() == skip.data_ptr()  # formed in the skip's memory: no new tensor
    channel_major = torch.randn(2, 10, 50)
    kept = channel_major.clone()
    with torch.no_grad():  # a skip of the other layout gets a new tensor, and is kept
        out = conv.forward_residual(x, channel_major, inplace=True)
    torch.testing.assert_close(out, conv(x).detach() + kept, atol=1e-6, rtol=0)
    assert torch.equal(channel_major, kept)


def test_forward_residual_under_bf16_autocast_inference():
    torch.manual_seed(0)
    conv = StreamingConv1d(6, 10, 1)
    x, skip = torch.randn(2, 6, 50), torch.randn(2, 10, 50)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv.forward_residual(x, skip)  # autocast's bf16 product: the plain path
        expected = conv(x).add_(skip)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
