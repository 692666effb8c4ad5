"""`theory.check`: the Monte Carlo simulators match independent exact probabilities, the judge can fail, and the
fast budget passes deterministically."""
import dataclasses

import numpy as np
import pytest
from scipy import stats

from theory.check import ALPHA, _mc_row, run_checks, simulate_all_connected, simulate_weak_success
from theory.testing import assert_binomial
from theory.weak_widths import weak_widths


def test_fast_budget_holds_and_is_deterministic():
    a = run_checks("fast", 0)
    b = run_checks("fast", 0)
    assert a.all_hold
    assert [r.successes for r in a.rows] == [r.successes for r in b.rows]
    kinds = {r.kind for r in a.rows}
    assert {"all", "exact", "at least"} <= kinds
    for r in a.rows:
        if r.kind in ("exact", "at least"):
            assert r.trials > 0 and r.ci_low <= r.observed <= r.ci_high
    d = a.to_dict()
    assert d["all_hold"] is True and len(d["rows"]) == len(a.rows)


def test_judge_rejects_wrong_claims():
    assert not _mc_row("x", "", 500, 1000, 0.9, "exact").holds
    assert not _mc_row("x", "", 850, 1000, 0.9, "at least").holds
    assert _mc_row("x", "", 990, 1000, 0.9, "at least").holds  # above the bound is fine
    assert _mc_row("x", "", 900, 1000, 0.9, "exact").holds


def test_simulate_all_connected_matches_closed_form():
    rng = np.random.default_rng(7)
    d, n, p1, trials = 5, 12, 0.2, 4000
    exact = (1 - (1 - p1) ** n) ** d  # p2 = 1
    hits = simulate_all_connected(rng, d, n, p1, 1.0, trials, chunk_elements=1000)
    assert_binomial(hits, trials, exact, alpha=ALPHA)


def test_simulate_weak_success_matches_exact_probability():
    # target 1 -> 1 -> 1 with g = 3 and r_2 = 2 (set by hand): conditioned on U ~ Bin(g, p1) usable units of a
    # sign group, both copies need an M_2 edge to one of them: E_U[(1 − (1 − p2)^U)^2]; the two sign groups are
    # independent; the output needs an edge to one of the r_2 = 2 copies: 1 − (1 − p3)^2.
    w = weak_widths([1, 1, 1], 0.5, 0.5)
    w = dataclasses.replace(w, lifting_group=3, copies=(2, 1), densities=(0.6, 0.5, 0.4))
    p1, p2, p3 = w.densities
    per_group = sum(stats.binom.pmf(u, 3, p1) * (1 - (1 - p2) ** u) ** 2 for u in range(4))
    exact = per_group**2 * (1 - (1 - p3) ** 2)
    trials = 4000
    hits = simulate_weak_success(np.random.default_rng(11), w, trials)
    assert 0.1 < exact < 0.9
    assert_binomial(hits, trials, exact, alpha=ALPHA)


def test_simulate_weak_success_dense_source_always_succeeds():
    w = weak_widths([3, 2, 2], 1.0, 0.1)
    assert simulate_weak_success(np.random.default_rng(0), w, 50) == 50


@pytest.mark.parametrize("kwargs", [dict(budget="medium"), dict(seed=-1), dict(seed=1.5)])
def test_bad_input(kwargs):
    with pytest.raises(ValueError):
        run_checks(**kwargs)
