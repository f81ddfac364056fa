"""A learning-rate schedule over wall-clock time instead of steps."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def parse_duration(budget: float | str) -> float:
    """Seconds in ``budget``: a number of seconds or ``"[DD:]HH:MM:SS"`` like Trainer.max_time."""
    if isinstance(budget, (int, float)):
        seconds = float(budget)
    else:
        parts = [float(p) for p in str(budget).split(":")]
        if not 1 <= len(parts) <= 4:
            raise ValueError(f"budget {budget!r}: expected seconds or [DD:]HH:MM:SS")
        scale = (1.0, 60.0, 3600.0, 86400.0)
        seconds = sum(p * s for p, s in zip(reversed(parts), scale))
    if not seconds > 0:
        raise ValueError(f"budget must be positive, got {budget!r}")
    return seconds


class TimeBudgetLR(LRScheduler):
    """Linear warm-up, then cosine decay, over a wall-clock budget rather than a step count.

    A recipe that promises "N hours on this machine" cannot know how many steps the machine
    will make (other work, a slower CPU, a GPU): a step-based one-cycle either stops before
    its decay (the learning rate still high when ``max_time`` ends the run) or decays long
    before the budget is spent. This schedule reads the elapsed training time at every
    ``step()``; pair it with the same ``trainer.max_time``. With ``f`` the elapsed fraction
    of ``budget`` (clamped to 1)::

        lr = base_lr * (start_factor + (1 - start_factor) * f / warmup)       f < warmup
        lr = base_lr * (final_factor + (1 - final_factor) * (1 + cos(pi * g)) / 2)
             with g = (f - warmup) / (1 - warmup)                              otherwise

    Time counts from the first ``step()`` after construction; the elapsed time is part of
    ``state_dict()``, so a resumed run continues the schedule where it stopped (the time
    between the save and the resume is not counted). The schedule's shape (``budget``,
    ``warmup``, the factors) is the one constructed, not the saved one: to extend a finished
    run, resume it with a larger ``budget`` and ``trainer.max_time`` together, and the
    cosine continues from the elapsed fraction of the new budget (2 h of a new 4 h budget:
    half-way, at about half the peak rate). Runs are not bit-reproducible: the
    learning rate of a step depends on how fast the machine made the steps before it.

    Args:
        optimizer: the wrapped optimizer; its ``lr`` is the peak.
        budget: seconds, or ``"[DD:]HH:MM:SS"`` as ``Trainer.max_time`` takes it.
        warmup: fraction of the budget spent warming up, in ``[0, 1)``.
        start_factor: learning rate at time 0, as a fraction of the peak.
        final_factor: learning rate at the end of the budget, as a fraction of the peak.
        clock: seconds from a monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        budget: float | str,
        warmup: float = 0.02,
        start_factor: float = 0.1,
        final_factor: float = 0.01,
        last_epoch: int = -1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {warmup}")
        if not (0 <= start_factor <= 1 and 0 <= final_factor <= 1):
            raise ValueError(
                f"start_factor and final_factor must be in [0, 1], got {start_factor}, {final_factor}"
            )
        self.budget = parse_duration(budget)
        self.warmup = warmup
        self.start_factor = start_factor
        self.final_factor = final_factor
        self.clock = clock
        self.elapsed = 0.0  # training seconds counted before the last (re)start
        self._started: float | None = None
        super().__init__(optimizer, last_epoch)

    def fraction(self) -> float:
        """Fraction of the budget spent, in ``[0, 1]``."""
        running = 0.0 if self._started is None else self.clock() - self._started
        return min(1.0, (self.elapsed + running) / self.budget)

    def factor(self, f: float) -> float:
        """Learning rate as a fraction of the peak at budget fraction ``f``."""
        if f < self.warmup:
            return self.start_factor + (1 - self.start_factor) * f / self.warmup
        g = (f - self.warmup) / (1 - self.warmup)
        return self.final_factor + (1 - self.final_factor) * 0.5 * (1 + math.cos(math.pi * g))

    def step(self, epoch: int | None = None) -> None:  # noqa: D102 (LRScheduler.step)
        if self._started is None and self.last_epoch >= 0:  # the first step() of a (re)start
            self._started = self.clock()
        super().step(epoch)

    def get_lr(self) -> list[float]:  # noqa: D102 (LRScheduler.get_lr)
        factor = self.factor(self.fraction())
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "clock", "_started")}
        state["elapsed"] = self.fraction() * self.budget
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        shape = ("budget", "warmup", "start_factor", "final_factor")
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in shape})
        self._started = None
