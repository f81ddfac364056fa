"""Codec-LM generation speed against the peers' own decoders: moshi ``LMGen``, MusicGen.

Issue #16. Batch 1, one thread, random weights, 8 codebooks x 1024 codes, the models of
``lm_train_peers.py`` (same builders and sizes: ours multi-scale 17.7 M parameters, moshi
17.6 M, ours delay 16.9 M, MusicGen 17.1 M with its condition table). Every side continues
the same number of prefix frames (``--prefix`` noisy frames plus the 5 marker frames of our
``se`` template: 105 by default) with ``--frames`` new frames (150), sampling with top-k 250
(the peers' default) at temperature 1, and nothing may stop early (ours: ``min_frames =
max_frames``; the peers have no end token: they run the given number of steps). Figure:
generated frames per second, the whole call timed (prefix included), median of alternating
rounds after a short warm-up call each, in process CPU time (wall time in brackets, see
``lm_train_peers.py``).

Comparisons (``ratio:`` lines, ours' frames/s over the peer's; goal >= 1.5 each):

- moshi 0.2.13 ``LMGen`` (its streaming state) vs our multi-scale model through
  :func:`lit_codec.lm.generate.generate`, without and with classifier-free guidance
  (``cfg_coef`` 1 and ``--cfg``). ``LMGen`` takes frames one at a time only, so moshi's
  prefix is fed as 105 single steps (``depformer_replace_tokens`` forces the prefix codes, the
  depformer does not run), then 150 steps with the depformer sampling the 8 codebooks. Its
  guidance here is ``cfg_is_no_text=True`` (the unconditional half without the text stream:
  no conditioner needed; the cost is the same as a conditioned one). Ours runs the prefix as
  one chunk, then one global step and 8 local steps per frame; its guidance is the null
  condition (``Prefix.condition_mask``: the noisy frames emptied), in a batch of 2.
- MusicGen (audiocraft 1.3.0 ``LMModel.generate``, delay pattern) vs our core's delay
  pattern through ``generate``, ``cfg_coef`` 1 and ``--cfg``. MusicGen is given a prompt of
  the prefix's frames (random codes) and a text condition (a ``LUTConditioner`` token
  prepended to the input: its T5 conditioner needs downloaded weights; audiocraft's CFG
  needs some condition). Also printed, not a goal: MusicGen without any condition, where it
  runs no guidance at all.

What each decoder's cache does (read in their code, 2026-12):

- moshi: ``StreamingMultiheadAttention`` keeps a ``RingKVCache`` of ``context`` slots per
  layer (``context`` must be set, here prefix + frames); ``RingKVCache.complete`` returns the
  whole ring, so every step's attention runs over all ``context`` slots, the unwritten ones
  masked out by the positions it returns. The depformer runs 8 single steps per frame in its
  own streaming state (``weights_per_step``: capacity 8), entered afresh every frame. With
  CFG the batch is doubled (``_init_streaming_state``: ``batch_size *= 2``); at
  ``cfg_coef`` 1 it is not.
- MusicGen: ``StreamingMultiheadAttention._complete_kv`` concatenates the step's keys and
  values to the past ones (``torch.cat``, a new tensor every step and layer).
  ``LMModel.generate`` doubles the batch whenever conditions are given (conditional + null
  conditions in one forward), *even at* ``cfg_coef=1``: the guidance formula then returns
  the conditional logits, but both halves are computed. The script checks the batch the
  transformer sees.
- MEGABYTE-pytorch (not run here): ``MEGABYTE.generate`` has no cache; every sampled token
  runs the full forward over the whole sequence so far, and it samples one token at a time
  (8 forwards per frame).
- ours: preallocated caches (:class:`~lit_codec.nn.kv_cache.KVCache`), attention over the
  positions written so far only; the local stack's cache is reset every frame.

Run: ``OMP_NUM_THREADS=1 python bench/lm_generate_peers.py [--prefix 100] [--frames 150]
[--rounds 3] [--cfg 3] [--peers moshi,musicgen]`` (install the peers as in
``lm_train_peers.py``).
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # moshi reads it at import

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
import peers
import torch
from _common import one_thread, print_ratio
from lm_train_peers import (
    CODES,
    N_Q,
    build_moshi,
    build_musicgen,
    count,
    ours_delay,
    ours_multiscale,
    timed,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lit_codec.lm import CodecInfo, build_sequence, load_templates, vocabulary_for  # noqa: E402
from lit_codec.lm.generate import GenerationConfig, Prefix, generate  # noqa: E402

TOP_K = 250


def ours_run(network, vocab, prefix: Prefix, cfg_coef: float) -> Callable[[int], None]:
    def run(frames: int) -> None:
        config = GenerationConfig(max_frames=frames, min_frames=frames, top_k=TOP_K,
                                  cfg_coef=cfg_coef, seed=0)  # fmt: skip
        result = generate(network, vocab, prefix, config)
        assert int(result.lengths.min()) == frames, result.lengths

    return run


def moshi_run(model, codes: torch.Tensor, cfg_coef: float, seen: dict) -> Callable[[int], None]:
    """``LMGen``: the prefix ``codes`` (1, n_q, P) forced step by step, then ``frames`` steps."""
    LMGen = peers.moshi_lm().LMGen
    gen = LMGen(model, use_sampling=True, temp=1.0, top_k=TOP_K, cfg_coef=cfg_coef,
                cfg_is_no_text=cfg_coef != 1.0)  # fmt: skip
    no_input = torch.zeros(1, 0, 1, dtype=torch.long)  # no user stream (n_q == dep_q)

    def run(frames: int) -> None:
        with gen.streaming(1):
            seen["batch"] = gen.lm_model.transformer._streaming_state.batch_size
            for t in range(codes.shape[-1]):
                gen.step(no_input, depformer_replace_tokens=codes[:, :, t : t + 1])
            for _ in range(frames):
                out = gen.step(no_input)  # (1, 1 + n_q, 1)
        assert out is not None and out.shape == (1, 1 + N_Q, 1), out

    return run


def musicgen_run(model, codes: torch.Tensor, cfg_coef: float, condition: bool
                 ) -> Callable[[int], None]:  # fmt: skip
    from audiocraft.modules.conditioners import ConditioningAttributes

    def run(frames: int) -> None:
        attributes = [ConditioningAttributes(text={"description": "speech"})] if condition else []
        out = model.generate(prompt=codes, conditions=attributes,
                             max_gen_len=codes.shape[-1] + frames, use_sampling=True, temp=1.0,
                             top_k=TOP_K, cfg_coef=cfg_coef, two_step_cfg=False,
                             remove_prompts=True)  # fmt: skip
        assert out.shape == (1, N_Q, frames), out.shape

    return run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prefix", type=int, default=100, help="noisy frames in the prefix")
    p.add_argument("--frames", type=int, default=150, help="frames generated")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cfg", type=float, default=3.0, help="cfg_coef of the guided runs")
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--local-width", type=int, default=None, help="ours' local width (W / 2)")
    p.add_argument("--local-depth", type=int, default=2)
    p.add_argument("--dep-width", type=int, default=None, help="moshi's depformer (W / 4)")
    p.add_argument("--dep-depth", type=int, default=2)
    p.add_argument("--peers", default="moshi,musicgen")
    a = p.parse_args()
    one_thread()
    W, D = a.width, a.depth
    Wl, Wd = a.local_width or W // 2, a.dep_width or W // 4
    chosen = [name for name in a.peers.split(",") if name]
    templates = load_templates()
    vocab = vocabulary_for({"se": templates["se"]}, CodecInfo("bench", 16000, 50.0, N_Q, CODES))
    gen = torch.Generator().manual_seed(0)
    noisy = torch.randint(0, CODES, (a.prefix, N_Q), generator=gen).numpy()
    sequence = build_sequence(vocab, templates["se"], {"noisy_codes": noisy, "codes": noisy[:0]})
    prefix = Prefix.from_sequences([sequence], vocab)
    P = int(prefix.lengths[0])
    codes = torch.randint(0, CODES, (1, N_Q, P), generator=gen)  # the peers' prefix / prompt

    runs: dict[str, Callable[[int], None]] = {}
    params: dict[str, int] = {}
    pairs: list[tuple[str, str, str]] = []
    seen: dict[str, dict] = {}
    if "moshi" in chosen:
        mine = ours_multiscale(vocab, W, D, Wl, a.local_depth).eval()
        moshi = build_moshi(W, D, Wd, a.dep_depth, context=P + a.frames).eval()
        params["ours multiscale"], params["moshi"] = count(mine), count(moshi)
        for tag, coef in (("", 1.0), (" cfg", a.cfg)):
            seen["moshi" + tag] = {}
            runs["ours multiscale" + tag] = ours_run(mine, vocab, prefix, coef)
            runs["moshi" + tag] = moshi_run(moshi, codes, coef, seen["moshi" + tag])
            pairs.append((f"moshi LMGen vs our multi-scale, cfg_coef {coef:g}",
                          "ours multiscale" + tag, "moshi" + tag))  # fmt: skip
    if "musicgen" in chosen:
        mine = ours_delay(vocab, W, D).eval()
        musicgen = build_musicgen(W, D, condition=True).eval()
        params["ours delay"], params["musicgen"] = count(mine), count(musicgen)
        batches: list[int] = []
        musicgen.transformer.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))  # fmt: skip
        for tag, coef in (("", 1.0), (" cfg", a.cfg)):
            runs["ours delay" + tag] = ours_run(mine, vocab, prefix, coef)
            runs["musicgen" + tag] = musicgen_run(musicgen, codes, coef, condition=True)
            pairs.append((f"MusicGen generate vs our delay pattern, cfg_coef {coef:g}",
                          "ours delay" + tag, "musicgen" + tag))  # fmt: skip
        runs["musicgen uncond"] = musicgen_run(musicgen, codes, 1.0, condition=False)
    print(f"batch 1, prefix {P} frames + {a.frames} generated, {N_Q} codebooks x {CODES}, "
          f"top-k {TOP_K}, one thread; stand-ins: {', '.join(peers.STAND_INS) or 'none'}")  # fmt: skip
    for name, n in params.items():
        print(f"{name:<16} {n / 1e6:6.2f} M parameters")
    if "musicgen" in chosen:  # the batch MusicGen's transformer sees, with and without CFG
        for tag, coef, cond in (("", 1.0, True), (" cfg", a.cfg, True), (" uncond", 1.0, False)):
            batches.clear()
            musicgen_run(musicgen, codes, coef, cond)(2)
            print(f"musicgen{tag:<8} cfg_coef {coef:g}: transformer batch {max(batches)}")
    start = time.perf_counter()
    for run in runs.values():
        run(4)  # warm-up
    for name, s in seen.items():
        print(f"{name:<16}: streaming batch {s['batch']}")
    times = timed({name: (lambda run=run: run(a.frames)) for name, run in runs.items()},
                  rounds=a.rounds, warmup=0)  # fmt: skip
    print(f"({a.rounds} rounds: {time.perf_counter() - start:.0f} s; frames/s from CPU time, "
          "wall in brackets)")  # fmt: skip
    speed = {name: a.frames / cpu for name, (_, cpu) in times.items()}
    for name, (wall, cpu) in times.items():
        print(f"{name:<16} {cpu:7.2f} s [{wall:6.2f}]  {speed[name]:6.1f} frames/s "
              f"[{a.frames / wall:6.1f}]")  # fmt: skip
    if "musicgen" in chosen:
        print(f"(not a goal) ours delay vs MusicGen without any condition: "
              f"{speed['ours delay'] / speed['musicgen uncond']:.2f}")  # fmt: skip
    for title, mine_name, peer in pairs:
        print(f"{title}: {speed[mine_name]:.1f} vs {speed[peer]:.1f} frames/s (goal >= 1.5)")
        print_ratio(speed[mine_name] / speed[peer])


if __name__ == "__main__":
    main()
