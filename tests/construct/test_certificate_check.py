"""Interval bounds, the check battery's case runner."""
import numpy as np
from hypothesis import given, settings, strategies as st

from construct.certificate import interval_bounds
from construct.check import CheckCase, CheckResult, format_table, run_case
from construct.targets import random_target
from theory.strategies import widths as widths_st


@settings(max_examples=20, deadline=None)
@given(widths=widths_st(max_width=6, max_layers=3), seed=st.integers(0, 1000),
       box=st.sampled_from([(-1.0, 1.0), (0.0, 1.0), (-3.0, 0.5)]))
def test_interval_bounds_contain_activations(widths, seed, box):
    target = random_target(widths, seed, scale=3.0)
    bounds = interval_bounds(target, box)
    x = np.random.default_rng(seed).uniform(box[0], box[1], (500, widths[0]))
    h = x
    for t, (w, b) in enumerate(zip(target.weights, target.biases), start=1):
        h = h @ w.T + b
        if t < target.depth:
            h = np.maximum(h, 0)
        lo, hi = bounds[t]
        assert np.all(h >= lo - 1e-12) and np.all(h <= hi + 1e-12)


def test_check_case_runner_and_table():
    ok = run_case(CheckCase("2l", "random:2,2,1", 1.0, seeds=2))
    assert ok.feasible and ok.runs == 2 and ok.passed
    weak = run_case(CheckCase("weak", "random:2,3,1", 0.5, seeds=2))
    assert weak.passed and weak.certificate <= 1e-9
    big = run_case(CheckCase("l+1", "random:2,2,1", 0.05, seeds=2))
    assert not big.feasible and big.passed  # listed as infeasible, not counted as a claim
    text = format_table(CheckResult("fast", (ok, weak, big), 0.0))
    assert "infeasible" in text and "ALL PASS" in text
