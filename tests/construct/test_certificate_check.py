"""Interval bounds, the check battery's case runner."""
import numpy as np
from hypothesis import given, settings, strategies as st

from construct.certificate import interval_bounds
from construct.check import CaseResult, CheckCase, CheckResult, format_table, run_case
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


def test_failed_seed_is_named_in_the_row():
    """A row whose largest certificate comes from a failed seed says so (issue 11 §9): the certificate column holds
    the successful seeds' certificates, the note names the failed seeds and their certificate against eps."""
    case = CheckCase("weak", "random:4,6,3", 0.2)
    row = CaseResult(case, True, "p=0.41; 1 seed(s) failed, certificate up to 1.413e-01 > 1e-9 (exact) (no claim)", 4,
                     5, 10.0, 1000, 50, 0.0, 1e-16, True, True, True, 1.0, 0.1413, 0.1, 0.1413, 1.413,
                     ("certificate",) * 5, True)
    text = format_table(CheckResult("fast", (row,), 0.0))
    line = text.splitlines()[2]
    assert "1 seed(s) failed, certificate up to 1.413e-01 > 1e-9" in line and "4/5" in line
    head = text.splitlines()[0]
    col = head.index("cert (ok)")
    assert line[col:col + 10].strip() == "0.000e+00"  # the certificate column: the successful seeds only


def test_check_row_reports_the_error_interval_and_failed_seed_note():
    from construct.check import run_case

    row = run_case(CheckCase("l+1", "random:2,2,1", 1.0, seeds=2), bound_seconds=2)
    assert row.feasible and row.interval_claim and len(row.bound_methods) == 2
    assert 0 < row.attacked_error <= row.best_bound <= row.certificate + 1e-12 and row.bound_ratio >= 1.0
    assert "seed(s) failed" not in row.note  # both seeds succeed here


def test_ticket_report_prints_as_a_table():
    from construct.strong import build_strong_ticket

    _, report = build_strong_ticket(random_target((3, 2), 1), 0.5, 0.1, 1, eps=0.05, construction="2l", samples=64)
    text = str(report)
    assert text.startswith("2l ticket of random") and "instances" in text and "certificate" in text
    assert "TicketReport(" not in text and "LayerReport(" not in text
    assert len(text.splitlines()) == 3 + len(report.layers) + 1
