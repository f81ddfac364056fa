"""The export-friendly layers and quantizer functions (lit_codec.onnx_layers) against the
modules they stand in for, in PyTorch: the same codes, outputs equal to float rounding, and
every module restored afterwards."""

from __future__ import annotations

import pytest
import torch

from lit_codec.nn import (
    ResidualFSQ,
    ResidualVectorQuantizer,
    StreamingConv1d,
    StreamingConvTranspose1d,
    fold_weight_norm,
)
from lit_codec.nn.activations import Snake
from lit_codec.onnx_layers import (
    _dft_basis,
    _idft_basis,
    exportable,
    quantizer_decode,
    quantizer_encode,
)

from .tiny_codecs import tiny_convnext_codec


@pytest.mark.parametrize(
    "quantizer",
    [
        lambda: ResidualVectorQuantizer(dim=16, n_q=4, codebook_size=64, kmeans_init=False),
        lambda: ResidualVectorQuantizer(
            dim=16, n_q=4, codebook_size=64, kmeans_init=False, codebook_dim=4, l2_normalize=True
        ),  # fmt: skip
        lambda: ResidualFSQ(dim=16, levels=(7, 5, 5), n_q=4),
        lambda: ResidualFSQ(dim=3, levels=(7, 5, 4), n_q=2),  # no projections
    ],
    ids=["rvq", "rvq_factorised", "fsq", "fsq_direct"],
)
def test_quantizer_graph_functions_equal_the_quantizers(quantizer):
    q = fold_weight_norm(quantizer()).eval()  # plain projection weights, as Codec holds them
    latent = torch.randn(3, q.dim, 50)  # (B, D, F)
    with torch.no_grad():
        codes = quantizer_encode(q, latent, q.n_q)
        assert torch.equal(codes, q.encode(latent))
        assert torch.equal(quantizer_encode(q, latent, 2), q.encode(latent, n_q=2))
        torch.testing.assert_close(quantizer_decode(q, codes), q.decode(codes), atol=1e-6, rtol=0)


def test_dft_matrices_equal_torch_fft():
    n_fft = 64
    window = torch.hann_window(n_fft)
    frames = torch.randn(5, n_fft)
    spec = frames @ _dft_basis(n_fft, window)  # (5, 2 * bins)
    reference = torch.fft.rfft(frames * window)
    torch.testing.assert_close(
        spec, torch.cat((reference.real, reference.imag), -1), atol=1e-5, rtol=0
    )
    given = torch.randn(5, n_fft + 2)  # real | imaginary parts, DC and Nyquist imaginary ignored
    bins = n_fft // 2 + 1
    wave = torch.fft.irfft(torch.complex(given[:, :bins], given[:, bins:]), n=n_fft) * window
    torch.testing.assert_close(given @ _idft_basis(n_fft, window), wave, atol=1e-6, rtol=0)


def test_exportable_restores_the_modules():
    codec = tiny_convnext_codec(causal=True)
    encoder = codec.generator.encoder
    encoder.trunk_precision = "bfloat16"
    wav = 0.1 * torch.randn(1, 1, 300)
    before = codec.encode(wav)
    attributes = {m: set(vars(m)) for m in codec.modules()}
    with exportable(codec.generator):
        assert "forward" in vars(encoder.features) and "synthesize" in vars(
            codec.generator.decoder.head
        )
        assert encoder.trunk_precision == "float32"
    assert encoder.trunk_precision == "bfloat16"
    assert all(set(vars(m)) == attributes[m] for m in codec.modules())
    assert torch.equal(codec.encode(wav), before)


@pytest.mark.parametrize(
    "layer",
    [
        lambda: StreamingConv1d(3, 5, 7, stride=2, causal=True),
        lambda: StreamingConv1d(3, 5, 4, stride=3, causal=False),
        lambda: StreamingConv1d(3, 5, 3, dilation=3, causal=False),
        lambda: StreamingConv1d(1, 5, 7, causal=True),  # the waveform's matrix-product path
        lambda: StreamingConvTranspose1d(5, 3, 8, stride=4, causal=True),
        lambda: StreamingConvTranspose1d(5, 3, 7, stride=3, causal=False),
        lambda: Snake(3, alpha=0.7),
    ],
    ids=["strided", "strided_centred", "dilated_centred", "waveform", "up", "up_centred", "snake"],
)
def test_exportable_layers_compute_what_the_layers_compute(layer):
    module = fold_weight_norm(layer()).eval()
    channels = module.in_channels if hasattr(module, "in_channels") else 3
    for length in (1, 16, 23):
        x = torch.randn(2, channels, length)
        with torch.no_grad():
            expected = module(x.clone())
            with exportable(module):
                got = module(x.clone())
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
