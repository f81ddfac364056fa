"""TimeBudgetLR: warm-up and cosine decay over wall-clock time, resumable."""

import math

import pytest
import torch

from lit_codec.optim import TimeBudgetLR
from lit_codec.optim.time_budget import parse_duration


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _setup(clock, budget=100.0, **kw):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    return opt, TimeBudgetLR(opt, budget, clock=clock, **kw)


def _lr(opt):
    return opt.param_groups[0]["lr"]


def _advance(opt, sched, clock, seconds):
    clock.now += seconds
    opt.step()
    sched.step()


def test_follows_warmup_then_cosine_in_wall_time():
    clock = FakeClock()
    opt, sched = _setup(clock, warmup=0.1, start_factor=0.1, final_factor=0.01)
    assert _lr(opt) == pytest.approx(1e-4)
    _advance(opt, sched, clock, 0)  # the clock starts at the first step
    _advance(opt, sched, clock, 5)
    assert _lr(opt) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    _advance(opt, sched, clock, 5 + 45)  # half-way through the decay
    assert _lr(opt) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    _advance(opt, sched, clock, 45)
    assert _lr(opt) == pytest.approx(1e-5)
    _advance(opt, sched, clock, 1000)  # past the budget: stays at the floor
    assert _lr(opt) == pytest.approx(1e-5)


def test_same_time_same_rate_whatever_the_step_count():
    fast, slow = FakeClock(), FakeClock()
    opt_f, sched_f = _setup(fast)
    opt_s, sched_s = _setup(slow)
    _advance(opt_f, sched_f, fast, 0)
    _advance(opt_s, sched_s, slow, 0)
    for _ in range(60):
        _advance(opt_f, sched_f, fast, 1)
    for _ in range(6):
        _advance(opt_s, sched_s, slow, 10)
    assert _lr(opt_f) == pytest.approx(_lr(opt_s), rel=0.02)


def test_resume_continues_from_the_saved_elapsed_time():
    clock = FakeClock()
    opt, sched = _setup(clock)
    for _ in range(30):
        _advance(opt, sched, clock, 1)
    state = sched.state_dict()
    assert state["elapsed"] == pytest.approx(29)
    before = _lr(opt)
    clock.now += 5000  # time between the save and the resume does not count
    opt2, sched2 = _setup(clock)
    sched2.load_state_dict(state)
    _advance(opt2, sched2, clock, 0)
    assert _lr(opt2) == pytest.approx(before, rel=1e-6)
    _advance(opt2, sched2, clock, 21)
    assert sched2.fraction() == pytest.approx(0.5)


def test_resume_with_a_larger_budget_extends_the_cosine():
    clock = FakeClock()
    opt, sched = _setup(clock, budget=100.0, warmup=0.0, final_factor=0.0)
    _advance(opt, sched, clock, 0)
    for _ in range(10):
        _advance(opt, sched, clock, 10)
    assert _lr(opt) == pytest.approx(0.0, abs=1e-12)  # the first budget is spent
    opt2, sched2 = _setup(clock, budget=200.0, warmup=0.0, final_factor=0.0)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.budget == 200.0
    _advance(opt2, sched2, clock, 0)
    assert sched2.fraction() == pytest.approx(0.5)
    assert _lr(opt2) == pytest.approx(1e-3 * 0.5)


def test_durations_and_bad_arguments():
    assert parse_duration("02:00:00") == 7200
    assert parse_duration("01:00:00:30") == 86430
    assert parse_duration(90) == 90
    for bad in ("0", "-5", "1:2:3:4:5", "soon"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    clock = FakeClock()
    for kw in ({"warmup": 1.0}, {"start_factor": 2.0}, {"final_factor": -1}):
        with pytest.raises(ValueError):
            _setup(clock, **kw)
    assert math.isfinite(_setup(clock, warmup=0.0)[1].factor(0.0))
