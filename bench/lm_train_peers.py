"""Codec-LM training speed against the peers' own code: moshi, MEGABYTE-pytorch, MusicGen.

Issue #15. Every model gets the same batch (``--batch`` x ``--frames`` frames x 8 codebooks
of 1024 codes, random, speech16k-like at 50 frames/s), random weights, one thread, and one
training step = forward, cross-entropy of every code, backward, AdamW step (lr 1e-4).
Figures: milliseconds per step, median of alternating rounds (one warm-up step each, then
all models in one rotation per round), in process CPU time (one thread, so the time the
step computed; on a machine shared with other jobs the wall time also counts the time the
process waited for a core, printed in brackets), and training tokens per second
(``batch x frames x 8`` codes / step time). ``--flops`` also counts each step's FLOPs.

Comparisons (each prints a ``ratio:`` line, ours' tokens/s over the peer's, X > 1: ours is
faster):

(a) moshi 0.2.13 ``LMModel`` (temporal transformer + depformer) vs our multi-scale model;
(b) MEGABYTE-pytorch 0.3.6 ``MEGABYTE`` (two stages: frames, then the 8 codes of a frame) vs
    the same multi-scale model;
(c) audiocraft 1.3.0 ``LMModel`` (MusicGen, delay pattern) vs our core running the delay
    pattern; goal of (a)-(c): >= 1.5;
(d) each peer's own architecture re-expressed in our config (same widths, depths, heads,
    MLP kind and hidden width, norm, local context and per-step weights where the peer has
    them) vs the peer: the implementations compared on one architecture; goal >= 1.2.

Sizes (defaults, ``--width 384 --depth 6``; heads of 64 channels everywhere, as the peers
use): ours multi-scale = global 384 x 6 + local 192 x 2 (the ``recipes/lm/se/cpu.yaml``
shape, 17.7 M parameters), ours delay = 384 x 6 (16.9 M). The peers are sized to the same
parameter count (+-5 %, printed; the script stops if one is off) in their own published
shapes:

- moshi: main 384 x 6, its 7B model's kwargs scaled down (``gating="silu"``,
  ``hidden_scale=4.125``, ``norm="rms_norm_f32"``, rope, no layer scale), depformer a
  quarter as wide (96 x 2, ``depformer_weights_per_step=True``,
  ``depformer_multi_linear=True``, no positional embedding), ``context`` = the frames;
  ``delays`` all 0 (9 entries: the text stream plus 8 audio codebooks; the 7B model delays
  the acoustic codebooks by one frame, which changes no computation). The text stream is
  fed its padding token (``existing_text_padding_id``) and ``text_card`` is 32; the text
  logits are computed (they are part of its forward) but only the audio codes enter the
  loss: the masked cross-entropy of ``LMOutput.logits``, as moshi-finetune computes it;
- MEGABYTE: ``dim=(384, 192)``, ``heads=6``, ``dim_head=64``, ``ff_mult=4`` (GELU), the
  global depth that matches the parameter count (8: its tables are shared by all codebooks,
  see below), ``flash_attn=True`` (its SDPA path; the default einsum path was slower here),
  its own loss (``return_loss=True``). It has one vocabulary and one output head for every
  position of every stage, and ignores ``pad_id`` (0) in its loss: the codes enter as
  ``code + 1`` (``num_tokens=1025``), so no code is ignored and its head is as wide as one
  of ours;
- MusicGen: 384 x 6, ``musicgen_lm.yaml``'s settings (pre-norm LayerNorm, GELU x 4, no
  biases, gaussian init, ``memory_efficient=True``: SDPA through audiocraft's ``'torch'``
  backend, sinusoidal positions), ``DelayedPatternProvider(8)``, no conditioner (a
  ``ConditionFuser`` with its four fuse methods empty), ``compute_predictions`` and the
  per-codebook masked cross-entropy of its ``MusicGenSolver``.

Our side: ``MultiScaleLM.loss`` (which also counts per-codebook accuracy, as training does).
In (d) our model keeps its own embedding tables and heads (one per codebook), so its
parameter count differs from MEGABYTE's (shared tables) and is printed, not matched.

Peers are imported through :mod:`peers` (``bench/peers``): stand-in modules for what they
import but never run here. moshi needs none when ``huggingface_hub``, ``safetensors`` and
``sentencepiece`` are installed (else empty stand-ins); ``NO_TORCH_COMPILE=1`` (moshi's own
switch) keeps its output RMSNorm from being compiled on the first CPU call (its layers
already turn ``torch.compile`` off on CPU). audiocraft: ``audiocraft.models.lm`` is imported
without the package ``__init__`` (which imports every model and data set), with stand-ins
for ``xformers.ops`` (``unbind`` = :func:`torch.unbind`), ``flashy``, ``omegaconf``, ``av``,
``julius``, ``librosa``, ``torchaudio``, ``spacy`` and ``num2words``. MEGABYTE needs only
einops, beartype, packaging and tqdm. The stand-ins used are printed.

Install the peers: ``pip install --no-deps moshi==0.2.13 audiocraft==1.3.0
MEGABYTE-pytorch==0.3.6 einops beartype``.
Run: ``OMP_NUM_THREADS=1 python bench/lm_train_peers.py [--rounds 3] [--batch 2]
[--width 384 --depth 6] [--peers moshi,megabyte,musicgen] [--no-arch]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")  # moshi reads it at import

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
import peers
import torch
import torch.nn.functional as F
from _common import one_thread, print_ratio, training_flops
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lit_codec.lm import CodecInfo, Vocabulary  # noqa: E402
from lit_codec.nn import MultiScaleLM, TransformerConfig  # noqa: E402

N_Q, CODES = 8, 1024
TEXT_CARD = 32  # moshi's text vocabulary: tiny (its text stream only carries padding here)
MOSHI_HIDDEN_SCALE = 4.125  # moshi's 7B model


def heads(width: int) -> int:
    """Heads of 64 channels (at least one), as every peer here uses."""
    return max(1, width // 64)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def vocabulary() -> Vocabulary:
    codec = CodecInfo("bench", 16000, 50.0, N_Q, CODES)
    return Vocabulary.build(codec, tasks=["se"], segments=["noisy", "audio"])


# --------------------------------------------------------------------------- ours
def ours(vocab: Vocabulary, seed: int = 0, **kwargs) -> MultiScaleLM:
    torch.manual_seed(seed)
    return MultiScaleLM.from_vocabulary(vocab, **kwargs)


def ours_multiscale(vocab: Vocabulary, width: int, depth: int, local_width: int,
                    local_depth: int) -> MultiScaleLM:  # fmt: skip
    """Our multi-scale model: the recipes' shape (global W x D, local W / 2 x 2)."""
    return ours(vocab, pattern="multiscale",
                global_config=TransformerConfig(width=width, depth=depth, heads=heads(width)),
                local_config=TransformerConfig(width=local_width, depth=local_depth,
                                               heads=heads(local_width)))  # fmt: skip


def ours_delay(vocab: Vocabulary, width: int, depth: int) -> MultiScaleLM:
    return ours(vocab, pattern="delay",
                global_config=TransformerConfig(width=width, depth=depth, heads=heads(width)))  # fmt: skip


def moshi_ffn_ratio(width: int) -> float:
    """Hidden width / width of moshi's SiLU gating with ``hidden_scale`` 4.125."""
    return (2 * int(MOSHI_HIDDEN_SCALE * width)) // 3 / width


def ours_as_moshi(vocab: Vocabulary, width: int, depth: int, dep_width: int,
                  dep_depth: int) -> MultiScaleLM:  # fmt: skip
    """moshi's architecture in our config: SwiGLU of its hidden width, RMSNorm, rope, a
    depformer-like local stack with per-step weights and the global output added at every
    position through one projection per codebook."""
    return ours(vocab, pattern="multiscale",
                global_config=TransformerConfig(width=width, depth=depth, heads=heads(width),
                                                mlp_ratio=moshi_ffn_ratio(width)),
                local_config=TransformerConfig(width=dep_width, depth=dep_depth,
                                               heads=heads(dep_width),
                                               mlp_ratio=moshi_ffn_ratio(dep_width)),
                local_context="every", local_weights_per_step=True)  # fmt: skip


def ours_as_megabyte(vocab: Vocabulary, width: int, depth: int, local_width: int,
                     local_depth: int) -> MultiScaleLM:  # fmt: skip
    """MEGABYTE's architecture in our config: GELU x 4, RMSNorm, its heads in both stages
    (so the local heads are narrower than its 64), the global output at every local position."""
    h = heads(width)
    return ours(vocab, pattern="multiscale",
                global_config=TransformerConfig(width=width, depth=depth, heads=h, mlp="gelu",
                                                mlp_ratio=4.0),
                local_config=TransformerConfig(width=local_width, depth=local_depth, heads=h,
                                               mlp="gelu", mlp_ratio=4.0),
                local_context="every")  # fmt: skip


def ours_as_musicgen(vocab: Vocabulary, width: int, depth: int) -> MultiScaleLM:
    """MusicGen's architecture in our config: delay pattern, GELU x 4, LayerNorm, no biases."""
    return ours(vocab, pattern="delay",
                global_config=TransformerConfig(width=width, depth=depth, heads=heads(width),
                                                mlp="gelu", mlp_ratio=4.0, norm="layer"))  # fmt: skip


# --------------------------------------------------------------------------- peers
def build_moshi(width: int, depth: int, dep_width: int, dep_depth: int, context: int,
                seed: int = 0) -> nn.Module:  # fmt: skip
    """moshi's ``LMModel``: its 7B model's kwargs (``loaders._lm_kwargs``) at this size."""
    lm = peers.moshi_lm()
    torch.manual_seed(seed)
    return lm.LMModel(
        delays=[0] * (N_Q + 1), n_q=N_Q, dep_q=N_Q, card=CODES, text_card=TEXT_CARD,
        dim=width, num_heads=heads(width), num_layers=depth, hidden_scale=MOSHI_HIDDEN_SCALE,
        causal=True, layer_scale=None, context=context, max_period=10000, gating="silu",
        norm="rms_norm_f32", positional_embedding="rope",
        depformer_dim=dep_width, depformer_dim_feedforward=int(MOSHI_HIDDEN_SCALE * dep_width),
        depformer_num_heads=heads(dep_width), depformer_num_layers=dep_depth,
        depformer_layer_scale=None, depformer_multi_linear=True, depformer_context=N_Q,
        depformer_max_period=10000, depformer_gating="silu", depformer_pos_emb="none",
        depformer_weights_per_step=True,
    )  # fmt: skip


def build_megabyte(width: int, depth: int, local_width: int, local_depth: int, frames: int,
                   seed: int = 0) -> nn.Module:  # fmt: skip
    MEGABYTE = peers.megabyte()
    torch.manual_seed(seed)
    return MEGABYTE(num_tokens=CODES + 1, dim=(width, local_width), depth=(depth, local_depth),
                    max_seq_len=(frames, N_Q), dim_head=64, heads=heads(width), ff_mult=4,
                    pad_id=0, flash_attn=True)  # fmt: skip


def megabyte_depth(width: int, local_width: int, local_depth: int, frames: int,
                   target: int) -> int:  # fmt: skip
    """The global depth that brings MEGABYTE nearest ``target`` parameters (linear in depth)."""
    one = count(build_megabyte(width, 1, local_width, local_depth, frames))
    two = count(build_megabyte(width, 2, local_width, local_depth, frames))
    return max(1, round(1 + (target - one) / (two - one)))


def build_musicgen(width: int, depth: int, condition: bool = False, seed: int = 0) -> nn.Module:
    """MusicGen's ``LMModel`` (``musicgen_lm.yaml``'s transformer settings, delay pattern).

    ``condition``: a text condition for classifier-free guidance, a ``LUTConditioner``
    (one token per description, ``'noop'`` tokenizer) prepended to the input (its T5
    conditioner would need transformers' weights); else no conditioner at all.
    """
    lm = peers.audiocraft_lm()
    from audiocraft.modules.codebooks_patterns import DelayedPatternProvider
    from audiocraft.modules.conditioners import (
        ConditionFuser,
        ConditioningProvider,
        LUTConditioner,
    )

    torch.manual_seed(seed)
    conditioners, prepend = {}, []
    if condition:
        conditioners["description"] = LUTConditioner(n_bins=16, dim=width, output_dim=width,
                                                     tokenizer="noop")  # fmt: skip
        prepend = ["description"]
    fuser = ConditionFuser({"sum": [], "prepend": prepend, "cross": [], "input_interpolate": []})
    return lm.LMModel(
        DelayedPatternProvider(N_Q), ConditioningProvider(conditioners), fuser,
        n_q=N_Q, card=CODES, dim=width, num_heads=heads(width), num_layers=depth,
        hidden_scale=4, norm="layer_norm", norm_first=True, bias_proj=False, bias_ff=False,
        bias_attn=False, activation="gelu", causal=True, memory_efficient=True,
        attention_as_float32=False, layer_scale=None, positional_embedding="sin",
        weight_init="gaussian", depthwise_init="current", zero_bias_init=True,
    )  # fmt: skip


# --------------------------------------------------------------------------- steps
class Step:
    """One training step of one model on fixed random codes ``(B, frames, 8)``."""

    def __init__(self, model: nn.Module, loss: Callable[[], torch.Tensor], tokens: int) -> None:
        self.model, self.loss, self.tokens = model.train(), loss, tokens
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def __call__(self) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def ours_step(model: MultiScaleLM, ids: torch.Tensor) -> Step:
    return Step(model, lambda: model.loss(model(ids), ids, check=False).loss, ids.numel())


def moshi_step(model: nn.Module, codes: torch.Tensor, pad_text: int) -> Step:
    B, T, _ = codes.shape
    text = torch.full((B, 1, T), pad_text, dtype=torch.long)
    stream = torch.cat((text, codes.transpose(1, 2)), dim=1)  # (B, 1 + n_q, T)
    audio = stream[:, 1:]  # (B, n_q, T)

    def loss() -> torch.Tensor:
        out = model(stream)  # logits (B, n_q, T, card), mask (B, n_q, T)
        return F.cross_entropy(out.logits[out.mask].float(), audio[out.mask])

    return Step(model, loss, codes.numel())


def megabyte_step(model: nn.Module, codes: torch.Tensor) -> Step:
    ids = codes + 1  # (B, frames, n_q); 0 is its pad_id, ignored by its loss
    return Step(model, lambda: model(ids, return_loss=True), codes.numel())


def musicgen_step(model: nn.Module, codes: torch.Tensor) -> Step:
    targets = codes.transpose(1, 2).contiguous()  # (B, K, T)

    def loss() -> torch.Tensor:
        out = model.compute_predictions(targets, [], {})  # logits (B, K, T, card), mask (B, K, T)
        ce = torch.zeros(())
        for k in range(N_Q):  # MusicGenSolver._compute_cross_entropy
            mask = out.mask[:, k].reshape(-1)
            logits = out.logits[:, k].reshape(-1, out.logits.shape[-1])[mask]
            ce = ce + F.cross_entropy(logits, targets[:, k].reshape(-1)[mask])
        return ce / N_Q

    return Step(model, loss, codes.numel())


def timed(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1
          ) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Median (wall, process CPU) seconds per call of each function, in alternating rounds
    (``_common.compare`` with the CPU clock too: on a loaded machine the CPU time of a
    one-thread step leaves out the time the process waited for a core)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in fns}


def flops(step: Step) -> int:
    """FLOPs of one forward + backward (:func:`_common.training_flops`)."""
    total = training_flops(lambda: step.loss().backward())
    step.optimizer.zero_grad(set_to_none=True)
    return total


# --------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--width", type=int, default=384, help="global width of every model")
    p.add_argument("--depth", type=int, default=6, help="global depth of ours, moshi, MusicGen")
    p.add_argument("--local-width", type=int, default=None, help="ours' local width (W / 2)")
    p.add_argument("--local-depth", type=int, default=2)
    p.add_argument("--dep-width", type=int, default=None, help="moshi's depformer (W / 4)")
    p.add_argument("--dep-depth", type=int, default=2)
    p.add_argument("--peers", default="moshi,megabyte,musicgen")
    p.add_argument(
        "--no-arch", action="store_true", help="skip (d), the peers' architectures in ours"
    )
    p.add_argument("--flops", action="store_true", help="also count each step's FLOPs")
    a = p.parse_args()
    one_thread()
    W, D = a.width, a.depth
    Wl, Wd = a.local_width or W // 2, a.dep_width or W // 4
    chosen = [name for name in a.peers.split(",") if name]
    vocab = vocabulary()
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, CODES, (a.batch, a.frames, N_Q), generator=g)  # (B, F, n_q)
    ids = vocab.codebook_range(0)[0] + torch.arange(N_Q) * CODES + codes  # (B, F, n_q)

    steps: dict[str, Step] = {}
    label: dict[str, str] = {}
    pairs: list[tuple[str, str, str, float]] = []  # (title, ours, peer, goal)
    if {"moshi", "megabyte"} & set(chosen):
        steps["ours multiscale"] = ours_step(ours_multiscale(vocab, W, D, Wl, a.local_depth), ids)
        label["ours multiscale"] = f"global {W} x {D}, local {Wl} x {a.local_depth}"
    target = count(steps["ours multiscale"].model) if "ours multiscale" in steps else 0
    if "moshi" in chosen:
        model = build_moshi(W, D, Wd, a.dep_depth, context=a.frames)
        steps["moshi"] = moshi_step(model, codes, model.text_padding_token_id)
        label["moshi"] = f"main {W} x {D}, depformer {Wd} x {a.dep_depth} per step"
        pairs.append(("(a) moshi LMModel vs our multi-scale", "ours multiscale", "moshi", 1.5))
    if "megabyte" in chosen:
        Dm = megabyte_depth(W, Wl, a.local_depth, a.frames, target)
        steps["megabyte"] = megabyte_step(build_megabyte(W, Dm, Wl, a.local_depth, a.frames), codes)
        label["megabyte"] = f"stages ({W}, {Wl}) x ({Dm}, {a.local_depth})"
        pairs.append(("(b) MEGABYTE vs our multi-scale", "ours multiscale", "megabyte", 1.5))
    if "musicgen" in chosen:
        steps["ours delay"] = ours_step(ours_delay(vocab, W, D), ids)
        label["ours delay"] = f"{W} x {D}"
        steps["musicgen"] = musicgen_step(build_musicgen(W, D), codes)
        label["musicgen"] = f"{W} x {D}, delay"
        pairs.append(("(c) MusicGen LMModel vs our delay pattern", "ours delay", "musicgen", 1.5))
    if not a.no_arch:
        if "moshi" in chosen:
            steps["ours as moshi"] = ours_step(ours_as_moshi(vocab, W, D, Wd, a.dep_depth), ids)
            label["ours as moshi"] = label["moshi"]
            pairs.append(("(d) moshi vs its architecture in ours", "ours as moshi", "moshi", 1.2))
        if "megabyte" in chosen:
            steps["ours as megabyte"] = ours_step(ours_as_megabyte(vocab, W, Dm, Wl, a.local_depth), ids)  # fmt: skip
            label["ours as megabyte"] = label["megabyte"]
            pairs.append(("(d) MEGABYTE vs its architecture in ours", "ours as megabyte", "megabyte", 1.2))  # fmt: skip
        if "musicgen" in chosen:
            steps["ours as musicgen"] = ours_step(ours_as_musicgen(vocab, W, D), ids)
            label["ours as musicgen"] = label["musicgen"]
            pairs.append(("(d) MusicGen vs its architecture in ours", "ours as musicgen", "musicgen", 1.2))  # fmt: skip

    params = {name: count(s.model) for name, s in steps.items()}
    print(f"batch {a.batch} x {a.frames} frames x {N_Q} codebooks x {CODES} codes, one thread; "
          f"stand-ins: {', '.join(peers.STAND_INS) or 'none'}")  # fmt: skip
    versus = {peer: mine for title, mine, peer, _ in pairs if not title.startswith("(d)")}
    versus.update({mine: peer for title, mine, peer, _ in pairs if title.startswith("(d)")})
    for name in steps:
        other = versus.get(name)
        diff = f"{params[name] / params[other] - 1:+6.1%} vs {other}" if other else ""
        matched = other in steps and not name.startswith("ours as")
        warn = (
            "  (outside +-5 %)" if matched and abs(params[name] / params[other] - 1) > 0.05 else ""
        )
        print(f"{name:<17} {params[name] / 1e6:6.2f} M parameters {diff:<24} ({label[name]}){warn}")
    start = time.perf_counter()
    times = timed(dict(steps), rounds=a.rounds, warmup=1)
    print(f"({a.rounds} rounds after one warm-up step each: {time.perf_counter() - start:.0f} s; "
          "tokens/s and ratios from CPU time, wall time in brackets)")  # fmt: skip
    speed = {name: steps[name].tokens / cpu for name, (_, cpu) in times.items()}
    for name in steps:
        wall, cpu = times[name]
        extra = f"  {flops(steps[name]) / 1e9:6.1f} GFLOP/step" if a.flops else ""
        print(f"{name:<17} {cpu * 1e3:7.0f} ms/step [{wall * 1e3:6.0f}]  {speed[name]:6.0f} "
              f"tokens/s [{steps[name].tokens / wall:6.0f}]{extra}")  # fmt: skip
    for title, mine, peer, goal in pairs:
        print(f"{title}: {speed[mine]:.0f} vs {speed[peer]:.0f} tokens/s at "
              f"{params[mine] / 1e6:.2f} vs {params[peer] / 1e6:.2f} M parameters (goal >= {goal})")  # fmt: skip
        print_ratio(speed[mine] / speed[peer])


if __name__ == "__main__":
    main()
