import io
import math
import subprocess
import sys

import pytest
import torch
from jsonargparse import ArgumentParser
from torch import nn

from lit_codec.nn.configurable import build_module, module_config
from lit_codec.nn.discriminators import (
    CombinedDiscriminator,
    DiscriminatorOutput,
    MultiBandMultiScaleSTFTDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
    MultiScaleWaveformDiscriminator,
    STFTDiscriminator,
)

B = 2
T_ODD = 4001  # ~0.25 s at 16 kHz, odd on purpose


def tiny_msd():
    return MultiScaleWaveformDiscriminator(channels=2, max_channels=16, downsample_factors=(4, 4))


def tiny_stft():
    return STFTDiscriminator(n_fft=256, hop_length=64, win_length=256, channels=2)


def tiny_mpd():
    return MultiPeriodDiscriminator(periods=(2, 3), channels=2, max_channels=16)


def tiny_msstft():
    return MultiScaleSTFTDiscriminator(
        n_ffts=(256, 128), hop_lengths=(64, 32), win_lengths=(256, 128), channels=2
    )


def tiny_mrd():
    return MultiBandMultiScaleSTFTDiscriminator(window_lengths=(256, 128), channels=2)


def tiny_combined():
    return CombinedDiscriminator((tiny_msd(), tiny_stft()))


FACTORIES = [tiny_msd, tiny_stft, tiny_mpd, tiny_msstft, tiny_mrd, tiny_combined]
IDS = ["msd", "stft", "mpd", "msstft", "mrd", "combined"]
SUB_COUNTS = {"msd": 3, "stft": 1, "mpd": 2, "msstft": 2, "mrd": 2, "combined": 4}


@pytest.mark.parametrize("factory,name", list(zip(FACTORIES, IDS)), ids=IDS)
def test_output_shapes_gradients_and_odd_length(factory, name):
    disc = factory()
    x = (0.1 * torch.randn(B, 1, T_ODD)).requires_grad_()
    out = disc(x)
    assert isinstance(out, DiscriminatorOutput)
    assert len(out.logits) == len(out.features) == len(out.names) == SUB_COUNTS[name]
    assert len(set(out.names)) == len(out.names)
    for logits, feats in zip(out.logits, out.features):
        assert logits.shape[0] == B and logits.numel() > B and torch.isfinite(logits).all()
        assert len(feats) > 0
        for f in feats:
            assert f.shape[0] == B and torch.isfinite(f).all()
    loss = sum(logits.square().mean() for logits in out.logits)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for pname, p in disc.named_parameters():
        assert p.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
@pytest.mark.parametrize("length", [100, 257])
def test_short_inputs_work(factory, length):
    out = factory()(torch.randn(B, 1, length))
    assert all(
        lg.shape[0] == B and lg.numel() > 0 and torch.isfinite(lg).all() for lg in out.logits
    )


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_features_match_between_real_and_fake_of_same_length(factory):
    # Feature matching pairs real and generated maps; their shapes must agree.
    disc = factory()
    real, fake = disc(torch.randn(B, 1, 3000)), disc(torch.randn(B, 1, 3000))
    assert real.names == fake.names
    for fr, ff in zip(real.features, fake.features):
        assert [f.shape for f in fr] == [f.shape for f in ff]


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_config_round_trip_rebuilds_the_same_network(factory):
    disc = factory()
    cfg = module_config(disc)
    buf = io.BytesIO()
    torch.save({"cfg": cfg}, buf)  # a checkpoint's config survives weights_only loading
    buf.seek(0)
    cfg = torch.load(buf, weights_only=True)["cfg"]
    rebuilt = build_module(cfg)
    assert type(rebuilt) is type(disc)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in disc.state_dict().items()
    }
    rebuilt.load_state_dict(disc.state_dict())
    x = torch.randn(1, 1, 1500)
    for a, b in zip(disc(x).logits, rebuilt(x).logits):
        torch.testing.assert_close(a, b)


def test_multiscale_waveform_sees_three_pooled_scales():
    disc = MultiScaleWaveformDiscriminator(channels=2, max_channels=16, downsample_factors=(4, 4))
    lengths = []
    for net in disc.nets:
        net.register_forward_pre_hook(lambda m, args: lengths.append(args[0].shape[-1]))
    out = disc(torch.randn(B, 1, T_ODD))
    assert out.names == ["msd_1x", "msd_2x", "msd_4x"]
    assert lengths == [T_ODD, T_ODD // 2, T_ODD // 4]
    assert [lg.shape[-1] for lg in out.logits] == [math.ceil(n / 16) for n in lengths]
    # Separate weights per scale, as in MelGAN.
    w = [net.conv_post.weight for net in disc.nets]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])


def test_multiscale_waveform_groups_grow_with_channels():
    disc = MultiScaleWaveformDiscriminator(scales=1, channels=16)
    strided = disc.nets[0].convs[1:5]
    assert [c.groups for c in strided] == [4, 16, 64, 256]
    assert [c.kernel_size[0] for c in strided] == [41] * 4
    assert disc.nets[0].convs[-1].kernel_size == (5,) and disc.nets[0].conv_post.kernel_size == (3,)


def test_stft_discriminator_uses_real_and_imaginary_parts():
    disc = STFTDiscriminator(channels=2)  # SoundStream's window 1024, hop 256
    assert disc.conv_pre.in_channels == 2 and disc.conv_pre.kernel_size == (7, 7)
    seen = []
    disc.conv_pre.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(B, 1, T_ODD)
    out = disc(x)
    window = torch.hann_window(1024)
    spec = torch.stft(x[:, 0], 1024, 256, window=window, return_complex=True)  # (B, F, frames)
    spec = spec / window.square().sum().sqrt()
    expected = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # (B, 2, frames, F)
    torch.testing.assert_close(seen[0], expected)
    # Logits aggregated over frequency: one per down-sampled frame.
    frames = T_ODD // 256 + 1
    assert out.logits[0].shape == (B, 1, frames // 8, 1)
    assert out.names == ["stft"] and len(out.features[0]) == 7


def test_stft_discriminator_rejects_a_too_small_fft():
    with pytest.raises(ValueError, match="no frequency bins"):
        STFTDiscriminator(n_fft=32, hop_length=8, win_length=32, channels=2)


def test_multi_period_folds_by_period():
    disc = tiny_mpd()
    out = disc(torch.randn(B, 1, T_ODD))
    assert out.names == ["mpd_p2", "mpd_p3"]
    assert [lg.shape[-1] for lg in out.logits] == [2, 3]


def test_multiband_features_cover_every_band():
    disc = tiny_mrd()
    out = disc(torch.randn(B, 1, T_ODD))
    assert out.names == ["mrd_256", "mrd_128"]
    assert [len(f) for f in out.features] == [5 * 5, 5 * 5]  # 5 bands x 5 convs


def test_combined_concatenates_in_order_and_keeps_names_unique():
    msd, stft = tiny_msd(), tiny_stft()
    combined = CombinedDiscriminator([msd, stft])  # a list, as jsonargparse passes it
    x = torch.randn(B, 1, 2000)
    out, a, b = combined(x), msd(x), stft(x)
    assert out.names == a.names + b.names
    for got, want in zip(out.logits, a.logits + b.logits):
        torch.testing.assert_close(got, want)
    assert len(out.features) == len(a.features) + len(b.features)
    twice = CombinedDiscriminator((tiny_stft(), tiny_stft()))
    assert twice(x).names == ["stft_0", "stft_1"]
    with pytest.raises(ValueError):
        CombinedDiscriminator(())


def test_recipe_yaml_builds_a_combined_discriminator():
    parser = ArgumentParser()
    parser.add_argument("--discriminator", type=nn.Module)
    text = """
discriminator:
  class_path: lit_codec.nn.discriminators.CombinedDiscriminator
  init_args:
    discriminators:
      - class_path: lit_codec.nn.discriminators.MultiScaleWaveformDiscriminator
        init_args: {channels: 2, max_channels: 8}
      - class_path: lit_codec.nn.discriminators.STFTDiscriminator
        init_args: {channels: 2}
"""
    disc = parser.instantiate(parser.parse_string(text)).discriminator
    assert isinstance(disc, CombinedDiscriminator)
    assert disc(torch.randn(1, 1, 2000)).names == ["msd_1x", "msd_2x", "msd_4x", "stft"]
    assert isinstance(build_module(module_config(disc)), CombinedDiscriminator)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_runs_under_bf16_autocast(factory):
    disc = factory()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = disc(torch.randn(B, 1, 2000))
    assert all(torch.isfinite(lg.float()).all() for lg in out.logits)


@pytest.mark.parametrize("norm", ["spectral_norm", "none"])
def test_other_weight_parametrisations(norm):
    disc = MultiPeriodDiscriminator(periods=(2,), channels=2, max_channels=8, norm=norm)
    names = [n for n, _ in disc.named_parameters()]
    assert not any("original1" in n for n in names)  # no weight norm
    assert any("parametrizations" in n for n in names) == (norm == "spectral_norm")
    assert torch.isfinite(disc(torch.randn(1, 1, 1000)).logits[0]).all()


def test_rejects_non_mono_input():
    with pytest.raises(ValueError, match="mono"):
        tiny_stft()(torch.randn(2, 2, 1000))


def test_submodules_import_first_without_a_cycle():
    # A checkpoint records e.g. lit_codec.nn.discriminators_waveform.MultiPeriodDiscriminator,
    # so build_module may import a submodule before lit_codec.nn.discriminators.
    code = (
        "from lit_codec.nn.discriminators_waveform import MultiPeriodDiscriminator\n"
        "from lit_codec.nn.discriminators_spectral import STFTDiscriminator\n"
        "from lit_codec.nn.discriminators import MultiPeriodDiscriminator as M, STFTDiscriminator as S\n"
        "assert M is MultiPeriodDiscriminator and S is STFTDiscriminator\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_stft_discriminator_backward_on_half_second_batches():
    """Regression: a channels-last spectrogram crashed torch's conv2d backward (segfault)."""
    from lit_codec.nn.discriminators import STFTDiscriminator

    d = STFTDiscriminator(channels=4, max_channels=32)
    x = torch.randn(8, 1, 8000, requires_grad=True)
    sum(logit.mean() for logit in d(x).logits).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
