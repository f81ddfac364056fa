"""Run one GAN step of the tiny codec on a fixed batch of 8 clips and dump the weights.

    python tests/ddp_equivalence_script.py OUT.pt DEVICES
With DEVICES=2 each rank gets half the batch (rank r: clips 4r..4r+3); with 1 the only
rank gets all 8. Used by tests/test_distributed.py (Lightning re-launches this script
for rank 1).
"""

import sys

import lightning as L
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, __file__.rsplit("/tests/", 1)[0])
from tests.models.tiny import NoiseClips, tiny_gan  # noqa: E402


class FixedHalves(L.LightningDataModule):
    def train_dataloader(self):
        clips = torch.stack([NoiseClips(8)[i] for i in range(8)])  # (8, 1, T)
        world, rank = self.trainer.world_size, self.trainer.global_rank
        per = 8 // world
        mine = clips[rank * per : (rank + 1) * per]
        return DataLoader([mine], batch_size=None)


def main() -> None:
    out, devices = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    model = tiny_gan(grad_clip_g=1.0, grad_clip_d=1.0)
    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, use_distributed_sampler=False)  # fmt: skip
    trainer.fit(model, datamodule=FixedHalves())
    if trainer.global_rank == 0:
        torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)


if __name__ == "__main__":
    main()
