"""DDP overhead: GAN training throughput, 2 DDP processes x 1 thread against 1 process x 2 threads.

Issue 5's benchmark. Both sides run a real ``lit-codec fit`` of the debug codec recipe
(``recipes/codec/debug.yaml``) in a subprocess, at the SAME global batch:

- DDP: ``--trainer.devices 2 --trainer.strategy ddp`` (lit-codec's GAN DDP: generator and
  discriminator synchronised separately), ``OMP_NUM_THREADS=1``, ``--batch`` clips per rank;
- single: ``--trainer.devices 1``, ``OMP_NUM_THREADS=2``, ``2 x --batch`` clips.

The discriminator is active from the first step (``--model.init_args.discriminator_start_step 0``)
and the quantizer's auto-encoder warm-up is off (``warmup_steps 0``), so every step is a full
GAN step (discriminator + generator update); validation is off. Data: shards prepared from the
shipped speech samples (``data_prep/samples/speech``, or ``--input``) into a temporary
folder; loader workers as the recipe sets them (per rank).

Timing: a callback (``bench/_timing_callback.py``, passed with ``--trainer.callbacks+=``)
timestamps the end of every training batch on rank 0; a step's time is the interval between
two batch ends (DDP's all-reduce keeps the ranks in step), start-up and the first
``--skip`` steps left out, median over the run. A run stops after ``--steps`` generator steps
or ``--max-seconds`` of training (``trainer.max_time``), whichever comes first. The two
configurations alternate run by run (DDP, single, DDP, single, ...) and each figure is the
median over its runs, so a busy period of the machine slows both. Printed: audio seconds
trained per wall second and generator steps per second of each side, then ``ratio: X`` =
DDP throughput / single-process throughput (X > 1: DDP is faster).

This was written on a 2-core machine shared with other jobs: the figures are noisy (every
run's figure is printed, with the load average before it). One process with 2 threads is very
sensitive to another job taking one of the cores: its OpenMP threads meet at a barrier after
every small operator, and a step then took 17-28 s here instead of ~0.8 s; 2 single-threaded
processes slowed down 2.5x at worst. Read the per-run lines before the ratio.

GPU: ``--device cuda`` runs the same comparison with ``--trainer.accelerator gpu`` (2 GPUs
x ``--batch`` against 1 GPU x ``2 x --batch``; needs 2 GPUs, the ideal ratio is then 2) and
a bf16 line (``--trainer.precision bf16-mixed`` against ``32-true`` on one GPU). With
``--device cuda`` the default recipe is ``recipes/codec/speech_16khz_6kbps.yaml`` (the debug
codec is too small to load a GPU). Without CUDA it stops with a clear message.

Run: ``python bench/ddp_overhead.py [--steps 30] [--repeats 2] [--batch 8] [--input DIR]
[--recipe recipes/codec/debug.yaml] [--device cpu|cuda]`` (2.5 to 4 minutes with the
defaults here, depending on the load). Any other argument is passed to ``lit-codec fit`` as an override.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
from _common import REPO, SAMPLES, print_ratio
from _timing_callback import steady_intervals

BENCH = Path(__file__).resolve().parent


@dataclass
class Config:
    """One side of a comparison: how ``lit-codec fit`` is launched."""

    name: str
    devices: int
    threads: int
    batch: int  # per rank
    precision: str = "32-true"


@dataclass
class RunResult:
    """Steady-state figures of one run."""

    step_seconds: float  # median wall seconds per generator step
    audio_per_step: float  # seconds of audio trained per generator step, all ranks
    steps_timed: int

    @property
    def audio_per_second(self) -> float:
        return self.audio_per_step / self.step_seconds

    @property
    def steps_per_second(self) -> float:
        return 1.0 / self.step_seconds


def prepare_data(input_path: str | None, workdir: Path) -> Path:
    """A shard folder: ``--input`` if it holds ``index.json``, else shards prepared from audio."""
    from lit_codec.data.prepare import PrepareSettings, prepare_shards

    source = Path(input_path) if input_path else SAMPLES / "speech"
    if (source / "index.json").is_file():
        return source
    out = workdir / "shards"
    prepare_shards(
        [source], out, PrepareSettings(valid_fraction=0.1, test_fraction=0.0), progress=False
    )
    return out


def run_fit(
    config: Config,
    args,
    shards: Path,
    workdir: Path,
    tag: str,
    accelerator: str,
    overrides: list[str],
) -> RunResult:
    """One ``lit-codec fit`` in a subprocess; its steady-state step time from rank 0's timestamps."""
    root = workdir / tag
    timings = root / "timings.json"
    cmd = [
        sys.executable, "-m", "lit_codec.cli", "fit",
        "--config", str(REPO / args.recipe),
        "--data.root", str(shards),
        "--data.batch_size", str(config.batch),
        "--trainer.accelerator", accelerator,
        "--trainer.devices", str(config.devices),
        *(["--trainer.strategy", "ddp"] if config.devices > 1 else []),
        "--trainer.precision", config.precision,
        # trainer.max_steps counts the optimizer steps of both networks
        "--trainer.max_steps", str(2 * args.steps),
        "--trainer.max_time", f"00:00:{args.max_seconds // 60:02d}:{args.max_seconds % 60:02d}",
        "--trainer.default_root_dir", str(root),
        "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.limit_val_batches", "0",
        "--model.init_args.discriminator_start_step", "0",
        "--model.init_args.quantizer.init_args.warmup_steps", "0",
        "--trainer.callbacks+=_timing_callback.RunTimer",
        "--trainer.callbacks.output", str(timings),
        *overrides,
    ]  # fmt: skip
    threads = str(config.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(BENCH), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    proc = subprocess.run(
        cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=args.timeout
    )
    if proc.returncode != 0 or not timings.is_file():
        raise SystemExit(
            f"{config.name} run failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    data = json.loads(timings.read_text())
    steps = steady_intervals(data["step_ends"], args.skip)
    if not steps:  # the run hit --max-seconds first: keep what there is, first step still left out
        steps = steady_intervals(data["step_ends"], 2)
    if not steps:
        raise SystemExit(
            f"{config.name}: fewer than 3 steps in {args.max_seconds} s; raise --max-seconds"
        )
    audio_per_step = data["audio_seconds_per_step"] * data["world_size"]
    return RunResult(statistics.median(steps), audio_per_step, len(steps))


def compare(
    configs: list[Config], args, shards: Path, workdir: Path, accelerator: str, overrides: list[str]
) -> dict[str, RunResult]:
    """Runs the configurations in alternation ``--repeats`` times; median figures of each."""
    runs: dict[str, list[RunResult]] = {c.name: [] for c in configs}
    for r in range(args.repeats):
        for config in configs:
            load = os.getloadavg()[0]
            result = run_fit(
                config, args, shards, workdir, f"{config.name}-{r}", accelerator, overrides
            )
            runs[config.name].append(result)
            print(f"  run {r + 1}/{args.repeats} {config.name:<34} {result.step_seconds:7.3f} s/step "
                  f"({result.steps_timed} steps timed; load average before: {load:.2f})", flush=True)  # fmt: skip
    out = {}
    for name, results in runs.items():
        step = statistics.median(r.step_seconds for r in results)
        out[name] = RunResult(step, results[0].audio_per_step, sum(r.steps_timed for r in results))
    return out


def report(results: dict[str, RunResult], repeats: int) -> None:
    print(f"medians over {repeats} alternating runs each (noisy: shared machine)")
    for name, r in results.items():
        print(f"{name:<36} {r.audio_per_second:8.2f} audio s / wall s   {r.steps_per_second:6.3f} generator steps/s   "
              f"({r.step_seconds:.3f} s/step, {r.audio_per_step:g} s of audio per step)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--recipe",
        default=None,
        help="codec recipe (default: debug on cpu, speech_16khz_6kbps on cuda)",
    )
    parser.add_argument("--steps", type=int, default=30, help="generator steps per run (at most)")
    parser.add_argument(
        "--skip", type=int, default=6, help="first generator steps left out (start-up, k-means)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each configuration, alternating"
    )
    parser.add_argument(
        "--batch",
        type=int,
        default=None,
        help="clips per rank of the 2-process side (default: 8 cpu, 16 cuda)",
    )
    parser.add_argument(
        "--input",
        default=None,
        help="audio folder or prepared shard folder (default: shipped speech)",
    )
    parser.add_argument(
        "--max-seconds",
        type=int,
        default=75,
        help="training time allowed per run (trainer.max_time)",
    )
    parser.add_argument(
        "--timeout", type=int, default=900, help="seconds allowed per run, start-up included"
    )
    args, overrides = parser.parse_known_args()
    if args.steps <= args.skip + 1:
        parser.error("--steps must exceed --skip + 1")

    cuda = args.device == "cuda"
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("bench/ddp_overhead.py --device cuda: CUDA is not available on this machine "
                             "(torch.cuda.is_available() is False); run it on a GPU machine, or use --device cpu")  # fmt: skip
        gpus = torch.cuda.device_count()
    args.recipe = args.recipe or (
        "recipes/codec/speech_16khz_6kbps.yaml" if cuda else "recipes/codec/debug.yaml"
    )
    batch = args.batch or (16 if cuda else 8)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        shards = prepare_data(args.input, workdir)
        print(f"recipe {args.recipe}, full GAN steps (D + G from step 0), global batch {2 * batch}; "
              f"{args.steps} steps per run, first {args.skip} left out", flush=True)  # fmt: skip
        if not cuda:
            ddp = Config(f"DDP 2 processes x 1 thread x {batch}", devices=2, threads=1, batch=batch)
            single = Config(
                f"1 process x 2 threads x {2 * batch}", devices=1, threads=2, batch=2 * batch
            )
            results = compare([ddp, single], args, shards, workdir, "cpu", overrides)
            report(results, args.repeats)
            ratio = results[ddp.name].audio_per_second / results[single.name].audio_per_second
            print(
                "ratio = DDP throughput / single-process throughput at the same global batch (> 1: DDP is faster)"
            )
            print_ratio(ratio)
            return

        ratio = None
        if gpus >= 2:
            ddp = Config(f"DDP 2 GPUs x {batch}", devices=2, threads=1, batch=batch)
            single = Config(f"1 GPU x {2 * batch}", devices=1, threads=1, batch=2 * batch)
            results = compare([ddp, single], args, shards, workdir, "gpu", overrides)
            report(results, args.repeats)
            ratio = results[ddp.name].audio_per_second / results[single.name].audio_per_second
            print(f"DDP 2 GPUs / 1 GPU throughput: {ratio:.2f} (ideal scaling: 2)")
        else:
            print(f"{gpus} GPU: the 2-GPU DDP comparison needs 2 GPUs; skipped")
        fp32 = Config(f"1 GPU x {2 * batch}, 32-true", devices=1, threads=1, batch=2 * batch)
        bf16 = Config(
            f"1 GPU x {2 * batch}, bf16-mixed",
            devices=1,
            threads=1,
            batch=2 * batch,
            precision="bf16-mixed",
        )
        results = compare([fp32, bf16], args, shards, workdir, "gpu", overrides)
        report(results, args.repeats)
        speedup = results[bf16.name].audio_per_second / results[fp32.name].audio_per_second
        print(f"bf16-mixed speed-up over 32-true: {speedup:.2f}x")
        if ratio is not None:
            print(
                "ratio = DDP (2 GPUs) throughput / single-GPU throughput at the same global batch"
            )
            print_ratio(ratio)
        else:
            print("ratio = bf16-mixed throughput / 32-true throughput (one GPU: no DDP comparison)")
            print_ratio(speedup)


if __name__ == "__main__":
    main()
