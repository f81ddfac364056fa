"""EnCodec's gradient-norm loss balancer, with its running statistics checkpointed.

Follows audiocraft's ``audiocraft.losses.balancer.Balancer`` (Défossez et al., "High Fidelity
Neural Audio Compression", 2022, section 3.4). Instead of summing ``w_i * loss_i``, each loss's
gradient with respect to the generator's output ``x_hat`` is rescaled so that, on average,
it makes up the fraction ``w_i / sum_j w_j`` of a gradient of norm ``total_norm``::

    g_i = d loss_i / d x_hat
    G   = sum_i (w_i / sum_j w_j) * total_norm * g_i / (EMA(||g_i||) + epsilon)

and ``G`` is then back-propagated from ``x_hat`` into the generator. The weights therefore
no longer depend on the scale of each loss: multiplying a loss by 1000 does not change
``G``.

Differences from audiocraft:

- The exponential moving averages of the norms are buffers, so they are saved in the
  ``state_dict`` (and so in Lightning checkpoints) and resumed runs continue exactly.
- The balancer does not call ``backward`` itself. It returns a scalar ``surrogate`` whose
  gradient with respect to ``x_hat`` is exactly ``G``; the caller adds any loss that does not
  depend on ``x_hat`` (the VQ commitment loss, say) and back-propagates the sum, e.g. with
  Lightning's ``self.manual_backward(out.surrogate + 0.25 * commit)``, which keeps AMP loss
  scaling and DDP gradient synchronisation working::

      out = balancer({"rec/mel": mel, "adv/gen": adv, "adv/feat": feat}, x_hat)
      self.manual_backward(out.surrogate + losses["vq/commit"])

- Under ``torch.distributed`` the per-loss norms are averaged across ranks before the EMA
  update, so every rank applies the same scales and holds the same statistics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from lit_codec.nn.configurable import Configurable

__all__ = ["BalancerOutput", "LossBalancer"]


@dataclass
class BalancerOutput:
    """What :class:`LossBalancer` returns for one step.

    Attributes:
        surrogate: scalar whose gradient with respect to the generator output is the balanced
            gradient ``G``; back-propagate it (plus losses that do not depend on the output).
            Its value is meaningless; log ``effective_loss`` instead.
        effective_loss: ``sum_i scale_i * loss_i`` (detached), a loss whose gradient is ``G``
            to first order, for logging.
        norms: this step's gradient norm of each active loss with respect to the output
            (mean over batch items when ``per_batch_item``), detached.
        ema_norms: the moving averages of those norms that the scales use, detached.
        ratios: each active loss's share of the summed moving-average norms, i.e. how much of
            the unbalanced gradient it would make up (audiocraft's monitored ratios).
        scales: the factor each loss's gradient was multiplied by in ``G``.
    """

    surrogate: Tensor
    effective_loss: Tensor
    norms: dict[str, Tensor]
    ema_norms: dict[str, Tensor]
    ratios: dict[str, Tensor]
    scales: dict[str, Tensor]


class LossBalancer(Configurable, nn.Module):
    """Balance the gradients of several losses on one output by their norms (EnCodec).

    The set of losses is fixed at construction (the keys of ``weights``); its statistics
    are the buffers ``ema_total`` and ``ema_weight`` (one entry per loss, in the order of
    ``weights``), bias-corrected like audiocraft's ``averager``:
    ``ema = ema_total / ema_weight`` with ``ema_total <- decay * ema_total + norm`` and
    ``ema_weight <- decay * ema_weight + 1``.

    Args:
        weights: desired share of each loss in the gradient, keyed by the logged loss name
            (e.g. ``{"rec/mel": 15, "adv/gen": 1, "adv/feat": 2}``); only ratios matter.
        total_norm: the norm the balanced gradient aims at (on average).
        ema_decay: decay of the moving average of each loss's gradient norm.
        per_batch_item: measure norms per batch item and average them, rather than one norm
            over the whole batch, so the balance does not depend on the batch size.
        epsilon: added to the averaged norm before dividing by it.
        sync_distributed: average the norms across ranks when ``torch.distributed`` is
            initialised (every rank must then call the balancer with the same active losses).
    """

    ema_total: Tensor
    ema_weight: Tensor

    def __init__(
        self,
        weights: dict[str, float],
        total_norm: float = 1.0,
        ema_decay: float = 0.999,
        per_batch_item: bool = True,
        epsilon: float = 1e-12,
        sync_distributed: bool = True,
    ) -> None:
        super().__init__()
        if not weights:
            raise ValueError("weights must name at least one loss")
        if (
            any(float(w) < 0 for w in weights.values())
            or sum(float(w) for w in weights.values()) <= 0
        ):
            raise ValueError(
                f"weights must be non-negative with a positive sum, got {dict(weights)}"
            )
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
        self.names: tuple[str, ...] = tuple(weights)
        self.weights = {name: float(w) for name, w in weights.items()}
        self.total_norm = float(total_norm)
        self.ema_decay = float(ema_decay)
        self.per_batch_item = per_batch_item
        self.epsilon = float(epsilon)
        self.sync_distributed = sync_distributed
        n = len(self.names)
        self.register_buffer("ema_total", torch.zeros(n, dtype=torch.float32))
        self.register_buffer("ema_weight", torch.zeros(n, dtype=torch.float32))

    def _check_keys(self, losses: Mapping[str, Tensor | None]) -> None:
        missing = [k for k in self.names if k not in losses]
        extra = [k for k in losses if k not in self.weights]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"not in the balancer's weights {extra}")
            raise KeyError(
                f"LossBalancer got losses {sorted(losses)} but balances {list(self.names)}: "
                + "; ".join(parts)
                + " (pass None for a loss that is inactive this step; add losses that do not "
                "depend on the output to the surrogate yourself)"
            )

    def _norm(self, grad: Tensor) -> Tensor:
        grad = grad.float()
        if self.per_batch_item:
            return torch.linalg.vector_norm(grad.flatten(1), dim=1).mean()  # (B,) -> ()
        return torch.linalg.vector_norm(grad)

    def _sync(self, norms: Tensor, count: int) -> Tensor:
        if not (self.sync_distributed and dist.is_available() and dist.is_initialized()):
            return norms
        if dist.get_world_size() == 1:
            return norms
        count_t = norms.new_tensor([float(count)])
        buf = torch.cat([norms * count, count_t])  # (A + 1,)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        return buf[:-1] / buf[-1]  # (A,)

    def forward(self, losses: Mapping[str, Tensor | None], output: Tensor) -> BalancerOutput:
        """Balance the gradients of ``losses`` with respect to ``output``.

        Args:
            losses: one scalar per name in ``weights`` (no more, no fewer). A value of
                ``None`` marks a loss inactive this step (e.g. adversarial losses before the
                discriminator starts): it is left out, its statistics are not updated, and
                the desired ratios are renormalised over the active losses.
            output: the generator's output (e.g. the waveform ``(B, 1, T)``) that every
                active loss depends on; it must require grad.

        Returns:
            :class:`BalancerOutput`. The graphs of the losses are kept, so back-propagate
            ``surrogate`` afterwards.
        """
        self._check_keys(losses)
        if not output.requires_grad:
            raise ValueError(
                "output must require grad: pass the generator's output, not a detached copy"
            )
        active = [i for i, name in enumerate(self.names) if losses[name] is not None]
        if not active:
            raise ValueError("every loss is None: nothing to balance")

        grads: list[Tensor] = []
        for i in active:
            name = self.names[i]
            loss = losses[name]
            assert loss is not None
            if loss.numel() != 1:
                raise ValueError(f"loss {name!r} must be a scalar, got shape {tuple(loss.shape)}")
            grad = None
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss, [output], retain_graph=True, allow_unused=True)
            if grad is None:
                raise ValueError(
                    f"loss {name!r} does not depend on the balanced output, so it cannot be "
                    "balanced; remove it from the weights and add it to the surrogate yourself, "
                    "or pass None while it is inactive"
                )
            grads.append(grad)

        count = output.shape[0] if self.per_batch_item else 1
        with torch.no_grad():
            norms = torch.stack([self._norm(g) for g in grads])  # (A,)
            norms = self._sync(norms, count)  # (A,)
            idx = torch.tensor(active, device=self.ema_total.device)
            total = self.ema_total.float()[idx] * self.ema_decay + norms.to(self.ema_total.device)
            weight = self.ema_weight.float()[idx] * self.ema_decay + 1.0
            self.ema_total[idx] = total.to(self.ema_total.dtype)
            self.ema_weight[idx] = weight.to(self.ema_weight.dtype)
            ema = (total / weight).to(output.device)  # (A,)

            weight_sum = sum(self.weights[self.names[i]] for i in active)
            if weight_sum <= 0:
                raise ValueError("the active losses all have weight 0")
            desired = torch.tensor(
                [self.weights[self.names[i]] / weight_sum for i in active],
                dtype=torch.float32,
                device=output.device,
            )  # (A,)
            scales = desired * self.total_norm / (ema + self.epsilon)  # (A,)

            combined = torch.zeros_like(output, dtype=torch.float32)
            effective = torch.zeros((), dtype=torch.float32, device=output.device)
            for k, (i, grad) in enumerate(zip(active, grads)):
                combined.add_(grad.float() * scales[k])
                effective += scales[k] * losses[self.names[i]].detach().float().reshape(())
            ratios = ema / ema.sum().clamp_min(self.epsilon)  # (A,)

        surrogate = (output * combined.to(output.dtype)).sum()
        active_names = [self.names[i] for i in active]
        return BalancerOutput(
            surrogate=surrogate,
            effective_loss=effective,
            norms=dict(zip(active_names, norms.unbind())),
            ema_norms=dict(zip(active_names, ema.unbind())),
            ratios=dict(zip(active_names, ratios.unbind())),
            scales=dict(zip(active_names, scales.unbind())),
        )

    def extra_repr(self) -> str:
        return f"weights={self.weights}, total_norm={self.total_norm}, ema_decay={self.ema_decay}"
