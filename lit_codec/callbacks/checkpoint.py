"""Checkpoints every N generator steps (GAN modules make two optimizer steps per batch)."""

from __future__ import annotations

import os

import torch
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["GeneratorStepCheckpoint"]


class GeneratorStepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose step cadence counts the module's ``generator_step``.

    With manual optimization ``trainer.global_step`` counts the discriminator's steps too,
    so ``every_n_train_steps`` would drift as soon as the discriminator starts. This
    callback saves (``last.ckpt`` when ``save_last``, plus the top-k by ``monitor``)
    every ``every_n_generator_steps`` generator steps; every other option is
    ``ModelCheckpoint``'s. Without ``dirpath`` checkpoints go to
    ``<trainer.default_root_dir>/checkpoints`` (not into a logger's versioned folder), so
    ``--ckpt_path last`` finds the previous run's ``last.ckpt``. The final state is saved
    as ``last.ckpt`` when training ends normally, and also on SIGTERM (preemption) and
    Ctrl-C. Checkpoints are written atomically (:class:`lit_codec.checkpoint_io.AtomicCheckpointIO`
    replaces Lightning's default writer).

    Args:
        every_n_generator_steps: save after every this many generator steps (0: never by steps),
            as ``epoch=E-generator_step=N.ckpt`` unless ``filename`` says otherwise.
        save_last: keep ``last.ckpt`` up to date.
        enable_version_counter: write ``last-v1.ckpt`` instead of overwriting ``last.ckpt``.
        **kwargs: passed to ``ModelCheckpoint`` (``dirpath``, ``save_last``, ``monitor``, ...).
    """

    def __init__(
        self,
        every_n_generator_steps: int = 1000,
        save_last: bool = True,
        enable_version_counter: bool = False,
        **kwargs,
    ):
        # enable_version_counter=False: a resumed run overwrites last.ckpt (atomically)
        # instead of writing last-v1.ckpt next to it. Files are named by generator step
        # (Lightning's default `{epoch}-{step}` counts both networks' optimizer steps).
        if kwargs.get("filename") is None:  # the CLI passes filename=None explicitly
            kwargs["filename"] = "{epoch}-{generator_step}"
        super().__init__(
            save_last=save_last, enable_version_counter=enable_version_counter, **kwargs
        )
        self.every_n_generator_steps = every_n_generator_steps
        self._last_generator_step_saved = -1

    def _default_dirpath(self, trainer) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "checkpoints")

    def _find_last_checkpoints(self, trainer) -> set[str]:
        # `fit(ckpt_path="last")` looks for last.ckpt before any callback's setup(): look
        # where this callback saves, not in the logger's (new, versioned) folder
        self._default_dirpath(trainer)
        return super()._find_last_checkpoints(trainer)

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._default_dirpath(trainer)
        # write checkpoints atomically (temporary file + rename): a SIGKILL during a save
        # leaves the previous last.ckpt intact
        from lightning.pytorch.plugins.io import TorchCheckpointIO

        from lit_codec.checkpoint_io import AtomicCheckpointIO

        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        super().setup(trainer, pl_module, stage)

    def on_train_end(self, trainer, pl_module) -> None:
        step = getattr(pl_module, "generator_step", None)
        if step is None:  # one optimizer step per batch (CodecLM): count train steps
            step = trainer.global_step
            if self.save_last and step > 0 and step != self._last_global_step_saved:
                # e.g. trainer.max_time ended the run between two every_n_train_steps saves
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        if (
            self.save_last
            and step is not None
            and step != self._last_generator_step_saved
            and step > 0
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self._last_generator_step_saved = step

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """Preemption (SIGTERM) or Ctrl-C: save ``last.ckpt`` before the process exits.

        Other errors (a diverged run, a bug) keep the last good checkpoint as it is.
        """
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if (
            self.save_last
            and isinstance(exception, (SIGTERMException, KeyboardInterrupt))
            and self.dirpath
        ):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = getattr(pl_module, "generator_step", None)
        if step is None:
            return super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.every_n_generator_steps
        if not n or step % n or step == self._last_generator_step_saved:
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        self._last_generator_step_saved = step  # before saving: the checkpoint holds it
        candidates = self._monitor_candidates(trainer)
        if self.monitor is None or self.monitor in candidates:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)

    def _monitor_candidates(self, trainer) -> dict:
        candidates = super()._monitor_candidates(trainer)
        step = getattr(trainer.lightning_module, "generator_step", None)
        if step is not None:  # for file names such as epoch=0-generator_step=1000.ckpt
            candidates.setdefault("generator_step", torch.tensor(step))
        return candidates

    def state_dict(self):
        state = super().state_dict()
        state["last_generator_step_saved"] = self._last_generator_step_saved
        return state

    def load_state_dict(self, state_dict) -> None:
        super().load_state_dict(state_dict)
        self._last_generator_step_saved = state_dict.get("last_generator_step_saved", -1)
