"""The codec language model: a global stack over frames, a local stack over codebooks.

UniAudio (Yang et al., 2023) and MEGABYTE (Yu et al., 2023) split next-token prediction
over a ``(frames, n_q)`` token grid into two transformers (Moshi's "depth transformer" is
the same idea, narrower):

- the **global** stack runs causally over frames. The input of frame ``f`` is the sum of
  the embeddings of its ``n_q`` tokens, one table per codebook position; a continuous
  condition frame (``is_continuous``: T5 text embeddings) enters through a linear
  projection of its vector instead of codebook 0's embedding;
- the **local** stack runs causally over the ``n_q`` codebooks of one frame. The global
  output of frame ``t`` (which has seen frames ``<= t``), projected to the local width, is
  its first position; positions ``1 .. n_q - 1`` take the embeddings of codebooks
  ``0 .. n_q - 2`` of frame ``t + 1`` (teacher forcing); position ``k`` predicts codebook
  ``k`` of frame ``t + 1``. In training every frame's local stack runs at once, as one
  batch of ``B * frames`` sequences of ``n_q`` positions.

Each stack has its own :class:`~lit_codec.nn.transformer.TransformerConfig` (width, depth,
heads): UniAudio's local stack is as wide as its global one, Moshi's is narrower, and
``local_weights_per_step`` gives each local position its own weights (Moshi's
``depformer_weights_per_step``). ``local_context="every"`` adds the projected global
output to every local position instead of only the first (MEGABYTE, Moshi).

The same model also runs the patterns researchers compare with (``pattern``: ``flat``,
``delay``, ``parallel``, see :mod:`lit_codec.nn.codebook_patterns`); those have no local
stack, and their heads read the global stack. Every pattern takes the same
``(B, frames, n_q)`` ids and returns the same :class:`LMOutput`: row ``t`` predicts frame
``t + 1``.

Heads over restricted vocabularies. Codebook position 0 holds every non-codec token
(specials, segment markers, tasks, phones, MIDI, text, semantic tokens) or a code of
codebook 0; position ``k > 0`` holds a code of codebook ``k`` or ``<pad>``. So head ``k``
has logits only over the ids its position may hold, indexed *head-locally*:

- head 0: ``H_0 = vocab_size - (n_q - 1) * codebook_size`` entries, the ids in increasing
  order with the codec ranges of codebooks ``1 ..`` left out (id ``i`` -> ``i`` below
  ``codec_start + codebook_size``, ``i - (n_q - 1) * codebook_size`` after the codec
  range);
- head ``k > 0``: ``codebook_size + 1`` entries, the code itself (``0 .. codebook_size -
  1``) then ``<pad>`` at ``codebook_size``.

The buffers :attr:`~MultiScaleLM.id_to_local` ``(n_q, vocab_size)`` and
:attr:`~MultiScaleLM.local_to_id` ``(n_q, max head)`` map both ways (``-1``: none);
:meth:`~MultiScaleLM.targets_to_local` maps a grid and refuses an id a head cannot produce.
The embedding tables are restricted the same way, plus one "empty" row per codebook (the
input where a pattern has no token). Rows are ordered so that a vocabulary grown by
:meth:`Vocabulary.extend <lit_codec.lm.vocab.Vocabulary.extend>` (new ids appended after
every range) only appends rows at the end of the input table and of head 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.nn.codebook_patterns import CodebookPattern, get_pattern
from lit_codec.nn.configurable import Configurable
from lit_codec.nn.kv_cache import KVCache
from lit_codec.nn.transformer import (
    PerStepLinear,
    Transformer,
    TransformerConfig,
    count_parameters,
)

__all__ = ["DecodeState", "LMLoss", "LMOutput", "MultiScaleLM"]


@dataclass
class LMOutput:
    """Logits of every head, over head-local indices.

    Row ``t`` predicts frame ``t + 1``: ``first[:, t]`` its codebook 0, ``rest[:, t, k - 1]``
    its codebook ``k``. Train on rows ``0 .. frames - 2`` against frames ``1 ..`` (see
    :meth:`MultiScaleLM.loss`).

    Attributes:
        first: ``(B, frames, H_0)`` logits of head 0.
        rest: ``(B, frames, n_q - 1, codebook_size + 1)`` logits of heads ``1 .. n_q - 1``.
    """

    first: Tensor
    rest: Tensor

    @property
    def n_q(self) -> int:
        return 1 + self.rest.shape[2]

    @property
    def logits(self) -> tuple[Tensor, ...]:
        """``n_q`` tensors ``(B, frames, H_k)``, one per head (views)."""
        return (self.first, *self.rest.unbind(2))

    def padded(self, fill: float = float("-inf")) -> Tensor:
        """All heads in one ``(B, frames, n_q, max_k H_k)`` tensor, ``fill`` past each head."""
        B, T, H0 = self.first.shape
        H = max(H0, self.rest.shape[-1])
        out = self.first.new_full((B, T, self.n_q, H), fill)  # (B, T, n_q, H)
        out[:, :, 0, :H0] = self.first
        out[:, :, 1:, : self.rest.shape[-1]] = self.rest
        return out


@dataclass
class LMLoss:
    """Cross-entropy of an :class:`LMOutput` against the next frames.

    Attributes:
        loss: mean cross-entropy over every masked token (scalar, differentiable).
        per_codebook: ``(n_q,)`` mean cross-entropy of each codebook's masked tokens (0 where
            none), detached.
        accuracy: ``(n_q,)`` share of each codebook's masked tokens whose argmax is right,
            detached.
        tokens: ``(n_q,)`` number of masked tokens of each codebook.
    """

    loss: Tensor
    per_codebook: Tensor
    accuracy: Tensor
    tokens: Tensor


@dataclass
class DecodeState:
    """The KV caches of a cached decode, owned by the caller.

    Attributes:
        global_cache: the global stack's cache (its ``length`` is the next global step).
        local_cache: the local stack's cache, reset at the start of every frame; None when
            the pattern has no local stack.
    """

    global_cache: KVCache
    local_cache: KVCache | None = None


class MultiScaleLM(Configurable, nn.Module):
    """Global + local transformer over ``(B, frames, n_q)`` token grids; see the module doc.

    Args:
        vocab_size: number of ids (``Vocabulary.size``).
        n_q: codebooks per frame.
        codebook_size: codes per codebook.
        codec_start: first id of the codec range (code ``c`` of codebook ``q`` is
            ``codec_start + q * codebook_size + c``).
        pad_id: id of ``<pad>`` (outside the codec range).
        pattern: ``"multiscale"``, ``"flat"``, ``"delay"``, ``"parallel"``, or a
            :class:`~lit_codec.nn.codebook_patterns.CodebookPattern`.
        global_config: the global stack (a dict of its fields is accepted). None:
            ``TransformerConfig()`` (512 wide, 8 deep, 8 heads).
        local_config: the local stack (``multiscale`` only; a dict is accepted). None: a
            narrow stack (Moshi-like): a quarter of the global width (at least 64), half
            its depth (at least 1), heads as wide as the global ones.
        continuous_dim: width of the continuous condition vectors; None: no projection,
            and ``continuous`` must not be given.
        local_context: ``"first"``: the projected global output is the local stack's first
            position only (UniAudio); ``"every"``: it is also added to the embedding at
            every other position (MEGABYTE, Moshi).
        local_weights_per_step: each local position gets its own weights in every linear
            layer of the local stack, and with ``local_context="every"`` its own global
            projection (Moshi's ``depformer_weights_per_step``).
    """

    def __init__(
        self,
        vocab_size: int,
        n_q: int,
        codebook_size: int,
        codec_start: int,
        pad_id: int = 0,
        pattern: str | CodebookPattern = "multiscale",
        global_config: TransformerConfig | None = None,
        local_config: TransformerConfig | None = None,
        continuous_dim: int | None = None,
        local_context: Literal["first", "every"] = "first",
        local_weights_per_step: bool = False,
    ) -> None:
        super().__init__()
        codec_stop = codec_start + n_q * codebook_size
        if n_q < 1 or codebook_size < 1 or codec_start < 0 or codec_stop > vocab_size:
            raise ValueError(
                f"codec range [{codec_start}, {codec_stop}) of {n_q} x {codebook_size} codes "
                f"does not fit in a vocabulary of {vocab_size} ids"
            )
        if not 0 <= pad_id < vocab_size or codec_start <= pad_id < codec_stop:
            raise ValueError(f"pad_id {pad_id} must be a non-codec id of the vocabulary")
        if local_context not in ("first", "every"):
            raise ValueError(f"local_context must be 'first' or 'every', not {local_context!r}")
        self.vocab_size, self.n_q, self.codebook_size = vocab_size, n_q, codebook_size
        self.codec_start, self.pad_id = codec_start, pad_id
        self.pattern = get_pattern(pattern)
        self.local_context = local_context
        self.global_config = _transformer_config(global_config, TransformerConfig())
        self.local_config: TransformerConfig | None = None
        if self.pattern.local:
            g = self.global_config
            default = TransformerConfig(
                width=max(64, g.width // 4),
                depth=max(1, g.depth // 2),
                heads=max(1, max(64, g.width // 4) // g.head_dim),
            )
            local = _transformer_config(local_config, default)
            if local_weights_per_step:
                local = replace(local, weights_per_step=n_q)
            self.local_config = local
        self._record_plain_configs()

        # head sizes and the id <-> head-local maps
        H0, Hc = vocab_size - (n_q - 1) * codebook_size, codebook_size + 1
        self.head_sizes = (H0,) + (Hc,) * (n_q - 1)
        ids = torch.arange(vocab_size)
        to_local = torch.full((n_q, vocab_size), -1, dtype=torch.long)  # (n_q, V)
        head0 = (ids < codec_start + codebook_size) | (ids >= codec_stop)  # (V,)
        shift = torch.where(ids >= codec_stop, (n_q - 1) * codebook_size, 0)  # (V,)
        to_local[0] = torch.where(head0, ids - shift, -1)
        for k in range(1, n_q):
            start = codec_start + k * codebook_size
            to_local[k, start : start + codebook_size] = torch.arange(codebook_size)
            to_local[k, pad_id] = codebook_size
        to_id = torch.full((n_q, max(self.head_sizes)), -1, dtype=torch.long)  # (n_q, H_max)
        for k in range(n_q):
            valid = to_local[k] >= 0
            to_id[k, to_local[k][valid]] = ids[valid]
        self.register_buffer("id_to_local", to_local, persistent=False)  # (n_q, V)
        self.register_buffer("local_to_id", to_id, persistent=False)  # (n_q, H_max)
        # embedding rows: [empty of each codebook] [codebooks 1..] [head 0's ids]
        self.register_buffer("_rows", _rows(to_local, self.head_sizes), persistent=False)
        self.register_buffer(
            "_row_base", torch.arange(n_q) * vocab_size, persistent=False
        )  # (n_q,)

        W = self.global_config.width
        self.embed = nn.Embedding(n_q + sum(self.head_sizes), W)
        self.continuous_proj = nn.Linear(continuous_dim, W) if continuous_dim else None
        self.global_stack = Transformer(self.global_config)
        head_width = W
        if self.local_config is not None:
            Wl = head_width = self.local_config.width
            if local_context == "every" and local_weights_per_step:
                self.to_local = PerStepLinear(n_q, W, Wl)
            else:
                self.to_local = nn.Linear(W, Wl, bias=False)
            # inputs of local positions 1..n_q-1: codebooks 0..n_q-2, laid out like `embed`
            self.local_embed = (
                nn.Embedding(n_q - 1 + sum(self.head_sizes[:-1]), Wl) if n_q > 1 else None
            )
            if n_q > 1:
                local_rows = _rows(to_local[:-1], self.head_sizes[:-1])  # (n_q - 1, V)
                # (n_q - 1, V): the local-table row of each value of codebooks 0..n_q-2
                self.register_buffer("local_rows_table", local_rows, persistent=False)
                # input-table row -> local-table row, for codebooks 0..n_q-2 (others: 0)
                to_local_row = torch.zeros(self.embed.num_embeddings, dtype=torch.long)
                to_local_row[self._rows[:-1].flatten()] = local_rows.flatten()
                to_local_row[: n_q - 1] = torch.arange(n_q - 1)
                self.register_buffer("_local_row_of", to_local_row, persistent=False)  # (R,)
            self.local_stack = Transformer(self.local_config)
        self.head0 = nn.Linear(head_width, H0, bias=False)
        self.heads = nn.Parameter(torch.empty(n_q - 1, head_width, Hc))  # (n_q - 1, W_h, H_c)
        self._init_weights()

    @classmethod
    def from_vocabulary(cls, vocab: Any, **kwargs: Any) -> MultiScaleLM:
        """A model for a :class:`~lit_codec.lm.vocab.Vocabulary`; ``kwargs`` go to the constructor."""
        return cls(
            vocab_size=vocab.size,
            n_q=vocab.codec.n_q,
            codebook_size=vocab.codec.codebook_size,
            codec_start=vocab.codebook_range(0)[0],
            pad_id=vocab.pad_id,
            **kwargs,
        )

    def check_vocabulary(self, vocab: Any, source: str = "vocabulary") -> None:
        """Raise ValueError unless the model's sizes are those :meth:`from_vocabulary` gives
        ``vocab`` (``source`` names where the vocabulary came from, for the message)."""
        expected = (vocab.size, vocab.codec.n_q, vocab.codec.codebook_size,
                    vocab.codebook_range(0)[0], vocab.pad_id)  # fmt: skip
        have = (self.vocab_size, self.n_q, self.codebook_size, self.codec_start, self.pad_id)
        if have != expected:
            raise ValueError(
                f"the network was built for (vocab_size, n_q, codebook_size, codec_start, pad_id) "
                f"= {have}, but {source} {vocab.hash} needs {expected}"
            )

    # ------------------------------------------------------------------ training
    def forward(
        self,
        ids: Tensor,
        continuous: Tensor | None = None,
        is_continuous: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> LMOutput:
        """Logits of frames ``1 .. frames`` from frames ``0 .. frames - 1`` (teacher forcing).

        Args:
            ids: ``(B, frames, n_q)`` token ids; codebook ``k`` must hold an id head ``k``
                can produce (not checked here, which would wait on the device: ids no head
                holds embed as the empty cell; :meth:`targets_to_local` checks).
            continuous: ``(B, frames, continuous_dim)`` condition vectors, or None.
            is_continuous: ``(B, frames)`` bool, the frames whose codebook-0 embedding is
                replaced by the projection of their ``continuous`` vector.
            rows: ``(B, frames)`` bool, the rows whose logits are wanted (e.g.
                :meth:`loss_rows`: the rows that predict a token the loss counts); None: all.
                The global stack still runs over every frame, but the local stack and the
                heads only over these rows: with a prefix-LM loss on enhancement pairs this
                halves the cost of the two parts that dominate a training step.

        Returns:
            the logits; row ``t`` predicts frame ``t + 1`` (:class:`LMOutput`). With ``rows``,
            the selected rows only, packed as a batch of one: ``first`` ``(1, N, H_0)``,
            ``rest`` ``(1, N, n_q - 1, H_c)``, ``N = rows.sum()``, in row-major order; pass the
            same ``rows`` to :meth:`loss`.
        """
        B, T, n_q = ids.shape
        if n_q != self.n_q:
            raise ValueError(f"ids must be (B, frames, {self.n_q}), got shape {tuple(ids.shape)}")
        grid = self.row_grid(ids)  # (B, T + 1, n_q)
        x = self._embed_steps(grid, continuous, is_continuous)  # (B, S, W)
        h = self.global_stack(x)  # (B, S, W)
        cells = self.pattern.readback(h, T, n_q)  # (B, T, n_q or 1, W)
        next_rows = grid[:, 1:]  # (B, T, n_q)
        if rows is not None:
            if rows.shape != (B, T):
                raise ValueError(f"rows must be (B, frames) = {(B, T)}, got {tuple(rows.shape)}")
            cells, next_rows = cells[rows][None], next_rows[rows][None]  # (1, N, ...)
        if self.pattern.local:
            cells = self._local(cells[:, :, 0], next_rows)  # (B or 1, T or N, n_q, W_l)
        return self._heads(cells)

    @staticmethod
    def loss_rows(loss_mask: Tensor) -> Tensor:
        """``(B, frames)`` bool: the rows whose prediction (the next frame) has a token in
        ``loss_mask`` ``(B, frames, n_q)``; the last row predicts nothing and is never one."""
        rows = torch.zeros(loss_mask.shape[:2], dtype=torch.bool, device=loss_mask.device)
        rows[:, :-1] = loss_mask[:, 1:].any(-1)
        return rows  # (B, frames)

    def loss(
        self,
        output: LMOutput,
        ids: Tensor,
        loss_mask: Tensor | None = None,
        check: bool = True,
        codebook_weights: Tensor | None = None,
        rows: Tensor | None = None,
    ) -> LMLoss:
        """Cross-entropy of rows ``0 .. frames - 2`` against frames ``1 .. frames - 1``.

        ``loss = sum_k w_k CE_k / sum_k w_k tokens_k`` with ``CE_k`` the summed cross-entropy
        of codebook ``k``'s tokens (``w_k = 1`` without ``codebook_weights``: the token mean).

        Args:
            output: ``self(ids, ...)``.
            ids: ``(B, frames, n_q)`` the ids the output was computed from.
            loss_mask: ``(B, frames, n_q)`` bool, the tokens to learn (``TaskSequence.loss_mask``,
                which marks the positions of the tokens: the shift is done here); None: all.
            check: refuse targets a head cannot produce (one device sync); False drops
                them from the loss instead.
            codebook_weights: ``(n_q,)`` weight of each codebook's tokens (Moshi weights the
                first, semantic codebook more); ``per_codebook``, ``accuracy`` and ``tokens``
                stay unweighted.
            rows: the ``rows`` the output was computed with (packed output), or None; its
                last column must be False (:meth:`loss_rows`), and tokens of unselected rows
                are not counted.
        """
        targets = self.targets_to_local(ids[:, 1:], check=check)  # (B, T - 1, n_q)
        mask = targets >= 0  # (B, T - 1, n_q)
        if loss_mask is not None:
            mask = mask & loss_mask[:, 1:].bool()
        targets = targets.clamp(min=0)
        if rows is None:
            first, rest = output.first[:, :-1], output.rest[:, :-1]  # (B, T - 1, ...)
        else:
            if bool(rows[:, -1].any()):
                raise ValueError(
                    "rows: the last row predicts no frame (use MultiScaleLM.loss_rows)"
                )
            keep = rows[:, :-1]  # (B, T - 1)
            targets, mask = targets[keep][None], mask[keep][None]  # (1, N, n_q)
            first, rest = output.first, output.rest  # (1, N, ...)
        ce0 = F.cross_entropy(
            first.reshape(-1, first.shape[-1]), targets[..., 0].reshape(-1), reduction="none"
        )  # (B * (T - 1),)
        ce_rest = F.cross_entropy(
            rest.reshape(-1, rest.shape[-1]), targets[..., 1:].reshape(-1), reduction="none"
        )  # (B * (T - 1) * (n_q - 1),)
        ce = torch.cat(
            (ce0.view(*targets.shape[:2], 1), ce_rest.view(*targets.shape[:2], -1)), dim=-1
        )  # (B, T - 1, n_q)
        real = mask.to(ce.dtype)  # (B, T - 1, n_q)
        tokens = real.sum((0, 1))  # (n_q,)
        summed = (ce * real).sum((0, 1))  # (n_q,)
        if codebook_weights is None:
            loss = summed.sum() / tokens.sum().clamp(min=1)
        else:
            w = codebook_weights.to(ce.dtype)  # (n_q,)
            loss = (w * summed).sum() / (w * tokens).sum().clamp(min=1e-8)
        with torch.no_grad():
            per_codebook = summed / tokens.clamp(min=1)  # (n_q,)
            hit = (
                torch.cat((first.argmax(-1)[..., None], rest.argmax(-1)), dim=-1) == targets
            )  # (B, T - 1, n_q)
            accuracy = (hit & mask).sum((0, 1)) / tokens.clamp(min=1)  # (n_q,)
        return LMLoss(loss, per_codebook, accuracy, tokens)

    # ------------------------------------------------------------------ vocabularies
    def targets_to_local(self, ids: Tensor, check: bool = True) -> Tensor:
        """Head-local indices ``(..., n_q)`` of ids ``(..., n_q)`` (codebook ``k`` in column ``k``).

        Raises:
            ValueError: with ``check``, an id that its column's head cannot produce (names
                the first one); without it such ids map to ``-1``.
        """
        if ids.shape[-1] != self.n_q:
            raise ValueError(f"ids must be (..., {self.n_q}), got shape {tuple(ids.shape)}")
        inside = (ids >= 0) & (ids < self.vocab_size)  # (..., n_q)
        flat = ids.clamp(0, self.vocab_size - 1) + self._row_base  # (..., n_q)
        local = torch.where(inside, self.id_to_local.view(-1)[flat], -1)  # (..., n_q)
        if check:
            bad = local < 0
            if bad.any():
                where = bad.nonzero()[0].tolist()
                raise ValueError(
                    f"id {int(ids[tuple(where)])} at index {where} is not an id head "
                    f"{where[-1]} can produce ("
                    + (
                        "every non-codec id or a code of codebook 0"
                        if where[-1] == 0
                        else f"a code of codebook {where[-1]} or <pad>"
                    )
                    + ")"
                )
        return local

    def local_to_ids(self, local: Tensor, codebook: int | None = None) -> Tensor:
        """Ids of head-local indices: ``(..., n_q)``, or ``(...)`` of one ``codebook``."""
        if codebook is not None:
            return self.local_to_id[codebook][local]
        index = local.reshape(-1, self.n_q).T  # (n_q, N)
        return self.local_to_id.gather(1, index).T.reshape(local.shape)  # (..., n_q)

    # ------------------------------------------------------------------ cached decoding
    def new_state(
        self,
        batch_size: int,
        max_frames: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> DecodeState:
        """Empty caches for decoding up to ``max_frames`` frames of ``batch_size`` sequences."""
        steps = self.pattern.steps(max_frames, self.n_q)
        local = None
        if self.pattern.local:
            local = self.local_stack.new_cache(batch_size, self.n_q, device, dtype)
        return DecodeState(self.global_stack.new_cache(batch_size, steps, device, dtype), local)

    @torch.no_grad()
    def global_step(
        self,
        ids: Tensor,
        state: DecodeState,
        continuous: Tensor | None = None,
        is_continuous: Tensor | None = None,
    ) -> Tensor:
        """Run the next frames through the global stack (``multiscale``/``parallel``).

        Args:
            ids: ``(B, T, n_q)`` the next ``T`` frames (a prompt, then one frame at a time).
            state: the caches; the global one advances by ``T``.
            continuous, is_continuous: as in :meth:`forward`, for these frames.

        Returns:
            ``(B, T, W)`` global outputs; the last one predicts the frame after ``ids``:
            give it to :meth:`local_step` (``multiscale``), or (``parallel``) to
            ``head_logits(pattern.readback(h, T, n_q))``.
        """
        if not self.pattern.frame_steps:
            raise ValueError(
                f"global_step feeds whole frames; pattern {self.pattern.name!r} lays out "
                "steps of its own: use embed_steps() and global_stack(x, state.global_cache)"
            )
        x = self._embed_steps(self.row_grid(ids), continuous, is_continuous)  # (B, T, W)
        return self.global_stack(x, state.global_cache)

    @torch.no_grad()
    def local_step(
        self, context: Tensor, codebook: int, previous: Tensor | None, state: DecodeState
    ) -> Tensor:
        """Logits of one codebook of the next frame (``multiscale``).

        Call with ``codebook = 0, 1, ..., n_q - 1`` in turn; codebook 0 resets the local
        cache.

        Args:
            context: ``(B, W)`` global output of the frame before (from :meth:`global_step`).
            codebook: the codebook ``k`` to predict.
            previous: ``(B,)`` the id chosen for codebook ``k - 1`` of this frame (None for 0).
            state: the caches.

        Returns:
            ``(B, H_k)`` head-local logits of codebook ``k`` (:meth:`local_to_ids` maps a
            chosen index back to an id).
        """
        cache = state.local_cache
        if cache is None:
            raise ValueError(f"pattern {self.pattern.name!r} has no local stack")
        if codebook == 0:
            cache.reset()
        if cache.length != codebook:
            raise ValueError(f"local_step for codebook {codebook} after {cache.length} steps")
        ctx = self.project_to_local(context[:, None])  # (B, 1, n_q or 1, W_l)
        if codebook == 0:
            x = ctx[:, :, 0]  # (B, 1, W_l)
        else:
            flat = previous.clamp(0, self.vocab_size - 1) + (codebook - 1) * self.vocab_size
            x = self.local_embed(self.local_rows_table.view(-1)[flat])[:, None]  # (B, 1, W_l)
            if self.local_context == "every":
                x = x + ctx[:, :, codebook if ctx.shape[2] > 1 else 0]
        h = self.local_stack(x, cache)[:, 0]  # (B, W_l)
        if codebook == 0:
            return self.head0(h)  # (B, H_0)
        return h @ self.heads[codebook - 1]  # (B, H_c)

    def head_logits(self, hidden: Tensor) -> LMOutput:
        """Head logits of hidden states ``(B, T, n_q, W_h)`` (one per cell)."""
        return self._heads(hidden)

    def embed_steps(
        self,
        rows: Tensor,
        continuous: Tensor | None = None,
        continuous_mask: Tensor | None = None,
    ) -> Tensor:
        """Global inputs of laid-out steps (for patterns fed step by step).

        Args:
            rows: ``(B, S, m)`` embedding rows (:meth:`embedding_rows` of the cells, laid
                out by the pattern), summed per step; slot 0 may be replaced:
            continuous: ``(B, S, continuous_dim)`` vectors for slot 0, or None.
            continuous_mask: ``(B, S)`` bool, where slot 0 is replaced.

        Returns:
            ``(B, S, W)``.
        """
        B, S, m = rows.shape
        if continuous is None or continuous_mask is None:
            if m == 1:
                return self.embed(rows[..., 0])  # (B, S, W)
            return F.embedding_bag(rows.reshape(B * S, m), self.embed.weight, mode="sum").view(
                B, S, -1
            )  # (B, S, W)
        if self.continuous_proj is None:
            raise ValueError("continuous vectors given to a model built with continuous_dim=None")
        first = torch.where(
            continuous_mask[..., None],
            self.continuous_proj(continuous).to(self.embed.weight.dtype),
            self.embed(rows[..., 0]),
        )  # (B, S, W)
        if m == 1:
            return first
        rest = F.embedding_bag(rows[..., 1:].reshape(B * S, m - 1), self.embed.weight, mode="sum")
        return first + rest.view(B, S, -1)  # (B, S, W)

    def embedding_rows(self, ids: Tensor) -> Tensor:
        """Rows of the input table of ids ``(..., n_q)`` (an id no head holds: the empty row)."""
        flat = ids.clamp(0, self.vocab_size - 1) + self._row_base  # (..., n_q)
        return self._rows.view(-1)[flat]  # (..., n_q)

    def row_grid(self, ids: Tensor) -> Tensor:
        """Rows of ids ``(B, T, n_q)`` and the empty row: ``(B, T + 1, n_q)``, a pattern's input."""
        rows = self.embedding_rows(ids)  # (B, T, n_q)
        empty = torch.arange(self.n_q, device=ids.device).expand(ids.shape[0], 1, self.n_q)
        return torch.cat((rows, empty), dim=1)  # (B, T + 1, n_q)

    @torch.no_grad()
    def load_grown(self, state: Mapping[str, Tensor]) -> list[str]:
        """Load the weights of a network built for a vocabulary that this one's extends.

        A vocabulary grown by :meth:`Vocabulary.extend <lit_codec.lm.vocab.Vocabulary.extend>`
        appends ids after every range, which appends rows at the end of the input table
        and of head 0 and moves nothing (see the module doc): those two take the old rows
        and keep their own initialisation in the new rows; every other parameter must have
        the same shape. Fine-tuning to a new task starts here: the old tasks' ids and
        logits are unchanged, and the new task token has a fresh embedding.

        Args:
            state: the other network's ``state_dict()`` (parameters; buffers are derived
                from the vocabulary and rebuilt here).

        Returns:
            the names of the parameters that grew.

        Raises:
            ValueError: a parameter missing on either side, or shapes that are not an
                append along the first dimension (another architecture: build this
                network with the other's settings).
        """
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        if missing:
            raise ValueError(f"the weights lack parameters {missing[:5]}: another architecture")
        extra = sorted(k for k in state if k not in own and k not in dict(self.named_buffers()))
        if extra:
            raise ValueError(f"the weights hold parameters this network lacks: {extra[:5]}")
        grown = []
        for name, param in own.items():
            old = state[name]
            if old.shape == param.shape:
                param.copy_(old)
            elif (
                old.dim() == param.dim()
                and old.shape[1:] == param.shape[1:]
                and old.shape[0] < param.shape[0]
            ):
                param[: old.shape[0]] = old
                grown.append(name)
            else:
                raise ValueError(
                    f"parameter {name}: shape {tuple(old.shape)} in the weights, {tuple(param.shape)} "
                    "here: not a grown vocabulary of the same architecture"
                )
        return grown

    def parameter_counts(self) -> dict[str, int]:
        """Parameters of each part: ``embeddings``, ``global``, ``local``, ``heads``, ``total``."""
        parts: dict[str, list[nn.Module | nn.Parameter | None]] = {
            "embeddings": [self.embed, self.continuous_proj],
            "global": [self.global_stack],
            "local": [getattr(self, n, None) for n in ("to_local", "local_embed", "local_stack")],
            "heads": [self.head0, self.heads],
        }
        counts = {name: sum(map(_numel, items)) for name, items in parts.items()}
        counts["total"] = count_parameters(self)
        return counts

    # ------------------------------------------------------------------ internals
    def _embed_steps(
        self, grid: Tensor, continuous: Tensor | None, is_continuous: Tensor | None
    ) -> Tensor:
        """Global inputs ``(B, S, W)`` of a grid of rows ``(B, T + 1, n_q)``."""
        rows = self.pattern.layout(grid)  # (B, S, m)
        if continuous is None and is_continuous is None:
            return self.embed_steps(rows)
        if continuous is None or is_continuous is None:
            raise ValueError("give both continuous and is_continuous, or neither")
        B, T1, n_q = grid.shape
        flags = torch.zeros(B, T1, n_q, dtype=torch.bool, device=grid.device)  # (B, T + 1, n_q)
        flags[:, :-1, 0] = is_continuous
        frame = torch.arange(T1, device=grid.device)[None, :, None].expand(1, T1, n_q)
        mask = self.pattern.layout(flags)[..., 0]  # (B, S)
        source = self.pattern.layout(frame)[0, :, 0].clamp(max=T1 - 2)  # (S,) frame of slot 0
        return self.embed_steps(rows, continuous[:, source], mask)  # (B, S, W)

    def project_to_local(self, g: Tensor) -> Tensor:
        """Global outputs ``(B, T, W)`` projected to the local width: ``(B, T, n_q or 1, W_l)``."""
        if isinstance(self.to_local, PerStepLinear):
            return torch.einsum("btw,kow->btko", g, self.to_local.weight)  # (B, T, n_q, W_l)
        return self.to_local(g)[:, :, None]  # (B, T, 1, W_l)

    def _local(self, g: Tensor, next_rows: Tensor) -> Tensor:
        """Teacher-forced local stack: ``(B, T, W)`` and next frames' rows -> ``(B, T, n_q, W_l)``."""
        B, T, _ = g.shape
        ctx = self.project_to_local(g)  # (B, T, n_q or 1, W_l)
        x = ctx[:, :, :1]  # (B, T, 1, W_l)
        if self.n_q > 1:
            rows = self._local_row_of[next_rows[..., :-1]]  # (B, T, n_q - 1)
            emb = self.local_embed(rows)  # (B, T, n_q - 1, W_l)
            if self.local_context == "every":
                emb = emb + ctx[:, :, 1:] if ctx.shape[2] > 1 else emb + ctx
            x = torch.cat((x, emb), dim=2)  # (B, T, n_q, W_l)
        h = self.local_stack(x.reshape(B * T, self.n_q, -1))  # (B * T, n_q, W_l)
        return h.view(B, T, self.n_q, -1)  # (B, T, n_q, W_l)

    def _heads(self, cells: Tensor) -> LMOutput:
        """``(B, T, n_q, W_h)`` -> :class:`LMOutput` (head ``k`` reads cell ``k``)."""
        first = self.head0(cells[:, :, 0])  # (B, T, H_0)
        rest = torch.einsum("btkw,kwh->btkh", cells[:, :, 1:], self.heads)  # (B, T, n_q - 1, H_c)
        return LMOutput(first, rest)

    def _init_weights(self) -> None:
        std = self.global_config.init_std
        nn.init.normal_(self.embed.weight, std=std)
        nn.init.normal_(self.head0.weight, std=std)
        nn.init.normal_(self.heads, std=std)
        if self.local_config is not None:
            nn.init.normal_(self.to_local.weight, std=std)
            if self.local_embed is not None:
                nn.init.normal_(self.local_embed.weight, std=self.local_config.init_std)

    def _record_plain_configs(self) -> None:
        """Record the stack configs as dicts, so that :meth:`config` holds plain values only."""
        recorded = self.__dict__.get("_init_args")
        if recorded is None:
            return
        recorded["global_config"] = asdict(self.global_config)
        if recorded.get("local_config") is not None:
            recorded["local_config"] = asdict(
                _transformer_config(recorded["local_config"], TransformerConfig())
            )


def _numel(part: nn.Module | nn.Parameter | None) -> int:
    if part is None:
        return 0
    if isinstance(part, nn.Parameter):
        return part.numel()
    return count_parameters(part)


def _transformer_config(
    value: TransformerConfig | Mapping[str, Any] | None, default: TransformerConfig
) -> TransformerConfig:
    if value is None:
        return default
    if isinstance(value, TransformerConfig):
        return replace(value)  # a copy: the model never changes the caller's config
    return TransformerConfig(**dict(value))


def _rows(to_local: Tensor, head_sizes: tuple[int, ...]) -> Tensor:
    """Embedding row of each (codebook, id) ``(n, V)``; ids the codebook cannot hold -> empty.

    Rows: ``n`` empty rows (one per codebook), then the tables of codebooks ``1 .. n - 1``
    (``H_k`` rows each), then codebook 0's table: a grown head 0 only appends rows.
    """
    n = to_local.shape[0]
    offsets = [n + sum(head_sizes[1:])] + [n + sum(head_sizes[1:k]) for k in range(1, n)]
    offsets = torch.tensor(offsets)[:, None]  # (n, 1)
    empty = torch.arange(n)[:, None]  # (n, 1)
    return torch.where(to_local >= 0, to_local + offsets, empty)  # (n, V)
