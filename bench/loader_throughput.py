"""Loader throughput: AudioShardDataModule against a plain webdataset pipeline and the debug recipe.

Three figures, all in seconds of audio per wall-clock second, on 16 kHz shards that the
script prepares (untimed) from the shipped samples (``data_prep/samples``) or ``--input DIR``
with :func:`lit_codec.data.prepare.prepare_shards`:

1. ours: the training loader of :class:`lit_codec.data.AudioShardDataModule` (batches of
   8 random crops of 0.5 s, shuffle buffer 500, the debug recipe's data settings) with
   ``num_workers`` 0 and 1;
2. peer: the plain webdataset pipeline a researcher would write for the same job,
   ``wds.WebDataset(urls, resampled=True).shuffle(500)`` -> decode the FLAC with soundfile
   -> random 0.5 s crop (zero-padded if short) -> ``.batched(8)`` -> ``DataLoader`` with the
   same ``num_workers``;
3. the rate at which ``recipes/codec/debug.yaml`` consumes audio: its model, built as
   ``lit-codec fit --config recipes/codec/debug.yaml --data.root DIR`` builds it, trained by
   its Lightning trainer for a few steps; a callback times each training step from
   ``on_train_batch_start`` to ``on_train_batch_end`` (data loading excluded). Two phases:
   the recipe as shipped (its first 100 generator steps are reconstruction-only: no
   discriminator, quantizer warm-up; the fastest phase) and after step 100 (discriminator
   and quantizer on, by ``discriminator_start_step 0`` and ``warmup_steps 0``).

Loaders are timed in alternating rounds (ours, peer, ours, peer, ...) of ``--batches``
batches each, from iterators kept open across rounds, after warm-up batches that fill the
shuffle buffers and start the workers; each figure is the median over rounds. One thread.

Goal (issue 2): loading >= 20x faster than the debug recipe consumes audio. The script prints
``ratio:`` twice: ours / peer (the loaders), then, last, our loader's rate (the better of
0 and 1 workers) / the recipe's consumption rate in its faster phase (the conservative one);
> 20 meets the goal.

Run: ``OMP_NUM_THREADS=1 python bench/loader_throughput.py [--rounds 5] [--batches 50]
[--steps 8] [--input DIR]``.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
import numpy as np
import soundfile as sf
import torch
from _common import build_recipe, compare, one_thread, print_ratio

from lit_codec.data import AudioShardDataModule
from lit_codec.data.prepare import PrepareSettings, prepare_shards

SAMPLE_RATE = 16_000
BATCH = 8
SEGMENT = 8_000  # 0.5 s, a multiple of the debug recipe's hop (320)
SHUFFLE = 500
GOAL = 20.0


# ------------------------------------------------------------------------------ loaders


def ours(root: Path, workers: int) -> Iterator[torch.Tensor]:
    """Endless training batches (B, 1, T) of AudioShardDataModule."""
    dm = AudioShardDataModule(
        root=str(root),
        sample_rate=SAMPLE_RATE,
        segment_seconds=SEGMENT / SAMPLE_RATE,
        hop_length=320,
        batch_size=BATCH,
        num_workers=workers,
        shuffle_buffer=SHUFFLE,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    while True:  # the loader yields a fixed number of batches per epoch
        for batch in loader:
            yield batch.audio


def _decode(sample: dict) -> np.ndarray:
    audio, _ = sf.read(io.BytesIO(sample["flac"]), dtype="float32")
    return audio


def _crop(audio: np.ndarray) -> np.ndarray:
    out = np.zeros(SEGMENT, dtype=np.float32)
    start = random.randrange(max(1, len(audio) - SEGMENT + 1))
    piece = audio[start : start + SEGMENT]
    out[: len(piece)] = piece
    return out[None]  # (1, T)


def _stack(crops: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops))  # (B, 1, T)


def peer(urls: list[str], workers: int) -> Iterator[torch.Tensor]:
    """Endless batches (B, 1, T) of the plain webdataset pipeline."""
    import webdataset as wds

    dataset = (
        wds.WebDataset(urls, resampled=True, shardshuffle=False)
        .shuffle(SHUFFLE)
        .map(_decode)
        .map(_crop)
        .batched(BATCH, collation_fn=_stack)
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, persistent_workers=workers > 0
    )
    yield from loader  # (B, 1, T) batches


def pull(iterator: Iterator[torch.Tensor], batches: int) -> None:
    for _ in range(batches):
        batch = next(iterator)
        assert batch.shape == (BATCH, 1, SEGMENT), batch.shape


# ------------------------------------------------------------------------------ recipe


def recipe_rate(root: Path, steps: int, discriminator: bool) -> float:
    """Audio seconds per second of training-step time of the debug recipe."""
    import lightning as L

    class StepTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.audio: list[float] = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.times.append(time.perf_counter() - self._start)
            self.audio.append(batch.audio.shape[0] * batch.audio.shape[-1] / SAMPLE_RATE)

    warmup = 3
    phase = []
    if discriminator:
        phase = [
            "--model.init_args.discriminator_start_step", "0",
            "--model.init_args.quantizer.init_args.warmup_steps", "0",
        ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        cli = build_recipe(
            "recipes/codec/debug.yaml",
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.num_sanity_val_steps", "0",
            "--trainer.limit_val_batches", "0",
            "--trainer.default_root_dir", tmp,
            # trainer.max_steps counts the optimizer steps of generator and discriminator
            "--trainer.max_steps", str((2 if discriminator else 1) * (warmup + steps)),
            *phase,
            root=root,
        )  # fmt: skip
        timer = StepTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    times, audio = timer.times[warmup:], timer.audio[warmup:]
    if not times:
        raise SystemExit("the debug recipe ran no timed steps")
    return statistics.median(audio) / statistics.median(times)


# ------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=None, help="audio folder (default: data_prep/samples)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each loader")
    parser.add_argument("--batches", type=int, default=50, help="batches per round")
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per phase")
    args = parser.parse_args()
    one_thread()
    torch.manual_seed(0)
    random.seed(0)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "shards"
        source = args.input or str(_common.SAMPLES)
        result = prepare_shards(
            [source], root, PrepareSettings(sample_rate=SAMPLE_RATE), workers=1, progress=False
        )
        train = result.splits["train"]
        urls = [str(root / name) for name in train["shards"]]
        print(f"shards: {train['num_samples']} training clips, {train['seconds']:.0f} s of 16 kHz audio, "
              f"{len(urls)} shard(s); batches of {BATCH} x {SEGMENT / SAMPLE_RATE:g} s crops")  # fmt: skip

        seconds_per_round = args.batches * BATCH * SEGMENT / SAMPLE_RATE
        loaders = {}
        for workers in (0, 1):
            loaders[f"ours/{workers}"] = ours(root, workers)
            loaders[f"peer/{workers}"] = peer(urls, workers)
        for it in loaders.values():  # fill the shuffle buffers, start the workers
            pull(it, 5)
        times = compare(
            {name: (lambda it=it: pull(it, args.batches)) for name, it in loaders.items()},
            rounds=args.rounds,
            warmup=1,
        )
        rate = {name: seconds_per_round / t for name, t in times.items()}
        del loaders

        print(f"loaders, median of {args.rounds} alternating rounds of {args.batches} batches:")
        for workers in (0, 1):
            print(f"  num_workers={workers}: lit-codec {rate[f'ours/{workers}']:8.1f} s/s, "
                  f"plain webdataset {rate[f'peer/{workers}']:8.1f} s/s, "
                  f"ours / peer {rate[f'ours/{workers}'] / rate[f'peer/{workers}']:.2f}")  # fmt: skip
        best = max(rate["ours/0"], rate["ours/1"])
        best_peer = max(rate["peer/0"], rate["peer/1"])

        shipped = recipe_rate(root, args.steps, discriminator=False)
        adversarial = recipe_rate(root, args.steps, discriminator=True)

    print("debug recipe consumption (median training step, data loading excluded):")
    print(f"  as shipped, first 100 steps (no discriminator, VQ warm-up): {shipped:7.1f} s/s")
    print(f"  after step 100 (discriminator and VQ on):                   {adversarial:7.1f} s/s")
    print(f"lit-codec loader (best of 0/1 workers) / plain webdataset: {best / best_peer:.2f}")
    print_ratio(best / best_peer)
    fastest = max(shipped, adversarial)
    print(f"lit-codec loader {best:.1f} s/s / debug recipe {fastest:.1f} s/s (its faster phase) = "
          f"{best / fastest:.1f}x (goal: >= {GOAL:g}x: {'met' if best / fastest >= GOAL else 'NOT met'}); "
          f"{best / adversarial:.1f}x after step 100")  # fmt: skip
    print_ratio(best / fastest)


if __name__ == "__main__":
    main()
