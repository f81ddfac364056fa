"""Optimisation helpers that are not networks: learning-rate schedules."""

from lit_codec.optim.time_budget import TimeBudgetLR

__all__ = ["TimeBudgetLR"]
