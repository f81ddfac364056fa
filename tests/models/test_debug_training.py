"""The debug recipe really learns on real speech (the codebook-collapse pitfall)."""

import csv
from pathlib import Path

import pytest
import torch

from lit_codec.cli import main
from lit_codec.codec import Codec, load_audio
from lit_codec.data.prepare import PrepareSettings, prepare_shards

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_debug_recipe_uses_its_codebook_and_learns(tmp_path):
    speech = REPO / "data_prep" / "samples" / "speech"
    shards = tmp_path / "shards"
    prepare_shards(
        [speech], shards, PrepareSettings(valid_fraction=0.1, test_fraction=0.1), progress=False
    )
    run = tmp_path / "run"
    main(["fit", "--config", str(REPO / "recipes/codec/debug.yaml"), "--data.root", str(shards),
          "--trainer.max_steps", "250", "--trainer.default_root_dir", str(run),
          "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run),
          "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "1000",
          "--model.init_args.discriminator_start_step", "1000"])  # fmt: skip
    rows = list(csv.DictReader(open(next(run.rglob("metrics.csv")))))
    train = [r for r in rows if r.get("rec/mel")]
    assert float(train[-1]["train/generator_step"]) == 250
    mel = [float(r["rec/mel"]) for r in train]
    first, last = sum(mel[:5]) / 5, sum(mel[-5:]) / 5
    assert last < 0.85 * first, (first, last)  # the reconstruction loss falls
    used = [float(r["vq/usage/0"]) * 256 for r in train if r.get("vq/usage/0")]
    assert sum(used[-5:]) / 5 >= 20, used[-5:]  # tens of codes of the first codebook in use

    # streaming (20 ms chunks) gives exactly the offline codes on every held-out clip
    codec = Codec.from_checkpoint(run / "checkpoints" / "last.ckpt")
    chunk = 320
    for path in sorted(speech.rglob("*.flac"))[:12]:
        wav = load_audio(path, 16000)
        offline = codec.encode(wav)
        with codec.streaming() as stream:
            parts = [stream.encode(wav[i : i + chunk]) for i in range(0, len(wav), chunk)] + [
                stream.flush()
            ]
        assert torch.equal(torch.cat(parts, -1), offline), path.name
