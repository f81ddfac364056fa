"""CodebookStatistics on hand-made codes."""

import math

import pytest
import torch

from lit_codec.metrics import CodebookStatistics


def test_uniform_codes_use_log2_codebook_size_bits():
    stats = CodebookStatistics(n_q=3, codebook_size=16, frame_rate=50.0)
    codes = torch.arange(16).repeat(2, 3, 4)  # (B=2, n_q=3, F=64): every code equally often
    stats.update(codes)
    out = stats.compute()
    assert out.entropy == pytest.approx([4.0] * 3)
    assert out.perplexity == pytest.approx([16.0] * 3)
    assert out.usage == [1.0] * 3
    assert out.kbps == pytest.approx(3 * 4 * 50 / 1000)
    assert out.entropy_kbps == pytest.approx(out.kbps)
    assert out.frames == 128 and int(out.counts.sum()) == 3 * 128


def test_constant_codes_need_no_bits():
    stats = CodebookStatistics(n_q=2, codebook_size=8, frame_rate=75.0)
    stats.update(torch.full((4, 2, 10), 5))
    out = stats.compute()
    assert out.entropy == [0.0, 0.0]
    assert out.perplexity == [1.0, 1.0]
    assert out.usage == [1 / 8, 1 / 8]
    assert out.entropy_kbps == 0.0
    assert out.kbps == pytest.approx(2 * 3 * 75 / 1000)


def test_fewer_layers_and_lengths():
    stats = CodebookStatistics(n_q=4, codebook_size=4, frame_rate=10.0)
    codes = torch.tensor(
        [[[0, 1, 2, 3, 3, 3]]]
    )  # (1, 1, 6): one layer, the last two frames padding
    stats.update(codes, lengths=torch.tensor([4]))
    out = stats.compute()
    assert out.frames == 4
    assert out.entropy[0] == pytest.approx(2.0)
    assert out.usage == [1.0, 0.0, 0.0, 0.0]
    assert out.perplexity == pytest.approx([4.0, 0.0, 0.0, 0.0])
    assert out.kbps == pytest.approx(1 * 2 * 10 / 1000)  # one layer of 2 bits at 10 frames/s
    # a second batch with two layers: layer 1 now covers half of the frames
    stats.update(torch.tensor([[[0, 0, 0, 0], [1, 2, 1, 2]]]))
    out = stats.compute()
    assert out.frames == 8
    assert out.kbps == pytest.approx((1 + 0.5) * 2 * 10 / 1000)
    p = torch.tensor([5, 1, 1, 1]) / 8
    h0 = float(-(p * p.log2()).sum())
    assert out.entropy[0] == pytest.approx(h0, rel=1e-5)
    assert out.entropy_kbps == pytest.approx((h0 + 0.5 * 1.0) * 10 / 1000, rel=1e-5)


def test_states_add_up_and_bad_codes_raise():
    a, b = CodebookStatistics(1, 4, 1.0), CodebookStatistics(1, 4, 1.0)
    a.update(torch.tensor([[[0, 1]]]))
    b.update(torch.tensor([[[2, 3]]]))
    a.merge_state(b)
    assert a.compute().entropy == pytest.approx([math.log2(4)])
    with pytest.raises(ValueError):
        a.update(torch.tensor([[[4]]]))  # outside the codebook
    with pytest.raises(ValueError):
        a.update(torch.zeros(1, 2, 3, dtype=torch.long))  # more layers than n_q
