"""``CodecLM``: train a codec language model on task sequences (UniAudio recipes).

The module orchestrates a :class:`~lit_codec.nn.multiscale_lm.MultiScaleLM` it receives
from the recipe and the :class:`~lit_codec.data.token_batch.TokenBatch` es a token data
module yields. One training step (automatic optimization):

1. **condition dropout**: each sequence, with probability ``condition_dropout``, has its
   condition replaced by the *null condition* (:func:`drop_conditions`: the content frames
   of every condition segment become ``<pad>`` in all codebooks, continuous frames become
   zero vectors that are not marked continuous; the segment markers and the length stay).
   Classifier-free guidance at generation time runs the same null condition. The draw is
   seeded by ``(seed, training batch, rank)``: resumed runs draw what the uninterrupted
   run drew;
2. the network's teacher-forced forward, and its cross-entropy on ``loss_on``:
   ``"target"`` (prefix LM: only the target segment, ``batch.loss_mask``; attention stays
   causal everywhere) or ``"all"`` (every real token, ``batch.mask``: UniAudio's default),
   each token of codebook ``k`` weighted by ``codebook_weights[k]``;
3. the loss is normalised by the tokens of the *global* batch (one all-reduce of two
   numbers), so ``N`` ranks make the update one process makes with their whole batch;
4. the gradient norm is checked, then clipped to ``gradient_clip``
   (:meth:`configure_gradient_clipping`); the optimizer and the per-step scheduler step.

A step whose loss or gradient norm is not finite on any rank is skipped (its gradients
dropped, so no weight, moment or step count of the optimizer changes), counted as
``train/nonfinite_steps``; ``max_nonfinite_steps`` such steps in a row stop training with
:class:`~lit_codec.models.codec_gan.NonFiniteLossError` (the last good checkpoint stays).

**The vocabulary** decides the network's sizes (ids, codebooks, codes). It is taken, in
order, from ``vocabulary`` (a schema JSON written by ``Vocabulary.save``, or a
:class:`~lit_codec.lm.vocab.Vocabulary`), from the data module (``trainer.datamodule.vocabulary``,
read in :meth:`setup`), or from a checkpoint being loaded; any two of them must be the same
vocabulary (:meth:`Vocabulary.check_compatible <lit_codec.lm.vocab.Vocabulary.check_compatible>`
refuses with both hashes). ``network`` is therefore usually a *factory*: in a recipe, a
``class_path: lit_codec.nn.MultiScaleLM`` whose ``init_args`` leave out the five sizes
(``vocab_size, n_q, codebook_size, codec_start, pad_id``); jsonargparse turns it into a
callable and :meth:`configure_model` calls it with the vocabulary's sizes (seeded by
``seed``, so every rank and every resume builds the same initial weights). A ready-made
``MultiScaleLM`` is accepted too (its sizes are checked against the vocabulary). Every
checkpoint holds the vocabulary schema, its hash and the network's configuration under
``checkpoint["lit_codec"]`` (:func:`load_network` rebuilds the network from it alone).

Logged: ``train/loss`` (the optimised, weighted loss over the global batch),
``train/acc@cb<k>``, ``train/lr``, ``train/grad_norm``, ``train/tokens``,
``train/nonfinite_steps``; in validation ``val/loss``, ``val/acc@cb<k>`` and per task
``val/<task>/loss``, ``val/<task>/acc@cb<k>`` (unweighted token means, summed over the
whole validation pass on every rank before dividing), and ``val/majority_acc@cb<k>``: the
accuracy of always predicting codebook ``k``'s most frequent validation target, the
unigram floor a model's ``val/acc@cb<k>`` must rise above.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lit_codec.data.token_batch import TokenBatch
from lit_codec.lm.vocab import Vocabulary, VocabularyMismatch
from lit_codec.models.training_state import (
    NonFiniteGuard,
    rng_state,
    set_rng_state,
)
from lit_codec.nn.multiscale_lm import LMOutput, MultiScaleLM

__all__ = ["CodecLM", "NetworkFactory", "drop_conditions", "load_network"]

# MultiScaleLM without its five vocabulary sizes: (vocab_size, n_q, codebook_size,
# codec_start, pad_id) -> network. A recipe's `class_path: lit_codec.nn.MultiScaleLM` with
# the other init_args becomes one of these.
NetworkFactory = Callable[[int, int, int, int, int], MultiScaleLM]


def _default_adamw(params):
    return torch.optim.AdamW(params, lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)


class CodecLM(L.LightningModule):
    """Train a codec LM (global stack over frames, local stack over codebooks).

    Args:
        network: a :class:`~lit_codec.nn.multiscale_lm.MultiScaleLM`, or a factory that
            builds one from the vocabulary's five sizes (see the module doc).
        optimizer: optimizer factory for every parameter.
        scheduler: learning-rate scheduler factory, stepped every optimizer step (e.g.
            ``torch.optim.lr_scheduler.OneCycleLR`` for warm-up + cosine over steps, or
            :class:`lit_codec.optim.TimeBudgetLR` over wall-clock time).
        vocabulary: the vocabulary: a schema JSON path, a ``Vocabulary``, or None to take
            the data module's (or a loaded checkpoint's).
        loss_on: ``"target"``: the target segment only (``batch.loss_mask``); ``"all"``:
            every real token (``batch.mask``), conditions included.
        codebook_weights: weight of each codebook's tokens in the loss (``n_q`` values);
            None: all 1.
        first_codebook_weight: the weight of codebook 0 (overrides ``codebook_weights[0]``;
            Moshi weighs its semantic codebook 100x).
        condition_dropout: probability per sequence of training on the null condition
            (:func:`drop_conditions`), for classifier-free guidance.
        gradient_clip: clip the global gradient norm to this; None: the trainer's
            ``gradient_clip_val`` (usually none).
        max_nonfinite_steps: stop after this many consecutive non-finite steps.
        seed: seeds the network's initialisation (when this module builds it) and the
            condition-dropout draws.
        init_from: fine-tuning: a ``CodecLM`` checkpoint whose network weights the new
            network starts from. The data's vocabulary must be the checkpoint's or extend it
            (:meth:`Vocabulary.check_extends`: token shards made with
            ``make_token_shards.py --vocabulary CKPT``); ids a new task or modality added
            get fresh embedding and head-0 rows (:meth:`MultiScaleLM.load_grown`), every old
            id keeps its weights. The network settings must be the checkpoint's. Only read
            when this module builds its network for training (not when a checkpoint of
            this run is loaded).
    """

    def __init__(
        self,
        network: NetworkFactory | MultiScaleLM,
        optimizer: OptimizerCallable = _default_adamw,
        scheduler: LRSchedulerCallable | None = None,
        vocabulary: str | Vocabulary | None = None,
        loss_on: Literal["target", "all"] = "target",
        codebook_weights: Sequence[float] | None = None,
        first_codebook_weight: float | None = None,
        condition_dropout: float = 0.0,
        gradient_clip: float | None = 1.0,
        max_nonfinite_steps: int = 20,
        seed: int = 0,
        init_from: str | None = None,
    ):
        super().__init__()
        if loss_on not in ("target", "all"):
            raise ValueError(f"loss_on must be 'target' or 'all', not {loss_on!r}")
        if not 0.0 <= condition_dropout <= 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1], not {condition_dropout}")
        self.network: MultiScaleLM | None = None
        self._factory: NetworkFactory | None = None
        if isinstance(network, nn.Module):
            self.network = network
        elif callable(network):
            self._factory = network
        else:
            raise TypeError(f"network must be a MultiScaleLM or a factory, not {type(network)}")
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.loss_on = loss_on
        self.codebook_weights = (
            None if codebook_weights is None else tuple(map(float, codebook_weights))
        )
        self.first_codebook_weight = first_codebook_weight
        self.condition_dropout = float(condition_dropout)
        self.gradient_clip = gradient_clip
        self.max_nonfinite_steps = max_nonfinite_steps
        self.seed = int(seed)
        self.init_from = init_from
        self.vocabulary: Vocabulary | None = None
        self._vocabulary_source = ""  # where the vocabulary came from, for error messages
        self.batches_seen = 0  # training batches (micro-batches), saved in checkpoints
        self.nonfinite = NonFiniteGuard(
            max_nonfinite_steps,
            "optimizer step",
            "lower the learning rate, keep gradient clipping on, use bf16 rather than fp16, or check the data.",
        )
        self._skip_step = False  # this optimizer step's loss was not finite
        self._sharded = False
        self._pending_rng: dict[str, Any] | None = None
        self._val_sums: Tensor | None = None
        self._val_counts: Tensor | None = None
        if vocabulary is not None:
            self.use_vocabulary(
                vocabulary if isinstance(vocabulary, Vocabulary) else Vocabulary.load(vocabulary),
                "the vocabulary argument",
            )

    # ------------------------------------------------------------------ vocabulary and network
    def use_vocabulary(self, vocabulary: Vocabulary, source: str) -> None:
        """Adopt ``vocabulary``, or check it against the one already adopted.

        Raises:
            VocabularyMismatch: it is not the vocabulary the module already has (names both
                hashes, the first difference, and where each came from).
        """
        if self.vocabulary is None:
            if self.network is not None:
                self.network.check_vocabulary(vocabulary, source)
            self.vocabulary = vocabulary
            self._vocabulary_source = source
            return
        try:
            self.vocabulary.check_compatible(vocabulary)
        except VocabularyMismatch as err:
            raise VocabularyMismatch(
                err.expected,
                err.actual,
                err.difference,
                f" ({self._vocabulary_source} {err.expected}, {source} {err.actual}: the "
                "model cannot read ids of another vocabulary; retokenize the data with the "
                "model's vocabulary or train a new model)",
            ) from None

    def build_network(self, initialise: bool = True) -> MultiScaleLM:
        """The network, built from the vocabulary by the factory if it is not built yet
        (and, with ``initialise`` and ``init_from``, started from that checkpoint)."""
        if self.network is not None:
            return self.network
        v = self.vocabulary
        if v is None:
            raise RuntimeError(
                "CodecLM does not know its vocabulary: give model.vocabulary (a schema JSON), "
                "a data module with a `vocabulary` attribute, or a checkpoint"
            )
        devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            network = self._factory(
                v.size, v.codec.n_q, v.codec.codebook_size, v.codebook_range(0)[0], v.pad_id
            )
        if initialise and self.init_from is not None:
            self._start_from(network, self.init_from)
        self.network = network
        return network

    def _start_from(self, network: MultiScaleLM, path: str) -> None:
        """Load a trained LM's weights into ``network`` (built for a vocabulary that extends
        the trained one's)."""
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        state = checkpoint.get("lit_codec") or {}
        if state.get("vocabulary") is None:
            raise ValueError(f"init_from {path}: not a CodecLM checkpoint (no vocabulary schema)")
        base = Vocabulary.from_schema(state["vocabulary"])
        try:
            self.vocabulary.check_extends(base)
        except VocabularyMismatch as err:
            raise ValueError(
                f"init_from {path}: {self._vocabulary_source} {self.vocabulary.hash} does not "
                f"extend the checkpoint's vocabulary {base.hash} ({err.difference}); make the "
                f"token shards with data_prep/make_token_shards.py --vocabulary {path}"
            ) from None
        weights = {k[len("network.") :]: v for k, v in checkpoint["state_dict"].items()
                   if k.startswith("network.")}  # fmt: skip
        try:
            grown = network.load_grown(weights)
        except ValueError as err:
            raise ValueError(
                f"init_from {path}: {err}; use the checkpoint's network settings: "
                f"{state.get('network')}"
            ) from None
        added = self.vocabulary.size - base.size
        rank_zero_info(
            f"codec LM: weights from {path} (vocabulary {base.hash}); {added} new ids "
            f"({', '.join(sorted(set(self.vocabulary.tasks) - set(base.tasks))) or 'no new task'}), "
            f"grown: {', '.join(grown) or 'nothing'}"
        )

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule if self.trainer is not None else None
        found = getattr(data, "vocabulary", None) if data is not None else None
        if found is not None:
            self.use_vocabulary(found, f"the data's vocabulary ({type(data).__name__})")

    def configure_model(self) -> None:
        """Build the network (if given as a factory); shard it with FSDP2 under
        ``ModelParallelStrategy``: each block of both stacks, then the whole network."""
        if self.network is None and self.vocabulary is None and self._trainer is None:
            return  # load_from_checkpoint: on_load_checkpoint builds it from the saved vocabulary
        built = self.network is None
        network = self.build_network()
        if built and self._trainer is not None:
            rank_zero_info(self.describe())  # the CLI's describe() came before the network
        mesh = getattr(self, "_device_mesh", None)
        if mesh is None or self._sharded:
            return
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # Lightning's mesh is (data_parallel = nodes, tensor_parallel = processes per node):
        # a 2-D mesh makes fully_shard replicate across nodes and shard within one (HSDP)
        mesh = mesh if mesh.ndim <= 2 else mesh._flatten()
        policy = MixedPrecisionPolicy(param_dtype=None, reduce_dtype=torch.float32)
        stacks = [network.global_stack, getattr(network, "local_stack", None)]
        for stack in (s for s in stacks if s is not None):
            for block in stack.blocks:
                fully_shard(block, mesh=mesh, mp_policy=policy)
        # the logits come back partly as views (einsum); FSDP2 warns about views (an in-place
        # op on one would skip its pre-backward hook): a hook that runs before FSDP's own
        # gives it owned copies
        network.register_forward_hook(_owned_logits)
        fully_shard(network, mesh=mesh, mp_policy=policy)
        self._sharded = True

    def describe(self) -> str:
        """One line: vocabulary, pattern, stack sizes, parameters, tokens per batch."""
        cb = ""
        if self.vocabulary is not None:
            v = self.vocabulary
            cb = (
                f"vocabulary {v.hash} ({v.size} ids, {v.codec.n_q} codebooks x "
                f"{v.codec.codebook_size} codes, {v.codec.frame_rate:g} frames/s); "
            )
        data = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        tokens = getattr(data, "max_tokens", None)
        batch = f"; data.max_tokens {tokens} per batch" if tokens else ""
        loss = f"loss on {self.loss_on}, condition dropout {self.condition_dropout:g}"
        if self.network is None:
            keywords = getattr(self._factory, "keywords", {}) or {}
            pattern = keywords.get("pattern", "multiscale")
            return (
                f"codec LM: {cb}pattern {pattern}; {loss}; the network is built from the "
                f"data's vocabulary when fitting starts (described then){batch}"
            )
        n = self.network
        g = n.global_config
        local = ""
        if n.local_config is not None:
            lc = n.local_config
            local = f", local {lc.depth} x {lc.width} ({lc.heads} heads, {n.local_context} context)"
        counts = {k: v / 1e6 for k, v in n.parameter_counts().items()}
        return (
            f"codec LM: {cb}pattern {n.pattern.name}; global {g.depth} x {g.width} "
            f"({g.heads} heads){local}; parameters (M): "
            + ", ".join(f"{k} {v:.2f}" for k, v in counts.items())
            + f"; {loss}{batch}"
        )

    # ------------------------------------------------------------------ the loss
    def codebook_weight_tensor(self) -> Tensor | None:
        """``(n_q,)`` loss weight of each codebook, or None when all are 1."""
        n_q = self.build_network().n_q
        weights = list(self.codebook_weights or [1.0] * n_q)
        if len(weights) != n_q:
            raise ValueError(f"codebook_weights has {len(weights)} values for {n_q} codebooks")
        if self.first_codebook_weight is not None:
            weights[0] = float(self.first_codebook_weight)
        if all(w == 1.0 for w in weights):
            return None
        return torch.tensor(weights, device=self.device)

    def loss_mask(self, batch: TokenBatch) -> Tensor:
        """``(B, F, n_q)`` bool, the tokens the loss counts (``loss_on``)."""
        return batch.loss_mask if self.loss_on == "target" else batch.mask

    def forward(self, batch: TokenBatch) -> LMOutput:
        """Teacher-forced logits of a batch (row ``t`` predicts frame ``t + 1``)."""
        return self.network(batch.ids, batch.continuous, batch.is_continuous)

    def draw_condition_dropout(self, batch: TokenBatch) -> Tensor:
        """``(B,)`` bool, the sequences of this training batch that get the null condition."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        seed = (self.seed * 1_000_003 + self.batches_seen * 8191 + rank * 131) % (2**63)
        g = torch.Generator().manual_seed(seed)
        return torch.rand(len(batch), generator=g) < self.condition_dropout

    # ------------------------------------------------------------------ optimizers
    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler(optimizer), "interval": "step"},
        }

    # ------------------------------------------------------------------ training
    def training_step(self, batch: TokenBatch, batch_idx: int) -> Tensor:
        if self.condition_dropout > 0:
            drop = self.draw_condition_dropout(batch).to(batch.ids.device)
            batch = drop_conditions(batch, drop, self.vocabulary.pad_id)
        self.batches_seen += 1
        mask = self.loss_mask(batch)  # (B, F, n_q)
        rows = self.network.loss_rows(mask)  # (B, F): local stack and heads only where needed
        output = self.network(batch.ids, batch.continuous, batch.is_continuous, rows=rows)
        weights = self.codebook_weight_tensor()
        result = self.network.loss(output, batch.ids, mask, check=batch_idx == 0,
                                   codebook_weights=weights, rows=rows)  # fmt: skip
        w = weights if weights is not None else torch.ones_like(result.tokens)
        count = (w * result.tokens).sum()  # weighted tokens of this rank
        loss = result.loss
        if self.network.continuous_proj is not None and batch.continuous is None:
            # no continuous frames in this batch: keep the projection in the graph (DDP)
            loss = loss + 0.0 * sum(p.sum() for p in self.network.continuous_proj.parameters())
        stats = torch.stack((result.loss.detach() * count, count.detach()))  # (2,)
        world = self.trainer.world_size
        if world > 1:
            stats = self.trainer.strategy.reduce(stats.clone(), reduce_op="sum")
        total = stats[1].clamp(min=1)
        global_loss = stats[0] / total
        self._skip_step = not bool(torch.isfinite(global_loss))  # same on every rank
        if self._skip_step:
            # still a backward (of zeros), so that DDP's reducers see the pass they expect
            loss = loss.nan_to_num(0.0, 0.0, 0.0) * 0
        elif world > 1:
            loss = loss * count * world / total  # DDP's mean of these = the global token mean
        logs = {"train/loss": global_loss, "train/tokens": batch.mask.sum().float()}
        logs.update({f"train/acc@cb{k}": a for k, a in enumerate(result.accuracy)})
        logs["train/lr"] = self.trainer.optimizers[0].param_groups[0]["lr"]
        logs["train/nonfinite_steps"] = float(self.nonfinite.total)
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=len(batch))
        self.log("loss", global_loss, prog_bar=True, logger=False, batch_size=len(batch))
        return loss

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Check the gradient norm on every rank; skip the step (gradients dropped) when it
        or the loss is not finite, else clip it to ``gradient_clip``."""
        params = [p for p in self.parameters() if p.grad is not None]
        norm = (
            torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        )
        if hasattr(norm, "full_tensor"):  # FSDP2: a norm over sharded gradients
            norm = norm.full_tensor()
        flag = torch.isfinite(norm.detach()).float().reshape(1)
        if self.trainer.world_size > 1:
            flag = self.trainer.strategy.reduce(flag, reduce_op="min")
        skipped = self._skip_step or bool(flag.item() < 1.0)
        self._skip_step = False
        self.nonfinite.record(skipped, self.global_step)
        if skipped:
            for p in params:  # optimizers leave parameters without gradients untouched
                p.grad = None
            return
        self.log("train/grad_norm", norm.detach().float(), on_step=True, on_epoch=False)
        clip = self.gradient_clip if self.gradient_clip is not None else gradient_clip_val
        if clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    @property
    def nonfinite_steps(self) -> int:
        """Optimizer steps skipped so far for a non-finite loss or gradient."""
        return self.nonfinite.total

    # ------------------------------------------------------------------ validation
    def _tasks(self) -> list[str]:
        return list(self.vocabulary.tasks) if self.vocabulary is not None else []

    def on_validation_epoch_start(self) -> None:
        n_q = self.build_network().n_q
        # per task (last row: every task): cross-entropy sums, right argmaxes, tokens
        self._val_sums = torch.zeros(len(self._tasks()) + 1, 3, n_q, device=self.device)
        self._val_counts = None  # (n_q, head size): how often each target value occurs

    def validation_step(self, batch: TokenBatch, batch_idx: int) -> dict[str, Any]:
        output = self(batch)
        mask = self.loss_mask(batch)
        tasks = self._tasks()
        for task in dict.fromkeys(batch.tasks):
            if task not in tasks:
                raise ValueError(
                    f"validation batch holds task {task!r}, not in the vocabulary {tasks}"
                )
            rows = torch.tensor(
                [i for i, t in enumerate(batch.tasks) if t == task], device=self.device
            )
            part = LMOutput(output.first[rows], output.rest[rows])
            result = self.network.loss(part, batch.ids[rows], mask[rows])
            sums = torch.stack((result.per_codebook * result.tokens, result.accuracy * result.tokens,
                                result.tokens))  # (3, n_q)  # fmt: skip
            self._val_sums[tasks.index(task)] += sums
            self._val_sums[-1] += sums
        self._count_targets(output, batch, mask)
        return {"output": output, "batch": batch}

    def _count_targets(self, output: LMOutput, batch: TokenBatch, mask: Tensor) -> None:
        """Histogram of each codebook's validation targets: its most frequent value gives
        the accuracy of a majority (unigram) predictor, logged beside the model's."""
        targets = self.network.targets_to_local(batch.ids[:, 1:], check=False)  # (B, F - 1, n_q)
        real = mask[:, 1:].bool() & (targets >= 0)  # (B, F - 1, n_q)
        size = max(output.first.shape[-1], output.rest.shape[-1])
        n_q = targets.shape[-1]
        offsets = torch.arange(n_q, device=targets.device) * size  # (n_q,)
        flat = (targets.clamp(min=0) + offsets)[real]  # (tokens,)
        counts = torch.bincount(flat, minlength=n_q * size).view(n_q, size)
        self._val_counts = counts if self._val_counts is None else self._val_counts + counts

    def on_validation_epoch_end(self) -> None:
        sums = self._val_sums
        if sums is None:
            return
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            sums = self.trainer.strategy.reduce(sums.clone(), reduce_op="sum")
        logs: dict[str, Tensor] = {}
        names = [*self._tasks(), None]
        for row, task in zip(sums, names):
            ce, hits, tokens = row  # (n_q,) each
            if tokens.sum() == 0:
                continue
            prefix = "val" if task is None else f"val/{task}"
            logs[f"{prefix}/loss"] = ce.sum() / tokens.sum()
            for k in range(len(tokens)):
                if tokens[k] > 0:
                    logs[f"{prefix}/acc@cb{k}"] = hits[k] / tokens[k]
        counts = getattr(self, "_val_counts", None)
        if counts is not None:
            if world > 1:
                counts = self.trainer.strategy.reduce(counts.clone(), reduce_op="sum")
            total = counts.sum(-1).clamp(min=1)  # (n_q,)
            for k, share in enumerate((counts.max(-1).values / total).tolist()):
                logs[f"val/majority_acc@cb{k}"] = torch.tensor(share, device=self.device)
        if logs:
            # already summed over ranks: sync_dist averages equal values (and keeps
            # Lightning from warning that epoch-level values are not synchronised)
            self.log_dict(logs, sync_dist=world > 1)
        self._val_sums = None
        self._val_counts = None

    def teacher_forced_codes(self, output: LMOutput) -> Tensor:
        """``(B, F, n_q)`` most likely *code* of each codebook (argmax over its codes only);
        row ``t`` predicts frame ``t + 1``."""
        n = self.network
        start = n.codec_start  # head 0's local index of code 0 of codebook 0
        first = output.first[..., start : start + n.codebook_size].argmax(-1)  # (B, F)
        rest = output.rest[..., : n.codebook_size].argmax(-1)  # (B, F, n_q - 1)
        return torch.cat((first[..., None], rest), dim=-1)  # (B, F, n_q)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        v = self.vocabulary
        checkpoint["lit_codec"] = {
            "vocabulary": {**v.schema(), "hash": v.hash} if v is not None else None,
            "vocab_hash": v.hash if v is not None else None,
            "network": _network_config(self.network) if self.network is not None else None,
            "batches_seen": self.batches_seen,
            **self.nonfinite.state_dict(),
            "rng": rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("lit_codec") or {}
        schema = state.get("vocabulary")
        if schema is None:
            raise ValueError(
                "the checkpoint holds no vocabulary schema (checkpoint['lit_codec']['vocabulary']): "
                "it was not written by CodecLM"
            )
        self.use_vocabulary(Vocabulary.from_schema(schema), "the checkpoint's vocabulary")
        self.build_network(initialise=False)  # load_from_checkpoint: before the weights load
        self.batches_seen = int(state.get("batches_seen", 0))
        self.nonfinite.load_state_dict(state)
        self._pending_rng = state.get("rng")

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self._pending_rng is not None:  # set back right before the first batch
            set_rng_state(self._pending_rng)
            self._pending_rng = None


# --------------------------------------------------------------------------- functions
def drop_conditions(batch: TokenBatch, drop: Tensor, pad_id: int) -> TokenBatch:
    """The batch with the conditions of the ``drop`` sequences replaced by the null condition.

    The null condition keeps the sequence's layout (markers, lengths, the target) and
    empties the content frames of its condition segments (``batch.condition_mask``):
    ``<pad>`` in every codebook, not real tokens (``mask`` False, so ``loss_on="all"`` does
    not learn them), continuous vectors zero and not marked continuous. Classifier-free
    guidance builds its unconditional sequence the same way.

    Args:
        batch: the batch.
        drop: ``(B,)`` bool, the sequences to empty.
        pad_id: the vocabulary's ``<pad>``.
    """
    frames = batch.condition_mask & drop[:, None].to(batch.condition_mask.device)  # (B, F)
    cells = frames[..., None]  # (B, F, 1)
    changes: dict[str, Any] = {
        "ids": batch.ids.masked_fill(cells, pad_id),  # (B, F, n_q)
        "mask": batch.mask & ~cells,
        "loss_mask": batch.loss_mask & ~cells,
    }
    if batch.continuous is not None:
        changes["continuous"] = batch.continuous.masked_fill(cells, 0.0)  # (B, F, D)
        changes["is_continuous"] = batch.is_continuous & ~frames  # (B, F)
    return dataclasses.replace(batch, **changes)


def load_network(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[MultiScaleLM, Vocabulary]:
    """The trained network and its vocabulary from a ``CodecLM`` checkpoint (one file).

    Needs neither the recipe nor the data: the checkpoint holds the network's configuration
    and the vocabulary schema (``weights_only`` loading; only ``lit_codec`` classes built).
    """
    from lit_codec.nn.configurable import build_module

    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    state = checkpoint.get("lit_codec") or {}
    if state.get("network") is None or state.get("vocabulary") is None:
        raise ValueError(f"{path} is not a CodecLM checkpoint (no lit_codec network/vocabulary)")
    network = build_module(state["network"])
    weights = {k[len("network.") :]: v for k, v in checkpoint["state_dict"].items()
               if k.startswith("network.")}  # fmt: skip
    network.load_state_dict(weights)
    return network, Vocabulary.from_schema(state["vocabulary"])


def _network_config(network: MultiScaleLM) -> dict[str, Any]:
    """The network's ``class_path``/``init_args``, that of its own class under FSDP2 (which
    turns ``MultiScaleLM`` into a generated ``FSDPMultiScaleLM`` subclass)."""
    config = network.config()
    from torch.distributed.fsdp import FSDPModule

    if isinstance(network, FSDPModule):
        cls = next(c for c in type(network).__mro__[1:] if not issubclass(c, FSDPModule))
        config["class_path"] = f"{cls.__module__}.{cls.__qualname__}"
    return config


def _owned_logits(module: nn.Module, args: Any, output: LMOutput) -> LMOutput:
    """Forward hook: logits that are views become copies while gradients are recorded."""
    if torch.is_grad_enabled() and isinstance(output, LMOutput):
        return LMOutput(
            *(t.clone() if t._base is not None else t for t in (output.first, output.rest))
        )
    return output
