"""Tests of the ConvNeXt codec generator: shapes, gradients, the inverse STFT, causality,
streaming through ``Codec``, bf16, configuration and one CodecGAN training step."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from jsonargparse import ArgumentParser
from torch import nn

from lit_codec import Codec
from lit_codec.models import CodecGAN
from lit_codec.nn import (
    CombinedDiscriminator,
    MultiScaleMelLoss,
    MultiScaleWaveformDiscriminator,
    ResidualVectorQuantizer,
)
from lit_codec.nn.configurable import build_module, module_config
from lit_codec.nn.convnext import DepthwiseConv1d
from lit_codec.nn.convnext_codec import ConvNeXtGenerator
from lit_codec.nn.stft_head import ISTFTHead, STFTFeatures

from ..models.tiny import loader

RATE, N_FFT, HOP, DIM = 8000, 64, 16, 8


def tiny(**kwargs) -> ConvNeXtGenerator:
    """A generator of 2 + 2 blocks of width 16 on 64-sample windows, hop 16."""
    args = dict(n_fft=N_FFT, hop_length=HOP, channels_enc=16, channels_dec=16, depth_enc=2,
                depth_dec=2, dimension=DIM)  # fmt: skip
    args.update(kwargs)
    return ConvNeXtGenerator(**args)


def tiny_codec(**kwargs) -> Codec:
    generator = tiny(causal=True, **kwargs)
    rvq = ResidualVectorQuantizer(
        dim=DIM, n_q=3, codebook_size=32, frame_rate=RATE / HOP, kmeans_init=False
    )
    return Codec(generator, rvq, RATE)


def test_default_sizes():
    g = ConvNeXtGenerator()
    assert g.hop_length == 320 and g.dimension == 128 and not g.causal
    assert sum(p.numel() for p in g.parameters()) == 15_582_210  # 15.6 M, as the sketch
    assert g.encoder.features.channels == 3 * 641


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("length", [1, 15, 16, 17, 203])
def test_shapes_for_any_length(causal, length):
    g = tiny(causal=causal)
    frames = math.ceil(length / HOP)
    latent = g.encode(torch.randn(2, 1, length))
    assert latent.shape == (2, DIM, frames) and latent.dtype == torch.float32
    audio = g.decode(latent)
    assert audio.shape == (2, 1, frames * HOP)  # CodecGAN crops it to the input length
    # the latent is normalised over channels (no affine parameters)
    torch.testing.assert_close(latent.mean(1), torch.zeros(2, frames), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(causal=False), dict(causal=True, film="decoder")])
def test_gradients_reach_every_parameter(kwargs):
    g = tiny(**kwargs)
    g(torch.randn(2, 1, 100), torch.tensor([0, 1])).square().mean().backward()
    missing = [n for n, p in g.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n_fft", [N_FFT, 60])  # 60: a window that is not a multiple of the hop
def test_head_synthesising_an_analysis_gives_the_signal_back(causal, n_fft):
    """The head's linear layer set to the identity and fed the log-magnitude and phase of a
    known STFT: the inverse STFT returns the signal."""
    frames = 12
    x = 0.1 * torch.randn(2, frames * HOP)
    head = ISTFTHead(n_fft + 2, n_fft, HOP, causal=causal)
    with torch.no_grad():
        head.out.weight.copy_(torch.eye(n_fft + 2))
        head.out.bias.zero_()
    extra = n_fft - HOP
    # the head's frame placement: centred on each hop, or (causal) starting at each hop
    left = 0 if causal else extra // 2
    windows = F.pad(x, (left, extra - left)).unfold(1, n_fft, HOP)  # (B, F, n_fft)
    spec = torch.fft.rfft(windows * torch.hann_window(n_fft), dim=-1)  # (B, F, bins)
    y = head(torch.cat((spec.abs().log(), spec.angle()), dim=-1))  # (B, 1, F * hop)
    assert y.shape == (2, 1, frames * HOP)
    # causal: the first n_fft - hop samples have a partial envelope
    start = extra if causal else 0
    torch.testing.assert_close(y[:, 0, start:], x[:, start:], atol=1e-5, rtol=1e-4)


def test_features_of_a_known_spectrum():
    features = STFTFeatures(N_FFT, "both", compression=0.5)
    t = torch.arange(N_FFT)
    frame = torch.cos(2 * math.pi * 4 * t / N_FFT)[None, None]  # bin 4
    out = features(frame)[0, 0]  # (3 * bins,)
    bins = N_FFT // 2 + 1
    spec = torch.fft.rfft(frame[0, 0] * torch.hann_window(N_FFT))
    torch.testing.assert_close(out[:bins], spec.abs().clamp_min(1e-5).log())
    torch.testing.assert_close(out[bins + 4], spec[4].real / spec[4].abs().sqrt())
    assert STFTFeatures(N_FFT, "compressed").channels == 2 * bins


def test_causal_generator_does_not_look_ahead():
    g = tiny(causal=True)
    wav = torch.randn(1, 1, 20 * HOP)
    changed = wav.clone()
    changed[..., 7 * HOP + 3 :] = torch.randn(13 * HOP - 3)
    with torch.no_grad():
        a, b = g.encode(wav), g.encode(changed)
        assert torch.equal(a[..., :7], b[..., :7]) and not torch.equal(a[..., 7:], b[..., 7:])
        out_a, out_b = g.decode(a), g.decode(b)
    torch.testing.assert_close(out_a[..., : 7 * HOP], out_b[..., : 7 * HOP], atol=0, rtol=0)
    assert not torch.equal(out_a[..., 7 * HOP :], out_b[..., 7 * HOP :])
    # the centred generator looks ahead
    g = tiny(causal=False)
    with torch.no_grad():
        assert not torch.equal(g(wav)[..., : 6 * HOP], g(changed)[..., : 6 * HOP])


@pytest.mark.parametrize("causal", [False, True])
def test_depthwise_convolution_equals_conv1d(causal):
    conv = DepthwiseConv1d(6, 5, causal=causal)
    x = torch.randn(2, 11, 6)  # (B, T, C)
    padding = (4, 0) if causal else (2, 2)
    ref = F.conv1d(F.pad(x.transpose(1, 2), padding), conv.weight, conv.bias, groups=6)
    torch.testing.assert_close(conv(x), ref.transpose(1, 2))


@pytest.mark.parametrize("causal", [False, True])
def test_depthwise_convolution_backward_is_exact(causal):
    """Its own backward (faster than PyTorch's on CPU) against numerical gradients."""
    conv = DepthwiseConv1d(3, 4, causal=causal).double()
    x = torch.randn(2, 6, 3, dtype=torch.double, requires_grad=True)
    w, b = conv.weight.detach().requires_grad_(), conv.bias.detach().requires_grad_()

    def run(x, w, b):
        return torch.func.functional_call(conv, {"weight": w, "bias": b}, (x,))

    assert torch.autograd.gradcheck(run, (x, w, b))


def stream(codec: Codec, wav: torch.Tensor, chunk: int):
    """Codes and audio of ``wav`` (B, 1, T) streamed through ``Codec.streaming`` in chunks."""
    codes, audio = [], []
    with codec.streaming(batch_size=wav.shape[0]) as s:
        for piece in wav.split(chunk, dim=-1):
            codes.append(s.encode(piece))
            audio.append(s.decode(codes[-1]))
        codes.append(s.flush())
        audio.append(s.decode(codes[-1]))
    return torch.cat(codes, dim=-1), torch.cat(audio, dim=-1)


@pytest.mark.parametrize(("batch", "chunk"), [(1, 5), (3, 12), (2, 40), (1, 1000)])
def test_streaming_through_codec_equals_offline(batch, chunk):
    codec = tiny_codec()
    wav = 0.3 * torch.randn(batch, 1, 203)
    offline_codes = codec.encode(wav)  # (B, n_q, F)
    offline_audio = codec.decode(offline_codes)  # (B, 1, F * hop)
    codes, audio = stream(codec, wav, chunk)
    assert codes.shape == offline_codes.shape == (batch, 3, 13)
    assert torch.equal(codes, offline_codes)
    torch.testing.assert_close(audio, offline_audio, atol=1e-5, rtol=0)


def test_streaming_with_a_denoising_flag():
    codec = tiny_codec(film="encoder")
    with torch.no_grad():
        codec.generator.film.embedding.weight[1].uniform_(0.5, 1.5)
    wav = 0.3 * torch.randn(2, 1, 100)
    codes = []
    with codec.streaming(batch_size=2, denoise=True) as s:
        codes = torch.cat([s.encode(c) for c in wav.split(7, dim=-1)] + [s.flush()], dim=-1)
    assert torch.equal(codes, codec.encode(wav, denoise=True))


def test_streaming_checks_the_batch_size():
    g = tiny(causal=True)
    with torch.inference_mode(), g.streaming(batch_size=2):
        with pytest.raises(ValueError, match="streaming 2 streams"):
            g.encode(torch.zeros(1, 1, 100))
        with pytest.raises(ValueError, match="streaming 2 streams"):
            g.decode(torch.zeros(3, DIM, 2))


def test_non_causal_generator_refuses_streaming():
    g = tiny(causal=False)
    with pytest.raises(ValueError, match="causal=True"):
        with g.streaming():
            pass
    rvq = ResidualVectorQuantizer(dim=DIM, n_q=2, codebook_size=8, kmeans_init=False)
    with pytest.raises(ValueError, match="causal=True"):
        with Codec(g, rvq, RATE).streaming():
            pass


@pytest.mark.parametrize("causal", [False, True])
def test_finite_under_bf16_autocast(causal):
    g = tiny(causal=causal)
    wav = 0.3 * torch.randn(2, 1, 150)
    reference = g(wav)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latent = g.encode(wav)
        audio = g.decode(latent)
    assert latent.dtype == audio.dtype == torch.float32  # STFT, latent and head in float32
    assert torch.isfinite(audio).all()
    assert not torch.equal(audio, reference)  # the trunks did run in bf16
    audio.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in g.parameters() if p.grad is not None)
    # forced precisions: float32 ignores the autocast, bfloat16 needs none
    g32 = tiny(causal=causal, trunk_precision="float32")
    g32.load_state_dict(g.state_dict())
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(g32(wav), reference.detach())
    g16 = tiny(causal=causal, trunk_precision="bfloat16")
    g16.load_state_dict(g.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(g16(wav), audio.detach())


def test_built_by_class_path_and_rebuilt_from_its_config(tmp_path):
    parser = ArgumentParser()
    parser.add_argument("--generator", type=nn.Module)
    init_args = {"n_fft": N_FFT, "hop_length": HOP, "channels_enc": 16, "channels_dec": 16,
                 "depth_enc": 2, "depth_dec": 2, "dimension": DIM, "causal": True}  # fmt: skip
    class_path = "lit_codec.nn.convnext_codec.ConvNeXtGenerator"
    config = parser.parse_object({"generator": {"class_path": class_path, "init_args": init_args}})
    g = parser.instantiate(config).generator
    assert isinstance(g, ConvNeXtGenerator) and g.hop_length == HOP and g.causal
    rebuilt = build_module(module_config(g))
    rebuilt.load_state_dict(g.state_dict())
    wav = torch.randn(1, 1, 70)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(wav), g(wav))
    # a codec export round trip (what Codec.from_checkpoint reads)
    codec = tiny_codec()
    config = {"generator": module_config(codec.generator),
              "quantizer": module_config(codec.quantizer), "sample_rate": RATE}  # fmt: skip
    codec = Codec(codec.generator, codec.quantizer, RATE, config)
    loaded = Codec.from_checkpoint(codec.export(tmp_path / "codec.safetensors"))
    assert torch.equal(loaded.encode(wav), codec.encode(wav))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_codec_gan_trains_with_it(precision):
    generator = tiny(causal=True)
    quantizer = ResidualVectorQuantizer(
        dim=DIM, n_q=3, codebook_size=16, frame_rate=RATE / HOP, threshold_ema_dead_code=0.0
    )
    discriminator = CombinedDiscriminator(
        [MultiScaleWaveformDiscriminator(scales=1, channels=2, max_channels=8)]
    )
    mel = MultiScaleMelLoss(RATE, window_lengths=(64, 256), n_mels=(10, 20))
    model = CodecGAN(generator, quantizer, discriminator, sample_rate=RATE, mel_loss=mel,
                     discriminator_start_step=1)  # fmt: skip
    before = {n: p.detach().clone() for n, p in generator.named_parameters()}
    trainer = L.Trainer(max_steps=3, accelerator="cpu", precision=precision, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, loader(n=8, batch_size=4, length=400))
    assert model.generator_step == 2 and model.nonfinite_steps == 0
    assert all(not torch.equal(before[n], p) for n, p in generator.named_parameters())


def test_fastest_precision_follows_the_hardware(monkeypatch):
    from lit_codec.nn import convnext_codec

    probe = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    for native, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(convnext_codec, "native_bf16", lambda device_type, n=native: n)
        with convnext_codec.trunk_autocast("fastest", "cpu"):
            assert probe(x).dtype == dtype
    # what this machine reports is what the recipes get
    assert isinstance(convnext_codec.native_bf16("cpu"), bool)
    assert convnext_codec.native_bf16("meta") is False
    with pytest.raises(ValueError, match="fastest"):
        convnext_codec.trunk_autocast("fast", "cpu")
