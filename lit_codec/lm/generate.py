"""Generate the target of a task sequence with a codec LM: KV cache, top-k/top-p, CFG.

``generate(network, vocab, prefix, config)`` continues each sequence of a batch of
*prefixes* (the condition part up to and including the target's ``<X_start>`` marker, e.g.
``<start> <se_task> <noisy_start> ... <noisy_end> <audio_start>``; an audio prompt's codec
frames may follow as the start of the target) until the model closes the target with
``<X_end>`` or ``max_frames`` frames were generated. It is plain PyTorch: the network
(:class:`~lit_codec.nn.multiscale_lm.MultiScaleLM`) and its caches come from ``nn/``.

**The order of generation** is the codebook pattern's
(:meth:`CodebookPattern.order <lit_codec.nn.codebook_patterns.CodebookPattern.order>`):
the cells of one order are sampled together (one cell for ``multiscale``/``flat``, a whole
frame for ``parallel``, an anti-diagonal for ``delay``), from the output of the global step
that :meth:`~lit_codec.nn.codebook_patterns.CodebookPattern.readback` names. For
``multiscale`` the global stack advances one frame with its KV cache, then the local stack
generates the ``n_q`` codebooks of the next frame one at a time with its own small cache
(reset every frame). Nothing is concatenated per step: both caches are preallocated
(:class:`~lit_codec.nn.kv_cache.KVCache`) and the transformer is the training one, whose
one-position step skips the per-call work a single position does not need
(:meth:`Transformer._decode_one <lit_codec.nn.transformer.Transformer._decode_one>`).

**At batch 1 on a CPU thread a step is mostly fixed per-operation cost** (a frame of a
``multiscale`` model runs the global stack once and the local stack ``n_q`` times), so the
loop keeps the operations per sampled codebook few: the projection of a frame's global
output to the local width is made once per frame, the codebook restrictions are built once,
which cells are fixed (prefix, past ``max_frames``, after ``<X_end>``) is known on the host,
a draw takes one uniform number per row (:func:`sample_logits`), and the host waits on the
device once per frame (did a sequence just end?). ``bench/lm_generate.py`` measures it.

**Streaming**: ``on_frames`` receives each sequence's target frames as :class:`FrameChunk` s
as soon as all their codebooks are known (with ``delay``, ``n_q - 1`` steps after a frame's
codebook 0), so a streaming codec decoder can turn them into audio while the rest is
generated.

**Prefixes of different lengths are left-aligned** (right-padded, as a ``TokenBatch``):
frame ``t`` of every sequence sits at position ``t`` of the one shared cache, so no cache
slot ever holds padding, no attention mask is needed and every position is the one the
unpadded sequence has. The shortest prefix is run as one chunk; from there the batch
advances together and a sequence whose prefix is longer is *forced* to its own prefix frames
(its sampled values are discarded) until it reaches its ``<X_start>``. A longer prefix thus
costs single steps instead of part of a chunk: correct first, and cheap when prefixes are of
similar length.

**What may be sampled** where (the layout of :func:`~lit_codec.lm.sequence.build_sequence`:
``... <X_start> c c c <X_end> <end>``, one frame per row, a marker in codebook 0 with
``<pad>`` in the others): codebook ``k`` only the codes of codebook ``k``; codebook 0 also the
target's ``<X_end>``, once ``min_frames`` frames were generated. ``<X_end>`` fills the rest
of its frame with ``<pad>`` and the ``<end>`` frame follows without sampling (the template
fixes it); that sequence is then finished: its further cells are ``<pad>``, and it no longer
matters to the others. A sequence that reaches ``max_frames`` without ``<X_end>`` stops
unfinished.

**Classifier-free guidance** (``cfg_coef != 1``) runs the conditional and the unconditional
sequence in one batch of ``2B``; the unconditional one is the *null condition* of
:func:`~lit_codec.models.codec_lm.drop_conditions` (the condition segments' content frames
become ``<pad>``, continuous frames zero vectors; markers and lengths stay), which
``condition_dropout`` trained. Head logits combine as ``uncond + cfg_coef * (cond -
uncond)`` before the codebook restriction and sampling. ``cfg_coef == 1`` runs the
conditional batch alone.

``use_cache=False`` recomputes the network's full (teacher-forced) forward for every order
instead: the same tokens for the same seed (to float rounding of the logits), for checking
the cached path and timing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_codec.lm.sequence import TaskSequence
from lit_codec.lm.vocab import Vocabulary
from lit_codec.nn.multiscale_lm import MultiScaleLM

__all__ = [
    "FrameChunk",
    "GenerationConfig",
    "GenerationResult",
    "Prefix",
    "generate",
    "sample_logits",
]


@dataclass
class GenerationConfig:
    """How :func:`generate` samples."""

    temperature: float = 1.0
    """Divides the logits before sampling; 0 means greedy decoding."""
    top_k: int | None = None
    """Sample among the ``top_k`` most likely allowed tokens of each codebook; None or 0: all."""
    top_p: float | None = None
    """Nucleus sampling: the smallest set of most likely tokens whose probability reaches
    ``top_p``; None or 1: all."""
    greedy: bool = False
    """Take the most likely token everywhere (the same as ``temperature=0``)."""
    max_frames: int = 1500
    """At most this many frames are generated per sequence (an audio prompt in the prefix
    does not count); a sequence that reaches it stops unfinished."""
    min_frames: int = 0
    """``<X_end>`` may not be chosen before this many frames were generated."""
    cfg_coef: float = 1.0
    """Classifier-free guidance: ``uncond + cfg_coef * (cond - uncond)`` on the logits.
    1.0: off (no unconditional batch is run); 0: unconditional sampling."""
    seed: int | None = 0
    """Seed of the sampling noise (a generator of its own; the global RNG is left alone);
    None: drawn from torch's global generator."""
    use_cache: bool = True
    """Decode with the KV caches. False: recompute the full forward at every step (the same
    tokens, much slower: for checking and timing)."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, not {self.temperature}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 or None, not {self.top_k}")
        if self.top_p is not None and not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1] or None, not {self.top_p}")
        if self.max_frames < 1 or not 0 <= self.min_frames <= self.max_frames:
            raise ValueError(
                f"need 0 <= min_frames <= max_frames and max_frames >= 1, got "
                f"min_frames={self.min_frames}, max_frames={self.max_frames}"
            )

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0


@dataclass
class Prefix:
    """The prefixes of a batch: condition frames up to the target's ``<X_start>`` (plus an
    audio prompt), right-padded like a ``TokenBatch``.

    Attributes:
        ids: ``(B, P, n_q)`` int64 ids; sequence ``i`` holds ``lengths[i]`` frames, then padding.
        lengths: ``(B,)`` frames of each prefix.
        condition_mask: ``(B, P)`` bool, the content frames of condition segments (what the
            null condition empties); needed for classifier-free guidance only.
        continuous: ``(B, P, D)`` continuous condition vectors, or None.
        is_continuous: ``(B, P)`` bool, the frames whose vector replaces codebook 0 (with
            ``continuous``).
    """

    ids: Tensor
    lengths: Tensor
    condition_mask: Tensor | None = None
    continuous: Tensor | None = None
    is_continuous: Tensor | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def from_batch(cls, batch: Any, prompt_frames: int = 0, pad_id: int = 0) -> Prefix:
        """The prefixes of a ``TokenBatch`` (or anything with its attributes).

        A sequence whose ``loss_mask`` marks target tokens is cut before its target's first
        frame (after ``<X_start>``), keeping ``prompt_frames`` of the target as an audio
        prompt; one without (already a prefix) keeps its ``lengths``. Frames past a cut
        become ``pad_id``.
        """
        lengths = batch.lengths.clone()
        loss_mask = getattr(batch, "loss_mask", None)
        if loss_mask is not None:
            marked = loss_mask.any(-1)  # (B, F)
            first = torch.where(marked.any(1), marked.int().argmax(1), lengths)  # (B,)
            lengths = torch.minimum(first + prompt_frames, lengths)
        P = int(lengths.max())

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[:, :P]

        ids = batch.ids[:, :P].clone()  # (B, P, n_q)
        keep = torch.arange(P)[None, :] < lengths[:, None]  # (B, P)
        ids[~keep] = pad_id
        cond = cut(getattr(batch, "condition_mask", None))
        flags = cut(getattr(batch, "is_continuous", None))
        return cls(
            ids,
            lengths,
            None if cond is None else cond & keep,
            cut(getattr(batch, "continuous", None)),
            None if flags is None else flags & keep,
        )

    @classmethod
    def from_sequences(
        cls,
        sequences: Sequence[TaskSequence],
        vocab: Vocabulary,
        prompt_frames: int = 0,
    ) -> Prefix:
        """The prefixes of built sequences (:func:`~lit_codec.lm.sequence.build_sequence`):
        each cut before its target's content, keeping ``prompt_frames`` of it as a prompt."""
        if not sequences:
            raise ValueError("Prefix.from_sequences needs at least one sequence")
        n_q, pad = vocab.codec.n_q, vocab.pad_id
        lengths = [min(s.target.start + prompt_frames, s.target.stop) for s in sequences]
        B, P = len(sequences), max(lengths)
        ids = np.full((B, P, n_q), pad, dtype=np.int64)  # (B, P, n_q)
        cond = np.zeros((B, P), dtype=bool)  # (B, P)
        widths = {s.continuous.shape[1] for s in sequences if s.continuous is not None}
        if len(widths) > 1:
            raise ValueError(f"continuous frames of different widths: {sorted(widths)}")
        continuous = np.zeros((B, P, widths.pop()), np.float32) if widths else None
        is_cont = np.zeros((B, P), dtype=bool) if continuous is not None else None
        embedding = vocab.special("<embedding>")
        for i, (seq, n) in enumerate(zip(sequences, lengths)):
            ids[i, :n] = seq.ids[:n]
            for span in seq.segments:
                if not span.target:
                    cond[i, span.start : min(span.stop, n)] = True
            if continuous is not None and seq.continuous is not None:
                continuous[i, :n] = seq.continuous[:n]
                is_cont[i, :n] = seq.ids[:n, 0] == embedding
        return cls(
            torch.from_numpy(ids),
            torch.tensor(lengths, dtype=torch.int64),
            torch.from_numpy(cond),
            None if continuous is None else torch.from_numpy(continuous),
            None if is_cont is None else torch.from_numpy(is_cont),
        )


@dataclass
class GenerationResult:
    """What :func:`generate` produced.

    Attributes:
        codes: ``(B, frames, n_q)`` int64 generated codes, local to each codebook
            (``0 .. codebook_size - 1``), ``-1`` past each sequence's length; an audio prompt
            of the prefix is not repeated here.
        lengths: ``(B,)`` frames generated per sequence.
        finished: ``(B,)`` bool, the sequence closed its target with ``<X_end>`` (False: it
            reached ``max_frames``).
        ids: ``(B, L, n_q)`` int64 whole sequences: prefix, generated frames, and for
            finished ones ``<X_end>`` and ``<end>``; ``<pad>`` after ``sequence_lengths``.
        sequence_lengths: ``(B,)`` frames of each sequence in ``ids``.
        seconds: wall-clock time of the generation (prefix included).
        frames_per_second: generated frames of the whole batch per second.
    """

    codes: Tensor
    lengths: Tensor
    finished: Tensor
    ids: Tensor
    sequence_lengths: Tensor
    seconds: float
    frames_per_second: float


@dataclass
class FrameChunk:
    """Target frames of one sequence that just became complete (see ``on_frames`` of
    :func:`generate`): every codebook of each frame is known and final."""

    sample: int
    """Index of the sequence in the batch."""
    start: int
    """Index of the chunk's first frame among the sequence's generated frames (its row in
    ``GenerationResult.codes[sample]``; an audio prompt of the prefix is not counted)."""
    codes: Tensor
    """``(frames, n_q)`` int64 codes, local to each codebook (``0 .. codebook_size - 1``), on
    the CPU; ``frames`` may be 0 in the last chunk of a sequence."""
    ended: bool
    """The sequence is done: it closed its target with ``<X_end>`` or reached ``max_frames``;
    this is its last chunk."""


@torch.no_grad()
def generate(
    network: MultiScaleLM,
    vocab: Vocabulary,
    prefix: Prefix | Any,
    config: GenerationConfig | None = None,
    on_frames: Callable[[FrameChunk], None] | None = None,
) -> GenerationResult:
    """Continue every prefix with the target's codec frames; see the module doc.

    Args:
        network: the codec LM (any codebook pattern); run in eval mode, its mode is restored.
        vocab: its vocabulary.
        prefix: a :class:`Prefix`, or a ``TokenBatch``-like object (:meth:`Prefix.from_batch`).
        config: how to sample; None: :class:`GenerationConfig` defaults.
        on_frames: called during generation with each :class:`FrameChunk`: the frames of one
            sequence that became complete since its last chunk (all ``n_q`` codebooks known;
            with the ``delay`` pattern a frame completes ``n_q - 1`` steps after its
            codebook 0, with ``multiscale``/``flat`` at its last codebook, with ``parallel``
            at once), e.g. to decode audio while the rest is generated. Per sequence the
            chunks come in order and their ``codes`` concatenate to
            ``result.codes[i, : result.lengths[i]]``; no frame from its ``<X_end>`` on is
            handed over, and its last chunk (possibly empty) has ``ended=True``, as soon as it
            ended. Called on the generating thread, with gradients off (its time counts in
            ``seconds``).

    Returns:
        the codes, lengths and whole sequences (:class:`GenerationResult`).
    """
    config = config or GenerationConfig()
    if not isinstance(prefix, Prefix):
        prefix = Prefix.from_batch(prefix)
    network.check_vocabulary(vocab)
    n_q, pad = network.n_q, vocab.pad_id
    B, _, width = prefix.ids.shape
    if width != n_q:
        raise ValueError(f"prefix ids must be (B, P, {n_q}), got {tuple(prefix.ids.shape)}")
    plen = [int(n) for n in prefix.lengths]
    if min(plen) < 1:
        raise ValueError(f"every prefix needs at least one frame, got lengths {plen}")
    cfg = config.cfg_coef != 1.0
    if cfg and prefix.condition_mask is None:
        raise ValueError("classifier-free guidance (cfg_coef != 1) needs prefix.condition_mask")
    param = next(network.parameters())
    device = param.device
    end_ids = _target_end_ids(vocab, prefix.ids, plen)  # (B,) the <X_end> of each target

    # the grid of every frame: prefix, room for max_frames, the <end> frame
    F = max(plen) + config.max_frames + 1
    grid = torch.full((B, F, n_q), pad, dtype=torch.long)  # (B, F, n_q)
    cond = torch.zeros(B, F, dtype=torch.bool)  # (B, F)
    continuous = is_continuous = None
    if prefix.continuous is not None and prefix.is_continuous is not None:
        continuous = torch.zeros(B, F, prefix.continuous.shape[-1], dtype=param.dtype)
        is_continuous = torch.zeros(B, F, dtype=torch.bool)
    for i, n in enumerate(plen):
        grid[i, :n] = prefix.ids[i, :n]
        if prefix.condition_mask is not None:
            cond[i, :n] = prefix.condition_mask[i, :n]
        if continuous is not None:
            continuous[i, :n] = prefix.continuous[i, :n]
            is_continuous[i, :n] = prefix.is_continuous[i, :n]
    if cfg:  # rows B..2B-1: the null condition
        grid = torch.cat((grid, grid.masked_fill(cond[..., None], pad)))  # (2B, F, n_q)
        if continuous is not None:
            continuous = torch.cat((continuous, continuous.masked_fill(cond[..., None], 0.0)))
            is_continuous = torch.cat((is_continuous, is_continuous & ~cond))  # (2B, F)
    grid = grid.to(device)
    if continuous is not None:
        continuous, is_continuous = continuous.to(device), is_continuous.to(device)

    training = network.training
    network.eval()
    try:
        start = time.perf_counter()
        emitter = None
        if on_frames is not None:
            offsets = _code_offsets(vocab, n_q)  # (n_q,)
            emitter = _FrameEmitter(on_frames, grid, plen, config.max_frames, offsets)
        # inference mode: no version counters or view metadata on the many small tensors of
        # the loop; grid was made outside it, so the results are ordinary tensors
        with torch.inference_mode():
            steps_cls = _CachedSteps if config.use_cache else _FullForward
            steps = steps_cls(network, grid, continuous, is_continuous, min(plen))
            ends = _decode(network, vocab, grid, plen, end_ids, config, steps, B, emitter)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        network.train(training)
    return _result(vocab, grid[:B].cpu(), ends, plen, config, seconds)


def sample_logits(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    greedy: bool = False,
) -> Tensor:
    """Indices ``(N,)`` drawn from logits ``(N, H)`` (``-inf``: never drawn).

    Greedy (or ``temperature == 0``): the argmax, no noise drawn. Otherwise the logits are
    divided by ``temperature``, cut to the ``top_k`` largest and to the nucleus of mass
    ``top_p``, and one index is drawn per row by inverting the cumulative distribution with
    one uniform number (:func:`_draw`: no device sync, one random number per row instead of
    one per logit). With ``top_k`` only the ``k`` largest logits are ranked (``topk``, no sort
    of all ``H``) and the nucleus is cut among them; ``top_p`` alone sorts the row. Equal
    calls consume the generator equally.
    """
    if greedy or temperature == 0:
        return logits.argmax(-1)
    if logits.dtype != torch.float32:
        logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    nucleus = top_p is not None and top_p < 1.0
    if top_k and top_k < logits.shape[-1]:
        ranked, order = logits.topk(top_k, dim=-1)  # (N, k) each, largest first
    elif nucleus:
        ranked, order = logits.sort(dim=-1, descending=True)  # (N, H) each
    else:
        return _draw(logits.softmax(-1), generator)
    probs = ranked.softmax(-1)  # (N, k or H)
    if nucleus:
        outside = probs.cumsum(-1) - probs > top_p  # (N, k or H), never the most likely
        probs = probs.masked_fill(outside, 0.0)  # the draw needs no renormalisation
    return order.gather(-1, _draw(probs, generator)[:, None])[:, 0]  # (N,)


def _draw(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """``(N,)`` one index per row of ``probs`` ``(N, H)`` (non-negative, not all 0), drawn
    with probability ``p_i / sum(p)``: the first index whose cumulative sum reaches
    ``(1 - u) * sum(p)``, ``u ~ U[0, 1)``. The target lies in ``(0, sum(p)]``, so an index of
    probability 0 (its sum equals the one before) is never the first to reach it."""
    cdf = probs.cumsum(-1)  # (N, H), nondecreasing
    total = cdf[:, -1:]  # (N, 1)
    u = torch.rand(total.shape, generator=generator, device=cdf.device, dtype=cdf.dtype)
    return torch.searchsorted(cdf, (1.0 - u) * total)[:, 0]  # (N,)


# --------------------------------------------------------------------------- the loop
def _decode(
    network: MultiScaleLM,
    vocab: Vocabulary,
    grid: Tensor,
    plen: list[int],
    end_ids: list[int],
    config: GenerationConfig,
    steps: _CachedSteps | _FullForward,
    B: int,
    emitter: _FrameEmitter | None,
) -> list[int]:
    """Sample every cell that is not fixed, in the pattern's order; the frame of each
    sequence's ``<X_end>`` (-1: none). ``grid`` (all ``2B`` rows with CFG) is filled in place.

    Which cells of a sequence are fixed (a prefix cell, past ``max_frames``, after its
    ``<X_end>``) is decided on the host from ``plen`` and the ends found so far, so a step
    whose batch samples every cell writes its draws without a mask; the host waits on the
    device once per sampled codebook 0 (did a sequence just end?), and for the codes handed
    to ``emitter``.
    """
    device, F = grid.device, grid.shape[1]
    pad, end_token = vocab.pad_id, vocab.special("<end>")
    seed = config.seed if config.seed is not None else int(torch.randint(2**62, ()).item())
    generator = torch.Generator(device=device).manual_seed(seed)
    cfg = grid.shape[0] != B
    sampler = _Sampler(network, end_ids, plen, config, generator, B, device)
    to_id = list(network.local_to_id.unbind(0))  # n_q x (H_max,): head-local index -> id
    end_t = torch.tensor(end_ids, device=device)  # (B,)
    stop = [p + config.max_frames for p in plen]  # first frame past each target's room
    ends = [-1] * B  # frame of each sequence's <X_end>

    def fixed(f: int, k: int) -> list[bool]:  # a prefix cell, past max_frames, or after <X_end>
        return [
            f < p or f >= s or (e >= 0 and (f > e or (f == e and k > 0)))
            for p, s, e in zip(plen, stop, ends)
        ]

    def write(f: int, k: int | slice, value: Tensor) -> None:
        grid[:B, f, k] = value
        if cfg:
            grid[B:, f, k] = value

    groups, complete = _groups(network, F, min(plen))
    first_left = np.minimum.accumulate([min(f for f, _ in g) for g in groups][::-1])[::-1]
    for cells, left, done in zip(groups, first_left.tolist(), complete):
        if all(all(fixed(f, k)) for f, k in cells):
            last = [e if e >= 0 else s for s, e in zip(stop, ends)]
            if all(left >= n for n in last):
                break  # every sequence is done: nothing but fixed cells to come
        else:
            for (f, k), out in zip(cells, steps.logits(cells)):
                flags = fixed(f, k)  # after the cells before it (an <X_end> fixes the rest)
                if all(flags):
                    continue
                value = to_id[k][sampler(out, f, k)]  # (B,) ids
                if any(flags):
                    keep = torch.tensor(flags, device=device)  # (B,)
                    value = torch.where(keep, grid[:B, f, k], value)
                write(f, k, value)
                if k == 0:  # <X_end>: pad the rest of the frame, then the <end> frame
                    ended = value == end_t  # (B,)
                    if any(flags):
                        ended &= ~keep
                    hits = ended.tolist()  # the sync: one per frame
                    if any(hits):
                        for i in (i for i, hit in enumerate(hits) if hit):
                            ends[i] = f
                        write(f, slice(1, None), grid[:B, f, 1:].masked_fill(ended[:, None], pad))
                        if f + 1 < F:
                            write(f + 1, 0, grid[:B, f + 1, 0].masked_fill(ended, end_token))
        if emitter is not None:
            emitter.update(done, ends)
    if emitter is not None:
        emitter.update(F, ends)  # whatever is left (after an early stop)
    return ends


class _Sampler:
    """Draws the cells of one codebook: CFG, the codebook restriction, then
    :func:`sample_logits`. Head ``k > 0`` may draw the codes of its codebook, its first
    ``codebook_size`` entries (a view, no mask); head 0 those of codebook 0 and (once
    ``min_frames`` were generated) the sequence's own ``<X_end>``, a mask built once."""

    def __init__(
        self,
        network: MultiScaleLM,
        end_ids: list[int],
        plen: list[int],
        config: GenerationConfig,
        generator: torch.Generator,
        B: int,
        device: torch.device,
    ) -> None:
        self.config, self.generator, self.B, self.plen = config, generator, B, plen
        self.size = size = network.codebook_size
        to_local = network.id_to_local[0]  # (V,) id -> head 0's index
        first = int(to_local[network.codec_start])  # head 0's index of code 0
        allowed = torch.zeros(B, network.head_sizes[0], dtype=torch.bool, device=device)
        allowed[:, first : first + size] = True  # (B, H_0)
        self.banned0 = ~allowed  # (B, H_0): anything but a code
        end_local = to_local[torch.tensor(end_ids, device=to_local.device)].to(device)  # (B,)
        allowed[torch.arange(B, device=device), end_local] = True
        self.banned0_end = ~allowed  # (B, H_0): anything but a code or the sequence's <X_end>

    def __call__(self, out: Tensor, f: int, k: int) -> Tensor:
        """``(B,)`` head-local draws for cell ``(f, k)`` from the logits ``out`` ``(N, H_k)``."""
        c, B = self.config, self.B
        if out.dtype != torch.float32:
            out = out.float()
        if out.shape[0] != B:  # classifier-free guidance: [conditional; unconditional]
            out = out[B:] + c.cfg_coef * (out[:B] - out[B:])  # (B, H_k)
        if k > 0:
            restricted = out[:, : self.size]  # (B, codebook_size): the codes, not <pad>
        else:
            may_end = [f - p >= c.min_frames for p in self.plen]
            banned = self.banned0_end if all(may_end) else self.banned0  # (B, H_0)
            if any(may_end) and not all(may_end):
                rows = torch.tensor(may_end, device=out.device)[:, None]  # (B, 1)
                banned = torch.where(rows, self.banned0_end, self.banned0)  # (B, H_0)
            restricted = out.masked_fill(banned, float("-inf"))  # (B, H_0)
        return sample_logits(
            restricted, c.temperature, c.top_k, c.top_p, self.generator, greedy=c.is_greedy
        )


def _groups(
    network: MultiScaleLM, frames: int, shortest: int
) -> tuple[list[list[tuple[int, int]]], list[int]]:
    """The cells ``(frame, codebook)`` sampled together, in the pattern's order, from frame
    ``shortest`` on (every earlier frame is a prefix frame); codebooks in increasing order.
    With them, for each group, how many leading frames are complete once it was sampled
    (every cell of theirs is at most at its order)."""
    n_q = network.n_q
    order = network.pattern.order(frames, n_q).expand(frames, n_q).numpy()  # (F, n_q)
    last = order.max(axis=1)  # (F,) order of each frame's last cell (nondecreasing)
    f, k = np.meshgrid(np.arange(shortest, frames), np.arange(n_q), indexing="ij")  # (F', n_q)
    o = order[shortest:]  # (F', n_q)
    by = np.lexsort((f.ravel(), k.ravel(), o.ravel()))  # by order, then codebook, then frame
    f, k, o = f.ravel()[by], k.ravel()[by], o.ravel()[by]
    cuts = np.flatnonzero(np.diff(o)) + 1  # where a new order begins
    cells = list(zip(f.tolist(), k.tolist()))
    bounds = [0, *cuts.tolist(), len(cells)]
    groups = [cells[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    starts = o[bounds[:-1]] if len(cells) else o[:0]  # (G,) order of each group
    complete = np.searchsorted(last, starts, side="right").tolist()
    return groups, complete


class _FrameEmitter:
    """Hands each sequence's target frames to ``on_frames`` once they are complete (every
    codebook known), as :class:`FrameChunk` s: in order, without gaps, nothing from the frame
    of its ``<X_end>`` on, and one chunk with ``ended=True`` last."""

    def __init__(
        self,
        callback: Callable[[FrameChunk], None],
        grid: Tensor,
        plen: list[int],
        max_frames: int,
        offsets: Tensor,
    ) -> None:
        self.callback, self.grid, self.plen = callback, grid, plen
        self.max_frames, self.offsets = max_frames, offsets.to(grid.device)  # (n_q,)
        self.sent = [0] * len(plen)  # frames handed over per sequence
        self.done = [False] * len(plen)

    def update(self, complete: int, ends: list[int]) -> None:
        """Frames ``< complete`` of the grid are final; ``ends`` as in :func:`_decode`."""
        for i, (p, e) in enumerate(zip(self.plen, ends)):
            if self.done[i]:
                continue
            length = e - p if e >= 0 else self.max_frames  # generated frames, once known
            ready = min(max(complete - p, 0), length)
            ended = ready == length
            if ready > self.sent[i] or ended:
                # out of inference mode: ordinary tensors for the caller, gradients off
                with torch.inference_mode(False), torch.no_grad():
                    codes = self.grid[i, p + self.sent[i] : p + ready] - self.offsets  # (T, n_q)
                    self.callback(FrameChunk(i, self.sent[i], codes.cpu(), ended))
                self.sent[i], self.done[i] = ready, ended


class _FullForward:
    """Logits of cells from the network's full teacher-forced forward (no cache)."""

    def __init__(
        self,
        network: MultiScaleLM,
        grid: Tensor,
        continuous: Tensor | None,
        is_continuous: Tensor | None,
        shortest: int,
    ) -> None:
        self.network, self.grid = network, grid
        self.continuous, self.is_continuous = continuous, is_continuous

    def logits(self, cells: list[tuple[int, int]]) -> list[Tensor]:
        """``(N, H_k)`` head-local logits of each cell ``(frame, codebook)``."""
        frames = max(f for f, _ in cells) + 1  # row f - 1 predicts frame f, which it reads
        cont = None if self.continuous is None else self.continuous[:, :frames]
        flags = None if self.is_continuous is None else self.is_continuous[:, :frames]
        out = self.network(self.grid[:, :frames], cont, flags)
        return [out.logits[k][:, f - 1] for f, k in cells]


class _CachedSteps:
    """Logits of cells from cached decoding: the global stack fed step by step (as the
    pattern lays out the grid), the local stack codebook by codebook.

    The grid is read when a global step is fed, which happens only once every cell of that
    step is known (the pattern's contract: a prediction sees only earlier cells).
    """

    def __init__(
        self,
        network: MultiScaleLM,
        grid: Tensor,
        continuous: Tensor | None,
        is_continuous: Tensor | None,
        shortest: int,
    ) -> None:
        self.network, self.grid = network, grid
        self.continuous, self.is_continuous = continuous, is_continuous
        N, F, n_q = grid.shape
        pattern = network.pattern
        self.state = network.new_state(N, F)
        cells = torch.arange((F + 1) * n_q).view(1, F + 1, n_q)  # row F: the empty cells
        self.cells = pattern.layout(cells)[0].to(grid.device)  # (S, m) cells of each step
        self.frames_np = (self.cells.cpu().numpy() // n_q).clip(max=F)  # (S, m) frame (F: empty)
        S = self.cells.shape[0]
        read = pattern.readback(torch.arange(S).view(1, S, 1), F, n_q)  # (1, F, n_q or 1, 1)
        self.read = read[0, :, :, 0].numpy()  # (F, n_q or 1) step predicting (t + 1, k)
        self.rows = network.row_grid(grid)  # (N, F + 1, n_q) embedding rows, refreshed per step
        self.fed, self.h, self.h_start = 0, None, 0
        self.local = _LocalSteps(network, self.state) if pattern.local else None
        self.local_frame = -1
        # the steps that hold only frames of the shortest prefix: one chunk
        real = np.where(self.frames_np < F, self.frames_np, -1).max(axis=1)  # (S,)
        late = np.flatnonzero(real >= shortest)
        self._feed(int(late[0]) if len(late) else S)

    def logits(self, cells: list[tuple[int, int]]) -> list[Tensor]:
        """``(N, H_k)`` head-local logits of each cell ``(frame, codebook)``."""
        network = self.network
        if self.local is not None:
            ((f, k),) = cells
            if self.local_frame != f:
                self.local.start(self._output(int(self.read[f - 1, 0])))  # (N, W)
                self.local_frame = f
            while self.local.next <= k:  # catch up on codebooks nobody needed sampled
                j = self.local.next
                out = self.local.step(self.grid[:, f, j - 1] if j else None)  # (N, H_j)
            return [out]
        wanted: dict[int, list[int]] = {}  # global step -> codebooks it predicts here
        for f, k in cells:
            wanted.setdefault(int(self.read[f - 1, k]), []).append(k)
        logits: dict[tuple[int, int], Tensor] = {}
        for step, ks in wanted.items():
            h = self._output(step)  # (N, W)
            if len(ks) == 1:  # one head (flat, or a ragged end): that head alone
                k = ks[0]
                logits[step, k] = network.head0(h) if k == 0 else h @ network.heads[k - 1]
            else:
                n_q = network.n_q
                out = network.head_logits(h[:, None, None].expand(-1, 1, n_q, -1))
                logits.update(((step, k), out.logits[k][:, 0]) for k in ks)  # (N, H_k) each
        return [logits[int(self.read[f - 1, k]), k] for f, k in cells]

    def _output(self, step: int) -> Tensor:
        """``(N, W)`` global output of ``step``, feeding the steps up to it."""
        if step >= self.fed:
            self._feed(step + 1)
        if step < self.h_start:
            raise RuntimeError(f"global step {step} was fed before the last chunk")
        return self.h[:, step - self.h_start]

    def _feed(self, stop: int) -> None:
        """Run global steps ``fed .. stop - 1`` as one chunk through the cache."""
        start, network = self.fed, self.network
        if stop <= start:
            return
        N, F, n_q = self.grid.shape
        frames = self.frames_np[start:stop]
        real = frames[frames < F]
        if real.size:  # refresh the rows of the frames these steps read
            lo, hi = int(real.min()), int(real.max()) + 1
            self.rows[:, lo:hi] = network.embedding_rows(self.grid[:, lo:hi])
        cells = self.cells[start:stop]  # (T, m)
        rows = self.rows.view(N, -1)[:, cells]  # (N, T, m)
        if self.continuous is None:
            x = network.embed_steps(rows)  # (N, T, W)
        else:
            frame = (cells[:, 0] // n_q).clamp(max=F - 1)  # (T,) frame of slot 0
            slot0 = (cells[:, 0] % n_q == 0) & (cells[:, 0] < F * n_q)  # (T,)
            mask = self.is_continuous[:, frame] & slot0  # (N, T)
            x = network.embed_steps(rows, self.continuous[:, frame], mask)  # (N, T, W)
        self.h = network.global_stack(x, self.state.global_cache)  # (N, T, W)
        self.h_start, self.fed = start, stop


class _LocalSteps:
    """The local stack of a ``multiscale`` network, codebook by codebook for one frame at a
    time: :meth:`MultiScaleLM.local_step <lit_codec.nn.multiscale_lm.MultiScaleLM.local_step>`
    with the work shared by a frame's codebooks done once in :meth:`start` (the projection
    of the global output to the local width, the cache reset) and the per-codebook tables
    (input embedding rows, head weights) looked up once per generation."""

    def __init__(self, network: MultiScaleLM, state: Any) -> None:
        self.network, self.cache = network, state.local_cache
        self.every = network.local_context == "every"
        n_q = network.n_q
        self.rows = list(network.local_rows_table.unbind(0)) if n_q > 1 else []  # (V,) per codebook
        self.table = network.local_embed.weight if n_q > 1 else None  # (R_l, W_l)
        self.heads = list(network.heads.unbind(0))  # n_q - 1 x (W_l, H_c)
        self.ctx: Tensor | None = None
        self.next = 0  # the codebook :meth:`step` predicts next

    def start(self, context: Tensor) -> None:
        """Begin a frame from the global output ``(N, W)`` of the frame before."""
        self.ctx = self.network.project_to_local(context[:, None])  # (N, 1, n_q or 1, W_l)
        self.cache.reset()
        self.next = 0

    def step(self, previous: Tensor | None) -> Tensor:
        """``(N, H_k)`` head-local logits of the next codebook ``k``; ``previous`` ``(N,)``:
        the ids of codebook ``k - 1`` of this frame (None for ``k = 0``)."""
        network, k, ctx = self.network, self.next, self.ctx
        if k == 0:
            x = ctx[:, :, 0]  # (N, 1, W_l)
        else:
            rows = self.rows[k - 1][previous]  # (N,) rows of the local input table
            x = torch.nn.functional.embedding(rows, self.table)[:, None]  # (N, 1, W_l)
            if self.every:
                x = x + ctx[:, :, k if ctx.shape[2] > 1 else 0]
        h = network.local_stack(x, self.cache)[:, 0]  # (N, W_l)
        self.next = k + 1
        return network.head0(h) if k == 0 else h @ self.heads[k - 1]  # (N, H_k)


# --------------------------------------------------------------------------- helpers
def _result(
    vocab: Vocabulary,
    grid: Tensor,
    ends: list[int],
    plen: list[int],
    config: GenerationConfig,
    seconds: float,
) -> GenerationResult:
    B, _, n_q = grid.shape
    finished = torch.tensor([e >= 0 for e in ends])  # (B,)
    lengths = torch.tensor(
        [e - p if e >= 0 else config.max_frames for e, p in zip(ends, plen)]
    )  # (B,)
    seq = torch.tensor(
        [e + 2 if e >= 0 else p + config.max_frames for e, p in zip(ends, plen)]
    )  # (B,)
    offsets = _code_offsets(vocab, n_q)  # (n_q,)
    codes = torch.full((B, int(lengths.max()), n_q), -1, dtype=torch.long)  # (B, T, n_q)
    for i, (p, n) in enumerate(zip(plen, lengths.tolist())):
        codes[i, :n] = grid[i, p : p + n] - offsets
    ids = grid[:, : int(seq.max())].clone()  # (B, L, n_q)
    total = int(lengths.sum())
    return GenerationResult(
        codes, lengths, finished, ids, seq, seconds, total / seconds if seconds > 0 else 0.0
    )


def _code_offsets(vocab: Vocabulary, n_q: int) -> Tensor:
    """``(n_q,)`` the id of code 0 of each codebook (id - offset: the code)."""
    return torch.tensor([vocab.codebook_range(k)[0] for k in range(n_q)])


def _target_end_ids(vocab: Vocabulary, ids: Tensor, lengths: list[int]) -> list[int]:
    """The ``<X_end>`` of each prefix's open segment (the last marker in codebook 0 must be a
    ``<X_start>``, with only codec frames of an audio prompt after it)."""
    starts = {s: e for s, e in vocab.segments.values()}
    ends = set(starts.values())
    out = []
    column = ids[..., 0].tolist()
    for i, n in enumerate(lengths):
        found = None
        for token in reversed(column[i][:n]):
            if token in starts:
                found = starts[token]
                break
            if token in ends:
                break
        if found is None:
            raise ValueError(
                f"prefix {i} does not end inside an open segment: it must end with the "
                "target's <X_start> marker (and optionally codec frames of an audio prompt)"
            )
        out.append(found)
    return out
