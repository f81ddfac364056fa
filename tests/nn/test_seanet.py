"""Tests of the SEANet generator: shapes, causality, streaming, FiLM, folding, gradients."""

from __future__ import annotations

import random
from copy import deepcopy

import pytest
import torch

from lit_codec.nn.activations import Snake
from lit_codec.nn.configurable import build_module
from lit_codec.nn.conv import fold_weight_norm, streaming
from lit_codec.nn.seanet import SEANetDecoder, SEANetEncoder, SEANetGenerator

HOP = 320


def tiny(**kwargs) -> SEANetGenerator:
    args = dict(channels_enc=2, channels_dec=2, dimension=8, residual_kernel_size=3)
    args.update(kwargs)
    return SEANetGenerator(**args)


def test_shapes_and_strides():
    g = tiny()
    assert g.hop_length == HOP and g.dimension == 8
    wav = torch.randn(2, 1, HOP * 5)
    latent = g.encode(wav)
    assert latent.shape == (2, 8, 5)
    assert g.decode(latent).shape == (2, 1, HOP * 5)
    # A length that is not a multiple of the hop is padded up to the next frame.
    assert g.encode(torch.randn(1, 1, HOP * 3 + 1)).shape == (1, 8, 4)
    assert g(torch.randn(1, 1, 100)).shape == (1, 1, HOP)


def test_encoder_and_decoder_alone():
    enc = SEANetEncoder(channels=2, dimension=6, strides=(2, 3), dilations=(1,))
    dec = SEANetDecoder(channels=3, dimension=6, strides=(2, 3), dilations=(1, 2))
    assert enc.hop_length == dec.hop_length == 6
    latent = enc(torch.randn(3, 1, 60))
    assert latent.shape == (3, 6, 10)
    assert dec(latent).shape == (3, 1, 60)
    assert dec.conv_in.out_channels == 3 * 4 and dec.conv_out.in_channels == 3


def test_config_round_trip():
    g = tiny(activation="snake", film="decoder", strides=(2, 5))
    rebuilt = build_module(g.config())
    rebuilt.load_state_dict(g.state_dict())
    wav = torch.randn(1, 1, 40)
    torch.testing.assert_close(rebuilt(wav), g(wav))


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("activation", ["elu", "snake"])
def test_layout_does_not_change_results(causal, activation):
    """Time-major activations are an implementation detail: NCW copies give the same result."""
    g = tiny(causal=causal, activation=activation, strides=(2, 4))
    wav = torch.randn(2, 1, 64)
    latent = g.encode(wav)
    torch.testing.assert_close(g.decode(latent.contiguous()), g.decode(latent))


def test_encoder_is_causal():
    g = tiny()
    wav = torch.randn(1, 1, HOP * 6)
    t = HOP * 3 + 17
    changed = wav.clone()
    changed[..., t:] = torch.randn_like(changed[..., t:])
    with torch.no_grad():
        a, b = g.encode(wav), g.encode(changed)
    frame = t // HOP  # the frame containing sample t
    torch.testing.assert_close(a[..., :frame], b[..., :frame])
    assert not torch.allclose(a[..., frame], b[..., frame])


def test_decoder_is_causal():
    g = tiny()
    latent = torch.randn(1, 8, 6)
    changed = latent.clone()
    changed[..., 3:] = torch.randn_like(changed[..., 3:])
    with torch.no_grad():
        a, b = g.decode(latent), g.decode(changed)
    torch.testing.assert_close(a[..., : 3 * HOP], b[..., : 3 * HOP])
    assert not torch.allclose(a[..., 3 * HOP :], b[..., 3 * HOP :])


def test_non_causal_generator_looks_ahead():
    g = tiny(causal=False)
    wav = torch.randn(1, 1, HOP * 4)
    changed = wav.clone()
    changed[..., 2 * HOP + 5] += 1.0
    with torch.no_grad():
        a, b = g.encode(wav), g.encode(changed)
    assert not torch.allclose(a[..., 1], b[..., 1])


def chunk_sizes(total: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes = [1, 7, 160, HOP, HOP + 1, 3 * HOP + 11, 0]
    out: list[int] = []
    while sum(out) < total:
        out.append(min(rng.choice(sizes), total - sum(out)))
    return out


@pytest.mark.parametrize(
    ("activation", "film", "seed"),
    [("elu", "none", 0), ("elu", "none", 1), ("snake", "encoder", 2), ("elu", "decoder", 3)],
)
def test_streaming_equals_offline(activation, film, seed):
    g = tiny(activation=activation, film=film)
    with torch.no_grad():  # make FiLM non-trivial for both flags
        if g.film is not None:
            g.film.embedding.weight.normal_()
    wav = torch.randn(2, 1, HOP * 8)
    condition = torch.tensor([0, 1])
    with torch.inference_mode():
        latent = g.encode(wav, condition)
        out = g.decode(latent, condition)
        frames, samples, start = [], [], 0
        with g.streaming(batch_size=2):
            for n in chunk_sizes(wav.shape[-1], seed):
                new = g.encode(wav[..., start : start + n], condition)
                start += n
                assert new.shape[:2] == (2, 8)
                assert new.shape[-1] == start // HOP - sum(f.shape[-1] for f in frames)
                frames.append(new)
                samples.append(g.decode(new, condition))
    online_latent = torch.cat(frames, dim=-1)
    online_out = torch.cat(samples, dim=-1)
    assert online_latent.shape == latent.shape and online_out.shape == out.shape
    assert (online_latent - latent).abs().max() < 1e-5
    assert (online_out - out).abs().max() < 1e-5


def test_streaming_steps_of_many_frames_equal_offline():
    """Chunks completing many frames run as steps of 8, 4, 2 and 1 frames; with gradients
    enabled too (streaming records its own operations without autograd)."""
    g = fold_weight_norm(tiny(strides=(2, 4), dilations=(1, 3)))  # hop 8
    wav = torch.randn(2, 1, 8 * 60)
    with torch.no_grad():
        latent = g.encode(wav)
        out = g.decode(latent)
    frames, samples, start = [], [], 0
    with g.streaming(batch_size=2):
        for n in (8 * 13 + 5, 3, 8 * 15, 8 * 2, 0, 8 * 30 - 8):  # 13, 1, 15, 2, 0, 29 frames
            new = g.encode(wav[..., start : start + n])
            start += n
            frames.append(new)
            samples.append(g.decode(new))
        with pytest.raises(ValueError, match="batch"):
            g.encode(torch.randn(1, 1, 8))
    assert (torch.cat(frames, dim=-1) - latent).abs().max() < 1e-5
    assert (torch.cat(samples, dim=-1) - out).abs().max() < 1e-5


def test_streaming_latency_is_one_frame():
    g = tiny()
    with torch.inference_mode(), streaming(g):
        assert g.encode(torch.randn(1, 1, HOP - 1)).shape[-1] == 0
        assert g.encode(torch.randn(1, 1, 1)).shape[-1] == 1
        latent = g.encode(torch.randn(1, 1, 2 * HOP))
        assert latent.shape[-1] == 2
        assert g.decode(latent[..., :1]).shape[-1] == HOP


def test_folded_generator_streams_like_offline():
    g = fold_weight_norm(tiny(strides=(2, 4), dilations=(1, 3)))
    wav = torch.randn(1, 1, 8 * 40)
    with torch.inference_mode():
        out = g(wav)
        with g.streaming():
            online = torch.cat([g.decode(g.encode(c)) for c in wav.split(13, dim=-1)], dim=-1)
    assert (online[..., : out.shape[-1]] - out).abs().max() < 1e-5


def test_non_causal_generator_refuses_streaming():
    g = tiny(causal=False)
    with pytest.raises(ValueError, match="not causal"):
        with g.streaming():
            pass


def test_fold_weight_norm_keeps_outputs():
    g = tiny(activation="snake")
    with torch.no_grad():  # magnitudes no longer equal to the directions' norms
        for name, p in g.named_parameters():
            if name.endswith("original0"):
                p.mul_(torch.empty_like(p).uniform_(0.7, 1.3))
    folded = build_module(g.config())
    folded.load_state_dict(g.state_dict())
    wav = torch.randn(2, 1, HOP * 2)
    with torch.no_grad():
        before = g(wav)
        fold_weight_norm(folded)
        after = folded(wav)
        # Folding a deep copy leaves the original working (PyTorch's own removal would not).
        fold_weight_norm(deepcopy(g))
        torch.testing.assert_close(g(wav), before)
    assert not any("parametrizations" in k for k in folded.state_dict())
    assert (after - before).abs().max() < 1e-6


def test_inference_path_equals_training_path_and_keeps_the_input():
    """At inference the residual units form their sums in the memory of the block's
    intermediates (``forward_residual(inplace=True)``); the result must equal the
    autograd path's, and neither the waveform nor the latents passed in may change."""
    g = tiny()
    fold_weight_norm(g)
    wav = torch.randn(2, 1, HOP * 3)
    wav_kept = wav.clone()
    trained = g(wav)  # grad enabled: the plain path
    with torch.no_grad():
        latent = g.encode(wav)
        latent_kept = latent.clone()
        fast = g.decode(latent)
    assert torch.equal(wav, wav_kept) and torch.equal(latent, latent_kept)
    torch.testing.assert_close(fast, trained.detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation", ["elu", "snake"])
def test_gradients_flow_to_every_parameter(activation):
    g = tiny(activation=activation, film="encoder")
    wav = torch.randn(2, 1, HOP * 2, requires_grad=True)
    g(wav, torch.tensor([1, 0])).square().mean().backward()
    assert wav.grad is not None and wav.grad.abs().sum() > 0
    for name, p in g.named_parameters():
        if name == "film.embedding.weight":
            # Both flags were used, so both rows of the embedding get a gradient.
            assert (p.grad.abs().sum(dim=1) > 0).all()
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(isinstance(m, Snake) for m in g.modules()) == (activation == "snake")


@pytest.mark.parametrize("position", ["encoder", "decoder"])
def test_film_is_identity_at_init_and_conditions_after_training(position):
    plain = tiny()
    g = tiny(film=position)
    g.load_state_dict(plain.state_dict(), strict=False)
    wav = torch.randn(2, 1, HOP * 2)
    with torch.no_grad():
        reference = plain(wav)
        torch.testing.assert_close(g(wav), reference)
        torch.testing.assert_close(g(wav, torch.tensor([0, 0])), reference)
        torch.testing.assert_close(g(wav, torch.tensor([1, 1])), reference)
        # A trained denoising flag: only the rows with condition 1 change.
        g.film.embedding.weight[1].normal_()
        mixed = g(wav, torch.tensor([0, 1]))
    torch.testing.assert_close(mixed[0], reference[0])
    assert not torch.allclose(mixed[1], reference[1])


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="film"):
        tiny(film="both")
    with pytest.raises(ValueError, match="activation"):
        tiny(activation="relu")
