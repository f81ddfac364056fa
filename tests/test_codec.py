"""The inference API: lit_codec.Codec (offline, streaming, several streams at once)."""

import os
import stat
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from lit_codec import Codec
from lit_codec.codec import EXPECTED_CHECKPOINT
from lit_codec.nn import ResidualVectorQuantizer, SEANetGenerator

RATE, HOP = 8000, 8


def tiny_networks(
    seed: int = 0, film: str = "none", **quantizer
) -> tuple[SEANetGenerator, ResidualVectorQuantizer]:
    """A tiny generator and 3 x 32-code quantizer (``quantizer``: more of its arguments)."""
    torch.manual_seed(seed)
    generator = SEANetGenerator(
        channels_enc=4, channels_dec=4, dimension=16, strides=(2, 4), dilations=(1, 3), film=film
    )
    rvq = ResidualVectorQuantizer(
        dim=16, n_q=3, codebook_size=32, frame_rate=RATE / HOP, kmeans_init=False, **quantizer
    )
    return generator, rvq


def tiny_codec(seed: int = 0) -> Codec:
    return Codec(*tiny_networks(seed), RATE)


def stream(
    codec: Codec, wav: torch.Tensor, chunk: int, n_q: int | None = None, denoise: bool = False
):
    """Codes and audio of ``wav`` (B, 1, T) streamed in chunks of ``chunk`` samples."""
    codes, audio = [], []
    with codec.streaming(batch_size=wav.shape[0], n_q=n_q, denoise=denoise) as s:
        for piece in wav.split(chunk, dim=-1):
            c = s.encode(piece)
            codes.append(c)
            audio.append(s.decode(c))
        last = s.flush()
        codes.append(last)
        audio.append(s.decode(last))
    return torch.cat(codes, dim=-1), torch.cat(audio, dim=-1)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("chunk", [5, 12, 40])
def test_streamed_batch_equals_offline(batch, chunk):
    codec = tiny_codec()
    wav = 0.3 * torch.randn(batch, 1, 203)
    offline_codes = codec.encode(wav)  # (B, n_q, F)
    offline_audio = codec.decode(offline_codes)  # (B, 1, F * hop)
    codes, audio = stream(codec, wav, chunk)
    assert codes.shape == offline_codes.shape == (batch, 3, 26)
    assert torch.equal(codes, offline_codes)
    torch.testing.assert_close(audio, offline_audio, atol=1e-5, rtol=0)


def test_bitrate_chooses_the_codebooks():
    codec = tiny_codec()
    wav = 0.3 * torch.randn(2, 160)
    assert codec.bitrates() == pytest.approx([5.0, 10.0, 15.0])  # 5 bits x 1000 frames/s
    assert codec.encode(wav, kbps=10.0).shape == (2, 2, 20)
    assert codec.encode(wav, n_q=1).shape == (2, 1, 20)
    assert torch.equal(codec.encode(wav, n_q=2), codec.encode(wav)[:, :2])  # residual prefix
    with pytest.raises(ValueError, match="outside what this quantizer offers"):
        codec.encode(wav, kbps=1.0)
    codes, _ = stream(codec, wav[:, None], 7, n_q=2)
    assert torch.equal(codes, codec.encode(wav, n_q=2))


def test_decode_refuses_codes_of_another_codec():
    codec = tiny_codec()
    with pytest.raises(ValueError, match="do not fit this codec"):
        codec.decode(torch.full((1, 3, 4), 32))  # codebook_size is 32
    with pytest.raises(ValueError, match="do not fit this codec"):
        codec.decode(torch.zeros(1, 4, 4, dtype=torch.long))  # 4 > n_q codebooks


def test_factorised_codes_encode_as_training_does_and_stream():
    generator, quantizer = tiny_networks(codebook_dim=4, l2_normalize=True)
    wav = 0.3 * torch.randn(2, 1, 160)
    quantizer.eval()
    with torch.no_grad():
        latent = generator.encode(wav)
        trained = quantizer(latent).codes  # the training path (statistics, losses)
        quantized = quantizer.decode(trained)
    codec = Codec(generator, quantizer, RATE)  # folds the projections' weight norm
    assert not any("parametrizations" in k for k in codec.state_dict())
    assert torch.equal(codec.encode(wav), trained)
    torch.testing.assert_close(codec.quantizer.decode(trained), quantized, atol=1e-6, rtol=0)
    codes, audio = stream(codec, wav, 12)
    assert torch.equal(codes, trained)
    torch.testing.assert_close(audio, codec.decode(trained), atol=1e-5, rtol=0)


def denoising_codec(position: str) -> Codec:
    """A tiny codec with a FiLM denoising flag whose "denoise" entry is no longer the identity."""
    generator, rvq = tiny_networks(film=position)
    with torch.no_grad():
        generator.film.embedding.weight[1].uniform_(0.5, 1.5)  # flag 1: another scale and shift
    return Codec(generator, rvq, RATE)


@pytest.mark.parametrize("position", ["encoder", "decoder"])
def test_denoising_flag_at_inference(position):
    codec = denoising_codec(position)
    at = "encode" if position == "encoder" else "decode"
    other = "decode" if at == "encode" else "encode"
    assert codec.denoises_at == at
    wav = 0.3 * torch.randn(2, 1, 203)
    condition = torch.ones(2, dtype=torch.long)
    with torch.no_grad():  # what the generator computes with the flag set, by hand
        latent = codec.generator.encode(wav, condition if at == "encode" else None)
        codes = codec.quantizer.encode(latent)
        expected = codec.generator.decode(
            codec.quantizer.decode(codes), condition if at == "decode" else None
        )
    if at == "encode":
        denoised_codes = codec.encode(wav, denoise=True)
        audio = codec.decode(denoised_codes)
        assert not torch.equal(denoised_codes, codec.encode(wav))  # the flag changes the codes
    else:
        denoised_codes = codec.encode(wav)
        audio = codec.decode(denoised_codes, denoise=True)
        assert not torch.allclose(audio, codec.decode(denoised_codes))
    assert torch.equal(denoised_codes, codes)
    torch.testing.assert_close(audio, expected, atol=1e-6, rtol=0)
    streamed_codes, streamed_audio = stream(codec, wav, 12, denoise=True)  # the flag in a stream
    assert torch.equal(streamed_codes, codes)
    torch.testing.assert_close(streamed_audio, expected, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=f"pass denoise to {at}"):  # the side without FiLM
        getattr(codec, other)(codes if other == "decode" else wav, denoise=True)


def test_a_codec_without_denoising_flag_refuses_denoise():
    codec = tiny_codec()
    assert codec.denoises_at is None
    with pytest.raises(ValueError, match="not trained to denoise"):
        codec.encode(torch.zeros(160), denoise=True)
    with pytest.raises(ValueError, match="not trained to denoise"):
        codec.decode(torch.zeros(3, 4, dtype=torch.long), denoise=True)
    with pytest.raises(ValueError, match="not trained to denoise"):
        with codec.streaming(denoise=True):
            pass


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_export_gets_the_mode_of_any_new_file(tmp_path, umask):
    from .tiny_codecs import export_denoising_codec

    previous = os.umask(umask)
    try:
        path = export_denoising_codec(tmp_path / "codec.safetensors", RATE, (2, 4))
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not safetensors' private 0600
    assert [p.name for p in tmp_path.iterdir()] == ["codec.safetensors"]  # no temporary left
    assert Codec.from_checkpoint(path).n_q == 2


def _not_a_codec(kind: str, path):
    """Write a file of ``kind`` that is not a codec checkpoint; returns what it looks like."""
    if kind == "wav":
        sf.write(path, np.zeros(800), 8000, format="WAV")
        return "looks like a WAV audio file"
    if kind == "text":
        path.write_text("codec: please\n")
        return "looks like a text file"
    if kind == "npz":
        with open(path, "wb") as f:
            np.savez(f, codes=np.zeros((3, 4), np.int16))
        return "looks like a NumPy .npz archive"
    if kind == "safetensors":
        save_file({"w": torch.zeros(2)}, str(path))
        return "is a safetensors file without lit-codec's metadata"
    if kind == "tensor":
        torch.save(torch.zeros(2), path)
        return "is a PyTorch checkpoint without a codec configuration"
    if kind == "objects":
        torch.save({"state_dict": {}, "lr": Fraction(1, 3)}, path)
        return "is a PyTorch checkpoint holding objects of type fractions.Fraction, which lit-codec never unpickles"
    path.mkdir()
    return "is a folder without meta.pt"


@pytest.mark.parametrize(
    "kind", ["wav", "text", "npz", "safetensors", "tensor", "objects", "folder"]
)
def test_a_file_that_is_no_codec_is_named_with_what_it_looks_like(kind, tmp_path):
    path = tmp_path / "last.ckpt"
    looks = _not_a_codec(kind, path)
    with pytest.raises(ValueError) as error:
        Codec.from_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path} {looks}, not a codec checkpoint: expected ")
    assert EXPECTED_CHECKPOINT in message  # .ckpt of CodecGAN, export, sharded folder
    for loader_internals in ("pop from empty list", "allow_pickle", "weights_only=False"):
        assert loader_internals not in message
