import copy
import math

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from lit_codec import Codec
from lit_codec.nn import SEANetGenerator
from lit_codec.nn.configurable import build_module, module_config
from lit_codec.nn.fsq import FiniteScalarQuantizer, QuantizerOutput, ResidualFSQ

LEVELS = (8, 5, 5, 5)  # 1000 codes per stage


def small_fsq(**kwargs) -> ResidualFSQ:
    args = dict(dim=8, levels=LEVELS, n_q=4, frame_rate=75.0)
    args.update(kwargs)
    return ResidualFSQ(**args)


def test_shapes_codes_and_outputs():
    fsq = small_fsq()
    out = fsq(torch.randn(3, 8, 10))
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == (3, 8, 10) and out.codes.shape == (3, out.n_q, 10)
    assert out.codes.dtype == torch.int64 and fsq.codebook_size == 1000
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < 1000
    assert 1 <= out.n_q <= 4 and torch.equal(out.n_q_per_sample, torch.full((3,), out.n_q))
    assert out.bits_per_frame == pytest.approx(out.n_q * math.log2(1000))
    assert out.losses.keys() == {"vq/commit"} and float(out.losses["vq/commit"]) == 0.0
    for i in range(out.n_q):
        assert 0 < float(out.metrics[f"vq/usage/{i}"]) <= 30 / 1000
        assert 1 <= float(out.metrics[f"vq/perplexity/{i}"]) <= 30 + 1e-4
    assert f"vq/usage/{out.n_q}" not in out.metrics
    with pytest.raises(ValueError):
        fsq(torch.randn(3, 7, 10))
    with pytest.raises(ValueError):
        fsq(torch.randn(3, 8, 10), n_q=5)
    with pytest.raises(IndexError):
        fsq.decode(torch.full((1, 2, 3), 1000))


def test_every_level_of_odd_and_even_counts_is_reached():
    """The bound (with the half-level offset for even counts) reaches all L levels."""
    fsq = ResidualFSQ(dim=2, levels=(4, 5), n_q=1, quantizer_dropout="none").eval()
    z = torch.linspace(-6, 6, 2001)
    codes = fsq.encode(torch.stack([z, z]).unsqueeze(0))[0, 0]  # (T,)
    digits = torch.stack([codes % 4, codes // 4])  # (2, T)
    assert set(digits[0].tolist()) == {0, 1, 2, 3} and set(digits[1].tolist()) == {0, 1, 2, 3, 4}
    assert codes.unique().numel() >= 8  # a diagonal through the 4 x 5 grid
    # 0 maps to the middle level: digit L // 2 (level 0), for even and odd counts alike.
    zero = fsq.encode(torch.zeros(1, 2, 1))[0, 0, 0]
    assert int(zero % 4) == 2 and int(zero // 4) == 2


def test_eval_forward_encode_and_decode_agree_exactly():
    fsq = small_fsq(quantizer_dropout="batch").eval()
    x = torch.randn(2, 8, 9)
    with torch.no_grad():
        out = fsq(x)
    assert out.n_q == 4 and int(fsq.step) == 0  # eval: all stages, no step counted
    assert torch.equal(fsq.encode(x), out.codes)
    assert torch.equal(fsq.decode(out.codes), out.quantized)
    for n in (1, 2, 3):  # any prefix of the stages decodes to the forward with n stages
        with torch.no_grad():
            part = fsq(x, n_q=n)
        assert torch.equal(part.codes, out.codes[:, :n])
        assert torch.equal(fsq.decode(out.codes[:, :n]), part.quantized)
    # With gradients on, the straight-through value is the same up to rounding.
    torch.testing.assert_close(fsq(x).quantized, out.quantized, rtol=0, atol=1e-6)


def test_straight_through_gradient_is_that_of_the_bound():
    fsq = ResidualFSQ(dim=4, levels=LEVELS, n_q=3, quantizer_dropout="none")
    x = torch.randn(2, 4, 10, requires_grad=True)
    out = fsq(x)
    upstream = torch.randn_like(out.quantized)
    out.quantized.backward(upstream)
    levels = torch.tensor(LEVELS, dtype=torch.float32).view(1, 4, 1)
    half_l = (levels - 1) * 1.001 / 2
    offset = (levels % 2 == 0).float() * 0.5
    t = torch.tanh(x.detach() + torch.atanh(offset / half_l))
    expected = upstream * half_l * (1 - t.square()) / (levels // 2)  # d quantized / d x
    torch.testing.assert_close(x.grad, expected, rtol=1e-5, atol=1e-6)
    # Through the projections: the input and both projections get a gradient.
    fsq = small_fsq(quantizer_dropout="none")
    x = torch.randn(2, 8, 10, requires_grad=True)
    fsq(x).quantized.square().sum().backward()
    assert x.grad.abs().sum() > 0
    assert fsq.project_in.weight.grad.abs().sum() > 0
    assert fsq.project_out.weight.grad.abs().sum() > 0


def test_more_stages_lower_the_error_geometrically():
    fsq = ResidualFSQ(dim=4, levels=LEVELS, n_q=6, quantizer_dropout="none").eval()
    x = 2 * torch.randn(4, 4, 50)
    target = fsq.bounded(x)
    errors = [(fsq.decode(fsq.encode(x, n)) - target).abs() for n in range(1, 7)]
    half_width = torch.tensor([n // 2 for n in LEVELS], dtype=torch.float32).view(1, 4, 1)
    levels = torch.tensor(LEVELS, dtype=torch.float32).view(1, 4, 1)
    for n, err in enumerate(errors, start=1):
        bound = 0.5 * levels.pow(-(n - 1)) / half_width + 1e-6  # per channel, normalised units
        assert (err <= bound).all(), n
    means = [float(e.mean()) for e in errors]
    assert all(b < a / 3 for a, b in zip(means, means[1:])), means
    # With projections the reconstruction of the (projected) latents improves too.
    fsq = small_fsq(n_q=4).eval()
    x = torch.randn(4, 8, 50)
    target = fsq.bounded(x)
    errs = [float((fsq.decode(fsq.encode(x, n)) - target).square().mean()) for n in range(1, 5)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0] / 100


def test_bitrate_accounting():
    fsq = ResidualFSQ(dim=8, levels=(4, 4, 4, 4, 4), n_q=8, frame_rate=24000 / 320)
    assert fsq.codebook_size == 1024 and fsq.bits_per_code == 10 and fsq.frame_rate == 75.0
    assert fsq.kbps(8) == pytest.approx(6.0) and fsq.kbps(2) == pytest.approx(1.5)
    assert [fsq.n_q_for_kbps(k) for k in (0.75, 1.5, 3.0, 6.0)] == [1, 2, 4, 8]
    assert fsq.n_q_for_kbps(2.9) == 3  # the most stages within the budget
    for bad in (0.5, 7.0):
        with pytest.raises(ValueError, match="outside what this quantizer offers"):
            fsq.n_q_for_kbps(bad)
    out = fsq(torch.randn(1, 8, 4), n_q=4)
    assert out.bits_per_frame == 40 and out.bandwidth_kbps == pytest.approx(3.0)
    one = FiniteScalarQuantizer(dim=8, levels=LEVELS, frame_rate=50.0)
    assert one.n_q == 1 and one.kbps(1) == pytest.approx(50 * math.log2(1000) / 1000)


def test_batch_dropout_covers_every_n_q_deterministically_and_resumes():
    a, b, c = small_fsq(seed=3), small_fsq(seed=3), small_fsq(seed=4)
    x = torch.randn(2, 8, 3)
    draws_a = [a(x).n_q for _ in range(40)]
    assert set(draws_a) == {1, 2, 3, 4}  # [1, n_q] inclusive
    assert draws_a == [b(x).n_q for _ in range(40)]
    assert draws_a != [c(x).n_q for _ in range(40)]
    assert int(a.step) == 40
    # A rebuilt quantizer with the saved state continues the same sequence.
    resumed = build_module(module_config(a))
    resumed.load_state_dict(a.state_dict())
    assert [resumed(x).n_q for _ in range(20)] == [a(x).n_q for _ in range(20)]
    # An explicit n_q overrides the draw (and still counts the step).
    assert a(x, n_q=2).n_q == 2 and int(a.step) == 61


def test_dropout_fraction_keeps_the_rest_of_the_batch_at_full_bitrate():
    fsq = ResidualFSQ(dim=4, levels=(3, 3, 3, 3), n_q=4, quantizer_dropout="sample",
                      dropout_fraction=0.25).train()  # fmt: skip
    counts = torch.cat([fsq(torch.randn(50, 4, 3)).n_q_per_sample for _ in range(20)])
    full = (counts == 4).float().mean().item()
    assert abs(full - (0.75 + 0.25 / 4)) < 0.06, full


def test_sample_dropout_masks_each_sample():
    fsq = small_fsq(quantizer_dropout="sample")
    seen = set()
    for _ in range(6):
        x = torch.randn(6, 8, 5)
        out = fsq(x)
        assert out.n_q == 4 and out.codes.shape == (6, 4, 5)  # every stage's codes returned
        assert torch.equal(out.codes, fsq.encode(x))
        for i, n in enumerate(out.n_q_per_sample.tolist()):
            seen.add(n)
            expected = fsq.decode(out.codes[i : i + 1, :n])
            torch.testing.assert_close(out.quantized[i : i + 1], expected, rtol=0, atol=1e-6)
    assert seen == {1, 2, 3, 4}
    again = small_fsq(quantizer_dropout="sample")
    first = [again(torch.randn(6, 8, 2)).n_q_per_sample for _ in range(6)]
    fresh = small_fsq(quantizer_dropout="sample")
    assert all(torch.equal(f, fresh(torch.randn(6, 8, 2)).n_q_per_sample) for f in first)


def test_chunked_encode_equals_offline():
    fsq = small_fsq().eval()
    x = torch.randn(2, 8, 37)
    offline = fsq.encode(x)
    for chunk in (1, 2, 5):
        streamed = torch.cat([fsq.encode(p) for p in x.split(chunk, dim=-1)], dim=-1)
        assert torch.equal(streamed, offline)
        audio = torch.cat([fsq.decode(c) for c in offline.split(chunk, dim=-1)], dim=-1)
        torch.testing.assert_close(audio, fsq.decode(offline), rtol=0, atol=1e-6)


def test_float32_quantization_under_bf16_autocast():
    fsq = small_fsq(quantizer_dropout="none")
    x = torch.randn(2, 8, 10)
    reference = fsq.encode(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fsq(x)
        xb = x.to(torch.bfloat16).requires_grad_()
        out_b = fsq(xb)
    assert torch.equal(out.codes, reference) and out.quantized.dtype == torch.float32
    assert out_b.quantized.dtype == torch.bfloat16 and torch.isfinite(out_b.quantized).all()
    assert torch.equal(out_b.codes, fsq.encode(xb.detach().float()))
    out_b.quantized.float().sum().backward()
    assert xb.grad is not None and torch.isfinite(xb.grad).all() and xb.grad.abs().sum() > 0
    # A module cast to bf16 still quantizes in float32.
    low = copy.deepcopy(fsq).to(torch.bfloat16)
    assert low.project_in.weight.dtype == torch.bfloat16
    assert torch.isfinite(low(xb.detach()).quantized).all()
    assert low.decode(reference).dtype == torch.float32


def test_jsonargparse_builds_it_from_a_class_path():
    parser = ArgumentParser()
    parser.add_argument("--quantizer", type=nn.Module)
    text = """
quantizer:
  class_path: lit_codec.nn.fsq.ResidualFSQ
  init_args:
    dim: 8
    levels: [4, 4, 4]
    n_q: 3
    quantizer_dropout: sample
"""
    fsq = parser.instantiate(parser.parse_string(text)).quantizer
    assert isinstance(fsq, ResidualFSQ) and fsq.levels == (4, 4, 4) and fsq.codebook_size == 64
    assert fsq.quantizer_dropout == "sample"
    rebuilt = build_module(module_config(fsq))
    assert rebuilt.config() == fsq.config()
    text = "quantizer:\n  class_path: lit_codec.nn.fsq.FiniteScalarQuantizer\n  init_args: {dim: 4}"
    one = parser.instantiate(parser.parse_string(text)).quantizer
    assert isinstance(one, FiniteScalarQuantizer) and one.n_q == 1 and one.project_in is None
    assert sum(p.numel() for p in one.parameters()) == 0


def test_rejects_bad_configurations():
    with pytest.raises(ValueError, match="levels"):
        ResidualFSQ(levels=(5, 2))
    with pytest.raises(ValueError, match="quantizer_dropout"):
        ResidualFSQ(quantizer_dropout="layer")
    with pytest.raises(ValueError, match="float32 resolution"):
        ResidualFSQ(levels=(8, 8), n_q=9)  # 8 x 3 bits of refinement
    ResidualFSQ(levels=(8, 8), n_q=8)  # 21 bits: fine


def test_codec_encodes_decodes_streams_and_exports(tmp_path):
    torch.manual_seed(0)
    generator = SEANetGenerator(
        channels_enc=4, channels_dec=4, dimension=16, strides=(2, 4), dilations=(1,)
    )
    fsq = ResidualFSQ(dim=16, levels=(5, 4, 4), n_q=3, frame_rate=8000 / 8)
    config = {
        "generator": module_config(generator),
        "quantizer": module_config(fsq),
        "sample_rate": 8000,
    }
    codec = Codec(generator, fsq, 8000, config)
    wav = 0.3 * torch.randn(2, 1, 203)
    codes = codec.encode(wav)
    assert codes.shape == (2, 3, 26) and int(codes.max()) < 80
    assert codec.bitrates() == pytest.approx([n * math.log2(80) for n in (1, 2, 3)])
    assert torch.equal(codec.encode(wav, kbps=2 * math.log2(80)), codes[:, :2])
    audio = codec.decode(codes)
    assert audio.shape == (2, 1, 208) and torch.isfinite(audio).all()
    with codec.streaming(batch_size=2) as stream:
        pieces = [stream.encode(p) for p in wav.split(12, dim=-1)] + [stream.flush()]
    assert torch.equal(torch.cat(pieces, dim=-1), codes)
    loaded = Codec.from_checkpoint(codec.export(tmp_path / "fsq.safetensors"))
    assert isinstance(loaded.quantizer, ResidualFSQ)
    assert loaded.fingerprint == codec.fingerprint
    assert torch.equal(loaded.encode(wav), codes)
    torch.testing.assert_close(loaded.decode(codes), audio, rtol=0, atol=1e-6)


@pytest.mark.slow  # importing the peer takes seconds
def test_same_codes_as_vector_quantize_pytorch_fsq():
    vqp = pytest.importorskip("vector_quantize_pytorch")
    ours = FiniteScalarQuantizer(dim=8, levels=LEVELS).eval()
    peer = vqp.FSQ(levels=list(LEVELS), dim=8).eval()
    peer.project_in.load_state_dict(ours.project_in.state_dict())
    peer.project_out.load_state_dict(ours.project_out.state_dict())
    x = 3 * torch.randn(2, 20, 8)  # (B, T, D)
    with torch.no_grad():
        quantized, indices = peer(x)
        out = ours(x.transpose(1, 2))
    assert torch.equal(out.codes[:, 0], indices.long())
    torch.testing.assert_close(out.quantized.transpose(1, 2), quantized, rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_eval_and_bf16():
    fsq = small_fsq(quantizer_dropout="sample").cuda()
    x = torch.randn(4, 8, 300, device="cuda", requires_grad=True)
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fsq(x.to(torch.bfloat16))
        assert out.quantized.dtype == torch.bfloat16 and torch.isfinite(out.quantized).all()
        assert out.codes.device.type == "cuda" and out.metrics["vq/usage/0"].device.type == "cuda"
        (out.quantized.float().square().mean() + out.losses["vq/commit"]).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    fsq.eval()
    with torch.no_grad():
        out = fsq(x)
        assert torch.equal(fsq.decode(out.codes), out.quantized)
        assert torch.equal(fsq.encode(x), out.codes)
        cpu = copy.deepcopy(fsq).cpu()
        agree = (cpu.encode(x.cpu()) == out.codes.cpu()).float().mean()
    assert agree > 0.99
