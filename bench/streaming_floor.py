"""Streaming floor: how close exact fp32 streaming can get to offline throughput on this CPU.

``codec_speed.py`` reports the 24 kHz recipe's streaming path (one stream, 20 ms chunks) as a
fraction of its offline throughput. This study asks what *any* streaming runtime built on
PyTorch's kernels (MKL / oneDNN) could reach with the same model, exactly (fp32, outputs
equal to offline coding) and at the same latency (each frame coded as soon as it is
complete). Three functions run in alternating rounds on the same audio, one thread:

- ``offline``: ``Codec.decode(Codec.encode(wav))`` on the whole signal;
- ``stream``: ``Codec.streaming()`` fed 20 ms chunks (what ``codec_speed.py`` times);
- ``products``: the same stream reduced to its matrix products. One pass of the stream is
  traced first (which encoder and decoder step program ran for each chunk, and the rows
  the quantizer searched); the replay then runs, in the traced order, only the products of
  each step program (:class:`lit_codec.nn.frame_stepper.FrameStepper`: every convolution
  is one product) and one search product per codebook and step (against the cached
  tables the stream uses). No activation, copy, code lookup or Python around them runs:
  the replay's time is what the products cost where they occur in a stream, with the
  caches as a stream leaves them, and a lower bound on any runtime that computes them.

``products / offline`` bounds the fraction of offline throughput exact streaming can reach
here (``ratio:`` line). The products cost more in a stream than offline because each step
multiplies one or two frames by every weight matrix of the model (about 10 MB with the
codebooks' search tables), which a single long product reads once per signal.

Run: ``OMP_NUM_THREADS=1 python bench/streaming_floor.py [--seconds 10] [--rounds 5]``; any
other argument overrides the recipe (e.g. ``--model.init_args.quantizer.init_args.codebook_size
128`` for small codebooks).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

import _common  # noqa: F401  (one thread, before torch)
import numpy as np
import torch
from _common import compare, load_corpus, one_thread, print_ratio
from codec_speed import CHUNK, SAMPLE_RATE, recipe_codec, streamed

from lit_codec.codec import Codec
from lit_codec.nn import frame_stepper, quantization


def trace_products(codec: Codec, wav: torch.Tensor) -> list[Callable[[], object]]:
    """The products of one streaming pass over ``wav``, in the order the stream runs them."""
    steps: list[Callable[[], object]] = []
    run, encode_few = frame_stepper._Program.run, quantization._encode_few

    def traced_run(program, x):
        products = [
            op for op in program.ops if getattr(op, "func", None) in (torch.addmm, torch.mm)
        ]
        steps.extend([*products, program.last])  # the last operation is the final product
        return run(program, x)

    def traced_search(residual, tables):
        rows = residual.clone()  # (N, D): the search of every layer, on rows of this size
        for _, codes_t, codes_sq, _ in tables:
            steps.append(partial(torch.addmm, codes_sq, rows, codes_t, alpha=-2.0))
        return encode_few(residual, tables)

    frame_stepper._Program.run, quantization._encode_few = traced_run, traced_search
    try:
        with torch.inference_mode():
            streamed(codec, wav)
    finally:
        frame_stepper._Program.run, quantization._encode_few = run, encode_few
    searches = sum(getattr(step, "keywords", {}).get("alpha") == -2.0 for step in steps)
    if not searches or searches == len(steps):  # the stream no longer runs what is traced
        raise SystemExit("tracing found no step-program or no search products: update this study")
    return steps


def replay(steps: list[Callable[[], object]]) -> None:
    for step in steps:
        step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length per call")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per function")
    parser.add_argument("--input", default=None, help="audio folder (default: data_prep/samples)")
    args, overrides = parser.parse_known_args()
    one_thread()
    torch.manual_seed(0)
    samples = int(args.seconds * SAMPLE_RATE)
    audio = np.resize(np.concatenate(load_corpus(args.input, SAMPLE_RATE, args.seconds)), samples)
    wav = torch.from_numpy(audio).view(1, 1, -1)  # (1, 1, T)
    codec = recipe_codec(overrides)
    n_q = codec.n_q
    steps = trace_products(codec, wav)
    chunks = -(-samples // CHUNK)
    print(f"one stream, {CHUNK}-sample (20 ms) chunks, {n_q} codebooks: {len(steps) / chunks:.1f} "
          f"products per chunk in the replay")  # fmt: skip
    with torch.inference_mode():
        times = compare(
            {
                "offline": lambda: codec.decode(codec.encode(wav, n_q=n_q)),
                "stream": lambda: streamed(codec, wav),
                "products": lambda: replay(steps),
            },
            rounds=args.rounds,
            warmup=1,
        )
    for name, label in (("offline", "offline coding"), ("stream", "streaming path"),
                        ("products", "its products alone")):  # fmt: skip
        print(f"{label:20s} {times[name] / chunks * 1e6:7.0f} us per 20 ms chunk = "
              f"{args.seconds / times[name]:6.2f}x real time = "
              f"{times['offline'] / times[name]:.2f} of offline")  # fmt: skip
    print("goal of bench/codec_speed.py: streaming >= 0.8 of offline")
    print_ratio(times["offline"] / times["products"])


if __name__ == "__main__":
    main()
