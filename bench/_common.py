"""Shared helpers of the benchmarks in bench/: one thread, fair timing, real audio, recipes.

Every benchmark imports this module first: it pins the process to one thread
(``OMP_NUM_THREADS=1`` before torch loads, then ``torch.set_num_threads(1)``), so that a
figure is a per-core figure and the two sides of a comparison get the same resources.

Timing (:func:`compare`): every function gets untimed warm-up calls, then the functions run
in alternating rounds (ours, peer, ours, peer, ...) and each figure is the median over the
rounds. Alternating makes the comparison fair when other processes load the machine: a
busy period slows both sides instead of one.

Audio: :func:`audio_files` lists the audio of a folder (default: the samples the repository
ships in ``data_prep/samples``; ``--input DIR`` points a benchmark at a larger corpus) and
:func:`load_corpus` reads it as mono float32 at a given rate (soxr).

Recipes: :func:`build_recipe` builds a codec recipe's model, data module and trainer
exactly as ``lit-codec fit --config ...`` does, without running it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch (and numpy's BLAS) load
os.environ.setdefault("MKL_NUM_THREADS", "1")

import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "data_prep" / "samples"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")

__all__ = [
    "REPO",
    "SAMPLES",
    "audio_files",
    "build_recipe",
    "compare",
    "crops",
    "load_corpus",
    "millions",
    "one_thread",
    "print_ratio",
]


def one_thread() -> None:
    """Run PyTorch on one thread (intra- and inter-op) and silence known deprecation noise."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started
        pass
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def compare(
    fns: dict[str, Callable[[], object]], rounds: int = 5, warmup: int = 1
) -> dict[str, float]:
    """Median wall seconds per call of each function, timed in alternating rounds.

    Args:
        fns: name -> function of no arguments (one unit of work).
        rounds: timed calls of each function; the functions alternate call by call.
        warmup: untimed calls of each function first (allocator, oneDNN caches, k-means).

    Returns:
        name -> median seconds per call.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def timed_rtf(
    fns: dict[str, Callable[[], object]], seconds: float, rounds: int
) -> dict[str, float]:
    """Real-time factor of each function (one call processes ``seconds`` of audio)."""
    with torch.inference_mode():
        times = compare(fns, rounds=rounds, warmup=1)
    return {name: seconds / t for name, t in times.items()}


def print_ratio(value: float) -> None:
    """The closing line every benchmark prints: ``ratio: X`` (X > 1: lit-codec is better)."""
    print(f"ratio: {value:.2f}", flush=True)


def millions(module: torch.nn.Module) -> float:
    """Parameters of ``module`` in millions."""
    return sum(p.numel() for p in module.parameters()) / 1e6


def audio_files(folder: str | os.PathLike | None = None) -> list[Path]:
    """Audio files under ``folder`` (default: the shipped samples), recursively, sorted."""
    root = Path(folder) if folder is not None else SAMPLES
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise SystemExit(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}")
    return files


def load_corpus(
    folder: str | os.PathLike | None, sample_rate: int, max_seconds: float | None = None
) -> list[np.ndarray]:
    """Mono float32 clips ``(T,)`` of ``folder`` at ``sample_rate``, up to ``max_seconds`` in all."""
    import soundfile as sf
    import soxr

    clips, total = [], 0.0
    for path in audio_files(folder):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1, dtype=np.float32)  # (T,)
        if rate != sample_rate:
            mono = soxr.resample(mono, rate, sample_rate).astype(np.float32)
        clips.append(mono)
        total += len(mono) / sample_rate
        if max_seconds is not None and total >= max_seconds:
            break
    return clips


def crops(clips: list[np.ndarray], batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """A batch ``(batch, 1, length)`` of random crops of ``clips`` (zero-padded if short)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((batch, 1, length), dtype=np.float32)
    for i in range(batch):
        clip = clips[rng.integers(len(clips))]
        start = rng.integers(max(1, len(clip) - length + 1))
        piece = clip[start : start + length]
        out[i, 0, : len(piece)] = piece
    return torch.from_numpy(out)


def build_recipe(recipe: str, *overrides: str, root: str | os.PathLike | None = None):
    """The LightningCLI of ``lit-codec fit --config recipe ...``, instantiated but not run.

    Returns the CLI object: ``cli.model``, ``cli.datamodule`` and ``cli.trainer`` are built
    exactly as the command line builds them (recipe chain, linked arguments).
    """
    from lit_codec.cli import expand_recipes, run_lightning

    args = ["--config", str(REPO / recipe)]
    if root is not None:
        args += ["--data.root", str(root)]
    return run_lightning(expand_recipes([*args, *overrides]), run=False)


def training_flops(step: Callable[[], None]) -> int:
    """FLOPs of ``step()`` (a forward + backward): matmuls and attention counted by
    ``torch.utils.flop_counter``. The CPU's flash attention is not in torch's table: it is
    counted with the GPU kernels' formulas (full, not causal, attention: torch's convention)."""
    from torch.utils import flop_counter as fc

    def forward(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(q, k, v)

    def backward(grad, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad, q, k, v)

    aten = torch.ops.aten
    cpu = {aten._scaled_dot_product_flash_attention_for_cpu: forward,
           aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}  # fmt: skip
    counter = fc.FlopCounterMode(display=False, custom_mapping=cpu)
    with counter:
        step()
    return counter.get_total_flops()
