"""Compact exports (int8 / int4 weights): sizes, rounding bounds, loading, CLI."""

import json

import pytest
import torch

from lit_codec import Codec
from lit_codec.cli import main
from lit_codec.compact import pack, packed_bytes, unpack
from lit_codec.nn import ConvNeXtGenerator, ResidualVectorQuantizer
from lit_codec.nn.configurable import module_config

from .tiny_codecs import tiny_convnext_codec


def _state(generator):
    return {
        "lin.weight": torch.randn(64, 96, generator=generator),
        "conv.weight": torch.randn(32, 7, 5, generator=generator),  # rows of 35: padding
        "codebook.embed": torch.randn(128, 48, generator=generator),
        "norm.bias": torch.randn(64, generator=generator),
        "small.weight": torch.randn(3, 3, generator=generator),
        "steps": torch.tensor(17),
        "flags": torch.tensor([True, False]),
        "half.weight": torch.randn(64, 80, generator=generator).half(),
    }


def _check_int4_groups(rows, back, group, dtype):
    """Each group's squared error is at most that of rounding with absmax / 7, and lower in all
    (up to the float16 rounding of the unpacked values of a float16 tensor)."""
    r, c = rows.shape
    pad = (-c) % group
    x = torch.nn.functional.pad(rows, (0, pad)).reshape(r, -1, group)
    y = torch.nn.functional.pad(back, (0, pad)).reshape(r, -1, group)
    step = (x.abs().amax(2, keepdim=True) / 7).half().float()
    plain = ((torch.round(x / step).clamp(-7, 7) * step - x) ** 2).sum(2)  # (R, G)
    ours = ((y - x) ** 2).sum(2)
    slack = 1e-6 if dtype == torch.float32 else 1e-2 * plain.mean()
    assert (ours <= plain * 1.0001 + slack).all()
    assert ours.sum() < 0.95 * plain.sum()  # clipping the largest weights pays on Gaussian rows
    assert (y - x).abs().max() <= 0.4 * x.abs().max() * 1.0001  # a scale is >= 0.6 absmax / 7


@pytest.mark.parametrize("scheme", ["int8", "int4"])
def test_round_trip_within_half_a_step(scheme, generator):
    state = _state(generator)
    tensors, meta = pack(state, scheme, group=8, min_numel=100)
    back = unpack(tensors, meta)
    assert set(back) == set(state)
    layout = json.loads(meta["compact"])["layout"]
    for name, t in state.items():
        assert back[name].shape == t.shape and back[name].dtype == t.dtype, name
        if layout[name]["as"] == "plain":
            assert torch.equal(back[name], t), name
            continue
        rows = t.reshape(t.shape[0], -1).float()
        if layout[name]["as"] == "int4":
            _check_int4_groups(rows, back[name].reshape(rows.shape).float(), 8, t.dtype)
            continue
        bound = rows.abs().amax() / 127 / 2 + 1e-3 * (t.dtype == torch.float16)
        assert (back[name].float() - t.float()).abs().max() <= bound * 1.0001, name
    assert layout["lin.weight"]["as"] == scheme
    assert layout["codebook.embed"]["as"] == "int8"  # not a layer weight: 8 bits always
    assert {layout[k]["as"] for k in ("norm.bias", "small.weight", "steps", "flags")} == {"plain"}
    full = sum(t.numel() * t.element_size() for t in state.values())
    assert packed_bytes(tensors) < full / (3 if scheme == "int8" else 3.5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="scheme"):
        pack({}, "int3")
    with pytest.raises(ValueError, match="group"):
        pack({}, "int4", group=5)
    with pytest.raises(ValueError, match="reserves"):
        pack({"a::q4": torch.zeros(2)})
    assert unpack({"a": torch.ones(1)}, {}) == {"a": torch.ones(1)}


def _convnext_codec(width=64):
    """A ConvNeXt codec wide enough that its block weights are packed (>= 4096 elements)."""
    torch.manual_seed(0)
    generator = ConvNeXtGenerator(n_fft=64, hop_length=16, channels_enc=width, channels_dec=width,
                                  depth_enc=2, depth_dec=2, dimension=8)  # fmt: skip
    q = ResidualVectorQuantizer(dim=8, n_q=3, codebook_size=32, frame_rate=500.0, kmeans_init=False)
    config = {"generator": module_config(generator), "quantizer": module_config(q), "sample_rate": 8000}
    return Codec(generator, q, 8000, config)


def test_compact_export_loads_and_decodes_close_to_the_original(tmp_path):
    codec = _convnext_codec()
    full = codec.export(tmp_path / "full.safetensors")
    small = codec.export(tmp_path / "small.safetensors", weights="int4")
    loaded = Codec.from_checkpoint(small)
    assert small.stat().st_size < full.stat().st_size / 3
    assert loaded.fingerprint != codec.fingerprint  # the rounded weights are another codec
    assert loaded.config == codec.config
    wav = torch.sin(torch.arange(4000) / 7.0)[None, None] * 0.5
    with torch.no_grad():
        ref = codec.generator(wav)
        out = loaded.generator(wav)
        assert torch.isfinite(out).all()
        error = (out - ref).pow(2).mean() / ref.pow(2).mean()
    assert error < 0.05
    # a second load of the same file is the same codec
    assert Codec.from_checkpoint(small).fingerprint == loaded.fingerprint


def test_cli_export_weights(tmp_path, capsys):
    src = tiny_convnext_codec().export(tmp_path / "c.safetensors")
    assert main(["export", "--ckpt", str(src), "--output", str(tmp_path / "s.safetensors"),
                 "--weights", "int8"]) in (None, 0)  # fmt: skip
    out = capsys.readouterr().out
    assert "int8 weights" in out and "loads as codec" in out
    assert Codec.from_checkpoint(tmp_path / "s.safetensors").n_q == 3
