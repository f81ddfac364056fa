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

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.n_q.append(float(trainer.callback_metrics.get("vq/n_q", torch.tensor(-1.0))))
        self.losses.append(float(trainer.callback_metrics.get("train/loss_g", torch.tensor(float("nan")))))

    def on_train_end(self, trainer, pl_module) -> None:
        os.makedirs(self.directory, exist_ok=True)
        state = {k: v.detach().cpu().float().clone() for k, v in pl_module.state_dict().items()
                 if k.startswith(("generator.", "quantizer.", "discriminator."))}  # fmt: skip
        torch.save(
            {
                "state": state,
                "generator_step": pl_module.generator_step,
                "global_step": trainer.global_step,
                "n_q": self.n_q,
                "losses": self.losses,
                "batches": trainer.fit_loop.epoch_loop.batch_progress.total.completed,
                "codebook_dtype": str(pl_module.quantizer.layers[0].codebook.embed.dtype)
                if hasattr(pl_module.quantizer, "layers") else "",
            },
            os.path.join(self.directory, f"rank{trainer.global_rank}.pt"),
        )
