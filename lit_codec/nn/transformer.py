"""A causal pre-norm transformer that serves both training and cached decoding.

The blocks of the codec language model (:mod:`lit_codec.nn.multiscale_lm`), nanoGPT/litgpt
style: pre-norm residual blocks (RMSNorm, or LayerNorm), multi-head causal self-attention
through :func:`torch.nn.functional.scaled_dot_product_attention` with rotary position
embeddings (:mod:`lit_codec.nn.rope`), and a SwiGLU (or GELU) MLP; a final norm closes the
stack. The queries, keys and values come from one fused projection, and no ``T x T`` score
matrix is ever built here: SDPA picks its flash/memory-efficient kernel.

One ``forward`` serves both uses:

- training and scoring: ``forward(x)`` runs the full sequence with ``is_causal=True``;
- cached decoding: ``forward(x, cache)`` with a :class:`~lit_codec.nn.kv_cache.KVCache`
  treats ``x`` as the positions ``cache.length .. cache.length + T - 1``, writes their keys
  and values into the cache and attends to everything written so far. A chunk of ``T > 1``
  (a prompt) gets a causal mask shifted by the offset; a single position needs none.

Decoding ``x`` position by position through a cache gives the outputs of the full forward
(to float rounding; ``tests/nn/test_transformer.py`` checks 1e-5). A single position in eval
mode (the decode loop's step) takes a short path, :meth:`Transformer._decode_one`: the same
layers and kernels as the full forward, with the per-call work that a one-position input
does not need left out (no module dispatch per sub-layer, queries and keys rotated in one
call, the rotary angles sliced from a table kept for the positions decoded so far, no
dropout calls). At batch 1 a step costs mostly fixed per-operation overhead, so this is
what makes cached generation of a small model fast on a CPU thread.

``weights_per_step`` gives each of the first positions its own weights in every linear
layer (Moshi's ``depformer_weights_per_step``): the codebook-level ("local") stack of a
multi-scale LM runs over ``n_q`` positions, and codebook ``k`` may want weights of its own.
Training runs all positions at once as one batched matmul; a cached step at offset ``k``
uses the weights of step ``k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.nn.kv_cache import KVCache
from lit_codec.nn.rope import RotaryEmbedding, apply_rotary

__all__ = [
    "MLP",
    "Attention",
    "Block",
    "PerStepLinear",
    "Transformer",
    "TransformerConfig",
    "count_parameters",
]


@dataclass
class TransformerConfig:
    """Size and kind of a :class:`Transformer` stack."""

    width: int = 512
    """Channels of the residual stream."""
    depth: int = 8
    """Number of residual blocks (attention + MLP)."""
    heads: int = 8
    """Attention heads; ``width / heads`` channels each (even, for the rotary embeddings)."""
    mlp_ratio: float | None = None
    """Hidden width of the MLP in multiples of ``width``. None: 8/3 for SwiGLU (as many
    parameters as a 4x GELU MLP), 4 for GELU."""
    norm: Literal["rms", "layer"] = "rms"
    """Normalisation before each sub-block and at the end: RMSNorm or LayerNorm."""
    mlp: Literal["swiglu", "gelu"] = "swiglu"
    """MLP kind: SwiGLU (``silu(x W1) * (x W3)``, LLaMA) or a GELU MLP (GPT-2)."""
    dropout: float = 0.0
    """Dropout on the attention weights and on each residual branch, in training."""
    rope_base: float = 10_000.0
    """Base of the rotary position embeddings' frequencies."""
    norm_eps: float = 1e-5
    """Epsilon of every normalisation."""
    bias: bool = False
    """Biases in the linear layers (and LayerNorm)."""
    weights_per_step: int = 0
    """Give each of the first ``weights_per_step`` positions its own linear weights (Moshi's
    depth transformer); the sequence may then hold at most that many positions. 0: the
    weights are shared by every position."""
    init_std: float = 0.02
    """Standard deviation of the initial linear weights; the projections back into the
    residual stream use ``init_std / sqrt(2 * depth)`` (GPT-2)."""

    def __post_init__(self) -> None:
        if self.width <= 0 or self.depth <= 0 or self.heads <= 0:
            raise ValueError(
                f"width, depth and heads must be positive, not {self.width}, {self.depth}, "
                f"{self.heads}"
            )
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(
                f"width {self.width} must split into {self.heads} heads of an even width"
            )
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"norm must be 'rms' or 'layer', not {self.norm!r}")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"mlp must be 'swiglu' or 'gelu', not {self.mlp!r}")
        if self.mlp_ratio is None:
            self.mlp_ratio = 8 / 3 if self.mlp == "swiglu" else 4.0
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.weights_per_step < 0:
            raise ValueError(f"weights_per_step must be >= 0, not {self.weights_per_step}")

    @property
    def head_dim(self) -> int:
        """Channels per attention head."""
        return self.width // self.heads

    @property
    def hidden(self) -> int:
        """Hidden width of the MLP."""
        return max(1, round(self.mlp_ratio * self.width))


class Transformer(nn.Module):
    """A causal pre-norm transformer over ``(B, T, width)`` sequences.

    Args:
        config: its size and kind.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.rope = RotaryEmbedding(config.head_dim, config.rope_base)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = _norm(config)
        # (cos, signed sin) of each decoded position: derived, never in a checkpoint
        self._rotary_rows: list[tuple[Tensor, Tensor]] = []
        self._init_weights()

    def forward(self, x: Tensor, cache: KVCache | None = None) -> Tensor:
        """Run the stack causally.

        Args:
            x: ``(B, T, width)`` inputs; with a cache, positions ``cache.length`` onwards.
            cache: None for a full sequence; a cache (from :meth:`new_cache`) for cached
                decoding: the chunk's keys and values are written into it and its
                ``length`` advances by ``T``.

        Returns:
            ``(B, T, width)``, after the final norm.
        """
        T = x.shape[1]
        if cache is not None and T == 1 and not self.training:
            return self._decode_one(x, cache)
        offset = 0 if cache is None else cache.length
        steps = self.config.weights_per_step
        if steps and offset + T > steps:
            raise ValueError(f"positions [{offset}, {offset + T}) exceed weights_per_step={steps}")
        cos, sin = self.rope(T, offset)  # (T, head_dim) each
        mask = None
        if cache is not None and offset > 0 and T > 1:  # a chunk after a cached prefix
            rows = torch.arange(T, device=x.device)[:, None]  # (T, 1)
            cols = torch.arange(offset + T, device=x.device)[None, :]  # (1, offset + T)
            mask = cols <= rows + offset  # (T, offset + T)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, offset, mask, cache, i)  # (B, T, width)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def _decode_one(self, x: Tensor, cache: KVCache) -> Tensor:
        """One position through the cache (eval mode): ``forward(x, cache)`` for ``T = 1``.

        The layers of :class:`Block` in the same order with the same kernels (the fused QKV
        projection, the rotary embedding, SDPA over the cache, the MLP), called directly on
        ``(B, width)`` rows: a one-position step costs mostly per-call overhead, so there is
        no module dispatch per sub-layer, queries and keys are rotated together
        (:func:`_rotate`, bitwise :func:`~lit_codec.nn.rope.apply_rotary`), the rotary angles
        come from a table, and nothing is reshaped that a view can serve.

        Args:
            x: ``(B, 1, width)`` the input at position ``cache.length``.
            cache: the cache to write into and read from; its ``length`` advances by 1.

        Returns:
            ``(B, 1, width)``, after the final norm.
        """
        B, _, W = x.shape
        offset = cache.length
        steps = self.config.weights_per_step
        if steps and offset >= steps:
            raise ValueError(f"positions [{offset}, {offset + 1}) exceed weights_per_step={steps}")
        if offset >= cache.max_len:
            raise ValueError(
                f"KV cache full: positions [{offset}, {offset + 1}) do not fit in "
                f"max_len={cache.max_len}"
            )
        cos, sin = self._rotary_at(offset, cache.max_len, x.dtype)  # (head_dim,) each
        x = x.reshape(B, W)  # (B, W)
        for i, block in enumerate(self.blocks):
            attn, mlp = block.attn, block.mlp
            qkv = _step_linear(attn.qkv, _step_norm(block.norm1, x), offset)  # (B, 3 W)
            qkv = qkv.view(B, 3, attn.heads, 1, attn.head_dim)  # (B, 3, H, 1, Dh)
            qk = _rotate(qkv[:, :2], cos, sin)  # (B, 2, H, 1, Dh): queries and keys
            # KVCache.update by hand: write position `offset` of layer i, read 0 .. offset
            keys, values = cache.keys[i], cache.values[i]  # (B, H, max_len, Dh) each
            keys.narrow(2, offset, 1).copy_(qk[:, 1])
            values.narrow(2, offset, 1).copy_(qkv[:, 2])
            k, v = keys.narrow(2, 0, offset + 1), values.narrow(2, 0, offset + 1)
            y = F.scaled_dot_product_attention(qk[:, 0], k, v)  # (B, H, 1, Dh)
            x = x + _step_linear(attn.proj, y.reshape(B, W), offset)  # (B, W)
            h = _step_linear(mlp.fc, _step_norm(block.norm2, x), offset)  # (B, (2 x) hidden)
            if mlp.gated:
                gate, value = h.chunk(2, dim=-1)  # (B, hidden) each
                h = F.silu(gate) * value
            else:
                h = F.gelu(h)
            x = x + _step_linear(mlp.proj, h, offset)  # (B, W)
        cache.advance(1)
        return _step_norm(self.norm, x).view(B, 1, W)

    def _rotary_at(self, position: int, max_len: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(head_dim,)`` cosines and signed sines (:func:`_rotate`) of one position, from a
        table of the first ``max_len`` positions in ``dtype`` (built on first use, rebuilt
        for more positions, another dtype or another device)."""
        rows = self._rotary_rows
        device = self.rope.inv_freq.device
        if len(rows) <= position or rows[0][0].device != device or rows[0][0].dtype != dtype:
            # ordinary tensors even under inference mode: the table outlives the call
            with torch.inference_mode(False), torch.no_grad():
                cos, sin = self.rope(max(max_len, position + 1))  # (L, Dh) each, float32
                half = cos.shape[-1] // 2
                sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)  # (L, Dh)
                rows = list(zip(cos.to(dtype).unbind(0), sin.to(dtype).unbind(0)))
            self._rotary_rows = rows
        return rows[position]

    def new_cache(
        self,
        batch_size: int,
        max_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` positions.

        ``device`` and ``dtype`` default to those of the parameters.
        """
        weight = next(self.parameters())
        c = self.config
        return KVCache(
            c.depth,
            batch_size,
            c.heads,
            c.head_dim,
            max_len,
            device=device if device is not None else weight.device,
            dtype=dtype or weight.dtype,
        )

    def _init_weights(self) -> None:
        std = self.config.init_std
        for name, module in self.named_modules():
            if isinstance(module, (nn.Linear, PerStepLinear)):
                scale = 1 / math.sqrt(2 * self.config.depth) if name.endswith(".proj") else 1.0
                nn.init.normal_(module.weight, std=std * scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm1 = _norm(config)
        self.attn = Attention(config)
        self.norm2 = _norm(config)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        offset: int = 0,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> Tensor:
        """``(B, T, width) -> (B, T, width)``; see :meth:`Attention.forward` for the rest."""
        x = x + self.dropout(self.attn(self.norm1(x), cos, sin, offset, mask, cache, layer))
        return x + self.dropout(self.mlp(self.norm2(x), offset))


class Attention(nn.Module):
    """Causal multi-head self-attention with a fused QKV projection and rotary positions."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        self.qkv = _linear(config, config.width, 3 * config.width)
        self.proj = _linear(config, config.width, config.width)

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        offset: int = 0,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> Tensor:
        """Attend causally.

        Args:
            x: ``(B, T, width)`` normalised inputs at positions ``offset ..``.
            cos, sin: ``(T, head_dim)`` rotary angles of those positions.
            offset: position of the first input (``cache.length`` when cached).
            mask: ``(T, offset + T)`` bool, True where attention is allowed; only for a
                chunk ``T > 1`` after a cached prefix (else causality needs no mask).
            cache: the KV cache to write into and read from, or None.
            layer: index of this block in the stack (its slot in the cache).

        Returns:
            ``(B, T, width)``.
        """
        B, T, W = x.shape
        qkv = _run(self.qkv, x, offset).reshape(B, T, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, H, T, Dh) each
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # (B, H, T, Dh)
        if cache is not None:
            k, v = cache.update(layer, k, v)  # (B, H, offset + T, Dh)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=mask is None and T > 1 and offset == 0,
        )  # (B, H, T, Dh)
        y = y.transpose(1, 2).reshape(B, T, W)  # (B, T, W)
        return _run(self.proj, y, offset)


class MLP(nn.Module):
    """SwiGLU (one fused input projection, halves gate and value) or GELU MLP."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.gated = config.mlp == "swiglu"
        self.fc = _linear(config, config.width, (2 if self.gated else 1) * config.hidden)
        self.proj = _linear(config, config.hidden, config.width)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """``(B, T, width) -> (B, T, width)``; ``offset`` picks per-step weights."""
        h = _run(self.fc, x, offset)  # (B, T, (2 x) hidden)
        if self.gated:
            gate, value = h.chunk(2, dim=-1)  # (B, T, hidden) each
            h = F.silu(gate) * value
        else:
            h = F.gelu(h)
        return _run(self.proj, h, offset)  # (B, T, width)


class PerStepLinear(nn.Module):
    """A linear layer with its own weights at each of ``steps`` sequence positions.

    Position ``offset + t`` of a ``(B, T, in)`` input uses ``weight[offset + t]``; all
    positions run as one batched matmul.

    Args:
        steps: number of positions with weights.
        in_features: input channels.
        out_features: output channels.
        bias: add a per-step bias.
    """

    def __init__(self, steps: int, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.steps = steps
        self.weight = nn.Parameter(torch.empty(steps, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(steps, out_features)) if bias else None
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """``(B, T, in) -> (B, T, out)`` with the weights of steps ``offset .. offset + T - 1``."""
        T = x.shape[-2]
        weight = self.weight[offset : offset + T]  # (T, out, in)
        lead = x.shape[:-2]
        x = x.reshape(-1, T, x.shape[-1]).transpose(0, 1)  # (T, B, in)
        if self.bias is None:
            y = torch.bmm(x, weight.transpose(1, 2))  # (T, B, out)
        else:
            bias = self.bias[offset : offset + T, None]  # (T, 1, out)
            y = torch.baddbmm(bias, x, weight.transpose(1, 2))  # (T, B, out)
        return y.transpose(0, 1).reshape(*lead, T, -1)  # (B, T, out)

    def extra_repr(self) -> str:
        steps, out_features, in_features = self.weight.shape
        return f"steps={steps}, in_features={in_features}, out_features={out_features}"


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _norm(config: TransformerConfig) -> nn.Module:
    if config.norm == "rms":
        return nn.RMSNorm(config.width, eps=config.norm_eps)
    return nn.LayerNorm(config.width, eps=config.norm_eps, bias=config.bias)


def _linear(config: TransformerConfig, in_features: int, out_features: int) -> nn.Module:
    if config.weights_per_step:
        return PerStepLinear(config.weights_per_step, in_features, out_features, config.bias)
    return nn.Linear(in_features, out_features, bias=config.bias)


def _run(layer: nn.Module, x: Tensor, offset: int) -> Tensor:
    """Apply a shared or per-step linear layer to positions starting at ``offset``."""
    if isinstance(layer, PerStepLinear):
        return layer(x, offset)
    return layer(x)


def _rotate(x: Tensor, cos: Tensor, signed_sin: Tensor) -> Tensor:
    """:func:`~lit_codec.nn.rope.apply_rotary` in three operations: ``(..., D)`` rotated by
    ``cos`` and ``signed_sin`` (the sines with the first half negated) of the same dtype.

    ``cat(-x2, x1) * sin == roll(x, D/2) * signed_sin`` elementwise (a sign flip is exact),
    so the result is bitwise that of :func:`apply_rotary`.
    """
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


#: up to this many rows, a decoding step multiplies ``weight @ x.T`` instead of ``x @ weight.T``
_FEW_ROWS = 4


def _step_linear(layer: nn.Module, x: Tensor, offset: int) -> Tensor:
    """:func:`_run` on the rows ``(B, in)`` of one position ``offset``, without module
    dispatch: ``(B, out)``."""
    if type(layer) is nn.Linear:
        return _rows_linear(x, layer.weight, layer.bias)
    if type(layer) is PerStepLinear:
        bias = None if layer.bias is None else layer.bias[offset]
        return _rows_linear(x, layer.weight[offset], bias)
    return _run(layer, x[:, None], offset)[:, 0]  # anything else: its own forward


def _rows_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``F.linear(x, weight, bias)`` for the few rows ``(B, in)`` of a decoding step.

    A step reads every weight once for a handful of rows: it is bound by memory, not by
    arithmetic. On CPU, ``x @ weight.T`` with 2-4 rows took 1.5x the time of one row
    (``F.linear``'s matrix-matrix path), while ``weight @ x.T`` reads the weight as a
    matrix-vector product does and costs about what one row costs: classifier-free
    guidance (two rows per sequence) then comes almost free. One row, or more than
    ``_FEW_ROWS``, keeps ``F.linear``.
    """
    if x.device.type != "cpu" or not 1 < x.shape[0] <= _FEW_ROWS:
        return F.linear(x, weight, bias)
    if bias is None:
        return torch.mm(weight, x.t()).t().contiguous()  # (B, out)
    return torch.addmm(bias[:, None], weight, x.t()).t().contiguous()  # (B, out)


def _step_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``norm(x)`` without module dispatch (the functional call its forward makes)."""
    if type(norm) is nn.RMSNorm:
        return F.rms_norm(x, norm.normalized_shape, norm.weight, norm.eps)
    if type(norm) is nn.LayerNorm:
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    return norm(x)
