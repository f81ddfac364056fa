"""Codec-LM generation speed: the KV cache against recomputing the full forward, one thread.

Two multi-scale :class:`lit_codec.nn.MultiScaleLM` sizes with random weights (8 codebooks x
1024 codes, speech16k-like at 50 frames/s; global ``width`` x ``depth`` with 64-wide heads,
local ``width / 2`` x 2):

- ``debug``: global 256 x 4, local 128 x 2, 7.66 M parameters;
- ``20m``: global 384 x 8, local 192 x 2, 21.25 M parameters.

``--models debug,20m`` picks them (default: both, in that order); ``--width W --depth D``
measures one model of that size instead. Each continues an enhancement prefix
(``<start> <se_task> <noisy_start>`` + ``--prefix`` noisy frames + ``<noisy_end>
<audio_start>``) through :func:`lit_codec.lm.generate.generate`:

- ``cached``: the preallocated KV caches, ``--frames`` frames (``min_frames`` = ``max_frames``
  so that an untrained model does not stop early), batch 1;
- ``no-cache``: the full teacher-forced forward recomputed for every generated cell
  (``use_cache=False``), over ``--frames-nocache`` frames (its cost per frame grows with the
  length, so measuring fewer frames *flatters* it: the ratio printed is a lower bound);
- ``batch``: ``--batch`` sequences generated together with the cache: frames/s summed over
  the batch, against one sequence.

Printed per model: parameters, frames/s of each, real-time factor at 50 frames/s, and three
``ratio:`` lines: cached over no-cache (goal >= 10x), batched over one (goal >= 8x), and
cached frames/s over 50 (faster than real time when > 1; goal >= 1 for both sizes). The last
line is the real-time ratio of the last model (``20m`` by default).

Run: ``OMP_NUM_THREADS=1 python bench/lm_generate.py [--models debug,20m] [--frames 500]``
(about 3 minutes for both sizes on one core); one size: ``--width 384 --depth 8``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
import torch
from _common import one_thread, print_ratio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lit_codec.lm import CodecInfo, build_sequence, load_templates, vocabulary_for  # noqa: E402
from lit_codec.lm.generate import GenerationConfig, Prefix, generate  # noqa: E402
from lit_codec.nn import MultiScaleLM, TransformerConfig  # noqa: E402

N_Q, CODES, RATE = 8, 1024, 50.0
MODELS = {"debug": (256, 4), "20m": (384, 8)}  # name -> global (width, depth)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="debug,20m", help=f"sizes, of {sorted(MODELS)}")
    p.add_argument("--width", type=int, help="one model of this global width (with --depth)")
    p.add_argument("--depth", type=int, help="one model of this global depth (with --width)")
    p.add_argument("--prefix", type=int, default=100, help="noisy frames in the prefix")
    p.add_argument("--frames", type=int, default=500, help="frames generated with the cache")
    p.add_argument("--frames-nocache", type=int, default=40, help="frames generated without it")
    p.add_argument("--batch", type=int, default=16)
    a = p.parse_args()
    if (a.width is None) != (a.depth is None):
        p.error("give --width and --depth together")
    if a.width is not None:
        sizes = [(f"{a.width}x{a.depth}", (a.width, a.depth))]
    else:
        names = [n.strip() for n in a.models.split(",") if n.strip()]
        unknown = sorted(set(names) - set(MODELS))
        if unknown or not names:
            p.error(f"unknown models {unknown}; choose from {sorted(MODELS)}")
        sizes = [(n, MODELS[n]) for n in names]
    one_thread()
    templates = load_templates()
    vocab = vocabulary_for({"se": templates["se"]}, CodecInfo("bench", 16000, RATE, N_Q, CODES))
    for name, (width, depth) in sizes:
        measure(a, name, width, depth, vocab, templates)


def measure(a: argparse.Namespace, name: str, width: int, depth: int, vocab, templates) -> None:
    """Print the frames/s and ratios of one model size."""
    torch.manual_seed(0)
    network = MultiScaleLM.from_vocabulary(
        vocab,
        pattern="multiscale",
        global_config=TransformerConfig(width=width, depth=depth, heads=max(1, width // 64)),
        local_config=TransformerConfig(width=width // 2, depth=2, heads=max(1, width // 128)),
    ).eval()
    params = sum(q.numel() for q in network.parameters()) / 1e6
    gen = torch.Generator().manual_seed(0)

    def prefix(batch: int) -> Prefix:
        seqs = []
        for _ in range(batch):
            noisy = torch.randint(0, CODES, (a.prefix, N_Q), generator=gen).numpy()
            seqs.append(
                build_sequence(vocab, templates["se"], {"noisy_codes": noisy, "codes": noisy[:0]})
            )
        return Prefix.from_sequences(seqs, vocab)

    def run(batch: int, frames: int, cache: bool) -> float:
        config = GenerationConfig(max_frames=frames, min_frames=frames, seed=0, use_cache=cache)
        result = generate(network, vocab, prefix(batch), config)
        assert int(result.lengths.min()) == frames, result.lengths
        return result.frames_per_second

    print(f"[{name}] multi-scale LM: global {width} x {depth}, local {width // 2} x 2, "
          f"{params:.2f} M parameters; {N_Q} codebooks x {CODES}; prefix {a.prefix + 6} frames; "
          "one thread")  # fmt: skip
    run(1, 4, True)  # warm-up
    cached = run(1, a.frames, True)
    print(
        f"[{name}] cached:   {cached:8.1f} frames/s over {a.frames} frames "
        f"({cached / RATE:.2f}x real time at 50 frames/s)"
    )
    nocache = run(1, a.frames_nocache, False)
    print(
        f"[{name}] no-cache: {nocache:8.1f} frames/s over {a.frames_nocache} frames "
        "(a lower bound on its cost)"
    )
    frames = min(a.frames, 200)
    batched = run(a.batch, frames, True)
    print(f"[{name}] batch {a.batch}: {batched:8.1f} frames/s in all over {frames} frames each")
    print_ratio(cached / nocache)
    print_ratio(batched / cached)
    print_ratio(cached / RATE)


if __name__ == "__main__":
    main()
