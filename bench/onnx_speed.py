"""ONNX export speed: the speech codec run by onnxruntime against the same codec in PyTorch.

The shipped codec ``speech16k`` (``--ckpt``, the default; trained by
``recipes/codec/speech_16khz_convnext.yaml``: ConvNeXt generator, 15.6 M parameters, 12 x
1024 residual VQ: 6 kbps), or with ``--random`` (needed by ``--causal``, as the shipped model
is not causal) the recipe's networks built as ``lit-codec fit`` builds them with random
weights, wrapped in :class:`lit_codec.Codec`, exported by :func:`lit_codec.onnx_export.export_onnx` with all 12 codebooks and run by
:class:`lit_codec.onnx_runtime.OnnxCodec`. One call encodes and decodes ``--seconds`` of
the shipped speech samples at 16 kHz (default 10 s, one clip). Everything on one thread
(PyTorch's and onnxruntime's intra- and inter-op pools); every function gets a warm-up
call, then the sides are timed in alternating rounds and each figure is the median. The
real-time factor (RTF) is seconds of audio encoded and decoded per second of wall time.

Three sides: PyTorch as the recipe configures it (``Codec.encode``/``decode`` under
``torch.inference_mode``, ``trunk_precision: fastest``: bf16 trunks on CPUs with AMX or
AVX-512 BF16, float32 elsewhere),
PyTorch with float32 trunks (what the ONNX graphs compute), and onnxruntime (float32 graphs,
``OnnxCodec.encode``/``decode``). The script first checks that onnxruntime gives the codes of
PyTorch in float32 and prints the largest waveform difference. ``--causal`` builds the
causal variant (``generator.init_args.causal true``), which also has step graphs, and times
20 ms streaming (one frame per chunk) through ``OnnxCodec.streaming`` against
``Codec.streaming`` (recipe and float32 trunks).

Run: ``OMP_NUM_THREADS=1 python bench/onnx_speed.py [--ckpt speech16k | --random [--causal]]
[--seconds 10] [--rounds 5]``
(needs ``pip install -e .[onnx]``). The last line is ``ratio: X``, X = onnxruntime's RTF over
the faster of the two PyTorch figures (X > 1: the ONNX export is faster).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import _common  # noqa: F401  (one thread, before torch)
import numpy as np
import torch
from _common import build_recipe, load_corpus, millions, one_thread, print_ratio, timed_rtf

from lit_codec.codec import Codec
from lit_codec.onnx_export import export_onnx
from lit_codec.onnx_runtime import OnnxCodec

RECIPE = "recipes/codec/speech_16khz_convnext.yaml"
SAMPLE_RATE = 16_000


def recipe_codec(causal: bool) -> Codec:
    """The speech recipe's generator + quantizer (random weights) as an inference ``Codec``."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_recipe(
            RECIPE,
            "--trainer.logger", "false",
            "--trainer.default_root_dir", tmp,
            "--model.init_args.generator.init_args.causal", str(causal).lower(),
            root=tmp,
        )  # fmt: skip
    model = cli.model
    print(model.describe())
    return Codec(model.generator, model.quantizer, model.sample_rate)


@contextmanager
def trunks(codec: Codec, precision: str) -> Iterator[None]:
    """Run both ConvNeXt trunks at ``precision`` inside the block."""
    parts = (codec.generator.encoder, codec.generator.decoder)
    saved = [part.trunk_precision for part in parts]
    for part in parts:
        part.trunk_precision = precision
    try:
        yield
    finally:
        for part, value in zip(parts, saved):
            part.trunk_precision = value


def in_float32(codec: Codec, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with trunks(codec, "float32"):
            return fn()

    return run


def check(codec: Codec, onnx_codec: OnnxCodec, wav: torch.Tensor) -> None:
    """Codes and waveform of onnxruntime against PyTorch's float32 path, on the benchmark audio."""
    with torch.inference_mode(), trunks(codec, "float32"):
        codes = codec.encode(wav)
        audio = codec.decode(codes).numpy()
    onnx_codes = onnx_codec.encode(wav.numpy())
    same = int((onnx_codes == codes.numpy()).sum())
    diff = np.abs(onnx_codec.decode(codes.numpy()) - audio).max()
    print(f"onnxruntime vs PyTorch (float32 trunks): {same} of {codes.numel()} codes identical; "
          f"decoder max |difference| {diff:.1e} (waveform peak {np.abs(audio).max():.1e})")  # fmt: skip


def streamed_torch(codec: Codec, wav: torch.Tensor, chunk: int) -> None:
    with codec.streaming() as stream:
        for piece in wav.split(chunk, dim=-1):
            stream.decode(stream.encode(piece))


def streamed_onnx(onnx_codec: OnnxCodec, wav: np.ndarray, chunk: int) -> None:
    with onnx_codec.streaming() as stream:
        for start in range(0, wav.shape[-1], chunk):
            stream.decode(stream.encode(wav[..., start : start + chunk]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length per call")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per function")
    parser.add_argument("--input", default=None, help="audio folder (default: data_prep/samples)")
    parser.add_argument("--ckpt", default="speech16k", help="codec to export (default: the shipped one)")
    parser.add_argument("--random", action="store_true", help="the recipe's networks, random weights")
    parser.add_argument("--causal", action="store_true",
                        help="with --random: the causal variant; also time streaming")  # fmt: skip
    args = parser.parse_args()
    if args.causal and not args.random:
        parser.error("--causal needs --random (the shipped speech16k is not causal)")
    one_thread()
    torch.manual_seed(0)
    clips = load_corpus(args.input, SAMPLE_RATE, max_seconds=args.seconds)
    audio = np.resize(np.concatenate(clips), int(args.seconds * SAMPLE_RATE))  # repeat if short
    wav = torch.from_numpy(audio).view(1, 1, -1)  # (1, 1, T)

    codec = recipe_codec(args.causal) if args.random else Codec.from_checkpoint(args.ckpt)
    print(f"codec: {'random weights' if args.random else args.ckpt} ({codec.fingerprint})")
    q = codec.quantizer
    print(f"codec: {millions(codec.generator):.2f} M generator parameters, {q.n_q} x "
          f"{q.codebook_size} codes, {q.kbps(q.n_q):g} kbps")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export = export_onnx(codec, tmp)
        sizes = sum(p.stat().st_size for p in export.directory.glob("*.onnx")) / 1e6
        print(f"exported in {time.perf_counter() - start:.1f} s ({export.exporter}, opset "
              f"{export.opset}): {sizes:.0f} MB of graphs")  # fmt: skip
        onnx_codec = OnnxCodec(tmp, threads=1)
        check(codec, onnx_codec, wav)
        rtf = timed_rtf(
            {
                "torch": lambda: codec.decode(codec.encode(wav)),
                "torch_fp32": in_float32(codec, lambda: codec.decode(codec.encode(wav))),
                "onnx": lambda: onnx_codec.decode(onnx_codec.encode(wav.numpy())),
            },
            args.seconds,
            args.rounds,
        )
        if args.causal:
            chunk = SAMPLE_RATE // 50  # 20 ms: one frame
            streaming = timed_rtf(
                {
                    "torch": lambda: streamed_torch(codec, wav, chunk),
                    "torch_fp32": in_float32(codec, lambda: streamed_torch(codec, wav, chunk)),
                    "onnx": lambda: streamed_onnx(onnx_codec, wav.numpy(), chunk),
                },
                args.seconds,
                max(1, args.rounds // 2),
            )
            print(f"streaming, 20 ms chunks: PyTorch {streaming['torch']:.2f}x real time (recipe), "
                  f"{streaming['torch_fp32']:.2f}x (float32 trunks); onnxruntime "
                  f"{streaming['onnx']:.2f}x")  # fmt: skip
    print(f"PyTorch, recipe (trunks {codec.generator.encoder.trunk_precision}): {rtf['torch']:6.2f}x real time")
    print(f"PyTorch, float32 trunks:       {rtf['torch_fp32']:6.2f}x real time")
    print(f"onnxruntime (float32):         {rtf['onnx']:6.2f}x real time")
    best = max(rtf["torch"], rtf["torch_fp32"])
    print(f"onnxruntime / PyTorch: {rtf['onnx'] / rtf['torch']:.2f} against the recipe, "
          f"{rtf['onnx'] / rtf['torch_fp32']:.2f} against float32")  # fmt: skip
    print_ratio(rtf["onnx"] / best)


if __name__ == "__main__":
    main()
