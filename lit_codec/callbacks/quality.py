"""Perceptual quality metrics of validation reconstructions, computed off the training loop.

PESQ, STOI and ViSQOL cost 0.1–1 s per clip on a CPU core. :class:`QualityMetrics`
sends each validation clip and its reconstructions (one per bitrate the module
evaluates) to worker processes as the validation batches go by, and collects the
scores when the validation pass ends, so the scoring overlaps with the rest of
validation. It scores at most ``max_clips`` clips per rank and runs every
``every_n_validations`` validations; both bound the cost.

Logged (rank-reduced means over scored clips): ``val/<metric>@<kbps>kbps`` (e.g.
``val/pesq@6kbps``), ``val/<metric>_skipped`` (clips a metric could not score:
silence, too short, no utterance — never NaN in a mean) and
``val/quality_wait_seconds`` (how long the main process waited for the workers:
the overhead this callback adds to the run).

The module's ``validation_step`` must return ``{"reference": (B, 1, T), "lengths": (B,),
"reconstructions": {label: (B, 1, T)}}`` (as :class:`~lit_codec.models.CodecGAN` does).
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import lightning as L
import numpy as np
import torch

from lit_codec.callbacks.cadence import ValidationCadence

__all__ = ["QualityMetrics"]


def _score(
    reference: np.ndarray, degraded: np.ndarray, sample_rate: int, metrics: tuple[str, ...]
) -> dict:
    import torch as _torch

    _torch.set_num_threads(1)
    from lit_codec.metrics.functional import score_pair

    return score_pair(reference, degraded, sample_rate, metrics)


class QualityMetrics(L.Callback):
    """Score validation reconstructions with slow metrics in worker processes.

    Args:
        metrics: names from :data:`lit_codec.metrics.functional.METRICS`
            (``pesq``, ``pesq_nb``, ``stoi``, ``estoi``, ``visqol_speech``, ``visqol_audio``, ...).
        max_clips: clips scored per validation and rank (each at every evaluated bitrate).
        every_n_validations: score one validation pass out of this many.
        workers: worker processes per rank.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("pesq", "stoi"),
        max_clips: int = 16,
        every_n_validations: int = 1,
        workers: int = 1,
    ):
        super().__init__()
        self.metrics = tuple(metrics)
        self.max_clips = max_clips
        self.every_n_validations = max(1, every_n_validations)
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[tuple[str, Future]] = []
        self._labels: list[str] = []
        self._clips = 0
        self._cadence = ValidationCadence(self.every_n_validations)
        self._active = False
        self.wait_seconds = 0.0

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn: forking a process that runs torch threads can deadlock
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._active = self._cadence.due(trainer)
        self._futures, self._clips, self._labels = [], 0, []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0
    ) -> None:
        if not self._active or not isinstance(outputs, dict) or "reconstructions" not in outputs:
            return
        reference = outputs["reference"].detach().float().cpu()
        lengths = outputs["lengths"].cpu()
        recon = {k: v.detach().float().cpu() for k, v in outputs["reconstructions"].items()}
        if not self._labels:
            self._labels = list(recon)
        rate = int(pl_module.sample_rate)
        for i in range(reference.shape[0]):
            if self._clips >= self.max_clips:
                return
            n = int(lengths[i])
            ref = reference[i, 0, :n].numpy()
            for label, audio in recon.items():
                future = self._executor().submit(
                    _score, ref, audio[i, 0, :n].numpy(), rate, self.metrics
                )
                self._futures.append((label, future))
            self._clips += 1

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._active:
            return
        labels = self._labels or [
            f"{pl_module.quantizer.kbps(n):g}kbps" for n in pl_module.eval_n_qs()
        ]
        started = time.perf_counter()
        sums = torch.zeros(len(labels), len(self.metrics), dtype=torch.float64)
        counts = torch.zeros_like(sums)
        skipped = torch.zeros(len(self.metrics), dtype=torch.float64)
        for label, future in self._futures:
            scores = future.result()
            row = labels.index(label)
            for j, name in enumerate(self.metrics):
                value = scores.get(name)
                if value is None or not np.isfinite(value):
                    skipped[j] += 1
                else:
                    sums[row, j] += value
                    counts[row, j] += 1
        waited = time.perf_counter() - started
        self.wait_seconds += waited
        self._futures = []
        if trainer.world_size > 1:  # every rank reaches this point with tensors of the same shape
            sums = trainer.strategy.reduce(sums.to(pl_module.device), reduce_op="sum").cpu()
            counts = trainer.strategy.reduce(counts.to(pl_module.device), reduce_op="sum").cpu()
            skipped = trainer.strategy.reduce(skipped.to(pl_module.device), reduce_op="sum").cpu()
        logs = {}
        for i, label in enumerate(labels):
            for j, name in enumerate(self.metrics):
                if counts[i, j] > 0:
                    logs[f"val/{name}@{label}"] = float(sums[i, j] / counts[i, j])
        for j, name in enumerate(self.metrics):
            logs[f"val/{name}_skipped"] = float(skipped[j])
        logs["val/quality_wait_seconds"] = waited
        # The scores are already reduced (identical on every rank); logging them on every rank
        # with sync_dist averages equal values and makes them monitorable on every rank.
        pl_module.log_dict(logs, sync_dist=trainer.world_size > 1)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
