"""``CodecGAN``: SoundStream-style codec training with manual optimization.

The module orchestrates networks it receives ready-made (generator, quantizer,
discriminator, losses, optimizer factories). One training step:

1. one generator forward: ``encode → quantize (random n_q: quantizer dropout) → decode``;
2. discriminator step on the detached reconstruction — its optimizer toggled so
   the generator gets no gradient, gradients clipped with ``self.clip_gradients``
   — once the generator has made ``discriminator_start_step`` steps, every
   ``discriminator_every`` generator steps;
3. generator step (toggled, clipped) on the weighted losses, or on the
   gradient-norm balanced ones when a :class:`~lit_codec.nn.balancer.LossBalancer`
   is given;
4. schedulers stepped by hand, once per generator step.

Counting: ``trainer.global_step`` counts every optimizer step, generator and
discriminator alike, so ``trainer.max_steps`` counts both. Everything this module
schedules (discriminator start, learning rates, the balancer) counts
**generator steps**, ``self.generator_step``; it is logged as ``train/generator_step``
and saved in checkpoints.

A step whose loss or gradient is not finite is skipped (weights and optimizer
state unchanged), counted and logged as ``train/nonfinite_steps``; after
``max_nonfinite_steps`` such steps in a row training stops with an error, so
the last good checkpoint is kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_codec.metrics.codebook import CodebookStatistics
from lit_codec.models.training_state import (
    NonFiniteGuard,
    NonFiniteLossError,
    rng_state,
    set_rng_state,
)
from lit_codec.nn.augment import NoiseMixer
from lit_codec.nn.configurable import module_config
from lit_codec.nn.losses import AdversarialLoss, feature_matching_loss

__all__ = ["CodecGAN", "CodecOutput", "NonFiniteLossError"]

DEFAULT_LOSS_WEIGHTS = {
    "rec/mel": 15.0,
    "rec/l1": 0.0,
    "rec/stft": 0.0,
    "rec/stoi": 0.0,
    "adv/gen": 1.0,
    "adv/feat": 2.0,
    "vq/commit": 1.0,
}


class _CodecPath(nn.Module):
    """encode -> quantize -> decode as one ``forward``: what DDP wraps for the generator step."""

    def __init__(self, generator: nn.Module, quantizer: nn.Module):
        super().__init__()
        self.generator = generator
        self.quantizer = quantizer

    def forward(
        self, wav: torch.Tensor, n_q: int | None = None, condition: torch.Tensor | None = None
    ):
        latent = self.generator.encode(wav, condition)  # (B, D, F)
        q = self.quantizer(latent, n_q=n_q)
        audio = self.generator.decode(q.quantized, condition)[..., : wav.shape[-1]]  # (B, 1, T)
        return audio, latent, q


@dataclass
class CodecOutput:
    """One pass through the codec."""

    audio: torch.Tensor  # (B, 1, T) reconstruction, cropped to the input length
    latent: torch.Tensor  # (B, D, F) encoder output
    quantized: Any  # the quantizer's QuantizerOutput (codes (B, n_q, F), losses, metrics)


def _default_adam_g(params):
    return torch.optim.Adam(params, lr=3e-4, betas=(0.5, 0.9))


def _default_adam_d(params):
    return torch.optim.Adam(params, lr=3e-4, betas=(0.5, 0.9))


def kbps_label(kbps: float) -> str:
    """``1.5 -> "1.5kbps"``, ``6.0 -> "6kbps"``: the suffix of per-bitrate metric keys."""
    return f"{kbps:g}kbps"


class CodecGAN(L.LightningModule):
    """Train a neural audio codec as a GAN (SoundStream, EnCodec, DAC recipes).

    Args:
        generator: encoder/decoder with ``encode(wav, condition)``, ``decode(latent, condition)``
            and ``hop_length`` (e.g. :class:`lit_codec.nn.SEANetGenerator`).
        quantizer: residual vector quantizer (e.g. :class:`lit_codec.nn.ResidualVectorQuantizer`).
        discriminator: returns a ``DiscriminatorOutput`` (e.g. :class:`lit_codec.nn.CombinedDiscriminator`).
        sample_rate: audio sample rate in Hz (linked to the data module and the quantizer).
        mel_loss: multi-scale mel reconstruction loss, logged as ``rec/mel``.
        stft_loss: optional multi-resolution STFT loss, logged as ``rec/stft``.
        stoi_loss: intelligibility loss logged as ``rec/stoi``, computed when its weight is
            above 0 (default then: :class:`lit_codec.nn.STOILoss` at ``sample_rate``).
        adversarial_loss: hinge (default) or least-squares GAN loss.
        relative_feature_matching: normalise feature matching by the real features' scale (EnCodec).
        loss_weights: weight per logged loss name (``rec/mel``, ``rec/l1``, ``rec/stft``, ``rec/stoi``,
            ``adv/gen``, ``adv/feat``, ``vq/commit``); a loss with weight 0 is not computed.
        balancer: gradient-norm balancer for the losses that depend on the output; its own
            weights then replace ``loss_weights`` for those (``vq/commit`` keeps its weight).
        optimizer_g: optimizer factory for generator and quantizer parameters.
        optimizer_d: optimizer factory for the discriminator.
        scheduler_g: learning-rate scheduler factory for the generator, stepped every generator step.
        scheduler_d: the same for the discriminator (also stepped every generator step).
        discriminator_start_step: generator steps before the discriminator and the
            adversarial losses start (reconstruction-only warm-up).
        discriminator_every: update the discriminator every this many generator steps.
        grad_clip_g: clip the generator's gradient norm to this (None: no clipping).
        grad_clip_d: clip the discriminator's gradient norm to this.
        eval_kbps: bitrates evaluated in validation besides the full one (each rounded down
            to a usable number of codebooks); metrics are logged as ``val/<metric>@<kbps>kbps``
            and ``val/loss`` is the mel distance at the full bitrate.
        noise: optional :class:`lit_codec.nn.augment.NoiseMixer` for denoising training
            (the generator must then have FiLM conditioning).
        max_nonfinite_steps: stop after this many consecutive non-finite steps.
    """

    def __init__(
        self,
        generator: nn.Module,
        quantizer: nn.Module,
        discriminator: nn.Module,
        sample_rate: int = 16000,
        mel_loss: nn.Module | None = None,
        stft_loss: nn.Module | None = None,
        stoi_loss: nn.Module | None = None,
        adversarial_loss: AdversarialLoss | None = None,
        relative_feature_matching: bool = False,
        loss_weights: dict[str, float] | None = None,
        balancer: nn.Module | None = None,
        optimizer_g: OptimizerCallable = _default_adam_g,
        optimizer_d: OptimizerCallable = _default_adam_d,
        scheduler_g: LRSchedulerCallable | None = None,
        scheduler_d: LRSchedulerCallable | None = None,
        discriminator_start_step: int = 0,
        discriminator_every: int = 1,
        grad_clip_g: float | None = 10.0,
        grad_clip_d: float | None = 10.0,
        eval_kbps: Sequence[float] = (),
        noise: NoiseMixer | None = None,
        max_nonfinite_steps: int = 20,
    ):
        super().__init__()
        self.automatic_optimization = False
        self.generator = generator
        self.quantizer = quantizer
        self.discriminator = discriminator
        self.sample_rate = sample_rate
        if mel_loss is None:
            from lit_codec.nn.losses import MultiScaleMelLoss

            mel_loss = MultiScaleMelLoss(sample_rate)
        self.mel_loss = mel_loss
        self.stft_loss = stft_loss
        self.adversarial_loss = adversarial_loss or AdversarialLoss("hinge")
        self.relative_feature_matching = relative_feature_matching
        weights = dict(DEFAULT_LOSS_WEIGHTS)
        if loss_weights:
            unknown = set(loss_weights) - set(DEFAULT_LOSS_WEIGHTS)
            if unknown:
                raise ValueError(
                    f"unknown loss_weights keys {sorted(unknown)}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}"
                )
            weights.update(loss_weights)
        if weights["rec/stft"] > 0 and stft_loss is None:
            raise ValueError("loss_weights['rec/stft'] > 0 needs model.stft_loss")
        if weights["rec/stoi"] > 0 and stoi_loss is None:
            from lit_codec.nn.losses import STOILoss

            stoi_loss = STOILoss(sample_rate)
        self.stoi_loss = stoi_loss
        self.loss_weights = weights
        self.balancer = balancer
        self.optimizer_g = optimizer_g
        self.optimizer_d = optimizer_d
        self.scheduler_g = scheduler_g
        self.scheduler_d = scheduler_d
        self.discriminator_start_step = discriminator_start_step
        self.discriminator_every = max(1, discriminator_every)
        self.grad_clip_g = grad_clip_g
        self.grad_clip_d = grad_clip_d
        self.eval_kbps = tuple(float(k) for k in eval_kbps)
        self.noise = noise
        self.max_nonfinite_steps = max_nonfinite_steps
        self.__dict__["_ddp"] = {}  # DDP wrappers, outside the module tree (see wrap_for_ddp)
        self.generator_step = 0
        self.codebook_statistics = CodebookStatistics(
            quantizer.n_q, quantizer.codebook_size, sample_rate / generator.hop_length
        )
        self.nonfinite = NonFiniteGuard(
            max_nonfinite_steps,
            "generator step",
            "lower the learning rates, enable gradient clipping or check the data.",
        )
        self._pending_rng: dict[str, Any] | None = None  # see on_load_checkpoint

    # ------------------------------------------------------------------ the codec
    @property
    def hop_length(self) -> int:
        return self.generator.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def forward(
        self, wav: torch.Tensor, n_q: int | None = None, condition: torch.Tensor | None = None
    ) -> CodecOutput:
        """Encode, quantize and decode (B, 1, T) audio; ``n_q=None`` lets training draw it."""
        path = self._ddp.get("codec") if self.training else None
        if path is None:
            path = _CodecPath(self.generator, self.quantizer)
        audio, latent, q = path(wav, n_q=n_q, condition=condition)
        return CodecOutput(audio, latent, q)

    # ------------------------------------------------------------------ distributed
    def wrap_for_ddp(self, wrap) -> None:
        """Wrap the codec path and the discriminator as two DDP modules (see ``lit_codec.strategies``).

        The wrappers are kept outside the module tree, so parameters, state dicts and
        checkpoints are those of the plain networks.
        """
        self._ddp["codec"] = wrap(_CodecPath(self.generator, self.quantizer))
        self._ddp["discriminator"] = wrap(self.discriminator)

    def configure_model(self) -> None:
        """Shard the networks with FSDP2 when the strategy is ``ModelParallelStrategy``.

        Every network the step calls through its ``forward`` is sharded on its own —
        encoder, decoder, FiLM and discriminator — so each is gathered just before use and
        freed after; the quantizer's codebooks are buffers, kept whole and all-reduced.
        A no-op under any other strategy.
        """
        mesh = getattr(self, "_device_mesh", None)
        if mesh is None:
            return
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if any(p.requires_grad for p in self.quantizer.parameters()):
            raise ValueError(
                "FSDP: factorised quantizer codes (quantizer parameters) are not supported; use EMA codebooks"
            )
        # Lightning's mesh is (data_parallel = nodes, tensor_parallel = processes per node) with
        # both sizes "auto": a 2-D mesh makes fully_shard replicate across nodes and shard
        # within a node (HSDP); the codec uses no tensor parallelism
        policy = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
        networks = [self.generator.encoder, self.generator.decoder, self.discriminator]
        if getattr(self.generator, "film", None) is not None:
            networks.append(self.generator.film)
        for network in networks:
            # SEANet returns time-major activations as transposed views; FSDP2 warns about view
            # outputs (an in-place op on one would skip its pre-backward hook). A hook that runs
            # before FSDP's own gives it an owned copy of the (small) latent and waveform.
            network.register_forward_hook(_owned_output)
            fully_shard(network, mesh=mesh if mesh.ndim <= 2 else mesh._flatten(), mp_policy=policy)

    def setup(self, stage: str) -> None:
        from lightning.pytorch.strategies import DDPStrategy

        from lit_codec.strategies import GANDDPStrategy

        strategy = self.trainer.strategy if self.trainer is not None else None
        if type(strategy) is DDPStrategy and not strategy._ddp_kwargs.get("find_unused_parameters"):
            # plain `--trainer.strategy ddp`: synchronise generator and discriminator separately
            strategy.__class__ = GANDDPStrategy

    def eval_n_qs(self) -> list[int]:
        """The numbers of codebooks validation evaluates: those of ``eval_kbps`` and the full rate."""
        full = self.quantizer.n_q
        chosen = {full}
        for k in self.eval_kbps:
            chosen.add(full if k >= self.quantizer.kbps(full) else self.quantizer.n_q_for_kbps(k))
        return sorted(chosen)

    def describe(self) -> str:
        """One line with the codec's derived numbers (frame rate, bits, bitrates, sizes)."""
        q = self.quantizer
        bits = q.bits_per_code
        rates = ", ".join(f"{q.kbps(n):g}" for n in range(1, q.n_q + 1))
        params = {name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in
                  (("generator", self.generator), ("quantizer", self.quantizer), ("discriminator", self.discriminator))}  # fmt: skip
        return (
            f"codec: {self.sample_rate} Hz, hop {self.hop_length} samples -> {self.frame_rate:g} frames/s; "
            f"{q.n_q} codebooks x {q.codebook_size} codes ({bits:g} bits) = {q.n_q * bits:g} bits/frame "
            f"= {q.kbps(q.n_q):g} kbps; bitrates (kbps): {rates}; parameters (M): "
            + ", ".join(f"{k} {v:.2f}" for k, v in params.items())
        )

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        g_params = [p for m in (self.generator, self.quantizer) for p in m.parameters()]
        opt_g = self.optimizer_g(g_params)
        opt_d = self.optimizer_d(list(self.discriminator.parameters()))
        schedulers = []
        for factory, opt in ((self.scheduler_g, opt_g), (self.scheduler_d, opt_d)):
            if factory is not None:
                schedulers.append({"scheduler": factory(opt), "interval": "step"})
        return [opt_g, opt_d], schedulers

    def _schedulers(self) -> list:
        scheds = self.lr_schedulers()
        if scheds is None:
            return []
        return list(scheds) if isinstance(scheds, (list, tuple)) else [scheds]

    # ------------------------------------------------------------------ training
    def _all_ranks_finite(self, value: torch.Tensor) -> bool:
        flag = torch.isfinite(value.detach()).all().float().reshape(1)
        if self.trainer is not None and self.trainer.world_size > 1:
            flag = self.trainer.strategy.reduce(flag, reduce_op="sum") / self.trainer.world_size
        return bool(flag.item() == 1.0)

    def _step(
        self, optimizer, loss: torch.Tensor, clip: float | None, params: list[torch.Tensor]
    ) -> tuple[bool, torch.Tensor]:
        """Backward, check, clip, step. Returns (stepped, gradient norm before clipping)."""
        optimizer.zero_grad(set_to_none=True)
        if not self._all_ranks_finite(loss):
            # still run a backward (of zeros) so that DDP's reducers see the pass they expect
            self.manual_backward(loss.nan_to_num(0.0, 0.0, 0.0) * 0)
            optimizer.zero_grad(set_to_none=True)
            return False, torch.tensor(float("nan"))
        self.manual_backward(loss)
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
        if hasattr(norm, "full_tensor"):  # FSDP2: a norm over sharded gradients
            norm = norm.full_tensor()
        if not self._all_ranks_finite(norm):
            optimizer.zero_grad(set_to_none=True)
            return False, norm
        if clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step()
        return True, norm

    def _generator_inputs(self, clean: torch.Tensor):
        if self.noise is None:
            return clean, clean, None
        batch = self.noise(clean)
        return batch.inputs, batch.targets, batch.condition

    def reconstruction_losses(
        self, fake: torch.Tensor, real: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The weighted reconstruction losses, keyed by their logged names."""
        losses = {}
        w = self.loss_weights
        if w["rec/mel"] > 0 or self.balancer is not None:
            losses["rec/mel"] = self.mel_loss(fake, real)
        if w["rec/l1"] > 0:
            losses["rec/l1"] = F.l1_loss(fake, real)
        if w["rec/stft"] > 0:
            losses["rec/stft"] = self.stft_loss(fake, real)
        if w["rec/stoi"] > 0:
            losses["rec/stoi"] = self.stoi_loss(fake, real)
        return losses

    def training_step(self, batch, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        clean = batch.audio if hasattr(batch, "audio") else batch  # (B, 1, T)
        inputs, target, condition = self._generator_inputs(clean)
        out = self(inputs, condition=condition)
        adversarial = self.generator_step >= self.discriminator_start_step
        train_d = adversarial and self.generator_step % self.discriminator_every == 0
        logs: dict[str, torch.Tensor | float] = {}
        skipped = False

        if train_d:
            self.toggle_optimizer(opt_d)
            discriminator = self._ddp.get("discriminator", self.discriminator)
            real = discriminator(target)
            fake = discriminator(out.audio.detach())
            loss_d = self.adversarial_loss.discriminator(real.logits, fake.logits)
            stepped, norm_d = self._step(
                opt_d, loss_d, self.grad_clip_d, list(self.discriminator.parameters())
            )
            skipped |= not stepped
            self.untoggle_optimizer(opt_d)
            logs.update({"adv/disc": loss_d.detach(), "train/grad_norm_d": norm_d})

        self.toggle_optimizer(opt_g)
        losses = self.reconstruction_losses(out.audio, target)
        if adversarial:
            fake = self.discriminator(out.audio)
            with torch.no_grad():
                real = self.discriminator(target)
            losses["adv/gen"] = self.adversarial_loss.generator(fake.logits)
            losses["adv/feat"] = feature_matching_loss(
                real.features, fake.features, relative=self.relative_feature_matching
            )
        commit = out.quantized.losses["vq/commit"]
        w = self.loss_weights
        if self.balancer is not None:
            balanced = self.balancer({k: losses.get(k) for k in self.balancer.weights}, out.audio)
            loss_g = balanced.surrogate + w["vq/commit"] * commit
            logs["train/loss_g"] = balanced.effective_loss + w["vq/commit"] * commit.detach()
        else:
            loss_g = w["vq/commit"] * commit + sum(w[k] * v for k, v in losses.items() if w[k] > 0)
            logs["train/loss_g"] = loss_g.detach()
        g_params = [p for m in (self.generator, self.quantizer) for p in m.parameters()]
        stepped, norm_g = self._step(opt_g, loss_g, self.grad_clip_g, g_params)
        skipped |= not stepped
        self.untoggle_optimizer(opt_g)

        for sched in self._schedulers():
            sched.step()
        self.nonfinite.record(skipped, self.generator_step)
        self.generator_step += 1

        logs.update({k: v.detach() for k, v in losses.items()})
        logs["vq/commit"] = commit.detach()
        logs.update({k: v for k, v in out.quantized.metrics.items()})
        logs["vq/n_q"] = float(out.quantized.n_q)
        logs["train/grad_norm_g"] = norm_g
        logs["train/generator_step"] = float(self.generator_step)
        logs["train/nonfinite_steps"] = float(self.nonfinite.total)
        logs["train/lr_g"] = opt_g.param_groups[0]["lr"]
        if self.trainer is not None and self.trainer.datamodule is not None:
            skipped_samples = getattr(self.trainer.datamodule, "corrupt_samples_skipped", None)
            if skipped_samples is not None:
                logs["train/corrupt_samples_skipped"] = float(skipped_samples)
        self.log_dict({k: (v.float() if torch.is_tensor(v) else v) for k, v in logs.items()}, prog_bar=False,
                      on_step=True, on_epoch=False, batch_size=clean.shape[0])  # fmt: skip
        self.log(
            "loss",
            logs["train/loss_g"],
            prog_bar=True,
            on_step=True,
            logger=False,
            batch_size=clean.shape[0],
        )

    @property
    def nonfinite_steps(self) -> int:
        """Optimizer steps skipped so far for a non-finite loss or gradient."""
        return self.nonfinite.total

    # ------------------------------------------------------------------ validation
    def _evaluate(self, batch, stage: str) -> dict[str, Any]:
        clean = batch.audio if hasattr(batch, "audio") else batch  # (B, 1, T)
        lengths = (
            batch.lengths
            if hasattr(batch, "lengths")
            else torch.full((clean.shape[0],), clean.shape[-1], device=clean.device)
        )
        mask = batch.mask.to(clean.dtype) if hasattr(batch, "mask") else torch.ones_like(clean)
        latent = self.generator.encode(clean)  # (B, D, F)
        full = self.quantizer.n_q
        reconstructions = {}
        for n_q in self.eval_n_qs():
            codes = self.quantizer.encode(latent, n_q=n_q)  # (B, n_q, F)
            audio = (
                self.generator.decode(self.quantizer.decode(codes))[..., : clean.shape[-1]] * mask
            )
            label = kbps_label(self.quantizer.kbps(n_q))
            reconstructions[label] = audio
            metrics = {
                f"{stage}/mel@{label}": self.mel_loss(audio, clean),
                f"{stage}/l1@{label}": F.l1_loss(audio, clean),
                f"{stage}/sisdr@{label}": si_sdr(audio, clean, mask).mean(),
            }
            if n_q == full:  # the metric checkpoints and early stopping watch
                metrics[f"{stage}/loss"] = metrics[f"{stage}/mel@{label}"]
                frames = torch.div(
                    lengths + self.hop_length - 1, self.hop_length, rounding_mode="floor"
                )
                self.codebook_statistics.update(codes, frames)
            self.log_dict(metrics, on_epoch=True, sync_dist=True, batch_size=clean.shape[0])
        return {"reference": clean, "lengths": lengths, "reconstructions": reconstructions}

    def on_validation_epoch_start(self) -> None:
        self.codebook_statistics.reset()

    def on_test_epoch_start(self) -> None:
        self.codebook_statistics.reset()

    @property
    def val_code_counts(self) -> torch.Tensor:
        """(n_q, codebook_size) code counts of the current validation pass on this rank."""
        return self.codebook_statistics.counts

    def _log_codebook_statistics(self, stage: str) -> None:
        """Per-codebook usage and perplexity, and the bitrate entropy coding would need (all ranks)."""
        if int(self.codebook_statistics.layer_frames.sum()) == 0 and self.trainer.world_size == 1:
            return
        stats = self.codebook_statistics.compute()  # reduced across ranks
        logs = {f"{stage}/vq/usage/{i}": u for i, u in enumerate(stats.usage)}
        logs.update({f"{stage}/vq/perplexity/{i}": p for i, p in enumerate(stats.perplexity)})
        logs[f"{stage}/vq/kbps"] = stats.kbps
        logs[f"{stage}/vq/entropy_kbps"] = stats.entropy_kbps
        # Already reduced across ranks: sync_dist averages equal values (and keeps Lightning
        # from warning that epoch-level values are not synchronised).
        self.log_dict(logs, sync_dist=self.trainer.world_size > 1)

    def on_validation_epoch_end(self) -> None:
        self._log_codebook_statistics("val")

    def on_test_epoch_end(self) -> None:
        self._log_codebook_statistics("test")

    def validation_step(self, batch, batch_idx: int) -> dict[str, Any]:
        return self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> dict[str, Any]:
        return self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int):
        clean = batch.audio if hasattr(batch, "audio") else batch
        out = self(clean, n_q=self.quantizer.n_q)
        return {"codes": out.quantized.codes, "audio": out.audio}

    # ------------------------------------------------------------------ checkpoints
    def codec_config(self) -> dict[str, Any]:
        """What inference needs to rebuild the codec from a checkpoint (plain values only)."""
        return {
            "generator": module_config(self.generator),
            "quantizer": module_config(self.quantizer),
            "sample_rate": int(self.sample_rate),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lit_codec"] = {
            "codec": self.codec_config(),
            "generator_step": self.generator_step,
            **self.nonfinite.state_dict(),
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lit_codec", {})
        self.generator_step = int(state.get("generator_step", 0))
        self.nonfinite.load_state_dict(state)
        # Noise mixing and anything else drawn from the global generators: the states are
        # set back right before the first batch, because what runs between restoring and
        # that batch draws from them too (each DataLoader iterator draws its base seed).
        self._pending_rng = state.get("rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None


def si_sdr(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Scale-invariant SDR in dB per item of (B, 1, T) signals."""
    if mask is not None:
        estimate, reference = estimate * mask, reference * mask
    est = estimate.flatten(1).double()  # (B, T)
    ref = reference.flatten(1).double()
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * ref
    noise = est - target
    return (10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))).float()


def _owned_output(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook: a tensor output that is a view becomes a copy of the same layout while
    gradients are recorded (FSDP2 hooks its backward on outputs and refuses views)."""
    if torch.is_grad_enabled() and isinstance(output, torch.Tensor) and output._base is not None:
        return output.clone()  # keeps the strides (time-major stays time-major)
    return output
