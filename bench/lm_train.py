"""Codec-LM training step: the multi-scale pattern against the flat and delay patterns.

The same core (:class:`lit_codec.nn.MultiScaleLM`, the same vocabulary, data, loss and
optimizer) run with the three codebook patterns researchers compare:

- ``multiscale`` (UniAudio/MEGABYTE/Moshi): a global stack over the 500 frames, a narrow
  local stack over the 8 codebooks of each frame (4000 sequences of 8 positions);
- ``flat``: one stack over the 4000 tokens in a row (UniAudio's single-scale baseline);
- ``delay`` (MusicGen): one stack over 507 steps, codebook ``k`` delayed by ``k`` steps.

Each is sized to the same parameter count (+-5 %, printed): the multi-scale model has a
global stack of ``--width`` x ``--depth`` and a local stack of ``--width / 2`` x 2; the flat
and delay models get the same width and the depth and MLP ratio that bring them to the
multi-scale model's total. A training step is one forward, the cross-entropy of every token
(``MultiScaleLM.loss``), one backward and one AdamW step on ``--batch`` random sequences of
500 frames x 8 codebooks x 1024 codes (speech16k-like, 6 kbps at 50 frames/s).

Printed, for each pattern: parameters, milliseconds per step (median of alternating rounds,
one thread), training tokens per second (``batch x 500 x 8`` / step time), peak memory of the
step (the process's peak resident memory while it makes steps, minus its memory before the
first step: activations, gradients, optimizer moments, allocator caches; each pattern in a
fresh process), and the FLOP rate the step achieves (matmul and attention FLOPs counted by
``torch.utils.flop_counter`` for one forward + backward, over the step's time) as a fraction
of this machine's measured rate of a ``(tokens x width) @ (width x 4 width)`` matmul at the
same width, one thread.

Ratios (``ratio:`` lines, X > 1: the multi-scale core is better): peak memory of delay and of
flat over multi-scale; the multi-scale step's achieved fraction of the matmul rate; tokens/s
of multi-scale over delay; and last, tokens/s of multi-scale over the faster of flat and delay.
Peers (moshi, audiocraft's MusicGen, MEGABYTE-pytorch) are not run: the patterns run on our
core give the comparison without their installs.

Run: ``OMP_NUM_THREADS=1 python bench/lm_train.py [--rounds 3] [--batch 2] [--width 256]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
import torch
from _common import compare, one_thread, print_ratio, training_flops

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lit_codec.lm import CodecInfo, Vocabulary  # noqa: E402
from lit_codec.nn import MultiScaleLM, TransformerConfig  # noqa: E402

N_Q, CODES, FRAMES = 8, 1024, 500
PATTERNS = ("multiscale", "flat", "delay")


def vocabulary() -> Vocabulary:
    codec = CodecInfo("bench", 16000, 50.0, N_Q, CODES)
    return Vocabulary.build(codec, tasks=["se"], segments=["noisy", "audio"])


def global_heads(width: int) -> int:
    return max(1, width // 64)


def configs(width: int, depth: int) -> dict[str, dict]:
    """Constructor arguments of the three models, at (near) the same parameter count."""
    vocab = vocabulary()
    local = TransformerConfig(width=width // 2, depth=2, heads=max(1, width // 128))
    multiscale = {"pattern": "multiscale",
                  "global_config": TransformerConfig(width=width, depth=depth, heads=global_heads(width)),
                  "local_config": local}  # fmt: skip
    target = count(vocab, multiscale)
    out = {"multiscale": multiscale}
    for pattern in ("flat", "delay"):
        out[pattern] = {"pattern": pattern, "global_config": matched(vocab, pattern, width, target)}
    return out


def count(vocab: Vocabulary, kwargs: dict) -> int:
    return sum(p.numel() for p in MultiScaleLM.from_vocabulary(vocab, **kwargs).parameters())


def matched(vocab: Vocabulary, pattern: str, width: int, target: int) -> TransformerConfig:
    """The depth and MLP ratio (closest to SwiGLU's 8/3) that give ``target`` parameters.

    Parameters = (everything but the blocks) + depth x (one block), and a block's count is
    linear in its MLP's hidden width: solved for each depth, the nearest ratio to 8/3 kept.
    """
    from lit_codec.nn.transformer import Block

    heads = global_heads(width)

    def block(ratio: float) -> int:
        config = TransformerConfig(width=width, depth=1, heads=heads, mlp_ratio=ratio)
        return sum(p.numel() for p in Block(config).parameters())

    one = TransformerConfig(width=width, depth=1, heads=heads)
    base = count(vocab, {"pattern": pattern, "global_config": one}) - block(one.mlp_ratio)
    fixed, per_hidden = block(1.0) - 3 * width * width, 3 * width  # SwiGLU: 3 matrices
    best = None
    for depth in range(1, 64):
        hidden = ((target - base) / depth - fixed) / per_hidden
        ratio = hidden / width
        if 0.5 <= ratio <= 12 and (
            best is None or abs(ratio - 8 / 3) < abs(best.mlp_ratio - 8 / 3)
        ):
            best = TransformerConfig(width=width, depth=depth, heads=heads, mlp_ratio=ratio)
    if (
        best is None
        or abs(count(vocab, {"pattern": pattern, "global_config": best}) / target - 1) > 0.05
    ):
        raise SystemExit(f"no {pattern} model of width {width} matches {target} parameters")
    return best


class Step:
    """One training step of one pattern on fixed random sequences."""

    def __init__(self, kwargs: dict, batch: int, seed: int = 0) -> None:
        vocab = vocabulary()
        torch.manual_seed(seed)
        self.model = MultiScaleLM.from_vocabulary(vocab, **kwargs).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        codes = torch.randint(0, CODES, (batch, FRAMES, N_Q), generator=g)  # (B, F, n_q)
        self.ids = vocab.codebook_range(0)[0] + torch.arange(N_Q) * CODES + codes  # (B, F, n_q)
        self.tokens = batch * FRAMES * N_Q

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model.loss(self.model(self.ids), self.ids, check=False).loss
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    def flops(self) -> int:
        """FLOPs of one forward + backward (matmuls, attention)."""

        def step() -> None:
            self.model.loss(self.model(self.ids), self.ids, check=False).loss.backward()

        total = training_flops(step)
        self.optimizer.zero_grad(set_to_none=True)
        return total


def matmul_rate(tokens: int, width: int, rounds: int) -> float:
    """FLOP/s of ``(tokens x width) @ (width x 4 width)`` on this thread."""
    x, w = torch.randn(tokens, width), torch.randn(width, 4 * width)
    t = compare({"mm": lambda: x @ w}, rounds=max(rounds, 5), warmup=2)["mm"]
    return 2 * tokens * width * 4 * width / t


def peak_memory(pattern: str, args) -> float:
    """Peak resident memory of a fresh process's steps, in MB (see the module doc)."""
    command = [sys.executable, __file__, "--memory-of", pattern, "--batch", str(args.batch),
               "--width", str(args.width), "--depth", str(args.depth)]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_mb"]


def _status(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def memory_child(args) -> None:
    step = Step(configs(args.width, args.depth)[args.memory_of], args.batch)
    before = _status("VmRSS")
    try:  # reset the peak to the current size (Linux >= 4.0), so that only the steps count
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    for _ in range(2):
        step()
    print(json.dumps({"peak_mb": _status("VmHWM") - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--memory-of", choices=PATTERNS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    one_thread()
    if args.memory_of:
        return memory_child(args)
    kwargs = configs(args.width, args.depth)
    steps = {name: Step(kwargs[name], args.batch) for name in PATTERNS}
    params = {name: sum(p.numel() for p in s.model.parameters()) for name, s in steps.items()}
    for name in PATTERNS:
        g = kwargs[name]["global_config"]
        local = kwargs[name].get("local_config")
        extra = f", local {local.depth} x {local.width}" if local is not None else ""
        print(f"{name:<10} global {g.depth} x {g.width} (mlp ratio {g.mlp_ratio:.2f}){extra}: "
              f"{params[name] / 1e6:.2f} M parameters ({params[name] / params['multiscale'] - 1:+.1%})")  # fmt: skip
    start = time.perf_counter()
    times = compare({name: s for name, s in steps.items()}, rounds=args.rounds, warmup=1)
    flops = {name: s.flops() for name, s in steps.items()}
    rate = matmul_rate(args.batch * FRAMES, args.width, args.rounds)
    memory = {name: peak_memory(name, args) for name in PATTERNS}
    tokens = steps["multiscale"].tokens
    print(f"machine: (tokens x {args.width}) @ ({args.width} x {4 * args.width}) matmul "
          f"{rate / 1e9:.1f} GFLOP/s on one thread")  # fmt: skip
    for name in PATTERNS:
        achieved = flops[name] / times[name]
        print(f"{name:<10} {times[name] * 1e3:8.0f} ms/step  {tokens / times[name]:8.0f} tokens/s  "
              f"peak {memory[name]:7.0f} MB  {flops[name] / 1e9:7.1f} GFLOP/step  "
              f"{achieved / 1e9:5.1f} GFLOP/s = {achieved / rate:.2f} of the matmul rate")  # fmt: skip
    print(f"({time.perf_counter() - start:.0f} s)")
    speed = {name: tokens / times[name] for name in PATTERNS}
    print("peak memory, delay / multiscale:")
    print_ratio(memory["delay"] / memory["multiscale"])
    print("peak memory, flat / multiscale:")
    print_ratio(memory["flat"] / memory["multiscale"])
    print("multiscale step's achieved FLOP rate / matmul rate:")
    print_ratio(flops["multiscale"] / times["multiscale"] / rate)
    print("tokens/s, multiscale / delay:")
    print_ratio(speed["multiscale"] / speed["delay"])
    print("tokens/s, multiscale / the faster of flat and delay:")
    print_ratio(speed["multiscale"] / max(speed["flat"], speed["delay"]))


if __name__ == "__main__":
    main()
