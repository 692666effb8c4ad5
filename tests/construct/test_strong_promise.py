"""Issue 14: strong tickets at theory's widths keep "success ≥ 1 − δ" or are refused up front (docs/math.md §5, §6).

- the solver searches exactly what theory provisioned: the first a·k available candidates as a blocks of k ≤ 40;
- sources are drawn in the dtype theory chose; float64 sources refine the float32 numbers a seed draws;
- configurations needing more than 40 candidates per exact search are refused in one line (library and CLIs).
"""
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import binomtest

from construct.instances import block_available, solve_instances
from construct.source import BYTES_PER_WEIGHT, sample_source, strong_source_dtype
from construct.strong import build_strong_ticket, plan_strong
from construct.subset_sum import best_subset_bruteforce
from construct.targets import random_target
from theory.subset_sum import SOLVER_MAX_CANDIDATES

ISSUE_CASE_1 = ["--target", "random:8,8,8,8,2", "--construction", "l+1", "--density", "0.5", "--eps", "0.01"]


# ------------------------------------------------------------------------------------------------ block search


def test_block_search_takes_the_best_block_and_stays_inside_one_block():
    rng = np.random.default_rng(1)
    k, a, n = 6, 3, 25
    cand = rng.uniform(-1, 1, (40, n))
    avail = rng.random((40, n)) < 0.8
    z = rng.uniform(-1, 1, 40)
    mask, err = solve_instances(cand, avail, z, 1e-12, cap=(k, a))  # ε unreachable: every block is searched
    for r in range(40):
        per_block = []
        for b in range(a):
            sel = block_available(avail[r:r + 1], k, b)[0]
            cols = np.flatnonzero(sel)
            per_block.append(best_subset_bruteforce(cand[r, cols], z[r])[1] if cols.size else abs(z[r]))
        assert err[r] == pytest.approx(min(per_block), abs=1e-12)  # the best block's exact optimum
        chosen = np.flatnonzero(mask[r])
        assert np.all(avail[r, chosen])
        ranks = np.cumsum(avail[r])[chosen] - 1
        assert len(set((ranks // k).tolist())) <= 1 and np.all(ranks < k * a)  # one block, within the first a·k
        assert err[r] == pytest.approx(abs(cand[r, chosen].sum() - z[r]), abs=1e-15)


def test_a_later_block_solves_what_the_first_cannot():
    cand = np.array([[0.01, 0.02, 0.015, 0.6, 0.29, 0.5]])
    mask, err = solve_instances(cand, np.ones_like(cand, dtype=bool), np.array([0.89]), 1e-9, cap=(3, 2))
    assert err[0] <= 1e-9 and mask[0].tolist() == [False, False, False, True, True, False]
    _, err_one = solve_instances(cand, np.ones_like(cand, dtype=bool), np.array([0.89]), 1e-9, cap=(3, 1))
    assert err_one[0] > 0.8


def test_block_size_above_the_solver_cap_is_refused():
    with pytest.raises(ValueError, match=f"cap=.*\\[1, {SOLVER_MAX_CANDIDATES}\\]"):
        solve_instances(np.ones((1, 50)), np.ones((1, 50), dtype=bool), np.array([0.5]), 0.1,
                        cap=SOLVER_MAX_CANDIDATES + 1)


# ------------------------------------------------------------------------------------------------ source precision


def test_float64_source_refines_the_float32_numbers():
    a = sample_source((30, 400, 20), [0.3, 0.7], 5)
    b = sample_source((30, 400, 20), [0.3, 0.7], 5, dtype="float64")
    assert b.dtype == "float64" and a.dtype == "float32"
    for la, lb in zip(a.layers, b.layers):
        assert la.weights.dtype == np.float32 and lb.weights.dtype == np.float64
        assert np.array_equal(la.mask, lb.mask)  # masks unchanged
        diff = lb.weights - la.weights.astype(np.float64)
        assert np.all(diff >= 0) and np.all(diff <= 2.0 ** -23)  # float32 numbers are the leading bits
        assert np.all(diff > 0)  # refined (one zero has probability 2^-29 per weight)
        bd = lb.bias - la.bias.astype(np.float64)
        assert np.all(bd >= 0) and np.all(bd <= 2.0 ** -23)
        # spacing: float64 weights are not on the 2^-23 lattice
        assert np.mean(np.abs(lb.weights / 2.0 ** -23 - np.round(lb.weights / 2.0 ** -23)) > 1e-3) > 0.99
    c = sample_source((30, 400, 20), [0.3, 0.7], 5, dtype="float64").layers[0]
    rows = np.array([3, 399, 17])
    w, m = c.take_rows(rows)
    assert np.array_equal(w, b.layers[0].weights[rows]) and np.array_equal(m, b.layers[0].mask[rows])
    g, _ = c.gather(np.array([3, 7, 399]), np.array([0, 29, 5]))
    assert np.array_equal(g, b.layers[0].weights[[3, 7, 399], [0, 29, 5]])
    with pytest.raises(ValueError, match="source_dtype"):
        sample_source((3, 4), [0.5], 0, law="normal", dtype="float64")
    with pytest.raises(ValueError, match="source_dtype"):
        sample_source((3, 4), [0.5], 0, dtype="float16")


def test_theory_chooses_the_dtype_and_construct_draws_it():
    target = random_target((3, 3, 2), 2)
    coarse = plan_strong(target, 0.5, 0.1, weight_eps=0.01, construction="2l")[0]
    fine = plan_strong(target, 0.5, 0.1, weight_eps=1e-6, construction="2l")[0]
    assert strong_source_dtype(coarse) == "float32" and BYTES_PER_WEIGHT["float32"] == 4
    assert strong_source_dtype(fine) == "float64" and BYTES_PER_WEIGHT["float64"] == 8
    ticket, rep = build_strong_ticket(target, 0.5, 0.1, 2, weight_eps=1e-6, construction="2l", samples=64)
    assert ticket.source.dtype == "float64" and ticket.meta["source_dtype"] == "float64"
    assert rep.widths["source_dtype"] == "float64"
    assert all(c["weight"] <= SOLVER_MAX_CANDIDATES for c in rep.widths["caps"])


# ------------------------------------------------------------------------------------------------ the promise


def test_success_rate_with_several_blocks_and_float64():
    """Per-instance tolerance 1e-8 (below float32's resolution, several blocks per instance) at theory's widths:
    success rate not significantly below 1 − δ (binomtest, α = 1e-3)."""
    delta, runs, ok, blocks = 0.2, 8, 0, set()
    for seed in range(runs):
        target = random_target((2, 2, 1), 100 + seed)
        _, rep = build_strong_ticket(target, 0.5, delta, seed, weight_eps=1e-8, construction="2l", samples=16)
        ok += rep.success
        blocks |= {b["weight"] for b in rep.widths["blocks"]}
        assert rep.widths["source_dtype"] == "float64"
    assert max(blocks) >= 2  # the block search is exercised
    assert binomtest(ok, runs, 1 - delta, alternative="less").pvalue >= 1e-3, ok


def test_issue_case_refused_up_front_by_library():
    target = random_target((8, 8, 8, 8, 2), 0)
    with pytest.raises(ValueError, match=r"per-instance tolerance eps=.* needs N_SS=\d+ .*at most 40"):
        build_strong_ticket(target, 0.5, 0.1, 0, eps=0.01, construction="l+1")


@pytest.mark.parametrize("argv", [
    [sys.executable, "-m", "construct", "strong", *ISSUE_CASE_1, "--seed", "3"],
    [sys.executable, "-m", "theory", "widths", "--ticket", "strong", "--target", "8,8,8,8,2", "--density", "0.5",
     "--delta", "0.1", "--eps", "0.01", "--construction", "l+1"],
])
def test_issue_case_refused_in_one_line_by_the_clis(argv):
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "per-instance tolerance eps=" in lines[0] and "needs N_SS=" in lines[0] and "at most 40" in lines[0]
    assert res.stdout == ""


def test_grid_runner_reports_refusals_and_builds():
    from construct.strong_grid import GridCase, format_grid, grid_cases, run_grid_case

    refused = run_grid_case(GridCase("l+1", "random:8,8,8,8,2", 0.5, 0.01, 1.0, 4))
    assert refused.refused and refused.runs == 0 and refused.passed
    built = run_grid_case(GridCase("2l", "random:2,2,1", 0.5, 0.05, 1.0, 2))
    assert not built.refused and built.runs == 2 and built.source_dtype in ("float32", "float64")
    assert "refused:" in format_grid([refused, built])
    assert len(grid_cases("full")) > len([c for c in grid_cases("fast") if c.seeds])
