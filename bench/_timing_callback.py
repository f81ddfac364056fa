"""A private helper of the benchmarks in bench/: a Lightning callback that timestamps a run.

:class:`RunTimer` records, with ``time.perf_counter``, the end of every training batch
(= one generator step of :class:`lit_codec.models.CodecGAN`), the seconds of audio in a
training batch, and the start and end of every
validation pass that is not a sanity check. ``bench/ddp_overhead.py`` passes it to a real
``lit-codec fit`` process (``--trainer.callbacks+=_timing_callback.RunTimer``, with bench/
on ``PYTHONPATH``) and reads the JSON that rank 0 writes when training ends;
``bench/validation_overhead.py`` appends it to an in-process trainer and reads it directly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L

__all__ = ["RunTimer", "steady_intervals"]


class RunTimer(L.Callback):
    """Timestamps of training steps and validation passes.

    Args:
        output: JSON file rank 0 writes at the end of training (None: keep in memory only).
    """

    def __init__(self, output: str | None = None):
        super().__init__()
        self.output = output
        self.step_ends: list[float] = []  # perf_counter at the end of each training batch
        self.validations: list[tuple[float, float]] = []  # (start, end) of each validation pass
        self.audio_seconds_per_step = 0.0  # audio in one training batch of this rank
        self._val_start = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.step_ends.append(time.perf_counter())
        audio = batch.audio if hasattr(batch, "audio") else batch  # (B, 1, T)
        self.audio_seconds_per_step = (
            audio.shape[0] * audio.shape[-1] / float(pl_module.sample_rate)
        )

    def on_validation_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.validations.append((self._val_start, time.perf_counter()))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.output is None or trainer.global_rank != 0:
            return
        Path(self.output).parent.mkdir(parents=True, exist_ok=True)
        data = {"step_ends": self.step_ends, "validations": self.validations, "world_size": trainer.world_size,
                "audio_seconds_per_step": self.audio_seconds_per_step}  # fmt: skip
        Path(self.output).write_text(json.dumps(data))


def steady_intervals(
    step_ends: list[float], skip: int, validations: list[tuple[float, float]] = ()
) -> list[float]:
    """Seconds between consecutive step ends after the first ``skip`` steps, validation taken out.

    An interval holding a validation pass counts the step's time only: the pass's own
    duration (``on_validation_start`` to ``on_validation_end``) is subtracted.
    """
    out = []
    for i in range(max(1, skip), len(step_ends)):
        a, b = step_ends[i - 1], step_ends[i]
        inside = sum(end - start for start, end in validations if a <= start < b)
        out.append(b - a - inside)
    return out
