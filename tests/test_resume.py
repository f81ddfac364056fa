"""Crashes and preemption cost nothing: exact resume, atomic checkpoints, SIGTERM saves."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lit_codec.cli import main

REPO = Path(__file__).resolve().parents[1]


def fit_args(shards, root, max_steps, *extra):
    return ["fit", "--config", str(REPO / "recipes/codec/debug.yaml"), "--data.root", str(shards),
            "--trainer.max_steps", str(max_steps), "--trainer.default_root_dir", str(root),
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
            "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.val_check_interval", "1000",
            "--data.num_workers", "1", "--data.batch_size", "4",
            "--model.init_args.quantizer.init_args.warmup_steps", "2",
            "--model.init_args.discriminator_start_step", "3",
            "--model.init_args.noise", "lit_codec.nn.NoiseMixer", *extra]  # fmt: skip


def losses(root: Path) -> dict[int, float]:
    out = {}
    for path in sorted(root.rglob("metrics.csv")):
        for row in csv.DictReader(open(path)):
            if row.get("train/loss_g"):
                out[int(float(row["train/generator_step"]))] = float(row["train/loss_g"])
    return out


@pytest.mark.slow
def test_resumed_run_continues_the_uninterrupted_loss_trajectory(tmp_path, sample_shards):
    # denoising noise is drawn from the global RNG, the data stream is shuffled and cropped at
    # random, quantizer dropout and the discriminator start depend on the step: all must resume
    extra = ("--model.init_args.generator.init_args.film", "encoder")
    main(fit_args(sample_shards, tmp_path / "straight", 13, *extra))  # 8 generator steps
    main(fit_args(sample_shards, tmp_path / "split", 5, *extra))  # 4 generator steps, then stop
    main(fit_args(sample_shards, tmp_path / "split", 13, *extra, "--ckpt_path", "last"))
    straight, split = losses(tmp_path / "straight"), losses(tmp_path / "split")
    assert sorted(straight) == sorted(split) == list(range(1, 9))
    for step in range(1, 9):  # identical, up to float rounding
        assert split[step] == pytest.approx(straight[step], rel=1e-5, abs=1e-6), (
            step,
            straight,
            split,
        )
    a = torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "split/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-5, msg=key)


def _popen(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "lit_codec.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _kill_args(shards, root, extra=()):
    args = fit_args(shards, root, 21, *extra)  # 12 generator steps
    args[args.index("lightning.pytorch.loggers.CSVLogger")] = "false"
    i = args.index("--trainer.logger.save_dir")
    del args[i : i + 2]
    return args + ["--data.num_workers", "0", "--trainer.callbacks", _checkpoint_every(2)]


def _checkpoint_every(n: int) -> str:
    import json

    return json.dumps(
        [
            {
                "class_path": "lit_codec.callbacks.GeneratorStepCheckpoint",
                "init_args": {"every_n_generator_steps": n},
            }
        ]
    )


@pytest.mark.slow
def test_sigkill_at_any_moment_never_corrupts_last_ckpt(tmp_path, sample_shards):
    ckpt_dir = tmp_path / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    kills = {"during-write": 0, "random": 0}
    for attempt in range(12):
        args = _kill_args(sample_shards, tmp_path) + (
            ["--ckpt_path", "last"] if last.exists() else []
        )
        proc = _popen(args, tmp_path)
        mode = "during-write" if attempt % 2 == 0 else "random"
        deadline = time.time() + (4 + 3 * (attempt % 3) if mode == "random" else 120)
        while proc.poll() is None and time.time() < deadline:
            if (
                mode == "during-write"
                and ckpt_dir.is_dir()
                and any(p.name.startswith("last.ckpt.tmp") for p in ckpt_dir.iterdir())
            ):
                break  # a checkpoint is being written right now
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills[mode] += 1
        proc.wait()
        if proc.returncode == 0:
            break
        if last.exists():  # whatever the moment of the kill, the checkpoint is complete
            torch.load(last, weights_only=True)
    assert proc.returncode == 0, proc.stderr.read()[-3000:] if proc.stderr else ""
    assert kills["during-write"] >= 2 and kills["random"] >= 1, kills
    final = torch.load(last, weights_only=True)
    assert final["lit_codec"]["generator_step"] == 12 and final["global_step"] == 21
    from lit_codec.codec import Codec

    Codec.from_checkpoint(last)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path, sample_shards):
    args = _kill_args(sample_shards, tmp_path)
    args[args.index("--trainer.callbacks") + 1] = _checkpoint_every(1000)  # no periodic saves
    args[args.index("--trainer.max_steps") + 1] = "1000"
    proc = _popen(args, tmp_path)
    time.sleep(20)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lit_codec"]["generator_step"] > 0
