"""A helper of ``bench/learning_curve.py``: checkpoints at wall-clock budgets.

:class:`BudgetClock` measures a run's training time from its first step on, with the time
spent writing budget checkpoints taken out, and says which budgets (in minutes) the run has
just crossed. The peers' plain training loops use it directly; :class:`WallClockBudgets`
wraps it in a Lightning callback that ``bench/learning_curve.py`` passes to ``lit-codec
fit`` (``--trainer.callbacks`` with bench/ on ``PYTHONPATH``): it saves
``budget_<M>min.ckpt`` with ``trainer.save_checkpoint`` and a ``budget_<M>min.json``
record (generator steps, seconds, audio seen) beside it, and stops training after the last
budget. Checks happen at the end of each training step, so a checkpoint holds the steps
finished by the budget plus at most the step that crossed it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import lightning as L

__all__ = ["BudgetClock", "WallClockBudgets", "budget_tag", "write_record"]


def budget_tag(minutes: float) -> str:
    """``budget_10min``, ``budget_0.25min``: the stem of a budget's files."""
    return f"budget_{minutes:g}min"


def write_record(path: Path, record: dict) -> None:
    """Write a budget's JSON record atomically (a temporary file, then a rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


class BudgetClock:
    """Training seconds since :meth:`start`, pauses excluded, against budgets in minutes.

    Args:
        budgets: the budgets in minutes (any order).
    """

    def __init__(self, budgets: Sequence[float]):
        self.budgets = sorted(float(b) for b in budgets)
        self._start: float | None = None
        self._paused = 0.0
        self._next = 0  # index of the next budget not yet crossed

    def start(self) -> None:
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training so far (0 before :meth:`start`)."""
        if self._start is None:
            return 0.0
        return time.perf_counter() - self._start - self._paused

    def crossed(self) -> list[float]:
        """The budgets crossed since the previous call, smallest first."""
        out = []
        seconds = self.elapsed()
        while self._next < len(self.budgets) and seconds >= 60.0 * self.budgets[self._next]:
            out.append(self.budgets[self._next])
            self._next += 1
        return out

    @property
    def done(self) -> bool:
        """True once every budget has been crossed."""
        return self._next >= len(self.budgets)

    @property
    def left(self) -> list[float]:
        """The budgets not crossed yet."""
        return self.budgets[self._next :]

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time spent inside does not count as training (checkpoint writing)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - start


class WallClockBudgets(L.Callback):
    """Save ``<dirpath>/budget_<M>min.ckpt`` when training time crosses each budget.

    Args:
        budgets: budgets in minutes of training (the clock starts at ``on_train_start``).
        dirpath: folder of the checkpoints and their ``.json`` records.
    """

    def __init__(self, budgets: list[float], dirpath: str):
        super().__init__()
        self.clock = BudgetClock(budgets)
        self.dirpath = Path(dirpath)
        self.audio_seconds = 0.0  # audio seen by training so far

    def on_train_start(self, trainer, pl_module) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        self.clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        audio = batch.audio if hasattr(batch, "audio") else batch  # (B, 1, T)
        self.audio_seconds += audio.shape[0] * audio.shape[-1] / float(pl_module.sample_rate)
        for minutes in self.clock.crossed():
            self._save(trainer, pl_module, minutes)
        if self.clock.done:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        """Training ended before the last budget (``max_steps``): the final state stands for
        the budgets left, its record marked ``stopped_early``."""
        for minutes in self.clock.left:
            self._save(trainer, pl_module, minutes, stopped_early=True)

    def _save(self, trainer, pl_module, minutes: float, stopped_early: bool = False) -> None:
        seconds = self.clock.elapsed()
        with self.clock.paused():
            tag = budget_tag(minutes)
            trainer.save_checkpoint(self.dirpath / f"{tag}.ckpt")
            steps = int(getattr(pl_module, "generator_step", trainer.global_step))
            record = {"minutes": minutes, "steps": steps, "train_seconds": seconds,
                      "audio_seconds": self.audio_seconds, "stopped_early": stopped_early}  # fmt: skip
            write_record(self.dirpath / f"{tag}.json", record)
        print(f"[learning_curve] {tag}: {steps} generator steps", flush=True)
