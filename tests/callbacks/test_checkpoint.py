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
