"""Tests of the exact batched subset-sum solver (MATH.md §6 "Subset-sum solving").

Expected values come from two independent oracles: brute-force enumeration of all 2^n subsets (n ≤ 14) and
scipy.optimize.milp. Hypothesis checks the structural properties over wide ranges of inputs.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from construct.subset_sum import (
    STATUS_INFEASIBLE,
    STATUS_SOLVED,
    STATUS_UNRESOLVED,
    best_prefix_subsets,
    best_subset_bruteforce,
    best_subset_milp,
    initial_prefix_length,
    smallest_sufficient_prefix,
    solve_subset_sums,
    solve_subset_sums_detailed,
)

ROUNDING = 1e-12  # absolute slack for float rounding of sums of ≤ 14 numbers of magnitude ≤ 2


def _brute_optimum(values, target):
    """Independent oracle: plain Python loop over all subsets (does not share code with the solver)."""
    n = len(values)
    best = abs(target)
    for code in range(1 << n):
        s = sum(values[i] for i in range(n) if code >> i & 1)
        best = min(best, abs(s - target))
    return best


@pytest.mark.parametrize("eps", [0.3, 1e-2, 1e-4, 1e-7])
def test_matches_bruteforce_small_n(eps):
    rng = np.random.default_rng(12345)
    rows, n = 400, 11
    cand = rng.uniform(-1, 1, (rows, n))
    z = rng.uniform(-2.0, 2.0, rows)
    avail = rng.random((rows, n)) < rng.uniform(0.1, 1.0, (rows, 1))
    sol = solve_subset_sums_detailed(cand, z, eps, avail)
    for r in range(rows):
        opt = _brute_optimum(cand[r][avail[r]].tolist(), float(z[r]))
        assert (sol.error[r] <= eps) == (opt <= eps)
        if sol.error[r] > eps:
            assert sol.status[r] == STATUS_INFEASIBLE
            assert sol.error[r] == pytest.approx(opt, abs=ROUNDING)
        else:
            assert sol.status[r] == STATUS_SOLVED


def test_bruteforce_oracle_matches_python_loop():
    rng = np.random.default_rng(7)
    for n in range(0, 10):
        c = rng.uniform(-1, 1, n)
        z = float(rng.uniform(-1, 1))
        mask, err = best_subset_bruteforce(c, z)
        assert err == pytest.approx(_brute_optimum(c.tolist(), z), abs=ROUNDING)
        assert err == pytest.approx(abs(c[mask].sum() - z), abs=0)


def test_matches_milp_on_medium_instances():
    """n = 18..22 (beyond brute force), tiny ε so most instances are proven infeasible → errors are optima."""
    rng = np.random.default_rng(2024)
    for trial in range(6):
        n = 18 + trial % 5
        cand = rng.uniform(-1, 1, n) * rng.uniform(0.2, 1.0, n)
        avail = rng.random(n) < 0.8
        z = float(rng.uniform(-1, 1))
        mask, err = solve_subset_sums(cand[None], np.array([z]), 1e-12, avail[None])
        _, milp_err = best_subset_milp(cand, z, avail)
        assert err[0] == pytest.approx(milp_err, abs=1e-6)


def test_matches_milp_when_out_of_reach():
    cand = np.array([[0.5, -0.25, 0.3, 0.1]])
    mask, err = solve_subset_sums(cand, np.array([2.0]), 1e-3)
    _, milp_err = best_subset_milp(cand[0], 2.0)
    assert err[0] == pytest.approx(milp_err, abs=1e-9)
    assert err[0] == pytest.approx(2.0 - 0.9)
    assert mask[0].tolist() == [True, False, True, True]


finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


@st.composite
def instances(draw, max_rows=6, max_n=12):
    rows = draw(st.integers(0, max_rows))
    n = draw(st.integers(0, max_n))
    cand = draw(hnp.arrays(np.float64, (rows, n), elements=finite))
    z = draw(hnp.arrays(np.float64, (rows,), elements=finite))
    avail = draw(hnp.arrays(np.bool_, (rows, n)))
    eps = draw(st.sampled_from([1e-6, 1e-3, 1e-2, 0.1, 0.5]))
    return cand, z, avail, eps


@settings(max_examples=120)
@given(instances())
def test_properties_against_oracle(inst):
    cand, z, avail, eps = inst
    sol = solve_subset_sums_detailed(cand, z, eps, avail)
    assert sol.mask.shape == cand.shape and sol.mask.dtype == np.bool_
    assert not np.any(sol.mask & ~avail)  # mask ⊆ available
    recomputed = np.abs((cand * sol.mask).sum(axis=1) - z)
    np.testing.assert_allclose(sol.error, recomputed, rtol=0, atol=1e-12)
    assert not np.any(sol.status == STATUS_UNRESOLVED)  # n ≤ 12 < max_prefix
    for r in range(cand.shape[0]):
        _, opt = best_subset_bruteforce(cand[r][avail[r]], z[r])
        assert (sol.error[r] <= eps) == (opt <= eps)
        if sol.error[r] > eps:
            assert sol.error[r] <= opt + 1e-12
            assert sol.error[r] >= opt - 1e-12


@settings(max_examples=60)
@given(st.integers(1, 14), st.integers(0, 2**32 - 1), finite)
def test_optimum_monotone_in_prefix_length(n, seed, z):
    """More available candidates never increase the exact optimum (nested prefixes)."""
    cand = np.random.default_rng(seed).uniform(-1, 1, (1, n))
    optima = [best_prefix_subsets(cand[:, :m], np.array([[z]]))[0][0, 0] for m in range(n + 1)]
    assert optima[0] == pytest.approx(abs(z))
    assert all(b <= a + 1e-15 for a, b in zip(optima, optima[1:]))


@settings(max_examples=50)
@given(st.integers(0, 8), finite, st.sampled_from([1e-3, 0.1]))
def test_no_available_candidates_gives_empty_set(n, z, eps):
    cand = np.ones((1, n))
    sol = solve_subset_sums_detailed(cand, np.array([z]), eps, np.zeros((1, n), dtype=bool))
    assert not sol.mask.any()
    assert sol.error[0] == pytest.approx(abs(z), abs=0)
    assert sol.status[0] == (STATUS_SOLVED if abs(z) <= eps else STATUS_INFEASIBLE)


def test_only_available_candidates_are_used_even_when_masked_ones_help():
    cand = np.array([[0.7, 0.35, 0.2, 0.15]])
    avail = np.array([[False, True, True, True]])
    mask, err = solve_subset_sums(cand, np.array([0.7]), 1e-9, avail)
    assert not mask[0, 0]
    assert err[0] == pytest.approx(0.0, abs=1e-12)  # 0.35 + 0.2 + 0.15


def test_batched_chunks_and_per_row_eps_agree_with_single_rows():
    rng = np.random.default_rng(99)
    rows, n = 300, 30
    cand = rng.uniform(-1, 1, (rows, n)) * rng.uniform(-1, 1, (rows, n))  # product law
    avail = rng.random((rows, n)) < 0.6
    z = rng.uniform(-1, 1, rows)
    eps = 10.0 ** rng.uniform(-5, -1, rows)
    big = solve_subset_sums_detailed(cand, z, eps, avail)
    small = solve_subset_sums_detailed(cand, z, eps, avail, max_bytes=1)  # one row per chunk
    np.testing.assert_array_equal(big.mask, small.mask)
    for r in range(0, rows, 37):
        one = solve_subset_sums_detailed(cand[r:r + 1], z[r:r + 1], eps[r], avail[r:r + 1])
        np.testing.assert_array_equal(one.mask[0], big.mask[r])
    ok = big.status == STATUS_SOLVED
    assert np.all(big.error[ok] <= eps[ok])
    assert np.all(big.error[~ok] > eps[~ok])


def test_proven_infeasible_rows_with_all_candidates_match_milp():
    """Rows that fail at a tiny ε used every available candidate; their error is the MILP optimum."""
    rng = np.random.default_rng(5)
    rows, n = 8, 20
    cand = rng.uniform(-1, 1, (rows, n))
    avail = rng.random((rows, n)) < 0.9
    z = rng.uniform(-1, 1, rows)
    sol = solve_subset_sums_detailed(cand, z, 1e-13, avail)
    for r in np.flatnonzero(sol.status == STATUS_INFEASIBLE)[:4]:
        assert sol.prefix_length[r] == avail[r].sum()
        _, milp_err = best_subset_milp(cand[r], z[r], avail[r])
        assert sol.error[r] == pytest.approx(milp_err, abs=1e-6)


def test_unresolved_when_prefix_cap_reached():
    rng = np.random.default_rng(3)
    cand = rng.uniform(-1, 1, (5, 20))
    sol = solve_subset_sums_detailed(cand, rng.uniform(-1, 1, 5), 1e-14, max_prefix=8)
    assert np.all(sol.status == STATUS_UNRESOLVED)
    assert np.all(sol.prefix_length == 8)
    assert np.all(sol.mask[:, 8:] == 0)


def test_growth_reaches_solution_deterministically():
    rng = np.random.default_rng(11)
    cand = rng.uniform(-1, 1, (200, 40))
    z = rng.uniform(-1, 1, 200)
    a = solve_subset_sums_detailed(cand, z, 1e-3, margin=0)
    b = solve_subset_sums_detailed(cand, z, 1e-3, margin=0)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert np.all(a.status == STATUS_SOLVED)
    assert a.prefix_length.max() > initial_prefix_length(1e-3, 0)  # some rows had to grow
    assert np.all(a.error <= 1e-3)


def test_smallest_sufficient_prefix_matches_bruteforce():
    rng = np.random.default_rng(21)
    rows, n, eps = 40, 12, 0.02
    cand = rng.uniform(-1, 1, (rows, n))
    grid = np.linspace(-1, 1, 9)
    needed = smallest_sufficient_prefix(cand, np.tile(grid, (rows, 1)), eps)
    tiny_budget = smallest_sufficient_prefix(cand, np.tile(grid, (rows, 1)), eps, max_bytes=1)  # 1 row, 1 target
    np.testing.assert_array_equal(needed, tiny_budget)
    for r in range(rows):
        for k, z in enumerate(grid):
            expected = next((m for m in range(n + 1)
                             if _brute_optimum(cand[r, :m].tolist(), float(z)) <= eps), n + 1)
            assert needed[r, k] == expected


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(candidates=np.ones(3), targets=np.zeros(1), eps=0.1), "candidates"),
        (dict(candidates=np.full((1, 2), np.nan), targets=np.zeros(1), eps=0.1), "candidates"),
        (dict(candidates=np.ones((2, 3)), targets=np.zeros(3), eps=0.1), "targets"),
        (dict(candidates=np.ones((2, 3)), targets=np.zeros(2), eps=0.0), "eps"),
        (dict(candidates=np.ones((2, 3)), targets=np.zeros(2), eps=-1.0), "eps"),
        (dict(candidates=np.ones((2, 3)), targets=np.zeros(2), eps=0.1, available=np.ones((2, 2), bool)), "available"),
    ],
)
def test_bad_input_raises_one_line_value_error(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        solve_subset_sums(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bruteforce_refuses_large_n():
    with pytest.raises(ValueError, match="at most 14"):
        best_subset_bruteforce(np.ones(15), 0.0)


def test_smallest_sufficient_prefix_target_reachable_only_late():
    """Prefixes 1..3 cannot reach z = 1 at all (Σ positives 0.3); the fourth candidate makes it exact."""
    cand = np.array([[0.1, 0.1, 0.1, 0.9], [0.5, 0.5, 0.0, 0.0]])
    needed = smallest_sufficient_prefix(cand, np.array([[1.0, 0.2], [1.0, 0.0]]), 0.01)
    assert needed.tolist() == [[4, 2], [2, 0]]
