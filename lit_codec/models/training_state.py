"""What the LightningModules share about their training state: the non-finite step guard
and the global random states saved in checkpoints (``weights_only``-safe)."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

__all__ = ["NonFiniteGuard", "NonFiniteLossError", "rng_state", "set_rng_state"]


class NonFiniteLossError(RuntimeError):
    """Training produced non-finite losses or gradients for too many steps in a row."""


class NonFiniteGuard:
    """Counts the optimizer steps skipped for a non-finite loss or gradient, and stops
    training after ``limit`` of them in a row.

    Args:
        limit: consecutive skipped steps that stop training.
        unit: what a step is, for the message (``generator step``, ``optimizer step``).
        advice: what to try, for the message.
    """

    def __init__(self, limit: int, unit: str, advice: str):
        self.limit = limit
        self.unit = unit
        self.advice = advice
        self.total = 0  # skipped steps of the whole run (logged as train/nonfinite_steps)
        self.consecutive = 0

    def record(self, skipped: bool, step: int) -> None:
        """Count one step; raise :class:`NonFiniteLossError` at ``limit`` skipped in a row."""
        if not skipped:
            self.consecutive = 0
            return
        self.total += 1
        self.consecutive += 1
        if self.consecutive >= self.limit:
            raise NonFiniteLossError(
                f"the loss or the gradients were not finite for {self.consecutive} {self.unit}s "
                f"in a row ({self.unit} {step}); stopping. The last good checkpoint is kept: "
                f"{self.advice}"
            )

    def state_dict(self) -> dict[str, int]:
        return {"nonfinite_steps": self.total, "consecutive_nonfinite": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.total = int(state.get("nonfinite_steps", 0))
        self.consecutive = int(state.get("consecutive_nonfinite", 0))


def rng_state() -> dict[str, Any]:
    """Global random states as tensors and plain values (safe for ``weights_only`` loading)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"].cpu() if torch.is_tensor(state["torch"]) else state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
