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


def losses_per_run(root: Path) -> list[dict[int, float]]:
    """Per run (CSVLogger version, in order): generator step -> train/loss_g."""
    runs = []
    for path in sorted(root.rglob("metrics.csv")):
        out = {}
        for row in csv.DictReader(open(path)):
            if row.get("train/loss_g"):
                out[int(float(row["train/generator_step"]))] = float(row["train/loss_g"])
        runs.append(out)
    return runs


def losses(root: Path) -> dict[int, float]:
    return {step: loss for run in losses_per_run(root) for step, loss in run.items()}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")  # resumes in it
def test_resumed_run_continues_the_uninterrupted_loss_trajectory(tmp_path, sample_shards):
    # denoising noise is drawn from the global RNG, the data stream is shuffled and cropped at
    # random, quantizer dropout and the discriminator start depend on the step: all must resume
    extra = ("--model.init_args.generator.init_args.film", "encoder")
    main(fit_args(sample_shards, tmp_path / "straight", 13, *extra))  # 8 generator steps
    main(fit_args(sample_shards, tmp_path / "split", 5, *extra))  # 4 generator steps, then stop
    main(fit_args(sample_shards, tmp_path / "split", 13, *extra, "--ckpt_path", "last"))
    first, resumed = losses_per_run(tmp_path / "split")
    # the second run restored step 4 (a run that started over would log steps 1-4 again)
    assert sorted(first) == [1, 2, 3, 4] and sorted(resumed) == [5, 6, 7, 8]
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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "lit_codec.cli", *args], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _kill_args(shards, root, extra=()):
    args = fit_args(shards, root, 21, *extra)  # 12 generator steps
    i = args.index("--trainer.logger")  # the recipe's logger (W&B, WANDB_MODE=disabled)
    del args[i : i + 4]
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
    kills = {"during-write": 0, "random": 0, None: 0}
    saved_steps = [0]
    # killed during a checkpoint write, at random moments (start-up included), then left
    # to finish: every run after the first resumes from last.ckpt
    modes = ["during-write", "random", "during-write", "random", "during-write", "random", None]
    for attempt, mode in enumerate(modes):
        args = _kill_args(sample_shards, tmp_path) + (
            ["--ckpt_path", "last"] if last.exists() else []
        )
        proc = _popen(args, tmp_path)
        wait = {"during-write": 120, "random": 4 + 3 * (attempt % 3), None: 600}[mode]
        deadline = time.time() + wait
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
        err = proc.stderr.read() if proc.stderr else ""
        assert "no last checkpoint available" not in err, err[-3000:]  # it did resume
        if proc.returncode == 0:
            break
        if last.exists():  # whatever the moment of the kill, the checkpoint is complete
            step = torch.load(last, weights_only=True)["lit_codec"]["generator_step"]
            assert step >= saved_steps[-1], saved_steps  # never goes back: each run resumed
            saved_steps.append(step)
    assert proc.returncode == 0, err[-3000:]
    assert kills["during-write"] >= 2 and kills["random"] >= 1 and kills[None] == 0, kills
    final = torch.load(last, weights_only=True)
    assert final["lit_codec"]["generator_step"] == 12 and final["global_step"] == 21
    assert (ckpt_dir / "epoch=0-generator_step=12.ckpt").is_file()  # named by generator step
    from lit_codec.codec import Codec

    Codec.from_checkpoint(last)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_before_exiting(tmp_path, sample_shards):
    import json

    marker = tmp_path / "step"
    callbacks = json.loads(_checkpoint_every(1000))  # no periodic saves
    callbacks.append({"class_path": "tests.distributed_support.StepMarker",
                      "init_args": {"path": str(marker)}})  # fmt: skip
    args = _kill_args(sample_shards, tmp_path)
    args[args.index("--trainer.callbacks") + 1] = json.dumps(callbacks)
    args[args.index("--trainer.max_steps") + 1] = "1000"
    proc = _popen(args, tmp_path)
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)  # until the first generator step is done, however busy the machine
    assert proc.poll() is None and marker.exists(), proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["lit_codec"]["generator_step"] > 0
