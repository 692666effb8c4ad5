"""Tests of E5 (constructions: phase diagrams), E6 (masked subset sum) and the fitted constant C (docs/math.md §4–§6).

Expected values come from independent routes: the exact batched solver on full masked rows (E6), Clopper–Pearson
bounds from scipy.stats.binomtest (C), exact power laws (slopes); seeded Monte Carlo is judged with
scipy.stats.binomtest at alpha = 1e-3.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from construct.subset_sum import solve_subset_sums_detailed
from experiments import e5_construction as e5
from experiments import e6_subset_sum as e6
from experiments import fit_constant as fc
from experiments.infra.registry import get_experiment
from experiments.infra.results import ResultsStore
from experiments.infra.sweep import run_sweep
from theory.subset_sum import block_width, thinning_width
from theory.testing import assert_rate_at_most

ALPHA = 1e-3


# ------------------------------------------------------------------------------------------------------- E6


@pytest.mark.parametrize("law", ["uniform", "product"])
def test_e6_failures_match_the_solver_on_full_masked_rows(law):
    """Survivor-prefix counting (m_needed ≤ K(n)) equals solve_subset_sums run on the full rows with the mask."""
    rng = np.random.default_rng(11)
    trials, n_max, eps, density = 25, 24, 1e-2, 0.6
    values = e6.draw_candidates(rng, trials, n_max, law)
    kept = rng.random((trials, n_max)) < density
    survivor_values = np.zeros((trials, n_max))
    for r in range(trials):
        survivor_values[r, : kept[r].sum()] = values[r, kept[r]]
    z = np.array([-0.9, -0.3, 0.0, 0.45, 1.0])
    grid = [3, 8, 14, 20, 24]
    failures, censored = e6.failures_from_draws(survivor_values, kept, grid, z, eps)
    assert censored == 0
    for a, n in enumerate(grid):
        cand = np.repeat(values[:, :n], z.size, axis=0)
        avail = np.repeat(kept[:, :n], z.size, axis=0)
        sol = solve_subset_sums_detailed(cand, np.tile(z, trials), eps, avail, max_prefix=64)
        expected = (~sol.solved).reshape(trials, z.size).sum(axis=0)
        np.testing.assert_array_equal(failures[a], expected)


def test_e6_is_seeded_and_counts_are_monotone_in_n():
    a = e6.masked_subset_sum_failures(3, "uniform", 1e-2, 0.3, 40, 150)
    b = e6.masked_subset_sum_failures(3, "uniform", 1e-2, 0.3, 40, 150)
    c = e6.masked_subset_sum_failures(4, "uniform", 1e-2, 0.3, 40, 150)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert np.all(np.diff(a[1], axis=0) <= 0)  # more candidates never fail more often
    zero = e6.Z_GRID.index(0.0)
    assert np.all(a[1][:, zero] == 0)  # the empty subset reaches z = 0
    assert np.all(np.delete(a[1][0], zero) >= 30)  # one candidate (kept w.p. 0.3) rarely lands within 1e-2 of z


@pytest.mark.parametrize("law,eps,density", [("uniform", 1e-2, 0.2), ("product", 1e-3, 0.5)])
def test_e6_theory_widths_reach_one_minus_delta(law, eps, density):
    """At [ours-1] and [ours-2] (δ = 0.01) the measured worst-z failure rate is not significantly above δ."""
    delta = e6.DEFAULT_DELTA
    n_max = max(thinning_width(eps, delta, density, law), block_width(eps, delta, density, law).total)
    grid, failures, _ = e6.masked_subset_sum_failures(7, law, eps, density, 300, n_max)
    cell = e6.SubsetSumCell(law, eps, density, tuple(grid), failures, 300, 0)
    for width in (thinning_width(eps, delta, density, law), block_width(eps, delta, density, law).total):
        fails = cell.failure_at(width)
        assert_rate_at_most(fails, 300, delta, alpha=ALPHA)


def test_e6_bad_input_is_one_line():
    with pytest.raises(ValueError, match="density"):
        e6.masked_subset_sum_failures(0, "uniform", 1e-2, 0.0, 10, 20)
    with pytest.raises(ValueError, match="law"):
        e6.masked_subset_sum_failures(0, "cauchy", 1e-2, 0.5, 10, 20)
    with pytest.raises(ValueError, match="scale"):
        e6.EXPERIMENT.configs("huge")


@given(st.integers(1, 100_000))
@settings(max_examples=50, deadline=None)
def test_n_grid_is_sorted_complete_and_ends_at_n_max(n_max):
    grid = e6.n_grid(n_max)
    assert grid == sorted(set(grid)) and grid[0] == 1 and grid[-1] == n_max
    assert set(range(1, min(n_max, 60) + 1)) <= set(grid)


# ------------------------------------------------------------------------------------------- fitted C


def _fake_e6_record(failures, trials, eps, law="uniform"):
    grid = list(range(1, len(failures) + 1))
    config = {"law": law, "eps": eps, "density": 1.0, "trials": trials, "n_max": grid[-1], "seed": 0}
    return {"config": config, "metrics": {"grid": grid, "failures": [[f, 0] for f in failures],
                                          "trials": trials, "censored": 0}}


def test_fit_constant_against_binomtest_clopper_pearson():
    fails, trials, eps, delta = [1000, 500, 12, 6, 0], 1000, 1e-3, 0.01
    fit = fc.fit_constant([_fake_e6_record(fails, trials, eps)], "uniform", delta, 0.95)
    # independent: two-sided 90 % exact interval of binomtest = one-sided 95 % bounds
    cis = [stats.binomtest(f, trials).proportion_ci(confidence_level=0.90, method="exact") for f in fails]
    n_low = 1 + min(i for i in range(5) if all(ci.low <= delta for ci in cis[i:]))
    n_high = 1 + min(i for i in range(5) if all(ci.high <= delta for ci in cis[i:]))
    n_point = 1 + min(i for i in range(5) if all(f / trials <= delta for f in fails[i:]))
    (e,) = fit.per_eps
    assert (e.n_low, e.n_point, e.n_high) == (n_low, n_point, n_high) == (3, 4, 5)
    assert fit.constant == pytest.approx(n_point / math.log2(1 / eps))
    assert fit.constant_low <= fit.constant <= fit.constant_high


def test_fit_constant_cli(tmp_path, capsys):
    path = tmp_path / "subset-sum.jsonl"
    store = ResultsStore(path, "subset-sum")
    for eps in (1e-2, 1e-3):
        rec = _fake_e6_record([1000, 300, 0, 0], 1000, eps)
        store.append(ResultsStore.make_record("subset-sum", rec["config"], rec["metrics"], "cpu", 0.0))
    assert fc.main(["--results", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out[0]["law"] == "uniform" and out[0]["constant"] == pytest.approx(3 / math.log2(100))
    from theory.cli import run_main

    assert run_main(fc.main, ["--results", str(tmp_path / "missing.jsonl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.jsonl" in err[0]
    # reading the results file is estimated first and refused beyond --max-memory (one line, exit 2)
    assert run_main(fc.main, ["--results", str(path), "--max-memory", "1K"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-memory" in err[0] and "subset-sum.jsonl" in err[0]
    assert run_main(fc.main, ["--results", str(path), "--max-memory", "lots"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_memory" in err[0]


# ------------------------------------------------------------------------------------------------------- E5


@given(st.floats(0.1, 1e4), st.floats(-3.0, 3.0))
@settings(max_examples=50, deadline=None)
def test_loglog_slope_recovers_a_power_law(scale, exponent):
    d = [0.5, 0.2, 0.1, 0.05, 0.02, 0.01]
    w = [scale * x ** exponent for x in d]
    assert e5.loglog_slope(d, w) == pytest.approx(exponent, abs=1e-9)


def test_minimal_width_needs_every_larger_multiplier():
    table = {("x", 0.1, 0.2): (0, 10, 5.0), ("x", 0.1, 0.5): (10, 10, 10.0), ("x", 0.1, 0.7): (8, 10, 14.0),
             ("x", 0.1, 1.0): (10, 10, 20.0)}
    assert e5.minimal_width(table, "x", 0.1, 0.1) == (1.0, 20.0)
    assert e5.minimal_width(table, "x", 0.1, 0.25) == (0.5, 10.0)
    table[("x", 0.1, 1.0)] = (7, 10, 20.0)  # the largest multiplier misses 1 − δ: no minimal width
    assert all(math.isnan(v) for v in e5.minimal_width(table, "x", 0.1, 0.1))


def test_source_densities_patterns():
    assert e5.source_densities("weak", 2, 0.3) == 0.3
    assert e5.source_densities("weak", 2, 0.3, "last") == (1.0, 1.0, 0.3)
    assert e5.source_densities("2l", 2, 0.3, "first") == (0.3, 1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="density_pattern"):
        e5.source_densities("weak", 2, 0.3, "middle")


def _tasks(construction, density, seeds, **extra):
    base = {"construction": construction, "target": {"kind": "random", "widths": [2, 3, 2]}, "density": density,
            "delta": 0.1, "multiplier": 1.0, "samples": 64, "max_source_params": 2_000_000,
            "weight_eps": None if construction == "weak" else 0.01, "eps": None}
    return [{**base, **extra, "seed": s} for s in seeds]


@pytest.mark.parametrize("construction,density,seeds", [("weak", 0.3, 200), ("weak", 0.1, 100), ("2l", 0.5, 30), ("l+1", 1.0, 6)])
def test_e5_theory_width_succeeds_with_probability_one_minus_delta(construction, density, seeds):
    """At theory's widths (multiplier 1) failures over seeds are not significantly more frequent than δ = 0.1,
    and every successful ticket's sampled error is ≤ its certificate (0 for weak tickets)."""
    results = e5.run_tasks(_tasks(construction, density, range(seeds)), workers=1)
    assert not any(r["skipped"] for r in results)
    fails = sum(not r["success"] for r in results)
    assert_rate_at_most(fails, seeds, 0.1, alpha=ALPHA)
    for r in results:
        if r["success"]:
            assert r["sampled_error"] <= r["certificate"] + 1e-9
            assert r["ticket_params"] <= r["source_params"]


def test_e5_pool_gives_the_same_results_as_one_process():
    tasks = _tasks("weak", 0.2, range(4)) + _tasks("weak", 0.2, range(2), multiplier=0.3)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]
    assert strip(e5.run_tasks(tasks, workers=2)) == strip(e5.run_tasks(tasks, workers=1))


def test_e5_over_budget_task_is_skipped_not_failed():
    (r,) = e5.run_tasks(_tasks("weak", 0.05, [0], max_source_params=10), workers=1)
    assert r["skipped"] is True and "success" not in r and r["source_params"] > 10


# ------------------------------------------------------------------------ sweeps, resume and figures


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("e5e6")
    for name in ("construction", "subset-sum"):
        exp = get_experiment(name)
        summary = run_sweep(exp, exp.configs("smoke", None), out, torch.device("cpu"), progress=False)
        assert summary.ran == summary.total > 0
    return out


def test_smoke_sweeps_resume_without_rerunning(smoke_results):
    for name in ("construction", "subset-sum"):
        exp = get_experiment(name)
        again = run_sweep(exp, exp.configs("smoke", None), smoke_results, torch.device("cpu"), resume=True,
                          progress=False)
        assert again.ran == 0 and again.skipped == again.total
        with pytest.raises(ValueError, match="resume"):
            run_sweep(exp, exp.configs("smoke", None), smoke_results, torch.device("cpu"), progress=False)


def test_figures_from_stored_results_are_byte_identical(smoke_results, tmp_path):
    for name in ("construction", "subset-sum"):
        records = ResultsStore(smoke_results / f"{name}.jsonl", name).load()
        exp = get_experiment(name)
        first = exp.figures(records, tmp_path / "a" / name)
        second = exp.figures(records, tmp_path / "b" / name)
        assert first and all(p.exists() and p.stat().st_size > 0 for p in first)
        for p, q in zip(first, second):
            assert p.read_bytes() == q.read_bytes(), p.name
    summary = (tmp_path / "a" / "construction" / "e5_summary.md").read_text()
    assert "binomtest" in summary and "slope" in summary


def test_e6_smoke_records_pass_the_bound_check(smoke_results):
    cells = e6.aggregate(ResultsStore(smoke_results / "subset-sum.jsonl", "subset-sum").load())
    checks = e6.check_bounds(cells)
    assert checks and all(c.p_value >= ALPHA for c in checks)
