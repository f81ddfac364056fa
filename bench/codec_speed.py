"""Codec speed: encode + decode real-time factor of lit-codec against EnCodec, on one thread.

Two comparisons in one run, random weights, ``torch.inference_mode``, one thread; each
function gets warm-up calls, then lit-codec and EnCodec are timed in alternating rounds and
each figure is the median over rounds. The real-time factor (RTF) is seconds of audio
encoded and decoded per second of wall time (higher is faster).

1. Implementation: lit-codec's SEANet encoder + decoder against EnCodec's
   ``encodec.modules.SEANetEncoder``/``SEANetDecoder`` at an identical architecture, EnCodec's
   24 kHz settings without LSTM: 32 filters, ratios (8, 5, 4, 2), dimension 128, one
   residual unit of kernel 3 (dilation 1), compress 2, causal, weight norm. EnCodec is
   given ``true_skip=True`` and zero padding so that its blocks are exactly ours (its
   defaults add a 1x1 shortcut convolution and reflect padding); the script copies
   EnCodec's weights into our model and checks that the outputs agree before timing. Ours
   is folded for inference (:func:`lit_codec.nn.fold_weight_norm`). Also reported: our
   streaming path with 20 ms chunks, as a fraction of our offline throughput.
2. Product: our 24 kHz generator (C = 32, strides (2, 4, 5, 8), three residual units of
   kernel 7 with dilations 1, 3, 9, compress 2) against EnCodec's 24 kHz model as published
   (``EncodecModel.encodec_model_24khz(pretrained=False)``: with its 2-layer LSTMs) at
   6 kbps. Our side does not include a quantizer yet: add it in :func:`ours_product`.

Run: ``OMP_NUM_THREADS=1 python bench/codec_speed.py [--seconds 10] [--rounds 5]``.
Each comparison ends with ``ratio: X`` (X > 1: lit-codec is faster); the product
comparison is printed last.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _encodec_stub import import_encodec

from lit_codec.nn.conv import StreamingConv1d, StreamingConvTranspose1d, fold_weight_norm
from lit_codec.nn.seanet import SEANetGenerator

SAMPLE_RATE = 24_000
EncodeDecode = Callable[[torch.Tensor], torch.Tensor]


def rtf(encode_decode_fn: EncodeDecode, seconds: float, sample_rate: int, repeats: int) -> float:
    """Real-time factor of ``encode_decode_fn`` on ``seconds`` of random mono audio.

    One untimed warm-up call, then the median of ``repeats`` timed calls, under
    ``torch.inference_mode``. Returns audio seconds per wall-clock second.
    """
    wav = 0.1 * torch.randn(1, 1, int(seconds * sample_rate))
    with torch.inference_mode():
        encode_decode_fn(wav)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            encode_decode_fn(wav)
            times.append(time.perf_counter() - start)
    return seconds / statistics.median(times)


def compare(
    fns: dict[str, EncodeDecode], seconds: float, sample_rate: int, rounds: int
) -> dict[str, float]:
    """Median RTF of each function over ``rounds`` alternating rounds (fair under load)."""
    for fn in fns.values():  # warm-up: allocator, oneDNN primitive caches
        rtf(fn, min(seconds, 1.0), sample_rate, 1)
    results: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            results[name].append(rtf(fn, seconds, sample_rate, 1))
    return {name: statistics.median(values) for name, values in results.items()}


def millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


# ---------------------------------------------------------------- (1) implementation


def implementation_pair() -> tuple[SEANetGenerator, torch.nn.Module, torch.nn.Module]:
    """Our generator and EnCodec's encoder/decoder at the same architecture and weights."""
    modules = import_encodec().modules
    settings = dict(
        channels=1,
        dimension=128,
        n_filters=32,
        n_residual_layers=1,
        ratios=[8, 5, 4, 2],
        residual_kernel_size=3,
        dilation_base=2,
        compress=2,
        causal=True,
        lstm=0,
        norm="weight_norm",
        true_skip=True,
        pad_mode="constant",
    )
    encoder = modules.SEANetEncoder(**settings).eval()
    decoder = modules.SEANetDecoder(**settings).eval()
    ours = SEANetGenerator(
        channels_enc=32,
        channels_dec=32,
        dimension=128,
        strides=(2, 4, 5, 8),
        kernel_size=7,
        last_kernel_size=7,
        residual_kernel_size=3,
        dilations=(1,),
        residual_compress=2,
        activation="elu",
        causal=True,
    ).eval()
    fold_weight_norm(ours)
    # Same architecture means the convolutions pair up in order: copy EnCodec's weights.
    theirs = [
        m.conv.conv if isinstance(m, modules.SConv1d) else m.convtr.convtr
        for m in [*encoder.modules(), *decoder.modules()]
        if isinstance(m, (modules.SConv1d, modules.SConvTranspose1d))
    ]
    mine = [m for m in ours.modules() if isinstance(m, (StreamingConv1d, StreamingConvTranspose1d))]
    assert len(theirs) == len(mine), (len(theirs), len(mine))
    with torch.no_grad():
        for src, dst in zip(theirs, mine):
            dst.weight.copy_(src.weight)  # EnCodec's weight-norm hook has computed it
            dst.bias.copy_(src.bias)
    return ours, encoder, decoder


def implementation(seconds: float, rounds: int) -> None:
    ours, encoder, decoder = implementation_pair()
    print("== (1) implementation: SEANet encoder + decoder, identical architecture")
    print("   EnCodec 24 kHz settings without LSTM: 32 filters, ratios (8, 5, 4, 2), dim 128,")
    print(f"   1 residual unit (kernel 3), compress 2, causal; {millions(ours):.2f} M parameters")
    with torch.inference_mode():
        wav = 0.1 * torch.randn(1, 1, SAMPLE_RATE)
        diff = (ours.decode(ours.encode(wav)) - decoder(encoder(wav))).abs().max().item()
    print(f"same weights, max |ours - EnCodec| on 1 s: {diff:.1e}")
    assert diff < 1e-4, "the two models do not compute the same function"

    hop = ours.hop_length
    chunk = SAMPLE_RATE // 50  # 20 ms

    def stream(wav: torch.Tensor) -> torch.Tensor:
        with ours.streaming(batch_size=1):
            out = [ours.decode(ours.encode(piece)) for piece in wav.split(chunk, dim=-1)]
            out.append(ours.decode(ours.encode(wav.new_zeros(1, 1, -wav.shape[-1] % hop))))
        return torch.cat(out, dim=-1)

    figures = compare(
        {
            "ours": lambda wav: ours.decode(ours.encode(wav)),
            "encodec": lambda wav: decoder(encoder(wav)),
            "stream": stream,
        },
        seconds,
        SAMPLE_RATE,
        rounds,
    )
    print(f"lit-codec SEANet:  {figures['ours']:6.2f}x real time")
    print(f"EnCodec SEANet:    {figures['encodec']:6.2f}x real time")
    print(f"lit-codec streaming, 20 ms chunks: {figures['stream']:6.2f}x real time = "
          f"{figures['stream'] / figures['ours']:.2f} of its offline throughput (goal 0.8)")  # fmt: skip
    print(f"ratio: {figures['ours'] / figures['encodec']:.2f}")


# ---------------------------------------------------------------------- (2) product


def ours_product() -> EncodeDecode:
    """Encode + decode of the 24 kHz 6 kbps recipe's generator (quantizer still to add)."""
    generator = SEANetGenerator(
        channels_enc=32,
        channels_dec=32,
        dimension=128,
        strides=(2, 4, 5, 8),
        residual_kernel_size=7,
        dilations=(1, 3, 9),
        residual_compress=2,
    ).eval()
    fold_weight_norm(generator)
    print(f"lit-codec generator: {millions(generator):.2f} M parameters (no quantizer yet)")
    return lambda wav: generator.decode(generator.encode(wav))


def encodec_product() -> EncodeDecode:
    """Encode + decode of EnCodec's published 24 kHz model (random weights) at 6 kbps."""
    model = import_encodec().EncodecModel.encodec_model_24khz(pretrained=False)
    model.set_target_bandwidth(6.0)
    print(f"EnCodec 24 kHz model: {millions(model):.2f} M parameters (with LSTMs and RVQ)")
    return lambda wav: model.decode(model.encode(wav))


def product(seconds: float, rounds: int) -> None:
    print("== (2) product: 24 kHz generator against EnCodec's 24 kHz model at 6 kbps")
    figures = compare(
        {"ours": ours_product(), "encodec": encodec_product()}, seconds, SAMPLE_RATE, rounds
    )
    print(f"lit-codec 24 kHz:  {figures['ours']:6.2f}x real time")
    print(f"EnCodec 24 kHz:    {figures['encodec']:6.2f}x real time")
    print(f"ratio: {figures['ours'] / figures['encodec']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length per call")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per function")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    implementation(args.seconds, args.rounds)
    product(args.seconds, args.rounds)


if __name__ == "__main__":
    main()
