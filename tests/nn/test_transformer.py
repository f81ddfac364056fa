"""Transformer blocks: causal, cached decoding equals the full forward, per-step weights, RoPE."""

import pytest
import torch

from lit_codec.nn.kv_cache import KVCache
from lit_codec.nn.rope import RotaryEmbedding, apply_rotary
from lit_codec.nn.transformer import (
    PerStepLinear,
    Transformer,
    TransformerConfig,
    count_parameters,
)

KINDS = [
    dict(norm="rms", mlp="swiglu"),
    dict(norm="layer", mlp="gelu", bias=True),
]


def tiny(**kwargs) -> Transformer:
    config = TransformerConfig(**{"width": 32, "depth": 2, "heads": 4, **kwargs})
    return Transformer(config).eval()


def test_config_derives_and_validates():
    assert TransformerConfig(width=48, heads=2).mlp_ratio == pytest.approx(8 / 3)
    gelu = TransformerConfig(width=48, heads=2, mlp="gelu")
    assert gelu.mlp_ratio == 4.0 and gelu.hidden == 192 and gelu.head_dim == 24
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(width=30, heads=4)
    with pytest.raises(ValueError, match="norm"):
        TransformerConfig(norm="batch")


@pytest.mark.parametrize("kind", KINDS, ids=["rms-swiglu", "layer-gelu"])
def test_causal_and_shapes(kind):
    model = tiny(**kind)
    x = torch.randn(2, 9, 32)
    y = model(x)
    assert y.shape == x.shape
    x2 = x.clone()
    x2[:, 5] += torch.randn(2, 32)
    y2 = model(x2)
    torch.testing.assert_close(y2[:, :5], y[:, :5], rtol=0, atol=1e-6)
    assert (y2[:, 5:] - y[:, 5:]).abs().amax() > 1e-3


@pytest.mark.parametrize("batch", [1, 3, 6])  # a decoding step's rows: 2-4 take weight @ x.T
@pytest.mark.parametrize("kind", KINDS, ids=["rms-swiglu", "layer-gelu"])
def test_cached_decoding_equals_full_forward(kind, batch):
    model = tiny(**kind)
    x = torch.randn(batch, 11, 32)
    full = model(x)
    with torch.no_grad():
        cache = model.new_cache(batch, 16)
        steps = [model(x[:, t : t + 1], cache) for t in range(11)]
        torch.testing.assert_close(torch.cat(steps, 1), full, rtol=0, atol=1e-5)
        assert cache.length == 11
        cache.reset()  # a prompt chunk, then a chunk after it, then single steps
        parts = [model(x[:, :4], cache), model(x[:, 4:7], cache)]
        parts += [model(x[:, t : t + 1], cache) for t in range(7, 11)]
        torch.testing.assert_close(torch.cat(parts, 1), full, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="KV cache full"):
            model(torch.randn(batch, 6, 32), cache)


def test_weights_per_step_run_as_one_batch_and_decode_step_by_step():
    model = tiny(weights_per_step=5)
    assert isinstance(model.blocks[0].attn.qkv, PerStepLinear)
    x = torch.randn(4, 5, 32)
    full = model(x)
    with torch.no_grad():
        cache = model.new_cache(4, 5)
        steps = torch.cat([model(x[:, t : t + 1], cache) for t in range(5)], 1)
    torch.testing.assert_close(steps, full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="weights_per_step"):
        model(torch.randn(1, 6, 32))


def test_per_step_linear_uses_the_weights_of_each_position():
    layer = PerStepLinear(4, 6, 3, bias=True)
    x = torch.randn(2, 3, 6)
    y = layer(x, offset=1)
    for t in range(3):
        expected = x[:, t] @ layer.weight[1 + t].T + layer.bias[1 + t]
        torch.testing.assert_close(y[:, t], expected)


def test_rotary_scores_depend_on_relative_position_only():
    rope = RotaryEmbedding(8)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(p: int, p2: int) -> torch.Tensor:
        cq, sq = rope(1, p)
        ck, sk = rope(1, p2)
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum()

    torch.testing.assert_close(score(3, 1), score(10, 8))
    cos, sin = rope(5, offset=2)
    assert cos.shape == sin.shape == (5, 8)
    torch.testing.assert_close(cos[0], rope(1, 2)[0][0])


def test_kv_cache_update_returns_everything_written():
    cache = KVCache(depth=1, batch_size=2, heads=1, head_dim=4, max_len=5)
    k, v = cache.update(0, torch.ones(2, 1, 3, 4), torch.zeros(2, 1, 3, 4))
    assert k.shape == (2, 1, 3, 4) and cache.length == 0
    cache.advance(3)
    k, _ = cache.update(0, torch.full((2, 1, 1, 4), 2.0), torch.zeros(2, 1, 1, 4))
    assert k.shape == (2, 1, 4, 4) and k[0, 0, :, 0].tolist() == [1, 1, 1, 2]


def test_count_parameters():
    model = tiny(mlp="gelu", bias=False)
    per_block = 4 * 32 * 32 + 2 * 32 * 128 + 2 * 32  # attention, MLP, two norms
    assert count_parameters(model) == 2 * per_block + 32
    model.norm.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 2 * per_block
