"""Codec speed: encode + decode real-time factor of lit-codec against EnCodec, on one thread.

Two comparisons in one run, random weights, ``torch.inference_mode``, one thread; every
function gets a warm-up call, then lit-codec and EnCodec are timed in alternating rounds and
each figure is the median over the rounds. The real-time factor (RTF) is seconds of audio
encoded and decoded per second of wall time (higher is faster).

1. Implementation: lit-codec's SEANet encoder + decoder against EnCodec's
   ``encodec.modules.SEANetEncoder``/``SEANetDecoder`` at an identical architecture, EnCodec's
   24 kHz settings without LSTM: 32 filters, ratios (8, 5, 4, 2), dimension 128, one
   residual unit of kernel 3 (dilation 1), compress 2, causal, weight norm. EnCodec is
   given ``true_skip=True`` and zero padding so that its blocks are exactly ours (its
   defaults add a 1x1 shortcut convolution and reflect padding); the script copies
   EnCodec's weights into our model and checks that the outputs agree before timing. Ours
   is folded for inference (:func:`lit_codec.nn.fold_weight_norm`). Goal: >= 1.3.
2. Product: the codec of ``recipes/codec/soundstream_24khz_6kbps.yaml`` (generator and
   8 x 1024 residual VQ, built as ``lit-codec fit`` builds it, wrapped in
   :class:`lit_codec.Codec`, which folds the weight norm) encoding and decoding at 6 kbps
   through ``Codec.encode``/``Codec.decode``, against EnCodec's 24 kHz model as published
   (``EncodecModel.encodec_model_24khz(pretrained=False)``, with its LSTMs) at 6 kbps
   through ``model.encode``/``model.decode``. Goal: >= 2.5. Also reported: our streaming
   path, ``Codec.streaming()`` fed 20 ms chunks (480 samples; encode, then decode the codes
   each chunk completes, one or two frames), as a fraction of our offline throughput
   (goal: >= 0.8). It runs the encoder and the decoder as recorded step programs of whole
   frames (:class:`lit_codec.nn.conv.FrameStepper`) and the quantizer on cached tables;
   bench/README.md explains what limits it. With ``--streams S`` (default 8) it also
   streams S clips at once (``Codec.streaming(batch_size=S)``, the audio cut into S clips)
   against offline coding of the same S clips: a server's throughput. ``bench/streaming_floor.py``
   measures how much of offline throughput the stream's matrix products alone leave.

Audio: the shipped samples (``data_prep/samples``, or ``--input DIR``) resampled to 24 kHz,
concatenated and cut to ``--seconds``; random weights make the content irrelevant to speed,
but real audio keeps the code distribution realistic.

Run: ``OMP_NUM_THREADS=1 python bench/codec_speed.py [--seconds 10] [--rounds 5]``. Any other
argument is passed to the 24 kHz recipe as a command-line override (used to size it), e.g.
``--model.init_args.generator.init_args.channels_dec 24``. Each comparison ends with
``ratio: X`` (X > 1: lit-codec is faster); the product comparison is printed last.
"""

from __future__ import annotations

import argparse
import tempfile

import _common  # noqa: F401  (one thread, before torch)
import numpy as np
import torch
from _common import build_recipe, load_corpus, millions, one_thread, print_ratio, timed_rtf
from _encodec_stub import import_encodec

from lit_codec.codec import Codec
from lit_codec.nn.conv import StreamingConv1d, StreamingConvTranspose1d, fold_weight_norm
from lit_codec.nn.seanet import SEANetGenerator

RECIPE = "recipes/codec/soundstream_24khz_6kbps.yaml"
SAMPLE_RATE = 24_000
CHUNK = SAMPLE_RATE // 50  # 20 ms


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


def implementation(wav: torch.Tensor, seconds: float, rounds: int) -> None:
    ours, encoder, decoder = implementation_pair()
    print("== (1) implementation: SEANet encoder + decoder, identical architecture")
    print("   EnCodec 24 kHz settings without LSTM: 32 filters, ratios (8, 5, 4, 2), dim 128,")
    print(f"   1 residual unit (kernel 3), compress 2, causal; {millions(ours):.2f} M parameters")
    with torch.inference_mode():
        one = wav[..., :SAMPLE_RATE]
        diff = (ours.decode(ours.encode(one)) - decoder(encoder(one))).abs().max().item()
    print(f"same weights, max |ours - EnCodec| on 1 s: {diff:.1e}")
    assert diff < 1e-4, "the two models do not compute the same function"
    rtf = timed_rtf(
        {
            "ours": lambda: ours.decode(ours.encode(wav)),
            "encodec": lambda: decoder(encoder(wav)),
        },
        seconds,
        rounds,
    )
    print(f"lit-codec SEANet:  {rtf['ours']:6.2f}x real time")
    print(f"EnCodec SEANet:    {rtf['encodec']:6.2f}x real time")
    print(f"ours / EnCodec: {rtf['ours'] / rtf['encodec']:.2f} (goal: >= 1.3)")
    print_ratio(rtf["ours"] / rtf["encodec"])


# ---------------------------------------------------------------------- (2) product


def recipe_codec(overrides: list[str]) -> Codec:
    """The 24 kHz recipe's generator + quantizer (random weights) as an inference ``Codec``."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_recipe(
            RECIPE,
            "--trainer.logger", "false",
            "--trainer.default_root_dir", tmp,
            *overrides,
            root=tmp,
        )  # fmt: skip
    model = cli.model
    print(model.describe())
    gen = model.generator
    print(
        f"   generator: C_enc {gen.encoder.conv_in.out_channels}, C_dec {gen.decoder.conv_out.in_channels}, "
        f"residual kernel {gen.encoder.blocks[0].residuals[0].conv1.kernel_size[0]}, "
        f"{len(gen.encoder.blocks[0].residuals)} residual units per block"
    )
    return Codec(model.generator, model.quantizer, model.sample_rate)


def streamed(codec: Codec, wav: torch.Tensor) -> torch.Tensor:
    """Encode and decode ``wav`` (B, 1, T), B streams, through ``Codec.streaming()`` in 20 ms chunks."""
    out = []
    with codec.streaming(batch_size=wav.shape[0]) as stream:
        for chunk in wav.split(CHUNK, dim=-1):
            out.append(stream.decode(stream.encode(chunk)))
        out.append(stream.decode(stream.flush()))
    return torch.cat(out, dim=-1)  # (B, 1, frames * hop)


def streams_at_once(codec: Codec, wav: torch.Tensor, streams: int, rounds: int) -> None:
    """Throughput of ``streams`` streams served together (a server's case) against offline
    coding of the same clips: the weights each 20 ms step reads serve every stream."""
    length = wav.shape[-1] - wav.shape[-1] % streams
    seconds = length / SAMPLE_RATE
    clips = wav[..., :length].reshape(streams, 1, -1)  # (S, 1, T / S): the audio cut in S clips
    rtf = timed_rtf(
        {
            "offline": lambda: codec.decode(codec.encode(clips, kbps=6.0)),
            "stream": lambda: streamed(codec, clips),
        },
        seconds,
        rounds,
    )
    print(f"lit-codec streaming, {streams} streams at once, 20 ms chunks: {rtf['stream']:6.2f}x "
          f"real time = {rtf['stream'] / rtf['offline']:.2f} of offline coding of the same "
          f"{streams} clips ({rtf['offline']:.2f}x)")  # fmt: skip


def product(
    wav: torch.Tensor, seconds: float, rounds: int, overrides: list[str], streams: int
) -> None:
    print("== (2) product: the 24 kHz 6 kbps recipe against EnCodec's 24 kHz model at 6 kbps")
    codec = recipe_codec(overrides)
    encodec = import_encodec().EncodecModel.encodec_model_24khz(pretrained=False)
    encodec.set_target_bandwidth(6.0)
    encodec.eval()
    q = codec.quantizer
    codebooks = q.n_q * q.codebook_size * q.dim / 1e6
    print(
        f"lit-codec 24 kHz codec: {millions(codec):.2f} M parameters + {codebooks:.2f} M codebook values"
    )
    print(f"EnCodec 24 kHz model:   {millions(encodec):.2f} M parameters (with LSTMs and RVQ)")
    with torch.inference_mode():
        offline = codec.decode(codec.encode(wav, kbps=6.0))
        online = streamed(codec, wav)
        same = torch.allclose(offline, online, atol=1e-4)
    print(f"streaming output equals offline (atol 1e-4): {same}")
    rtf = timed_rtf(
        {
            "ours": lambda: codec.decode(codec.encode(wav, kbps=6.0)),
            "encodec": lambda: encodec.decode(encodec.encode(wav)),
            "stream": lambda: streamed(codec, wav),
        },
        seconds,
        rounds,
    )
    print(f"lit-codec streaming, 20 ms chunks: {rtf['stream']:6.2f}x real time = "
          f"{rtf['stream'] / rtf['ours']:.2f} of its offline throughput (goal: >= 0.8)")  # fmt: skip
    if streams > 1:
        streams_at_once(codec, wav, streams, rounds)
    print(f"lit-codec 24 kHz:  {rtf['ours']:6.2f}x real time")
    print(f"EnCodec 24 kHz:    {rtf['encodec']:6.2f}x real time")
    print(f"ours / EnCodec: {rtf['ours'] / rtf['encodec']:.2f} (goal: >= 2.5)")
    print_ratio(rtf["ours"] / rtf["encodec"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length per call")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per function")
    parser.add_argument("--input", default=None, help="audio folder (default: data_prep/samples)")
    parser.add_argument("--skip-implementation", action="store_true", help="run (2) only")
    parser.add_argument(
        "--streams", type=int, default=8, help="also stream this many streams at once (1: skip)"
    )
    args, overrides = parser.parse_known_args()
    one_thread()
    torch.manual_seed(0)
    clips = load_corpus(args.input, SAMPLE_RATE, max_seconds=args.seconds)
    audio = np.concatenate(clips)[: int(args.seconds * SAMPLE_RATE)]
    if len(audio) < int(args.seconds * SAMPLE_RATE):
        audio = np.resize(audio, int(args.seconds * SAMPLE_RATE))  # repeat a short corpus
    wav = torch.from_numpy(audio).view(1, 1, -1)  # (1, 1, T)
    if not args.skip_implementation:
        implementation(wav, args.seconds, args.rounds)
    product(wav, args.seconds, args.rounds, overrides, args.streams)


if __name__ == "__main__":
    main()
