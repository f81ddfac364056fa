"""DDP for GANs: generator and discriminator synchronised separately, no unused parameters.

Lightning's ``DDPStrategy`` wraps the whole LightningModule in one
``DistributedDataParallel``. A GAN step makes two backward passes, each touching only
one network, so that wrapper needs ``find_unused_parameters=True`` (a graph traversal
per backward) or it hangs. :class:`GANDDPStrategy` instead asks the module to wrap its
networks itself (``module.wrap_for_ddp(wrap)``): the codec path (generator + quantizer)
and the discriminator become two DDP modules, each reduced exactly once by the backward
that uses it. The LightningModule stays unwrapped, so checkpoints keep their keys.

``CodecGAN.setup`` switches a plain ``DDPStrategy`` (``--trainer.strategy ddp``) to this
class, so recipes need no change; it is also registered as ``"ddp_gan"``.

:class:`AtomicModelParallelStrategy` is the FSDP2 strategy of ``recipes/codec/fsdp.yaml``:
Lightning's ``ModelParallelStrategy`` with sharded checkpoints that a crash cannot corrupt.
"""

from __future__ import annotations

import inspect
import os
import shutil
from contextlib import nullcontext
from pathlib import Path

import torch
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, StrategyRegistry
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["AtomicModelParallelStrategy", "GANDDPStrategy", "recover_checkpoint"]

# DDP's switch for syncing buffers at every forward: ``forward_sync_buffers`` since PyTorch
# 2.13 (``broadcast_buffers`` is deprecated there), ``broadcast_buffers`` before.
_FORWARD_SYNC_BUFFERS = (
    "forward_sync_buffers"
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else "broadcast_buffers"
)


class GANDDPStrategy(DDPStrategy):
    """``DDPStrategy`` that lets a module with ``wrap_for_ddp`` wrap its own networks."""

    strategy_name = "ddp_gan"

    def configure_ddp(self) -> None:
        module = self.lightning_module
        if not hasattr(module, "wrap_for_ddp"):
            return super().configure_ddp()
        device_ids = self.determine_ddp_device_ids()
        kwargs = dict(self._ddp_kwargs)
        if "broadcast_buffers" not in kwargs:  # EMA codebooks are all-reduced, not broadcast
            kwargs.setdefault(_FORWARD_SYNC_BUFFERS, False)

        def wrap(network: nn.Module) -> DistributedDataParallel:
            ctx = (
                torch.cuda.stream(torch.cuda.Stream()) if device_ids is not None else nullcontext()
            )
            with ctx:
                return DistributedDataParallel(network, device_ids=device_ids, **kwargs)

        module.wrap_for_ddp(wrap)

    @classmethod
    def register_strategies(cls, strategy_registry: dict) -> None:
        strategy_registry.register(
            cls.strategy_name, cls, description="DDP with separately wrapped GAN networks"
        )


if GANDDPStrategy.strategy_name not in StrategyRegistry:
    GANDDPStrategy.register_strategies(StrategyRegistry)


class AtomicModelParallelStrategy(ModelParallelStrategy):
    """Lightning's ``ModelParallelStrategy`` (FSDP2) whose sharded checkpoints are swapped in whole.

    A sharded checkpoint is a folder written by every rank. Lightning writes it in place,
    so a crash mid-save leaves a folder of mixed shards. Here all ranks write into
    ``<name>.tmp``; once every rank is done, rank 0 renames the old folder aside, the new
    one into place, and deletes the old one. At every moment a complete checkpoint exists
    under the final name or, during the instant between the two renames, under
    ``<name>.old`` (which :func:`recover_checkpoint` puts back).
    """

    strategy_name = "fsdp2_atomic"

    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        final = Path(self.broadcast(str(filepath)))
        tmp = final.with_name(final.name + ".tmp")
        if self.global_rank == 0 and tmp.exists():
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        self.barrier()
        super().save_checkpoint(checkpoint, tmp, storage_options)
        self.barrier()
        if self.global_rank == 0:
            old = final.with_name(final.name + ".old")
            if old.exists():
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
            if old.exists():
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        self.barrier()

    def load_checkpoint(self, checkpoint_path, weights_only=None):
        recover_checkpoint(checkpoint_path)
        return super().load_checkpoint(checkpoint_path, weights_only)


def recover_checkpoint(path: str | os.PathLike) -> Path:
    """Put ``<path>.old`` back if a crash struck between the two renames of a sharded save."""
    path = Path(path)
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.exists():
        os.replace(old, path)
    return path


if AtomicModelParallelStrategy.strategy_name not in StrategyRegistry:
    StrategyRegistry.register(AtomicModelParallelStrategy.strategy_name, AtomicModelParallelStrategy,
                              description="FSDP2 with atomically swapped sharded checkpoints")  # fmt: skip
