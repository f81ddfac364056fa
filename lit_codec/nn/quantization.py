"""Residual vector quantizer (RVQ) with EMA codebooks that stays correct under DDP.

Follows SoundStream (Zeghidour et al., 2021, Algorithm 1) and EnCodec's
``encodec/quantization/core_vq.py`` for the EMA codebooks (Laplace-smoothed cluster
sizes), k-means initialisation, dead-code replacement and commitment loss, and
descript-audio-codec (Kumar et al., 2023, ``dac/nn/quantize.py``) for factorised,
L2-normalised codes and per-sample quantizer dropout. Where this file differs, on purpose:

- dead codes are re-seeded *after* the EMA update of the step and their EMA statistics
  are reset with them, so the replacement survives (EnCodec's replacement is undone by its
  own EMA update, facebookresearch/encodec#61);
- under ``torch.distributed`` the EMA statistics of all layers are summed across ranks in
  one all-reduce, k-means runs on data gathered from every rank (rank 0 computes, then
  broadcasts) and dead-code replacements are broadcast from rank 0: codebooks stay
  bit-identical on every rank;
- the quantizer-dropout draw comes from a generator seeded with ``(seed, step)``, identical
  on every rank without communication; ``step`` is a buffer, so resuming a checkpoint
  resumes the same sequence of draws;
- quantization always runs in float32, also under bf16/fp16 autocast, and the codebook
  buffers stay float32 even when the module is cast with ``.to(torch.bfloat16)``;
- k-means starts from k-means++ seeding, so well-separated clusters all get codes;
- ``warmup_steps`` passes latents through unquantized at the start of training and
  k-means-initialises afterwards, for encoders whose initial outputs are all alike.

Speed (CPU): distances are ``||e||^2 - 2 x.e`` from ``addmm`` in row blocks that stay in
cache, the argmin uses a vectorised two-level reduction, EMA statistics use ``bincount``
and ``index_add_`` instead of one-hot matrix products, and without projections the
commitment loss gets its gradient in closed form instead of through ``n_q`` graphs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from lit_codec.nn.codebook import (
    _DROPOUT,
    _FEW_ROWS,
    EuclideanCodebook,
    _generator,
    _mix,
    _world_size,
)
from lit_codec.nn.configurable import Configurable

__all__ = [
    "EuclideanCodebook",
    "QuantizerOutput",
    "ResidualQuantizer",
    "ResidualVectorQuantizer",
    "VectorQuantizer",
]

DropoutMode = Literal["none", "batch", "sample"]


@dataclass
class QuantizerOutput:
    """What :class:`ResidualVectorQuantizer` returns.

    Attributes:
        quantized: (B, D, T) quantized latents in the input dtype. In training the gradient
            passes straight through to the input (through the projections when
            ``codebook_dim`` is set, as in DAC). Time-major in memory (a transposed view of a
            (B, T, D) tensor), the layout :mod:`lit_codec.nn.seanet` works in.
        codes: (B, n_q, T) int64 code indices, layer 0 first.
        n_q: number of codebooks in ``codes``. With per-sample dropout this is every layer;
            ``n_q_per_sample`` says which of them reached each sample's ``quantized``.
        n_q_per_sample: (B,) int64, the number of layers summed into each sample's
            ``quantized`` (equal to ``n_q`` except with ``quantizer_dropout="sample"``).
        bits_per_frame: ``n_q * log2(codebook_size)``.
        bandwidth_kbps: ``bits_per_frame * frame_rate / 1000``.
        losses: ``{"vq/commit": scalar}``, not weighted: the mean over the layers used of
            ``mean((r_i - sg(q_i))^2)``, ``r_i`` the residual layer ``i`` received and ``q_i``
            its code (in code space with projections); with per-sample dropout the mean runs
            over the (layer, sample) pairs used.
        metrics: per layer ``i`` that ran: ``"vq/usage/{i}"`` (fraction of the codebook used
            in this batch, over all ranks in training) and ``"vq/perplexity/{i}"`` (exp of the
            entropy of the code histogram). Detached scalars.
    """

    quantized: Tensor
    codes: Tensor
    n_q: int
    n_q_per_sample: Tensor
    bits_per_frame: float
    bandwidth_kbps: float
    losses: dict[str, Tensor]
    metrics: dict[str, Tensor]


class ResidualQuantizer(nn.Module):
    """What residual quantizers share: bitrate accounting, the dropout draw, input checks.

    Subclasses (:class:`ResidualVectorQuantizer`, :class:`~lit_codec.nn.fsq.ResidualFSQ`) set
    ``dim``, ``n_q``, ``codebook_size``, ``frame_rate`` and ``seed``, and call
    :meth:`_set_dropout` and :meth:`_init_step` in their constructor.
    """

    dim: int
    n_q: int
    codebook_size: int
    frame_rate: float
    quantizer_dropout: DropoutMode
    dropout_fraction: float
    seed: int

    def _set_dropout(self, mode: DropoutMode, fraction: float) -> None:
        if mode not in ("none", "batch", "sample"):
            raise ValueError(f"quantizer_dropout must be 'none', 'batch' or 'sample', got {mode!r}")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"dropout_fraction must be in [0, 1], got {fraction}")
        self.quantizer_dropout = mode
        self.dropout_fraction = float(fraction)

    def _init_step(self) -> None:
        # Training forwards so far; drives the dropout draw (a buffer, so a resumed run draws
        # the same sequence). The Python int mirrors it so reading it never waits for a device.
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._step = 0

    def _next_step(self) -> int:
        """The step of this forward; counts it in training."""
        step = self._step
        if self.training:
            self._step += 1
            self.step.fill_(self._step)
        return step

    # ------------------------------------------------------------------ bitrate
    @property
    def bits_per_code(self) -> float:
        return math.log2(self.codebook_size)

    def kbps(self, n_q: int) -> float:
        """Bitrate in kbit/s of ``n_q`` codebooks."""
        return n_q * self.bits_per_code * self.frame_rate / 1000.0

    def n_q_for_kbps(self, kbps: float) -> int:
        """The most codebooks whose bitrate does not exceed ``kbps``.

        Raises ``ValueError`` when ``kbps`` is below one codebook's or above all codebooks' rate.
        """
        n = math.floor(kbps / self.kbps(1) + 1e-6)
        if not 1 <= n <= self.n_q:
            raise ValueError(
                f"{kbps} kbps is outside what this quantizer offers: {self.kbps(1):g} kbps per "
                f"codebook, {self.n_q} codebooks up to {self.kbps(self.n_q):g} kbps"
            )
        return n

    # ------------------------------------------------------------------ helpers
    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 3 or x.shape[1] != self.dim:
            raise ValueError(f"expected latents of shape (B, {self.dim}, T), got {tuple(x.shape)}")

    def _checked_n_q(self, n_q: int | None) -> int:
        if n_q is None:
            return self.n_q
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be in [1, {self.n_q}], got {n_q}")
        return int(n_q)

    def _choose_layers(
        self, n_q: int | None, batch: int, step: int, device: torch.device
    ) -> tuple[int, Tensor | None]:
        """Codebooks to run and, for per-sample dropout, each sample's codebook count (B,).

        Draws in ``[1, n_q]`` inclusive, so the last codebook trains too.
        """
        if n_q is not None or not self.training or self.quantizer_dropout == "none":
            return self._checked_n_q(n_q), None
        # The same (seed, step) on every rank gives the same draw, without communication.
        generator = _generator(self.seed, _DROPOUT, step)
        if self.quantizer_dropout == "batch":
            return int(torch.randint(1, self.n_q + 1, (), generator=generator)), None
        per_sample = torch.randint(1, self.n_q + 1, (batch,), generator=generator)  # (B,)
        if self.dropout_fraction < 1.0:  # the other samples train the full bitrate
            full = torch.rand((batch,), generator=generator) >= self.dropout_fraction  # (B,)
            per_sample = per_sample.masked_fill(full, self.n_q)  # (B,)
        return self.n_q, per_sample.to(device, non_blocking=True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._step = int(self.step)


class ResidualVectorQuantizer(Configurable, ResidualQuantizer):
    """``n_q`` layers of EMA codebooks, each quantizing the residual the previous ones left.

    Training-mode forwards update the codebooks (never their gradients: codebooks are
    buffers), count ``step`` and draw the quantizer dropout; eval-mode forwards,
    :meth:`encode` and :meth:`decode` change nothing. A training forward in order:
    warm-up pass-through (first ``warmup_steps`` forwards); k-means initialisation of each
    layer on its first batch; quantization; EMA update of every layer that ran; re-seeding
    of dead codes.

    Args:
        dim: channels ``D`` of the latents.
        n_q: number of layers ``N_q`` (codebooks).
        codebook_size: codes per codebook; each code is ``log2(codebook_size)`` bits.
        frame_rate: latent frames per second, used only to report the bitrate.
        codebook_dim: if set, each layer projects the residual to this many channels with a
            weight-normed 1x1 convolution, looks it up there and projects back (DAC's
            factorised codes). ``None`` quantizes the residual directly.
        l2_normalize: look codes up by cosine similarity: L2-normalised vectors against an
            L2-normalised codebook (DAC). Needs ``codebook_dim``.
        decay: EMA decay of cluster sizes and embedding sums.
        epsilon: Laplace smoothing of the cluster sizes.
        kmeans_init: initialise each codebook by k-means on its first training batch (after
            warm-up); otherwise codebooks start uniformly random.
        kmeans_iters: Lloyd iterations of that k-means.
        threshold_ema_dead_code: codes whose EMA cluster size falls below this are re-seeded
            from the current batch; 0 disables re-seeding.
        quantizer_dropout: in training, how many layers to use: ``"none"`` all of them,
            ``"batch"`` a number drawn uniformly in [1, N_q] per batch (later layers do not
            run), ``"sample"`` one drawn per sample (every layer runs, later layers are masked
            out of each sample's output and commitment loss; codebooks learn from all).
        dropout_fraction: with ``"sample"``, the share of each batch that gets a drawn layer
            count; the other samples use every layer, so the full bitrate trains on them
            (with 1, only about ``1 / N_q`` of the samples train it).
        warmup_steps: the first this many training forwards return their input unquantized
            (codes zero, bitrate as if quantized); the codebooks are k-means-initialised on
            the first batch after them.
        seed: seeds random init, k-means, re-seeding and the dropout draw; with ``step`` it
            makes every random choice identical on all ranks.
    """

    def __init__(
        self,
        dim: int = 128,
        n_q: int = 8,
        codebook_size: int = 1024,
        frame_rate: float = 75.0,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 2.0,
        quantizer_dropout: DropoutMode = "batch",
        dropout_fraction: float = 1.0,
        warmup_steps: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self._set_dropout(quantizer_dropout, dropout_fraction)
        if n_q < 1 or codebook_size < 2:
            raise ValueError("need n_q >= 1 and codebook_size >= 2")
        self.dim = dim
        self.n_q = n_q
        self.codebook_size = codebook_size
        self.frame_rate = float(frame_rate)
        self.warmup_steps = warmup_steps
        self.seed = seed
        self.layers = nn.ModuleList(
            VectorQuantizer(
                dim=dim,
                codebook_size=codebook_size,
                codebook_dim=codebook_dim,
                l2_normalize=l2_normalize,
                decay=decay,
                epsilon=epsilon,
                kmeans_init=kmeans_init,
                kmeans_iters=kmeans_iters,
                threshold_ema_dead_code=threshold_ema_dead_code,
                seed=_mix(seed, i),
            )
            for i in range(n_q)
        )
        self.projected = codebook_dim is not None
        self._init_step()  # training forwards so far: drives warm-up and the dropout draw
        self._table: tuple | None = None  # see _decode_table

    # ------------------------------------------------------------------ forward
    def forward(self, x: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """Quantize latents.

        Args:
            x: (B, D, T) latents (any float dtype; quantized in float32).
            n_q: layers to use; ``None`` means all in eval and the dropout draw in training.

        Returns:
            :class:`QuantizerOutput` with ``quantized`` (B, D, T) and ``codes`` (B, n_q, T).
        """
        self._check_input(x)
        update = self.training
        step = self._next_step()
        with torch.autocast(device_type=x.device.type, enabled=False):
            if update and step < self.warmup_steps:
                return self._pass_through(x, self._checked_n_q(n_q))
            n_run, keep = self._choose_layers(n_q, x.shape[0], step, x.device)
            return self._quantize(x, n_run, keep, update, step)

    @torch.no_grad()
    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """(B, D, T) latents -> (B, n_q, T) int64 codes; never updates the codebooks."""
        self._check_input(x)
        n_q = self._checked_n_q(n_q)
        if self.projected:
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self._encode_projected(x, n_q)
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self._encode_direct(x, n_q)
        return self._encode_direct(x, n_q)

    def _encode_direct(self, x: Tensor, n_q: int) -> Tensor:
        """The codes of :meth:`_run_direct` (same operations), without its statistics."""
        batch, dim, frames = x.shape
        residual = x.float().transpose(1, 2).reshape(batch * frames, dim)  # (B*T, D)
        if batch * frames <= _FEW_ROWS and not self.training:
            tables = [self.layers[i].codebook.search_tables().few() for i in range(n_q)]
            codes = _encode_few(residual, tables).view(n_q, batch, frames)  # (n_q, B, T)
            return codes.transpose(0, 1)  # (B, n_q, T)
        codes = []
        for i in range(n_q):
            book = self.layers[i].codebook
            idx = book.nearest(residual)  # (B*T,)
            q = book.lookup(idx)  # (B*T, D)
            # The first subtraction must not write into x.
            residual = residual - q if i == 0 else residual.sub_(q)
            codes.append(idx.view(batch, frames))
        return torch.stack(codes, dim=1)  # (B, n_q, T)

    @torch.no_grad()
    def _encode_projected(self, x: Tensor, n_q: int) -> Tensor:
        """The codes of :meth:`_run_projected` (same operations, no gradient), without its
        statistics and losses."""
        batch, dim, frames = x.shape
        residual = x.float().transpose(1, 2).reshape(batch * frames, dim)  # (B*T, D)
        codes = []
        for i in range(n_q):
            layer = self.layers[i]
            idx = layer.codebook.nearest(layer.project_in(residual))  # (B*T,)
            codes.append(idx)
            if i + 1 < n_q:
                residual = residual - layer.project_out(layer.codebook.lookup(idx))  # (B*T, D)
        return torch.stack(codes).view(n_q, batch, frames).transpose(0, 1)  # (B, n_q, T)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """(B, n_q, T) codes (n_q <= N_q) -> (B, D, T) float32 latents (time-major in memory)."""
        batch, n, frames = codes.shape
        self._checked_n_q(n)
        if not self.projected:  # one lookup in all codebooks at once, then the sum
            if codes.numel():  # a code outside its codebook would read the next one
                low, high = torch.aminmax(codes)
                if int(low) < 0 or int(high) >= self.codebook_size:
                    raise IndexError(f"codes must be in [0, {self.codebook_size})")
            table, offsets = self._decode_table()
            rows = table.index_select(0, (codes + offsets[:n]).reshape(-1))  # (B*n*T, D)
            out = rows.view(batch, n, frames, self.dim).sum(1)  # (B, T, D)
            return out.transpose(1, 2)  # (B, D, T)
        with torch.autocast(device_type=codes.device.type, enabled=False):
            out: Tensor | None = None
            for i in range(n):
                q = self.layers[i].decode(codes[:, i].reshape(-1))  # (B*T, D)
                out = q if out is None else out.add_(q)
        assert out is not None
        return out.view(batch, frames, self.dim).transpose(1, 2)  # (B, D, T)

    # ------------------------------------------------------------------ internals
    def _decode_table(self) -> tuple[Tensor, Tensor]:
        """Every codebook stacked (N_q * K, D) and the row where each layer's starts (N_q, 1),
        cached until a codebook changes (see :meth:`EuclideanCodebook.search_tables`)."""
        embeds = [layer.codebook.embed for layer in self.layers]
        if any(e.is_inference() for e in embeds):  # no version counter: no cache
            key = None
        else:
            key = tuple((e.data_ptr(), e._version) for e in embeds)
            cached = self._table
            if cached is not None and cached[0] == key and cached[1] is embeds[0]:
                return cached[2], cached[3]
        with torch.inference_mode(False), torch.no_grad():  # usable outside inference mode
            table = torch.cat(embeds)  # (N_q * K, D)
            offsets = torch.arange(self.n_q, device=table.device).view(-1, 1) * self.codebook_size
        if key is not None:
            self._table = (key, embeds[0], table, offsets)
        return table, offsets

    def _pass_through(self, x: Tensor, n_q: int) -> QuantizerOutput:
        batch, _, frames = x.shape
        quantized = x
        if self.projected and torch.is_grad_enabled():
            quantized = x + self._zero_dependency(range(self.n_q)).to(x.dtype)
        return self._output(
            quantized,
            torch.zeros(batch, n_q, frames, dtype=torch.long, device=x.device),  # (B, n_q, T)
            torch.full((batch,), n_q, dtype=torch.long, device=x.device),
            x.new_zeros((), dtype=torch.float32),
            {},
        )

    def _zero_dependency(self, layers: Any) -> Tensor:
        """0 times every projection parameter of ``layers``: joins them to the graph, so that
        DDP sees a (zero) gradient for layers a step skipped (no find_unused_parameters)."""
        total = sum(p.sum() for i in layers for p in self.layers[i].parameters())
        return total * 0.0

    def _quantize(
        self, x: Tensor, n_run: int, keep: Tensor | None, update: bool, step: int
    ) -> QuantizerOutput:
        batch, dim, frames = x.shape
        n = batch * frames
        x32 = x.float()  # (B, D, T); x itself when already float32
        masks = None
        if keep is not None:
            layer_ids = torch.arange(n_run, device=x.device)
            masks = (keep.view(1, batch, 1) > layer_ids.view(n_run, 1, 1)).float()  # (n_run, B, 1)
            masks = masks.expand(n_run, batch, frames).reshape(n_run, n, 1)  # (n_run, B*T, 1)
        run = self._run_projected if self.projected else self._run_direct
        quantized, codes, commit, stats = run(x32, n_run, masks, update, step)
        if self.projected and self.training and n_run < self.n_q and torch.is_grad_enabled():
            quantized = quantized + self._zero_dependency(range(n_run, self.n_q))
        if update:
            self._update_codebooks(stats, step)
        metrics = {}
        for i, (counts, _, _) in enumerate(stats):
            usage, perplexity = _usage_and_perplexity(counts)
            metrics[f"vq/usage/{i}"] = usage
            metrics[f"vq/perplexity/{i}"] = perplexity
        codes_t = torch.stack([c.view(batch, frames) for c in codes], dim=1)  # (B, n_run, T)
        per_sample = keep if keep is not None else torch.full((batch,), n_run, device=x.device)
        return self._output(quantized.to(x.dtype), codes_t, per_sample.long(), commit, metrics)

    def _output(
        self,
        quantized: Tensor,
        codes: Tensor,
        per_sample: Tensor,
        commit: Tensor,
        metrics: dict[str, Tensor],
    ) -> QuantizerOutput:
        n_q = codes.shape[1]
        return QuantizerOutput(
            quantized=quantized,
            codes=codes,
            n_q=n_q,
            n_q_per_sample=per_sample,
            bits_per_frame=n_q * self.bits_per_code,
            bandwidth_kbps=self.kbps(n_q),
            losses={"vq/commit": commit},
            metrics=metrics,
        )

    def _run_direct(
        self, x32: Tensor, n_run: int, masks: Tensor | None, update: bool, step: int
    ) -> tuple[Tensor, list[Tensor], Tensor, list[tuple[Tensor, Tensor | None, Tensor | None]]]:
        """Layers without projections: the whole loop runs without autograd.

        With ``r_i`` the residual entering layer ``i`` (``x`` minus the codes of layers < i,
        constants for autograd), the commitment loss ``sum_i |r_i - q_i|^2 / count`` has the
        gradient ``2 / count * sum_i r_{i+1}`` with respect to ``x``; :class:`_CommitmentLoss`
        supplies it, and the output is ``x + sg(quantized - x)``.
        """
        batch, dim, frames = x32.shape
        need_grad = torch.is_grad_enabled() and x32.requires_grad
        residual = x32.detach().transpose(1, 2).reshape(batch * frames, dim)  # (B*T, D)
        quantized: Tensor | None = None
        err_sum = torch.zeros_like(residual) if need_grad else None  # (B*T, D)
        sq_err = residual.new_zeros(())
        active = residual.new_zeros(())
        codes, stats = [], []
        for i in range(n_run):
            book = self.layers[i].codebook
            if update:
                book.initialize_if_needed(residual, step)
            idx = book.nearest(residual)  # (B*T,)
            stats.append(book.statistics(residual, idx, step if update else None))
            q = book.lookup(idx)  # (B*T, D)
            # Residual for layer i + 1; the first subtraction must not write into x.
            residual = residual - q if i == 0 else residual.sub_(q)
            if masks is None:
                sq_err += torch.dot(residual.view(-1), residual.view(-1))
                active += residual.shape[0]
                if err_sum is not None:
                    err_sum.add_(residual)
            else:
                sq_err += torch.dot(residual.square().sum(1), masks[i].view(-1))
                active += masks[i].sum()
                if err_sum is not None:
                    err_sum.addcmul_(residual, masks[i])
                q.mul_(masks[i])
            quantized = q if quantized is None else quantized.add_(q)
            codes.append(idx)
        assert quantized is not None
        quantized_t = quantized.view(batch, frames, dim).transpose(1, 2)  # (B, D, T)
        count = active * dim
        if err_sum is None:
            return quantized_t, codes, sq_err / count, stats
        err_t = err_sum.view(batch, frames, dim).transpose(1, 2)  # (B, D, T)
        commit = _CommitmentLoss.apply(x32, sq_err, count, err_t)
        return x32 + (quantized_t - x32).detach(), codes, commit, stats

    def _run_projected(
        self, x32: Tensor, n_run: int, masks: Tensor | None, update: bool, step: int
    ) -> tuple[Tensor, list[Tensor], Tensor, list[tuple[Tensor, Tensor | None, Tensor | None]]]:
        """Layers with projections (DAC): autograd through projections and residuals.

        The commitment loss ``|z_i - sg(zq_i)|^2`` is taken in each layer's code space, and
        ``quantized = sum_i out_i(z_i + sg(zq_i - z_i))`` with ``z_i = in_i(r_i)``.
        """
        batch, dim, frames = x32.shape
        straight_through = torch.is_grad_enabled()
        residual = x32.transpose(1, 2).reshape(batch * frames, dim)  # (B*T, D)
        quantized: Tensor | None = None
        sq_err = residual.new_zeros(())
        active = 0.0
        codes, stats = [], []
        for i in range(n_run):
            layer = self.layers[i]
            z = layer.project_in(residual)  # (B*T, d)
            z_detached = z.detach()
            if update:
                layer.codebook.initialize_if_needed(z_detached, step)
            idx = layer.codebook.nearest(z_detached)  # (B*T,)
            stats.append(layer.codebook.statistics(z_detached, idx, step if update else None))
            zq = layer.codebook.lookup(idx)  # (B*T, d)
            err = (z - zq).square().sum(1)  # (B*T,)
            if masks is None:
                sq_err = sq_err + err.sum()
                active += err.shape[0]
            else:
                sq_err = sq_err + torch.dot(err, masks[i].view(-1))
                active = active + masks[i].sum()
            q = layer.project_out(z + (zq - z).detach() if straight_through else zq)  # (B*T, D)
            if i + 1 < n_run:
                residual = residual - q
            if masks is not None:
                q = q * masks[i]
            quantized = q if quantized is None else quantized + q
            codes.append(idx)
        assert quantized is not None
        quantized_t = quantized.view(batch, frames, dim).transpose(1, 2)  # (B, D, T)
        code_dim = self.layers[0].codebook.dim
        return quantized_t, codes, sq_err / (active * code_dim), stats

    @torch.no_grad()
    def _update_codebooks(
        self, stats: list[tuple[Tensor, Tensor | None, Tensor | None]], step: int
    ) -> None:
        """EMA update of every layer that ran, then re-seeding of dead codes."""
        counts = [c for c, _, _ in stats]
        sums = [s for _, s, _ in stats]
        if _world_size() > 1:
            # One all-reduce for the statistics of every layer.
            flat = torch.cat([t.reshape(-1) for pair in zip(counts, sums) for t in pair])
            dist.all_reduce(flat)
            offset = 0
            for i in range(len(stats)):
                for group in (counts, sums):
                    size = group[i].numel()
                    group[i].copy_(flat[offset : offset + size].view_as(group[i]))
                    offset += size
        books = [self.layers[i].codebook for i in range(len(stats))]
        for book, c, s in zip(books, counts, sums):
            book.update_(c, s)
        if books[0].threshold_ema_dead_code <= 0:
            return
        # One host sync for all layers; cluster sizes are identical on every rank, so every
        # rank takes the same branches and joins the same broadcasts.
        n_dead = torch.stack([book.dead_codes().sum() for book in books]).tolist()
        for book, (_, _, candidates), dead in zip(books, stats, n_dead):
            if dead:
                assert candidates is not None
                vectors = candidates[:dead].clone()  # (n_dead, d)
                if _world_size() > 1:
                    dist.broadcast(vectors, src=0)  # rank 0's batch re-seeds every rank
                book.replace_(book.dead_codes(), vectors)


class VectorQuantizer(Configurable, nn.Module):
    """One layer of the RVQ: optional projections (DAC's factorised codes) around a codebook.

    Args:
        dim: channels of the residual this layer receives.
        codebook_size: number of codes.
        codebook_dim: channels of the codes; if set, weight-normed 1x1 convolutions project
            in and out (also when equal to ``dim``). ``None``: no projections.
        l2_normalize: compare L2-normalised vectors with an L2-normalised codebook (cosine
            similarity). Needs ``codebook_dim``.
        decay: EMA decay (see :class:`EuclideanCodebook`).
        epsilon: Laplace smoothing of the cluster sizes.
        kmeans_init: k-means initialisation on the first training batch.
        kmeans_iters: Lloyd iterations of that k-means.
        threshold_ema_dead_code: EMA cluster size under which a code is re-seeded.
        seed: seeds this layer's random choices.
    """

    def __init__(
        self,
        dim: int = 128,
        codebook_size: int = 1024,
        codebook_dim: int | None = None,
        l2_normalize: bool = False,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 2.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if l2_normalize and codebook_dim is None:
            raise ValueError("l2_normalize needs codebook_dim (projections to learn the scale)")
        self.l2_normalize = l2_normalize
        self.in_proj: nn.Module | None = None
        self.out_proj: nn.Module | None = None
        if codebook_dim is not None:
            # A 1x1 convolution over (B, D, T) is a linear map of each (B*T, D) row.
            self.in_proj = weight_norm(nn.Linear(dim, codebook_dim))
            self.out_proj = weight_norm(nn.Linear(codebook_dim, dim))
        self.codebook = EuclideanCodebook(
            dim=codebook_dim or dim,
            codebook_size=codebook_size,
            l2_normalize=l2_normalize,
            decay=decay,
            epsilon=epsilon,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            threshold_ema_dead_code=threshold_ema_dead_code,
            seed=seed,
        )

    def project_in(self, residual: Tensor) -> Tensor:
        """(N, dim) residual -> (N, codebook_dim) vectors to look up (normalised if asked)."""
        if self.in_proj is None:
            return residual
        z = F.linear(residual, self.in_proj.weight.float(), self.in_proj.bias.float())
        return F.normalize(z, dim=1) if self.l2_normalize else z

    def project_out(self, codes: Tensor) -> Tensor:
        """(N, codebook_dim) code vectors -> (N, dim)."""
        if self.out_proj is None:
            return codes
        return F.linear(codes, self.out_proj.weight.float(), self.out_proj.bias.float())

    def decode(self, codes: Tensor) -> Tensor:
        """(N,) code indices -> (N, dim)."""
        return self.project_out(self.codebook.lookup(codes))


class _CommitmentLoss(torch.autograd.Function):
    """``sq_err / count`` whose gradient with respect to ``x`` is ``2 / count * err`` (no graph
    of the per-layer errors is kept; see :meth:`ResidualVectorQuantizer._run_direct`)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sq_err: Tensor, count: Tensor, err: Tensor) -> Tensor:
        ctx.save_for_backward(err, count)
        return sq_err / count

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        err, count = ctx.saved_tensors
        return err * (grad * 2 / count), None, None, None


# ---------------------------------------------------------------------- helpers


def _encode_few(
    residual: Tensor, tables: list[tuple[Tensor, Tensor, Tensor, Tensor | None]]
) -> Tensor:
    """Codes (n_q, N) of few (N, D) rows (streaming): per layer one product, a plain argmin
    and the lookup, in the order of :meth:`_SearchTables.few` (the codes of
    :meth:`EuclideanCodebook.nearest`), mapped to code indices once at the end."""
    positions = []
    for i, (codes, codes_t, codes_sq, _) in enumerate(tables):
        pos = torch.addmm(codes_sq, residual, codes_t, alpha=-2.0).argmin(1)  # (N,)
        positions.append(pos)
        if i + 1 < len(tables):  # the residual for the next layer
            q = codes.index_select(0, pos)  # (N, D)
            residual = residual - q if i == 0 else residual.sub_(q)  # never writes the input
    flat = torch.cat(positions)  # (n_q * N,)
    order = tables[0][3]  # the same for every codebook of one size (see _tie_order)
    if order is not None:
        flat = order.index_select(0, flat)
    return flat.view(len(tables), -1)  # (n_q, N)


def _usage_and_perplexity(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Fraction of codes used and exp(entropy) of the (K,) histogram ``counts``."""
    probs = counts / counts.sum().clamp(min=1)
    entropy = -torch.special.xlogy(probs, probs).sum()
    return (counts > 0).float().mean(), entropy.exp()
