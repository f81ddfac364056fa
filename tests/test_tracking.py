"""Experiment tracking: a short fit in offline W&B mode, read back from the run's .wandb file."""

from pathlib import Path

import pytest

from lit_codec.cli import main

from .wandb_records import config, history, wait_until_complete

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_offline_wandb_run_holds_metrics_audio_and_images(
    tmp_path, sample_shards, monkeypatch, capfd
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    main(["fit", "--config", str(REPO / "recipes/codec/debug.yaml"), "--data.root", str(sample_shards),
          "--trainer.max_steps", "3", "--trainer.val_check_interval", "3", "--trainer.log_every_n_steps", "1", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false", "--data.num_workers", "0", "--trainer.logger.init_args.name", "readback",
          "--model.init_args.quantizer.init_args.warmup_steps", "1"])  # fmt: skip
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    wait_until_complete(run_file)
    steps = history(run_file)
    keys = set().union(*steps)
    labels = ["0.4kbps", "0.8kbps", "1.6kbps"]
    for label in labels:  # per-bitrate quality and reconstruction metrics
        for metric in ("pesq", "stoi", "mel", "sisdr"):
            assert f"val/{metric}@{label}" in keys, (metric, label, sorted(keys))
    for key in (
        "rec/mel",
        "vq/commit",
        "vq/usage/0",
        "train/grad_norm_g",
        "val/vq/entropy_kbps",
        "val/quality_wait_seconds",
    ):
        assert key in keys, key
    values = {k: v for step in steps for k, v in step.items()}
    assert 1.0 <= values["val/pesq@1.6kbps"] <= 4.7 and 0 <= values["val/stoi@1.6kbps"] <= 1
    audio = [k for k in keys if k.startswith("audio/clip0/")]
    assert {"audio/clip0/reference", *(f"audio/clip0/{label}" for label in labels)} <= set(audio)
    assert values["audio/clip0/reference"]["_type"] == "audio-file"
    assert values["spectrogram/clip0"]["_type"] == "image-file"
    assert values["vq/usage_histogram"]["_type"] == "image-file"
    media = list(run_file.parent.glob("files/media/**/*.*"))
    assert any(p.suffix == ".wav" for p in media) and any(p.suffix == ".png" for p in media)
    cfg = config(run_file)
    assert cfg["model.generator.channels_enc"] == 8  # the full resolved config
    assert cfg["data.root"] == str(sample_shards) and cfg["trainer.logger.group"] == "codec/debug"
    err = capfd.readouterr().err  # wandb's own warnings: none caused by how the logger calls it
    assert "anonymous setting" not in err and "git root" not in err, err[-2000:]


@pytest.mark.slow
def test_tensorboard_logger_by_config_alone(tmp_path, sample_shards):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    main(["fit", "--config", str(REPO / "recipes/codec/debug.yaml"), "--data.root", str(sample_shards),
          "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1",
          "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger", "--trainer.logger.save_dir", str(tmp_path),
          "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
          "--data.num_workers", "0", "--model.init_args.quantizer.init_args.warmup_steps", "1"])  # fmt: skip
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    acc = EventAccumulator(
        str(events.parent), size_guidance={"audio": 0, "images": 0, "scalars": 0}
    ).Reload()
    tags = acc.Tags()
    assert "val/pesq@1.6kbps" in tags["scalars"] and "rec/mel" in tags["scalars"]
    assert "audio/clip0/reference" in tags["audio"] and "audio/clip0/1.6kbps" in tags["audio"]
    assert "spectrogram/clip0" in tags["images"]
