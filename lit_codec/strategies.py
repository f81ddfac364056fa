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
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["GANDDPStrategy"]


class GANDDPStrategy(DDPStrategy):
    """``DDPStrategy`` that lets a module with ``wrap_for_ddp`` wrap its own networks."""

    strategy_name = "ddp_gan"

    def configure_ddp(self) -> None:
        module = self.lightning_module
        if not hasattr(module, "wrap_for_ddp"):
            return super().configure_ddp()
        device_ids = self.determine_ddp_device_ids()
        kwargs = dict(self._ddp_kwargs)
        kwargs.setdefault("broadcast_buffers", False)  # EMA codebooks are all-reduced, not broadcast

        def wrap(network: nn.Module) -> DistributedDataParallel:
            ctx = torch.cuda.stream(torch.cuda.Stream()) if device_ids is not None else nullcontext()
            with ctx:
                return DistributedDataParallel(network, device_ids=device_ids, **kwargs)

        module.wrap_for_ddp(wrap)

    @classmethod
    def register_strategies(cls, strategy_registry: dict) -> None:
        strategy_registry.register(cls.strategy_name, cls, description="DDP with separately wrapped GAN networks")


if GANDDPStrategy.strategy_name not in StrategyRegistry:
    GANDDPStrategy.register_strategies(StrategyRegistry)
