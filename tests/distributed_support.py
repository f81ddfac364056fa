"""Callbacks that the multi-process tests inject into real `lit-codec fit` runs."""

from __future__ import annotations

import os

import lightning as L
import torch


class DumpState(L.Callback):
    """At the end of training, every rank writes its networks, codebooks and counters.

    Args:
        directory: where ``rank<r>.pt`` files go.
    """

    def __init__(self, directory: str):
        super().__init__()
        self.directory = directory
        self.n_q: list[float] = []
        self.losses: list[float] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {k: _full(v) for k, v in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.n_q.append(float(trainer.callback_metrics.get("vq/n_q", torch.tensor(-1.0))))
        self.losses.append(
            float(trainer.callback_metrics.get("train/loss_g", torch.tensor(float("nan"))))
        )

    def on_train_end(self, trainer, pl_module) -> None:
        os.makedirs(self.directory, exist_ok=True)
        state = {k: _full(v) for k, v in pl_module.state_dict().items()
                 if k.startswith(("generator.", "quantizer.", "discriminator."))}  # fmt: skip
        params = dict(pl_module.named_parameters())
        changed = {k: not torch.equal(_full(p), self.start[k]) for k, p in params.items()}
        torch.save(
            {
                "state": state,
                "generator_step": pl_module.generator_step,
                "global_step": trainer.global_step,
                "n_q": self.n_q,
                "losses": self.losses,
                "batches": trainer.fit_loop.epoch_loop.batch_progress.total.completed,
                "changed": changed,
                "requires_grad": {k: p.requires_grad for k, p in params.items()},
                "codebook_dtype": str(pl_module.quantizer.layers[0].codebook.embed.dtype)
                if hasattr(pl_module.quantizer, "layers")
                else "",
            },
            os.path.join(self.directory, f"rank{trainer.global_rank}.pt"),
        )


class StepMarker(L.Callback):
    """Writes ``<path>`` with the generator step after every training batch.

    Lets a test act once training has really started (a loaded machine may need long to
    import and set up), instead of after a fixed sleep.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        with open(self.path + ".tmp", "w") as f:
            f.write(str(pl_module.generator_step))
        os.replace(self.path + ".tmp", self.path)


def _full(tensor) -> torch.Tensor:
    """A plain CPU copy (gathering FSDP2 shards: a collective, so every rank calls it)."""
    tensor = tensor.detach()
    if hasattr(tensor, "full_tensor"):
        tensor = tensor.full_tensor()
    return tensor.cpu().float().clone()
