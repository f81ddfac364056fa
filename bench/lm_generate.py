"""Codec-LM generation speed: the KV cache against recomputing the full forward, one thread.

A multi-scale :class:`lit_codec.nn.MultiScaleLM` with random weights (global ``--width`` x
``--depth``, local ``--width / 2`` x 2; 8 codebooks x 1024 codes, speech16k-like at 50
frames/s) continues an enhancement prefix (``<start> <se_task> <noisy_start>`` + ``--prefix``
noisy frames + ``<noisy_end> <audio_start>``) through :func:`lit_codec.lm.generate.generate`:

- ``cached``: the preallocated KV caches, ``--frames`` frames (``min_frames`` = ``max_frames``
  so that an untrained model does not stop early);
- ``no-cache``: the full teacher-forced forward recomputed for every generated cell
  (``use_cache=False``), over ``--frames-nocache`` frames (its cost per frame grows with the
  length, so measuring fewer frames *flatters* it: the ratio printed is a lower bound);
- ``batch``: ``--batch`` sequences generated together with the cache: frames/s summed over
  the batch, against one sequence.

Printed: parameters, frames/s of each, real-time factor at 50 frames/s, and ``ratio:`` lines:
cached over no-cache (goal >= 10x), batched over one (goal >= 8x), and last cached frames/s
over 50 (faster than real time when > 1).

Run: ``OMP_NUM_THREADS=1 python bench/lm_generate.py [--width 384 --depth 8] [--frames 500]``.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--depth", type=int, default=8)
    p.add_argument("--prefix", type=int, default=100, help="noisy frames in the prefix")
    p.add_argument("--frames", type=int, default=500, help="frames generated with the cache")
    p.add_argument("--frames-nocache", type=int, default=60, help="frames generated without it")
    p.add_argument("--batch", type=int, default=16)
    a = p.parse_args()
    one_thread()
    templates = load_templates()
    vocab = vocabulary_for({"se": templates["se"]}, CodecInfo("bench", 16000, RATE, N_Q, CODES))
    torch.manual_seed(0)
    network = MultiScaleLM.from_vocabulary(
        vocab,
        pattern="multiscale",
        global_config=TransformerConfig(width=a.width, depth=a.depth, heads=max(1, a.width // 64)),
        local_config=TransformerConfig(width=a.width // 2, depth=2, heads=max(1, a.width // 128)),
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

    print(f"multi-scale LM: global {a.width} x {a.depth}, local {a.width // 2} x 2, {params:.2f} M parameters; "
          f"{N_Q} codebooks x {CODES}; prefix {a.prefix + 6} frames; one thread")  # fmt: skip
    run(1, 4, True)  # warm-up
    cached = run(1, a.frames, True)
    print(
        f"cached:   {cached:8.1f} frames/s over {a.frames} frames ({cached / RATE:.2f}x real time at 50 frames/s)"
    )
    nocache = run(1, a.frames_nocache, False)
    print(
        f"no-cache: {nocache:8.1f} frames/s over {a.frames_nocache} frames (a lower bound on its cost)"
    )
    batched = run(a.batch, min(a.frames, 200), True)
    print(f"batch {a.batch}: {batched:8.1f} frames/s in all over {min(a.frames, 200)} frames each")
    print_ratio(cached / nocache)
    print_ratio(batched / cached)
    print_ratio(cached / RATE)


if __name__ == "__main__":
    main()
