"""Tests of the exact batched subset-sum solver (docs/math.md §6 "Subset-sum solving").

Expected values come from two independent oracles: brute-force enumeration of all 2^n subsets (n ≤ 14) and
scipy.optimize.milp. Hypothesis checks the structural properties over wide ranges of inputs.
"""
import multiprocessing
import os

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


# ----------------------------------------------------------------------------------------------------------------
# the two backends: "numba" (compiled kernel, the default) and "numpy" (the batched reference implementation)

ULP = np.finfo(np.float64).eps


def _ulps(cand_row, z, count=64):
    """``count`` ulps of Σ|c| + |z|: the rounding slack between two exact searches that add the same numbers in a
    different order (half-sums, pair sum, recomputed error)."""
    return count * ULP * (float(np.abs(cand_row).sum()) + abs(float(z)))


def _column_order_error(cand_row, mask_row, z):
    """|Σ chosen − z| with the chosen candidates added one by one in column order (the numba backend's sum)."""
    s = 0.0
    for value in cand_row[mask_row].tolist():
        s += value
    return abs(s - float(z))


def _check_solution(sol, cand, z, eps, avail, backend):
    """Structural guarantees of one backend's result."""
    eps = np.broadcast_to(np.asarray(eps, dtype=float), z.shape)
    assert sol.mask.shape == cand.shape and sol.mask.dtype == np.bool_
    assert sol.error.shape == z.shape and sol.status.shape == z.shape and sol.prefix_length.shape == z.shape
    assert not np.any(sol.mask & ~avail)  # masked-out columns are never chosen
    for r in range(cand.shape[0]):
        if backend == "numba":  # summed in column order, exactly
            assert sol.error[r] == _column_order_error(cand[r], sol.mask[r], z[r])
        else:
            assert sol.error[r] == pytest.approx(_column_order_error(cand[r], sol.mask[r], z[r]),
                                                 abs=_ulps(cand[r], z[r]))
        if sol.status[r] == STATUS_SOLVED:
            assert sol.error[r] <= eps[r]
        else:
            assert sol.error[r] > eps[r]
        # the chosen columns lie within the searched prefix of available columns
        prefix_cols = np.flatnonzero(avail[r])[:sol.prefix_length[r]]
        assert set(np.flatnonzero(sol.mask[r])) <= set(prefix_cols)


def _compare_backends(cand, z, eps, avail, max_ties=None, **kwargs):
    """numba vs numpy on the same instances: same status and prefix length per row; rows that are not solved
    report the exact optimum over the same prefix in both. The one exception is a floating-point tie at ε: when
    the best error of a prefix is within rounding of ε, the two backends (which add the same numbers in different
    orders, and may pick different subsets of equal error) can decide that prefix differently — then the backend
    that stopped first did so with an error within rounding of ε. ``max_ties`` bounds how often that may happen
    (0 for continuous random data, where a tie at ε has probability 0)."""
    fast = solve_subset_sums_detailed(cand, z, eps, avail, backend="numba", **kwargs)
    ref = solve_subset_sums_detailed(cand, z, eps, avail, backend="numpy", **kwargs)
    _check_solution(fast, cand, z, eps, avail, "numba")
    _check_solution(ref, cand, z, eps, avail, "numpy")
    eps_rows = np.broadcast_to(np.asarray(eps, dtype=float), z.shape)
    ties = 0
    for r in range(cand.shape[0]):
        slack = _ulps(cand[r][avail[r]], z[r])
        if fast.status[r] != ref.status[r] or fast.prefix_length[r] != ref.prefix_length[r]:
            first = fast if fast.prefix_length[r] <= ref.prefix_length[r] else ref
            assert first.error[r] == pytest.approx(eps_rows[r], abs=slack), (r, fast, ref)
            ties += 1
            continue
        if fast.status[r] != STATUS_SOLVED or kwargs.get("stop") == "best":
            assert fast.error[r] == pytest.approx(ref.error[r], abs=slack)
    assert max_ties is None or ties <= max_ties
    return fast, ref


@st.composite
def backend_instances(draw, max_rows=8, max_n=14, grid=False):
    rows = draw(st.integers(0, max_rows))
    n = draw(st.integers(0, max_n))
    if grid:  # many exactly equal sums: ties in every merge and walk
        elements = st.sampled_from([-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0])
    else:
        elements = finite
    cand = draw(hnp.arrays(np.float64, (rows, n), elements=elements))
    z = draw(hnp.arrays(np.float64, (rows,), elements=finite))
    avail = draw(hnp.arrays(np.bool_, (rows, n)))
    eps = draw(st.sampled_from([1e-9, 1e-6, 1e-3, 1e-2, 0.1, 0.5]))
    return cand, z, avail, eps


@settings(max_examples=150, deadline=None)
@given(backend_instances())
def test_numba_matches_numpy_backend_and_bruteforce(inst):
    cand, z, avail, eps = inst
    fast, _ = _compare_backends(cand, z, eps, avail)
    for r in range(cand.shape[0]):
        _, opt = best_subset_bruteforce(cand[r][avail[r]], z[r])
        slack = _ulps(cand[r][avail[r]], z[r])
        if abs(opt - eps) > slack:
            assert (fast.status[r] == STATUS_SOLVED) == (opt <= eps)
        if fast.status[r] != STATUS_SOLVED:  # n ≤ 14 < max_prefix: proven infeasible with the exact optimum
            assert fast.status[r] == STATUS_INFEASIBLE
            assert fast.prefix_length[r] == avail[r].sum()
            assert fast.error[r] == pytest.approx(opt, abs=slack)


@settings(max_examples=80, deadline=None)
@given(backend_instances(grid=True))
def test_numba_matches_numpy_backend_with_tied_sums(inst):
    cand, z, avail, eps = inst
    _compare_backends(cand, z, eps, avail)


@pytest.mark.parametrize("law", ["uniform", "product"])
@pytest.mark.parametrize("eps", [1e-2, 1e-4, 1e-13])
def test_numba_matches_numpy_backend_seeded(law, eps):
    """n = 30 with masks: prefixes up to 30 (halves of 2^15 sums, the many-chain merges and walks); at ε = 1e−13
    nearly every row is proven infeasible, so both report the exact optimum over all available candidates."""
    rng = np.random.default_rng([17, int(-np.log10(eps)), law == "product"])
    rows, n = (40, 30) if eps < 1e-10 else (400, 30)
    cand = rng.uniform(-1, 1, (rows, n))
    if law == "product":
        cand *= rng.uniform(-1, 1, (rows, n))
    z = rng.uniform(-1.2, 1.2, rows)
    avail = rng.random((rows, n)) < rng.uniform(0.3, 1.0, (rows, 1))
    fast, _ = _compare_backends(cand, z, eps, avail, max_ties=0)
    if eps < 1e-10:
        assert np.sum(fast.status == STATUS_INFEASIBLE) >= rows // 2


def test_numba_matches_numpy_backend_per_row_eps_and_knobs():
    rng = np.random.default_rng(8)
    rows, n = 300, 26
    cand = rng.uniform(-1, 1, (rows, n)) * rng.uniform(-1, 1, (rows, n))
    z = rng.uniform(-1, 1, rows)
    avail = rng.random((rows, n)) < 0.7
    eps = 10.0 ** rng.uniform(-7, -1, rows)
    for kwargs in ({}, {"margin": 0, "growth": 1}, {"margin": 5, "growth": 3, "max_prefix": 12}):
        fast, ref = _compare_backends(cand, z, eps, avail, max_ties=0, **kwargs)
        if "max_prefix" in kwargs:
            assert np.any(fast.status == STATUS_UNRESOLVED)


def test_numba_out_of_reach_rows_are_infeasible_with_all_positives_or_negatives():
    cand = np.array([[0.5, -0.25, 0.3, 0.1, -0.4], [0.5, -0.25, 0.3, 0.1, -0.4], [0.5, -0.25, 0.3, 0.1, -0.4]])
    avail = np.array([[True, True, False, True, True]] * 3)
    z = np.array([2.0, -3.0, 0.35])  # 0.35 = 0.5 − 0.25 + 0.1
    sol = solve_subset_sums_detailed(cand, z, 1e-3, avail, backend="numba")
    assert sol.status.tolist() == [STATUS_INFEASIBLE, STATUS_INFEASIBLE, STATUS_SOLVED]
    assert sol.mask[0].tolist() == [True, False, False, True, False]  # the available positives
    assert sol.mask[1].tolist() == [False, True, False, False, True]  # the available negatives
    assert sol.error[0] == pytest.approx(2.0 - 0.6)
    assert sol.error[1] == pytest.approx(3.0 - 0.65)
    assert sol.prefix_length[:2].tolist() == [4, 4]
    _compare_backends(cand, z, 1e-3, avail)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_prefix_cap_counts_available_candidates(backend):
    """max_prefix counts available candidates in column order; masked-out columns are skipped, never chosen."""
    rng = np.random.default_rng(4)
    cand = rng.uniform(-1, 1, (6, 24))
    avail = np.ones(cand.shape, bool)
    avail[:, ::3] = False
    sol = solve_subset_sums_detailed(cand, rng.uniform(-1, 1, 6), 1e-15, avail, max_prefix=9, backend=backend)
    assert np.all(sol.status == STATUS_UNRESOLVED)
    assert np.all(sol.prefix_length == 9)
    searched = np.flatnonzero(avail[0])[:9]
    assert not np.any(np.delete(sol.mask, searched, axis=1))
    assert np.all(sol.error > 1e-15)


@pytest.mark.parametrize("backend", ["numba", "numpy", "auto"])
def test_empty_batches_and_no_candidates(backend):
    for n in (0, 5):
        sol = solve_subset_sums_detailed(np.zeros((0, n)), np.zeros(0), 0.1, backend=backend)
        assert sol.mask.shape == (0, n) and sol.error.shape == (0,) and sol.status.shape == (0,)
    z = np.array([0.05, -0.3, 0.0])
    sol = solve_subset_sums_detailed(np.zeros((3, 0)), z, 0.1, backend=backend)
    assert sol.mask.shape == (3, 0)
    assert sol.error.tolist() == [0.05, 0.3, 0.0]
    assert sol.status.tolist() == [STATUS_SOLVED, STATUS_INFEASIBLE, STATUS_SOLVED]
    assert sol.prefix_length.tolist() == [0, 0, 0]


def test_numba_backend_is_deterministic_across_runs_threads_and_chunks():
    from construct import mitm_kernel

    rng = np.random.default_rng(31)
    rows, n = 1500, 32
    cand = rng.uniform(-1, 1, (rows, n)) * rng.uniform(-1, 1, (rows, n))
    z = rng.uniform(-1, 1, rows)
    avail = rng.random((rows, n)) < 0.8
    eps = 10.0 ** rng.uniform(-6, -2, rows)
    first = solve_subset_sums_detailed(cand, z, eps, avail)
    others = [solve_subset_sums_detailed(cand, z, eps, avail, backend="numba")]
    others += [solve_subset_sums_detailed(cand, z, eps, avail, threads=t) for t in (1, 2, 3, 7)]
    for other in others:
        np.testing.assert_array_equal(first.mask, other.mask)
        np.testing.assert_array_equal(first.error, other.error)
        np.testing.assert_array_equal(first.status, other.status)
        np.testing.assert_array_equal(first.prefix_length, other.prefix_length)
    # the kernel itself: one row per chunk, the chunks taken in two interleaved passes
    m0 = np.maximum(np.ceil(np.log2(1.0 / eps)), 0).astype(np.int64) + 2
    mask = np.zeros((rows, n), bool)
    error = np.empty(rows)
    status = np.empty(rows, np.int8)
    prefix = np.empty(rows, np.int64)
    for first_chunk in (1, 0):
        mitm_kernel.solve_rows(cand, z, eps, avail, True, m0, 2, 40, True, mask, error, status, prefix, 1,
                               first_chunk, 2)
    np.testing.assert_array_equal(first.mask, mask)
    np.testing.assert_array_equal(first.error, error)
    np.testing.assert_array_equal(first.status, status)
    np.testing.assert_array_equal(first.prefix_length, prefix)


def test_numba_backend_enlarges_work_arrays_mid_chunk():
    """A chunk starts with room for halves of 10 elements; rows needing more are solved again with larger arrays,
    with the same result as rows solved on their own."""
    rng = np.random.default_rng(12)
    cand = rng.uniform(-1, 1, (40, 36))
    z = rng.uniform(-1, 1, 40)
    eps = np.where(np.arange(40) % 7 == 3, 1e-13, 1e-3)  # a few rows search all 36 candidates (halves of 18)
    batch = solve_subset_sums_detailed(cand, z, eps)
    assert np.all(batch.prefix_length[eps < 1e-10] == 36)
    for r in range(40):
        one = solve_subset_sums_detailed(cand[r:r + 1], z[r:r + 1], eps[r])
        np.testing.assert_array_equal(one.mask[0], batch.mask[r])
        assert one.error[0] == batch.error[r] and one.status[0] == batch.status[r]


def test_numba_backend_accepts_other_layouts_and_dtypes():
    """Non-contiguous, float32 and 0/1-integer inputs give the same result as their contiguous float64 copies."""
    rng = np.random.default_rng(2)
    big = rng.uniform(-1, 1, (40, 60))
    cand = big[::2, ::3]  # strided view (20, 20)
    z = rng.uniform(-1, 1, 40)[::2]
    avail = (rng.random((20, 20)) < 0.8).astype(np.int64)
    a = solve_subset_sums_detailed(cand, z, 1e-4, avail)
    b = solve_subset_sums_detailed(np.ascontiguousarray(cand), z.copy(), 1e-4, avail.astype(bool))
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.error, b.error)
    c32 = cand.astype(np.float32)
    s32 = solve_subset_sums_detailed(c32, z, 1e-4, avail)
    s64 = solve_subset_sums_detailed(c32.astype(np.float64), z, 1e-4, avail)
    np.testing.assert_array_equal(s32.mask, s64.mask)
    frozen = [np.ascontiguousarray(cand), z.copy(), avail.astype(bool)]
    for arr in frozen:
        arr.setflags(write=False)
    r = solve_subset_sums_detailed(frozen[0], frozen[1], np.full(20, 1e-4), frozen[2])  # read-only inputs
    np.testing.assert_array_equal(r.mask, b.mask)


@pytest.mark.parametrize("backend", ["cuda", "NUMBA", "", None, 1])
def test_unknown_backend_raises_one_line_value_error(backend):
    with pytest.raises(ValueError) as info:
        solve_subset_sums_detailed(np.ones((1, 2)), np.zeros(1), 0.1, backend=backend)
    message = str(info.value)
    assert "backend" in message and repr(backend) in message and "'numba'" in message and "\n" not in message


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("knob, value", [("max_bytes", 0), ("max_bytes", 1.5), ("margin", -1), ("growth", 0),
                                         ("max_prefix", 0), ("max_prefix", True), ("threads", 0),
                                         ("threads", 2.5)])
def test_knobs_are_validated_for_both_backends(backend, knob, value):
    with pytest.raises(ValueError) as info:
        solve_subset_sums_detailed(np.ones((1, 2)), np.zeros(1), 0.1, backend=backend, **{knob: value})
    assert knob in str(info.value) and "\n" not in str(info.value)


def test_large_knobs_are_harmless_for_numba():
    rng = np.random.default_rng(6)
    cand = rng.uniform(-1, 1, (30, 12))
    z = rng.uniform(-1, 1, 30)
    huge = solve_subset_sums_detailed(cand, z, 1e-3, growth=10**30, max_prefix=10**30, backend="numba")
    ref = solve_subset_sums_detailed(cand, z, 1e-3, growth=12, max_prefix=12, backend="numpy")  # same, as n = 12
    np.testing.assert_array_equal(huge.status, ref.status)
    np.testing.assert_array_equal(huge.prefix_length, ref.prefix_length)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_numba_backend_runs_in_forked_workers_after_use_in_parent():
    """A process pool forked after the parent used the solver (as the E5 experiment does) still solves: the kernel's
    threads are plain Python threads, not a GNU OpenMP pool (which aborts forked children)."""
    from concurrent.futures import ProcessPoolExecutor

    rng = np.random.default_rng(9)
    cand = rng.uniform(-1, 1, (3000, 20))
    z = rng.uniform(-1, 1, 3000)
    here = solve_subset_sums(cand, z, 1e-3)  # multi-threaded: 3000 rows are 12 chunks
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("fork")) as pool:
        there = list(pool.map(solve_subset_sums, [cand, cand[:500]], [z, z[:500]], [1e-3, 1e-3]))
    np.testing.assert_array_equal(there[0][0], here[0])
    np.testing.assert_array_equal(there[1][0], here[0][:500])


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_extreme_tolerances_and_margins(backend):
    """A subnormal ε (1/ε overflows) searches every candidate; a huge margin or ε > 1 are harmless."""
    rng = np.random.default_rng(14)
    cand = rng.uniform(-1, 1, (4, 12))
    z = rng.uniform(-1, 1, 4)
    tiny = solve_subset_sums_detailed(cand, z, 1e-320, backend=backend)
    assert np.all(tiny.status == STATUS_INFEASIBLE) and np.all(tiny.prefix_length == 12)
    for r in range(4):
        _, opt = best_subset_bruteforce(cand[r], z[r])
        assert tiny.error[r] == pytest.approx(opt, abs=_ulps(cand[r], z[r]))
    wide = solve_subset_sums_detailed(cand, z, 1e-3, margin=10**30, backend=backend)
    assert np.all(wide.prefix_length == 12)
    loose = solve_subset_sums_detailed(cand, z, 5.0, margin=0, backend=backend)
    assert np.all(loose.status == STATUS_SOLVED) and np.all(loose.prefix_length == 0) and not loose.mask.any()


@settings(max_examples=120, deadline=None)
@given(backend_instances())
def test_stop_best_gives_the_optimum_of_the_searched_prefix(inst):
    """stop="best": every row's error is the exact optimum over its final prefix (brute force), numba agrees with
    numpy on every row, and no row is worse than with stop="first" (same prefixes, same statuses)."""
    cand, z, avail, eps = inst
    best, _ = _compare_backends(cand, z, eps, avail, stop="best")
    first = solve_subset_sums_detailed(cand, z, eps, avail, stop="first")
    np.testing.assert_array_equal(best.status, first.status)
    np.testing.assert_array_equal(best.prefix_length, first.prefix_length)
    for r in range(cand.shape[0]):
        cols = np.flatnonzero(avail[r])[:best.prefix_length[r]]
        _, opt = best_subset_bruteforce(cand[r][cols], z[r])
        slack = _ulps(cand[r][avail[r]], z[r])
        assert best.error[r] == pytest.approx(opt, abs=slack)
        assert best.error[r] <= first.error[r] + slack


@pytest.mark.parametrize("law", ["uniform", "product"])
@pytest.mark.parametrize("eps", [1e-2, 1e-4])
def test_stop_best_numba_matches_numpy_seeded(law, eps):
    """n = 30 with masks, prefixes up to 30: with stop="best" the two backends agree on every row's error."""
    rng = np.random.default_rng([23, int(-np.log10(eps)), law == "product"])
    cand = rng.uniform(-1, 1, (300, 30))
    if law == "product":
        cand *= rng.uniform(-1, 1, (300, 30))
    z = rng.uniform(-1.2, 1.2, 300)
    avail = rng.random((300, 30)) < rng.uniform(0.3, 1.0, (300, 1))
    best, _ = _compare_backends(cand, z, eps, avail, max_ties=0, stop="best")
    first = solve_subset_sums_detailed(cand, z, eps, avail)
    solved = best.status == STATUS_SOLVED
    assert solved.sum() > 150  # the comparison below is about solved rows: make sure there are many
    # same prefixes, so a best subset is never worse than the first one found, and better on average
    assert np.all(best.error <= first.error + 1e-12)
    assert best.error[solved].mean() < first.error[solved].mean()


@pytest.mark.parametrize("stop", ["last", "BEST", "", None, 0])
def test_unknown_stop_raises_one_line_value_error(stop):
    with pytest.raises(ValueError, match="stop=") as info:
        solve_subset_sums(np.zeros((1, 2)), np.zeros(1), 0.1, stop=stop)
    assert "\n" not in str(info.value) and "first" in str(info.value)


# ------------------------------------------------------------------------------- issue 14: overflow near the limit


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_magnitudes_whose_sums_can_overflow_are_refused(backend):
    """Near the float limit the running sums overflow, so both backends refuse the instance in one line naming the
    argument. Scaled by an exact power of two the same instance is solved, also just inside the limit."""
    from construct.subset_sum import MAX_MAGNITUDE

    cand = np.array([[1e308, 1e308, -1.5e308]])
    z = np.array([0.5e308])  # = 1e308 + 1e308 − 1.5e308: feasible, but the partial sum 2e308 overflows
    # (without the check both backends returned status infeasible with error inf for this row)
    with pytest.raises(ValueError, match=r"^candidates: row 0 .* allowed magnitudes whose subset sums cannot overflow"):
        solve_subset_sums_detailed(cand, z, 1e300, backend=backend)
    scale = 2.0 ** -60
    sol = solve_subset_sums_detailed(cand * scale, z * scale, 1e300 * scale, backend=backend)
    assert sol.status[0] == 0 and sol.mask[0].tolist() == [True, True, True]
    near = 2.0 ** -4  # Σ|c| + |z| = 2.5e307, within a factor 2 of MAX_MAGNITUDE = 4.49e307
    assert 0.5 * MAX_MAGNITUDE < (3.5 + 0.5) * (1e308 * near) <= MAX_MAGNITUDE
    sol = solve_subset_sums_detailed(cand * near, z * near, 1e290, backend=backend)
    assert sol.status[0] == 0 and sol.mask[0].tolist() == [True, True, True] and np.isfinite(sol.error[0])
    with pytest.raises(ValueError, match="^candidates: row 0"):
        best_prefix_subsets(cand, z[:, None])
    with pytest.raises(ValueError, match="^candidates: row 0"):
        smallest_sufficient_prefix(cand, z[:, None], 1e300)
