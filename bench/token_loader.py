"""Token loader throughput: TokenShardDataModule batches per second against the debug LM's training steps.

Two figures, on the same token shards and the same batches (``recipes/lm/se/debug.yaml``'s
data settings: task ``se``, ``max_tokens`` 3000 padded frames per batch, pool 256, seed 0):

1. ours: the training loader of :class:`lit_codec.data.TokenShardDataModule` in this process
   (``num_workers`` 0; ``--workers 0,1`` adds one worker process): read the token shards,
   decode the ``.npy`` members, draw each sample's task, lay it out as that task's sequence,
   bucket by length into token-budget batches, collate. Batches per second, timed in
   ``--rounds`` rounds of ``--batches`` batches each from an iterator kept open across
   rounds, after warm-up batches that fill the first pool; the median over rounds.
2. the consumer: training steps per second of the debug codec LM
   (``lit_codec.models.codec_lm.CodecLM`` with ``lit_codec.nn.MultiScaleLM``, multi-scale
   pattern, global stack 4 x 128, local stack 2 x 64, sized from the shards' vocabulary), built
   as ``lit-codec fit --config recipes/lm/se/debug.yaml --data.root DIR`` builds it (float32,
   AdamW, OneCycleLR, gradient clipping, condition dropout 0.1) and trained by its Lightning
   trainer; a callback times each step from ``on_train_batch_start`` to
   ``on_train_batch_end`` (forward, loss, backward, clipping, AdamW step; data loading
   excluded), the first ``--warmup`` steps left out; steps per second = timed steps / their
   total time (the batches vary in shape: the mean rate is what a run consumes).

Goal (issue #14): the loader delivers >= 20x the batches per second that a debug-LM training
step consumes. ``ratio = loader batches/s (num_workers 0) / training steps/s``; > 20 meets it.

Token shards: ``--tokens DIR`` (a directory made by ``data_prep/make_token_shards.py`` with
task ``se``); else made first, untimed, with the shipped codec (speech16k, task ``se``, one
worker) from ``--input DIR`` (audio shards or a folder of audio files; default the shipped
``data_prep/samples``, made into 16 kHz audio shards first).

Run: ``OMP_NUM_THREADS=1 python bench/token_loader.py [--tokens DIR | --input DIR]
[--rounds 5] [--batches 100] [--steps 20] [--workers 0]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
import lightning as L
import torch
from _common import SAMPLES, build_recipe, compare, one_thread, print_ratio

from lit_codec.data import TokenBatch, TokenShardDataModule
from lit_codec.data.shards import load_index

RECIPE = "recipes/lm/se/debug.yaml"
GOAL = 20.0


# ------------------------------------------------------------------------------ shards


def token_shards(args, tmp: Path) -> Path:
    """The token-shard directory: ``--tokens``, else made from ``--input`` (untimed)."""
    if args.tokens is not None:
        return Path(args.tokens)
    from lit_codec.data.token_shards import TokenShardSettings, make_token_shards

    audio = Path(args.input) if args.input is not None else SAMPLES
    if not (audio / "index.json").is_file():  # a folder of audio files: 16 kHz audio shards
        from lit_codec.data.prepare import PrepareSettings, prepare_shards

        prepare_shards([audio], tmp / "audio", PrepareSettings(sample_rate=16000), workers=1, progress=False)  # fmt: skip
        audio = tmp / "audio"
    out = tmp / "tokens"
    start = time.perf_counter()
    settings = TokenShardSettings(str(audio), str(out), codec="speech16k", tasks=("se",), workers=1, progress=False)  # fmt: skip
    result = make_token_shards(settings)
    print(f"made token shards (se, speech16k, 1 worker) in {time.perf_counter() - start:.0f} s: {result.summary()}")  # fmt: skip
    return out


# ------------------------------------------------------------------------------ loader


def recipe_data() -> dict:
    """The debug recipe's data settings (and the base recipe's), as the CLI resolves them."""
    from lit_codec.cli import recipe_chain

    settings: dict = {}
    for _, content in recipe_chain(_common.REPO / RECIPE):  # base first, then the recipe
        settings.update((content.get("data") or {}).get("init_args") or {})
    return settings


def endless(data: TokenShardDataModule) -> Iterator[TokenBatch]:
    loader = data.train_dataloader()
    while True:  # the loader yields a fixed number of batches per epoch
        yield from loader


def pull(
    iterator: Iterator[TokenBatch],
    batches: int,
    shapes: list | None = None,
    cpu: list | None = None,
) -> None:
    """Take ``batches`` batches; note their (sequences, frames, real frames) and CPU seconds."""
    start = time.process_time()
    for _ in range(batches):
        batch = next(iterator)
        if shapes is not None:
            shapes.append((len(batch), batch.frames, int(batch.lengths.sum())))
    if cpu is not None:
        cpu.append(time.process_time() - start)


# ------------------------------------------------------------------------------ training


class StepTimer(L.Callback):
    """Wall and process CPU seconds of each training step."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        wall, cpu = self._start
        self.times.append((time.perf_counter() - wall, time.process_time() - cpu))


def training_steps(root: Path, warmup: int, steps: int) -> tuple[list[tuple[float, float]], str]:
    """(wall, CPU) seconds of each timed training step of the debug recipe, and the model's
    description."""
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_recipe(
            RECIPE,
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.num_sanity_val_steps", "0",
            "--trainer.limit_val_batches", "0",
            "--trainer.default_root_dir", tmp,
            "--trainer.max_steps", str(warmup + steps),
            "--data.init_args.num_workers", "0",  # loading outside the timed span anyway
            root=root,
        )  # fmt: skip
        timer = StepTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        described = cli.model.describe()
    return timer.times[warmup:], described


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default=None, help="token-shard directory (task se)")
    parser.add_argument("--input", default=None, help="audio shards or folder to make token shards from (default: data_prep/samples)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of the loader")
    parser.add_argument("--batches", type=int, default=100, help="batches per round")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="training steps left out first")
    parser.add_argument("--workers", default="0", help="loader num_workers to time, e.g. 0,1")
    args = parser.parse_args()
    one_thread()
    torch.manual_seed(0)
    workers = [int(w) for w in args.workers.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        root = token_shards(args, Path(tmp))
        index = load_index(root)
        train = index["splits"]["train"]
        settings = recipe_data()
        options = {k: settings[k] for k in ("tasks", "max_tokens", "pool", "seed", "max_batch_size") if k in settings}  # fmt: skip
        modules, loaders = {}, {}
        for w in workers:
            modules[w] = TokenShardDataModule(str(root), **{**options, "num_workers": w})
            modules[w].setup("fit")
            loaders[w] = endless(modules[w])
        shapes: list[tuple[int, int, int]] = []
        for w, it in loaders.items():  # the first pool, the workers' start
            pull(it, 5, shapes if w == workers[0] else None)
        cpu: dict[int, list[float]] = {w: [] for w in workers}
        times = compare(
            {
                w: (lambda it=it, w=w: pull(it, args.batches, cpu=cpu[w]))
                for w, it in loaders.items()
            },
            rounds=args.rounds,
            warmup=1,
        )
        pull(loaders[workers[0]], args.batches, shapes)  # the batches' shapes, untimed
        rate = {w: args.batches / t for w, t in times.items()}
        cpu_rate = {
            w: args.batches / statistics.median(c[1:]) for w, c in cpu.items()
        }  # warm-up out
        del loaders, modules

        step_times, described = training_steps(root, args.warmup, args.steps)

    rows = statistics.mean(s[0] for s in shapes)
    padded = statistics.mean(s[0] * s[1] for s in shapes)
    real = statistics.mean(s[2] for s in shapes)
    n_q = index["vocabulary"]["codec"]["n_q"] if "codec" in index.get("vocabulary", {}) else None
    print(f"token shards: {train['num_samples']} training samples, {train['seconds']:.0f} s of audio "
          f"({index.get('codec', {}).get('fingerprint', '?')} codes); tasks {options.get('tasks')}, "
          f"max_tokens {options.get('max_tokens')}, pool {options.get('pool', 256)}")  # fmt: skip
    print(f"batches: {rows:.1f} sequences, {padded:.0f} padded frames ({real:.0f} real, "
          f"{1 - real / padded:.1%} padding){f', {n_q} codebooks' if n_q else ''} on average over {len(shapes)}")  # fmt: skip
    print(f"loader (TokenShardDataModule), median of {args.rounds} rounds of {args.batches} batches, one thread:")  # fmt: skip
    for w in workers:
        main_cpu = (
            f"; main process CPU time {cpu_rate[w]:.1f} batches per CPU second" if w == 0 else ""
        )
        print(
            f"  num_workers={w}: {rate[w]:8.1f} batches/s ({rate[w] * real:9.0f} real frames/s){main_cpu}"
        )
    mean_step = sum(t for t, _ in step_times) / len(step_times)
    mean_cpu = sum(c for _, c in step_times) / len(step_times)
    steps_per_s = 1 / mean_step
    walls = [t for t, _ in step_times]
    print(f"debug LM training step ({RECIPE}): {described}")
    print(f"  {len(step_times)} steps after {args.warmup}: mean {1e3 * mean_step:.0f} ms "
          f"(median {1e3 * statistics.median(walls):.0f}, min {1e3 * min(walls):.0f}, "
          f"max {1e3 * max(walls):.0f}; CPU time {1e3 * mean_cpu:.0f}) = {steps_per_s:.2f} steps/s "
          f"({steps_per_s * real:.0f} real frames/s)")  # fmt: skip
    ratio = rate[0] / steps_per_s if 0 in rate else rate[workers[0]] / steps_per_s
    print(f"loader {rate.get(0, rate[workers[0]]):.1f} batches/s / training {steps_per_s:.2f} steps/s = {ratio:.1f}x "
          f"(goal >= {GOAL:g}x: {'met' if ratio >= GOAL else 'NOT met'})")  # fmt: skip
    if 0 in cpu_rate:
        print(
            f"  in CPU time: {cpu_rate[0]:.1f} / {1 / mean_cpu:.2f} = {cpu_rate[0] * mean_cpu:.1f}x"
        )
    print_ratio(ratio)


if __name__ == "__main__":
    main()
