"""Which validation passes a callback acts on, for callbacks whose work costs (scores, media)."""

from __future__ import annotations

__all__ = ["ValidationCadence"]


class ValidationCadence:
    """One validation pass out of every ``every`` (the first included), never the sanity check.

    Call :meth:`due` once at each validation epoch start.
    """

    def __init__(self, every: int = 1) -> None:
        self.every = max(1, every)
        self.passes = 0  # validation passes seen, sanity checks excluded

    def due(self, trainer) -> bool:
        """Whether the pass starting now is one to act on (and count it)."""
        if trainer.sanity_checking:
            return False
        self.passes += 1
        return (self.passes - 1) % self.every == 0
