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
(:class:`~lit_codec.nn.kv_cache.KVCache`) and the transformer is the training one.

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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lit_codec.lm.sequence import TaskSequence
from lit_codec.lm.vocab import Vocabulary
from lit_codec.nn.multiscale_lm import MultiScaleLM

__all__ = ["GenerationConfig", "GenerationResult", "Prefix", "generate", "sample_logits"]


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


@torch.no_grad()
def generate(
    network: MultiScaleLM,
    vocab: Vocabulary,
    prefix: Prefix | Any,
    config: GenerationConfig | None = None,
) -> GenerationResult:
    """Continue every prefix with the target's codec frames; see the module doc.

    Args:
        network: the codec LM (any codebook pattern); run in eval mode, its mode is restored.
        vocab: its vocabulary.
        prefix: a :class:`Prefix`, or a ``TokenBatch``-like object (:meth:`Prefix.from_batch`).
        config: how to sample; None: :class:`GenerationConfig` defaults.

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
    known = torch.zeros(B, F, n_q, dtype=torch.bool)  # (B, F, n_q) cells not to sample
    cond = torch.zeros(B, F, dtype=torch.bool)  # (B, F)
    continuous = is_continuous = None
    if prefix.continuous is not None and prefix.is_continuous is not None:
        continuous = torch.zeros(B, F, prefix.continuous.shape[-1], dtype=param.dtype)
        is_continuous = torch.zeros(B, F, dtype=torch.bool)
    for i, n in enumerate(plen):
        grid[i, :n] = prefix.ids[i, :n]
        known[i, :n] = True
        known[i, n + config.max_frames :] = True  # past max_frames: <pad>, never sampled
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
    grid, known = grid.to(device), known.to(device)
    if continuous is not None:
        continuous, is_continuous = continuous.to(device), is_continuous.to(device)

    training = network.training
    network.eval()
    try:
        start = time.perf_counter()
        steps_cls = _CachedSteps if config.use_cache else _FullForward
        steps = steps_cls(network, grid, continuous, is_continuous, min(plen))
        ended_at = _decode(network, vocab, grid, known, plen, end_ids, config, steps, B)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    finally:
        network.train(training)
    return _result(vocab, grid[:B].cpu(), ended_at.cpu(), plen, config, seconds)


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
    ``top_p``, and one index is drawn per row by the exponential race (``argmax(p / E)``,
    ``E ~ Exp(1)``: a draw from ``p`` without a device sync); the noise always has the shape
    of ``logits``, so equal calls consume the generator equally.
    """
    if greedy or temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)  # (N, H) each
        probs = ordered.softmax(-1)
        outside = probs.cumsum(-1) - probs > top_p  # (N, H), never the most likely
        ordered = ordered.masked_fill(outside, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)
    probs = logits.softmax(-1)  # (N, H)
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / noise.clamp_min(1e-20)).argmax(-1)


# --------------------------------------------------------------------------- the loop
def _decode(
    network: MultiScaleLM,
    vocab: Vocabulary,
    grid: Tensor,
    known: Tensor,
    plen: list[int],
    end_ids: list[int],
    config: GenerationConfig,
    steps: _CachedSteps | _FullForward,
    B: int,
) -> Tensor:
    """Sample every cell that is not known, in the pattern's order; ``(B,)`` frame of each
    sequence's ``<X_end>`` (-1: none). ``grid`` (all ``2B`` rows with CFG) and ``known`` are
    filled in place."""
    device = grid.device
    n_q, F = network.n_q, grid.shape[1]
    pad, end_token = vocab.pad_id, vocab.special("<end>")
    size = network.codebook_size
    seed = config.seed if config.seed is not None else int(torch.randint(2**62, ()).item())
    generator = torch.Generator(device=device).manual_seed(seed)
    cfg = grid.shape[0] != B

    # what each head may draw: the codes of its codebook; head 0 also <X_end> (per sequence)
    allowed = torch.zeros(n_q, max(network.head_sizes), dtype=torch.bool, device=device)
    code0 = int(network.id_to_local[0, network.codec_start])  # head 0's index of code 0
    allowed[0, code0 : code0 + size] = True
    allowed[1:, :size] = True
    end_t = torch.tensor(end_ids, device=device)  # (B,)
    end_local = network.id_to_local[0, end_t][:, None]  # (B, 1)
    plen_t = torch.tensor(plen, device=device)  # (B,)
    ended_at = torch.full((B,), -1, dtype=torch.long, device=device)

    def write(f: int, k: int | slice, value: Tensor) -> None:
        grid[:B, f, k] = value
        if cfg:
            grid[B:, f, k] = value

    ends = [-1] * B  # host copy of ended_at, refreshed once per sampled codebook 0

    def fixed_for_all(f: int, k: int) -> bool:  # a prefix cell, past max_frames, or after <X_end>
        return all(
            f < p or f >= p + config.max_frames or (e >= 0 and (f > e or (f == e and k > 0)))
            for p, e in zip(plen, ends)
        )

    groups = _groups(network, F, min(plen))
    first_left = np.minimum.accumulate([min(f for f, _ in g) for g in groups][::-1])[::-1]
    for cells, left in zip(groups, first_left.tolist()):  # left: first frame still to come
        if all(fixed_for_all(f, k) for f, k in cells):
            last = [e if e >= 0 else p + config.max_frames for p, e in zip(plen, ends)]
            if all(left >= n for n in last):
                break  # every sequence is done: nothing but fixed cells to come
            continue
        for (f, k), out in zip(cells, steps.logits(cells)):
            out = out.float()  # (N, H_k)
            if cfg:
                out = out[B:] + config.cfg_coef * (out[:B] - out[B:])  # (B, H_k)
            restricted = out.masked_fill(~allowed[k, : out.shape[-1]], float("-inf"))
            if k == 0:
                may_end = ((f - plen_t) >= config.min_frames)[:, None]  # (B, 1)
                end_logit = torch.where(may_end, out.gather(1, end_local), float("-inf"))
                restricted = restricted.scatter(1, end_local, end_logit)  # (B, H_0)
            choice = sample_logits(
                restricted,
                config.temperature,
                config.top_k,
                config.top_p,
                generator,
                greedy=config.is_greedy,
            )  # (B,)
            drawn = network.local_to_ids(choice, codebook=k)  # (B,)
            fixed = known[:, f, k].clone()  # (B,) (a copy: known changes below)
            value = torch.where(fixed, grid[:B, f, k], drawn)
            write(f, k, value)
            known[:, f, k] = True
            if k == 0:  # <X_end>: pad the rest of the frame, then the <end> frame
                ended = ~fixed & (value == end_t)  # (B,)
                ended_at = torch.where(ended, f, ended_at)
                write(f, slice(1, None), torch.where(ended[:, None], pad, grid[:B, f, 1:]))
                known[:, f, 1:] |= ended[:, None]
                if f + 1 < F:
                    write(f + 1, 0, torch.where(ended, end_token, grid[:B, f + 1, 0]))
                    known[:, f + 1 :] |= ended[:, None, None]
                ends = ended_at.tolist()
    return ended_at


def _groups(network: MultiScaleLM, frames: int, shortest: int) -> list[list[tuple[int, int]]]:
    """The cells ``(frame, codebook)`` sampled together, in the pattern's order, from frame
    ``shortest`` on (every earlier frame is a prefix frame); codebooks in increasing order."""
    n_q = network.n_q
    order = network.pattern.order(frames, n_q).expand(frames, n_q).reshape(-1).numpy()
    cells = np.argsort(order, kind="stable")  # (frames * n_q,) cell indices by order
    groups = np.split(cells, np.flatnonzero(np.diff(order[cells])) + 1)
    out = []
    for group in groups:
        chosen = sorted((int(c) % n_q, int(c) // n_q) for c in group if c // n_q >= shortest)
        if chosen:
            out.append([(f, k) for k, f in chosen])
    return out


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
        self.local_frame, self.local_next = -1, 0
        # the steps that hold only frames of the shortest prefix: one chunk
        real = np.where(self.frames_np < F, self.frames_np, -1).max(axis=1)  # (S,)
        late = np.flatnonzero(real >= shortest)
        self._feed(int(late[0]) if len(late) else S)

    def logits(self, cells: list[tuple[int, int]]) -> list[Tensor]:
        """``(N, H_k)`` head-local logits of each cell ``(frame, codebook)``."""
        network = self.network
        if network.pattern.local:
            ((f, k),) = cells
            context = self._output(int(self.read[f - 1, 0]))  # (N, W)
            if self.local_frame != f:
                self.local_frame, self.local_next = f, 0
            while self.local_next <= k:  # catch up on codebooks nobody needed sampled
                j = self.local_next
                previous = self.grid[:, f, j - 1] if j else None
                out = network.local_step(context, j, previous, self.state)  # (N, H_j)
                self.local_next += 1
            return [out]
        heads: dict[int, Any] = {}
        result = []
        for f, k in cells:
            step = int(self.read[f - 1, k])
            if step not in heads:
                h = self._output(step)  # (N, W)
                n_q = network.n_q
                heads[step] = network.head_logits(h[:, None, None].expand(-1, 1, n_q, -1))
            result.append(heads[step].logits[k][:, 0])  # (N, H_k)
        return result

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


# --------------------------------------------------------------------------- helpers
def _result(
    vocab: Vocabulary,
    grid: Tensor,
    ended_at: Tensor,
    plen: list[int],
    config: GenerationConfig,
    seconds: float,
) -> GenerationResult:
    B, _, n_q = grid.shape
    finished = ended_at >= 0  # (B,)
    lengths = torch.tensor(
        [int(e) - p if e >= 0 else config.max_frames for e, p in zip(ended_at.tolist(), plen)]
    )  # (B,)
    seq = torch.tensor(
        [int(e) + 2 if e >= 0 else p + config.max_frames for e, p in zip(ended_at.tolist(), plen)]
    )  # (B,)
    offsets = torch.tensor([vocab.codebook_range(k)[0] for k in range(n_q)])  # (n_q,)
    codes = torch.full((B, int(lengths.max()), n_q), -1, dtype=torch.long)  # (B, T, n_q)
    for i, (p, n) in enumerate(zip(plen, lengths.tolist())):
        codes[i, :n] = grid[i, p : p + n] - offsets
    ids = grid[:, : int(seq.max())].clone()  # (B, L, n_q)
    total = int(lengths.sum())
    return GenerationResult(
        codes, lengths, finished, ids, seq, seconds, total / seconds if seconds > 0 else 0.0
    )


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
