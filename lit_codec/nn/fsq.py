"""Finite scalar quantization (FSQ) and residual FSQ: quantizers without codebooks.

FSQ (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple") projects the
latents to ``d = len(levels)`` channels, bounds channel ``c`` with a tanh to ``L_c`` levels
and rounds it with a straight-through gradient. The code of a frame is the mixed-radix
number of its ``d`` rounded values, so the implicit codebook holds ``prod(levels)`` codes:
nothing is learned in it, nothing can collapse, and there is no auxiliary loss.

:class:`ResidualFSQ` refines that value in ``n_q`` stages, so that, like the residual vector
quantizer of :mod:`lit_codec.nn.quantization`, the bitrate grows with the number of stages
used and any prefix of the stages decodes. Stage 0 is the paper's FSQ. Stage ``i >= 1``
quantizes what the stages before it left, on a fixed grid (no learned scale):

- in *level units* (the rounded values of stage 0 are integers) stage 0 leaves a residual in
  ``[-1/2, 1/2]`` per channel; stage ``i`` has the ``L`` levels ``L^-i * (j - (L - 1) / 2)``,
  ``j = 0 .. L - 1``: the centres of ``L`` equal cells that tile the residual range the stage
  before left, ``[-L^-(i-1)/2, L^-(i-1)/2]``, exactly. So every code of every stage is
  reachable from the first step, the error after ``n`` stages is at most ``L^-(n-1) / 2``
  per channel, and ``n`` stages are together a uniform quantizer of stage 0's bounded value
  with ``L^n`` levels per channel (not ``(L-1)^-i``, whose grids overlap at the cell edges
  and waste codes; vector-quantize-pytorch's ``ResidualFSQ`` also scales by ``L^-i``);
- all stages share one projection in and one projection out (as in vector-quantize-pytorch),
  so more stages describe the same ``d`` channels more finely; for high bitrates choose a
  longer ``levels`` (more channels) rather than many stages;
- the gradient passes straight through the sum of all stages used (``b + sg(q - b)`` with
  ``b`` the bounded value), so it does not grow with the number of stages;
- the stage arithmetic is float32 (also under bf16 autocast), so stage steps must stay above
  float32 resolution: the constructor refuses ``(n_q - 1) * log2(max(levels)) > 22``.

Quantizer dropout, bitrate accounting and the output dataclass are those of
:class:`~lit_codec.nn.quantization.ResidualVectorQuantizer`, so either is a drop-in
``class_path`` for a recipe's ``quantizer:``. The dropout draw comes from a generator seeded
with ``(seed, step)``: identical on every rank without communication, and ``step`` is a
buffer, so a resumed run draws the same sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.nn.configurable import Configurable
from lit_codec.nn.quantization import DropoutMode, QuantizerOutput, ResidualQuantizer

__all__ = ["FiniteScalarQuantizer", "QuantizerOutput", "ResidualFSQ"]

# FSQ's bound keeps a little room beyond the outer levels (the paper's ``eps``), so that the
# outer levels are reached by finite inputs.
_BOUND_EPS = 1e-3
# Stage steps finer than about 2^-22 of a level fall below float32 resolution.
_MAX_REFINEMENT_BITS = 22.0


class ResidualFSQ(Configurable, ResidualQuantizer):
    """``n_q`` stages of finite scalar quantization, each refining what the earlier ones left.

    Forwards in training mode draw the quantizer dropout and count ``step``; nothing else
    changes in any forward (there are no codebooks), and :meth:`encode`/:meth:`decode` never
    change anything. A one-stage instance is plain FSQ (:class:`FiniteScalarQuantizer`).

    Args:
        dim: channels ``D`` of the latents.
        levels: number of levels (3 or more) of each code channel; ``d = len(levels)``
            channels, every stage's codebook holds ``prod(levels)`` codes. The paper's choices
            per codebook size: 2^8 ``(8, 6, 5)``, 2^10 ``(8, 5, 5, 5)``, 2^12
            ``(7, 5, 5, 5, 5)``, 2^14 ``(8, 8, 8, 6, 5)``, 2^16 ``(8, 8, 8, 5, 5, 5)``.
        n_q: number of stages ``N_q`` (codebooks).
        frame_rate: latent frames per second, used only to report the bitrate.
        quantizer_dropout: in training, how many stages to use: ``"none"`` all of them,
            ``"batch"`` a number drawn uniformly in [1, N_q] per batch (later stages do not
            run), ``"sample"`` one drawn per sample (every stage runs and returns codes,
            later stages are masked out of each sample's output).
        dropout_fraction: with ``"sample"``, the share of each batch that gets a drawn stage
            count; the other samples use every stage.
        seed: seeds the dropout draw; with ``step`` it makes the draw identical on all ranks.

    When ``dim != len(levels)`` a linear projection (with bias) maps the latents to the
    ``d`` code channels and another maps the quantized channels back; otherwise the latents
    are quantized directly and the module has no parameters.
    """

    def __init__(
        self,
        dim: int = 128,
        levels: tuple[int, ...] = (8, 5, 5, 5),
        n_q: int = 8,
        frame_rate: float = 75.0,
        quantizer_dropout: DropoutMode = "batch",
        dropout_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._set_dropout(quantizer_dropout, dropout_fraction)
        levels = tuple(int(n) for n in levels)
        if not levels or min(levels) < 3:
            # With 2 levels the paper's bound maps 0 to the edge of its range: one level is
            # reached only by inputs below about -3.8.
            raise ValueError(f"levels must be a non-empty list of counts >= 3, got {levels}")
        if n_q < 1:
            raise ValueError(f"need n_q >= 1, got {n_q}")
        if math.prod(levels) > 2**24:
            raise ValueError(f"at most 2^24 codes per codebook, got prod({levels})")
        if (n_q - 1) * math.log2(max(levels)) > _MAX_REFINEMENT_BITS:
            raise ValueError(
                f"{n_q} stages of {max(levels)} levels refine a channel by "
                f"{(n_q - 1) * math.log2(max(levels)):.1f} bits, below float32 resolution "
                f"(at most {_MAX_REFINEMENT_BITS:g}): use fewer levels per channel and more "
                "channels (a longer `levels`), or fewer stages"
            )
        self.dim = dim
        self.levels = levels
        self.n_q = n_q
        self.codebook_size = math.prod(levels)
        self.frame_rate = float(frame_rate)
        self.seed = seed
        code_dim = len(levels)
        self.project_in: nn.Linear | None = None
        self.project_out: nn.Linear | None = None
        if dim != code_dim:
            self.project_in = nn.Linear(dim, code_dim)
            self.project_out = nn.Linear(code_dim, dim)
        self._init_step()  # training forwards so far: drives the dropout draw
        self._constants: dict[str, _Constants] = {}

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize latents.

        Args:
            x: (B, D, T) latents (any float dtype; quantized in float32).
            n_q: stages to use; ``None`` means all in eval and the dropout draw in training.

        Returns:
            :class:`QuantizerOutput` with ``quantized`` (B, D, T) in the dtype of ``x``
            (time-major in memory when there are projections), ``codes`` (B, n_q, T) and
            ``losses["vq/commit"]`` an exact zero (FSQ has no auxiliary loss; the key keeps
            ``loss_weights`` valid).
        """
        self._check_input(x)
        step = self._next_step()
        batch = x.shape[0]
        with torch.autocast(device_type=x.device.type, enabled=False):
            n_run, keep = self._choose_layers(n_q, batch, step, x.device)
            const = self._tables(x.device)
            bounded = self._bound(x, const)  # (B, d, T)
            masks = None
            if keep is not None:
                stage_ids = torch.arange(n_run, device=x.device).view(1, n_run, 1, 1)
                masks = keep.view(batch, 1, 1, 1) > stage_ids  # (B, n_run, 1, 1)
            with torch.no_grad():
                digits = self._digits(bounded.detach(), n_run, const)  # (B, n_run, d, T)
                value = self._value(digits, const, masks)  # (B, d, T), level units
                codes = self._codes(digits, const)  # (B, n_run, T)
                metrics = self._metrics(codes, masks)
            if torch.is_grad_enabled() and bounded.requires_grad:
                value = bounded + (value - bounded).detach()  # straight through all stages
            quantized = self._project_out(value.mul_(const.inv_half_width))  # (B, D, T)
        per_sample = keep if keep is not None else torch.full((batch,), n_run, device=x.device)
        return QuantizerOutput(
            quantized=quantized.to(x.dtype),
            codes=codes,
            n_q=n_run,
            n_q_per_sample=per_sample.long(),
            bits_per_frame=n_run * self.bits_per_code,
            bandwidth_kbps=self.kbps(n_run),
            losses={"vq/commit": torch.zeros((), device=x.device)},
            metrics=metrics,
        )

    @torch.no_grad()
    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """(B, D, T) latents -> (B, n_q, T) int64 codes (those of an eval forward).

        The codes of a frame depend on that frame alone, so chunked encoding (streaming)
        gives the codes of offline encoding.
        """
        self._check_input(x)
        n_q = self._checked_n_q(n_q)
        with torch.autocast(device_type=x.device.type, enabled=False):
            const = self._tables(x.device)
            digits = self._digits(self._bound(x, const), n_q, const)  # (B, n_q, d, T)
            return self._codes(digits, const)  # (B, n_q, T)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(B, n_q, T) codes (n_q <= N_q) -> (B, D, T) float32 latents."""
        if codes.dim() != 3:
            raise ValueError(f"expected codes of shape (B, n_q, T), got {tuple(codes.shape)}")
        self._checked_n_q(codes.shape[1])
        if codes.numel():
            low, high = torch.aminmax(codes)
            if int(low) < 0 or int(high) >= self.codebook_size:
                raise IndexError(f"codes must be in [0, {self.codebook_size})")
        with torch.autocast(device_type=codes.device.type, enabled=False):
            const = self._tables(codes.device)
            place = torch.div(codes.long().unsqueeze(2), const.basis, rounding_mode="floor")
            digits = (place % const.levels_long).float()  # (B, n, d, T)
            value = self._value(digits, const, None)  # (B, d, T)
            return self._project_out(value.mul_(const.inv_half_width))  # (B, D, T)

    @torch.no_grad()
    def bounded(self, x: Tensor) -> Tensor:
        """(B, D, T) latents -> (B, D, T) float32: projected in, bounded, *not rounded*, projected
        back. What ``decode(encode(x, n))`` approaches as ``n`` grows (the error after ``n``
        stages is at most ``L^-(n-1) / 2`` of a level per code channel)."""
        self._check_input(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            const = self._tables(x.device)
            return self._project_out(self._bound(x, const).mul_(const.inv_half_width))

    # ------------------------------------------------------------------ the quantizer
    # Code-space tensors are (B, d, T) with T contiguous: every elementwise operation runs
    # along long rows against per-channel (d, 1) constants (a (B*T, d) layout would put the
    # d = 3..6 channels innermost, where elementwise kernels cannot vectorise).

    def _bound(self, x: Tensor, const: _Constants) -> Tensor:
        """(B, D, T) latents -> (B, d, T) float32 bounded values in level units (the paper's
        bound ``tanh(z + shift) * half_l - offset``; even level counts are offset by half a
        level so that they round to ``L`` integers, ``-L/2 .. L/2 - 1``)."""
        x32 = x.float()
        if self.project_in is None:
            z = x32.contiguous() + const.shift  # (B, d, T)
        else:
            weight = self.project_in.weight.float()  # (d, D)
            bias = self.project_in.bias.float() + const.shift.view(-1)  # (d,)
            if x32.stride(1) == 1:  # time-major (SEANet's layout): rows of (B, T, D)
                z = F.linear(x32.transpose(1, 2), weight, bias)  # (B, T, d)
                z = z.transpose(1, 2).contiguous()  # (B, d, T)
            else:  # channel-major: (d, D) @ (B, D, T) per sample
                batch = x32.shape[0]
                z = torch.baddbmm(bias.view(-1, 1), weight.expand(batch, -1, -1), x32)  # (B, d, T)
        # Either way x is read in its own layout, and its gradient is laid out like it.
        return torch.addcmul(const.neg_offset, torch.tanh(z), const.half_l)  # (B, d, T)

    def _project_out(self, code: Tensor) -> Tensor:
        """(B, d, T) normalised code values -> (B, D, T); time-major in memory (a transposed
        view of (B, T, D)) when there is a projection."""
        if self.project_out is None:
            return code
        batch, d, frames = code.shape
        weight, bias = self.project_out.weight.float(), self.project_out.bias.float()
        rows = code.transpose(1, 2).reshape(batch * frames, d)  # (B*T, d), a small copy
        out = F.linear(rows, weight, bias)  # (B*T, D), one addmm
        return out.view(batch, frames, -1).transpose(1, 2)  # (B, D, T)

    @staticmethod
    def _digits(bounded: Tensor, n: int, const: _Constants) -> Tensor:
        """(B, d, T) bounded values -> (B, n, d, T) float level indices in [0, L) per stage."""
        batch, d, frames = bounded.shape
        digits = bounded.new_empty(batch, n, d, frames)  # (B, n, d, T)
        rounded = torch.round(bounded, out=digits[:, 0])  # (B, d, T) stage 0: integers
        residual = bounded - rounded  # (B, d, T) in [-1/2, 1/2]
        rounded.add_(const.half_width)  # stage 0 digit: rounded + L // 2
        for i in range(1, n):
            j = torch.addcmul(const.centre[i], residual, const.inv_step[i], out=digits[:, i])
            j.round_().clamp_(min=const.zero, max=const.top)  # (B, d, T)
            residual.addcmul_(j - const.centre[i], const.step[i], value=-1.0)  # (B, d, T)
        return digits

    @staticmethod
    def _value(digits: Tensor, const: _Constants, masks: Tensor | None) -> Tensor:
        """(B, n, d, T) level indices -> (B, d, T) sum of the stages' values in level units;
        with ``masks`` (B, n, 1, 1) only the stages each sample uses. Forward and
        :meth:`decode` both compute it here, so their values agree exactly."""
        n = digits.shape[1]
        values = (digits - const.centre[:n]).mul_(const.step[:n])  # (B, n, d, T)
        if masks is not None:
            values.mul_(masks)
        return values.sum(1)  # (B, d, T)

    @staticmethod
    def _codes(digits: Tensor, const: _Constants) -> Tensor:
        """(B, n, d, T) level indices -> (B, n, T) int64 mixed-radix codes (channel 0 least
        significant, as vector-quantize-pytorch numbers them); exact in float32 up to 2^24."""
        return (digits * const.basis_float).sum(2).long()  # (B, n, T)

    def _metrics(self, codes: Tensor, masks: Tensor | None) -> dict[str, Tensor]:
        """Per stage ``i``: fraction of its codes used in this batch on this rank and exp of the
        entropy of its code histogram (only the samples that use the stage count)."""
        batch, n, frames = codes.shape
        size = self.codebook_size
        offsets = torch.arange(n, device=codes.device).view(1, n, 1) * size  # (1, n, 1)
        if masks is None:
            weight = torch.ones(codes.numel(), device=codes.device)
        else:
            weight = masks.view(batch, n, 1).expand(batch, n, frames).reshape(-1).float()
        counts = torch.zeros(n * size, device=codes.device)
        counts.index_add_(0, (codes + offsets).view(-1), weight)  # no host sync
        counts = counts.view(n, size)  # (n, K)
        probs = counts / counts.sum(1, keepdim=True).clamp(min=1)  # (n, K)
        perplexity = (-torch.special.xlogy(probs, probs).sum(1)).exp()  # (n,)
        usage = (counts > 0).float().mean(1)  # (n,)
        metrics = {}
        for i in range(n):
            metrics[f"vq/usage/{i}"] = usage[i]
            metrics[f"vq/perplexity/{i}"] = perplexity[i]
        return metrics

    # ------------------------------------------------------------------ internals
    def _tables(self, device: torch.device) -> _Constants:
        """The per-channel constants on ``device`` (float32 whatever the module is cast to),
        made once per device outside inference mode, so graphs may use them."""
        key = str(device)
        const = self._constants.get(key)
        if const is None:
            with torch.inference_mode(False), torch.no_grad():
                const = _Constants.make(self.levels, self.n_q, device)
            self._constants[key] = const
        return const


class FiniteScalarQuantizer(ResidualFSQ):
    """Plain FSQ (Mentzer et al., 2023): one stage of :class:`ResidualFSQ`, one codebook of
    ``prod(levels)`` codes, no quantizer dropout.

    Args:
        dim: channels ``D`` of the latents.
        levels: number of levels of each code channel (see :class:`ResidualFSQ`).
        frame_rate: latent frames per second, used only to report the bitrate.
    """

    def __init__(
        self, dim: int = 128, levels: tuple[int, ...] = (8, 5, 5, 5), frame_rate: float = 75.0
    ) -> None:
        super().__init__(
            dim=dim, levels=levels, n_q=1, frame_rate=frame_rate, quantizer_dropout="none"
        )


@dataclass(frozen=True)
class _Constants:
    """Per-channel constants of one device, float32 unless said: (d, 1) per channel, stage
    tables (N_q, d, 1)."""

    levels_long: Tensor  # (d, 1) int64 L
    basis: Tensor  # (d, 1) int64 mixed-radix place values, cumprod of (1, L_0, L_1, ...)
    basis_float: Tensor  # (d, 1) the same in float32
    half_l: Tensor  # (d, 1) (L - 1) (1 + eps) / 2, the bound's half range
    neg_offset: Tensor  # (d, 1) -1/2 for even L, 0 for odd
    shift: Tensor  # (d, 1) atanh(offset / half_l): the bound maps 0 to 0
    half_width: Tensor  # (d, 1) L // 2, the stage-0 digit of level 0
    inv_half_width: Tensor  # (d, 1) 1 / (L // 2): level units -> about [-1, 1]
    zero: Tensor  # (d, 1) 0, the lowest digit
    top: Tensor  # (d, 1) L - 1, the highest digit
    centre: Tensor  # (N_q, d, 1) digit of value 0: L // 2 for stage 0, (L - 1) / 2 after
    step: Tensor  # (N_q, d, 1) level spacing: 1 for stage 0, L^-i for stage i
    inv_step: Tensor  # (N_q, d, 1) L^i

    @classmethod
    def make(cls, levels: tuple[int, ...], n_q: int, device: torch.device) -> _Constants:
        f64 = torch.tensor(levels, dtype=torch.float64).view(-1, 1)  # (d, 1) exact before rounding
        ints = torch.tensor(levels).view(-1, 1)  # (d, 1)
        half_l = (f64 - 1) * (1 + _BOUND_EPS) / 2
        offset = (ints % 2 == 0).double() * 0.5
        half_width = (ints // 2).double()
        stages = torch.arange(n_q, dtype=torch.float64).view(n_q, 1, 1)  # (N_q, 1, 1)
        centre = ((f64 - 1) / 2).expand(n_q, -1, -1).clone()  # (N_q, d, 1)
        centre[0] = half_width
        basis = torch.cumprod(torch.tensor((1, *levels[:-1])), 0).view(-1, 1)  # (d, 1)

        def put(t: Tensor) -> Tensor:
            dtype = torch.long if not t.is_floating_point() else torch.float32
            return t.to(device=device, dtype=dtype)

        return cls(
            levels_long=put(ints),
            basis=put(basis),
            basis_float=put(basis.double()),
            half_l=put(half_l),
            neg_offset=put(-offset),
            shift=put(torch.atanh(offset / half_l)),
            half_width=put(half_width),
            inv_half_width=put(1 / half_width),
            zero=put(torch.zeros_like(f64)),
            top=put(f64 - 1),
            centre=put(centre),
            step=put(f64.pow(-stages)),
            inv_step=put(f64.pow(stages)),
        )
