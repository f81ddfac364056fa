"""GeneratorStepCheckpoint: cadence and file names count generator steps."""

import lightning as L
import torch

from lit_codec.callbacks import GeneratorStepCheckpoint

from ..models.tiny import loader, tiny_gan


def test_saves_every_n_generator_steps_named_by_generator_step(tmp_path):
    model = tiny_gan()  # the discriminator steps from the first batch: 2 optimizer steps each
    callback = GeneratorStepCheckpoint(every_n_generator_steps=2, save_top_k=-1)
    trainer = L.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=tmp_path, callbacks=[callback])  # fmt: skip
    trainer.fit(model, loader())
    assert trainer.global_step == 8 and model.generator_step == 4
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.ckpt"))
    assert names == ["epoch=0-generator_step=2.ckpt", "epoch=0-generator_step=4.ckpt", "last.ckpt"]
    saved = torch.load(
        tmp_path / "checkpoints" / "epoch=0-generator_step=2.ckpt", weights_only=True
    )
    assert saved["global_step"] == 4  # Lightning's counter: both networks' steps


class _Regression(L.LightningModule):
    """One optimizer step per batch and no generator_step (like CodecLM)."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_run_that_stops_between_saves_still_leaves_its_last_step(tmp_path):
    """trainer.max_time (here max_steps) ends an LM run between every_n_train_steps saves:
    last.ckpt must hold the final step, not the last periodic save."""
    callback = GeneratorStepCheckpoint(
        every_n_generator_steps=0, every_n_train_steps=4, save_last=True
    )
    trainer = L.Trainer(max_steps=7, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[callback])  # fmt: skip
    trainer.fit(_Regression(), torch.utils.data.DataLoader(torch.randn(16, 2), batch_size=2))
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 7
