"""Tests of the calibrated N_SS table and the width bounds of docs/math.md §5 (theory/subset_sum.py).

Expected values are derived independently: Clopper–Pearson bounds recomputed with scipy's binomtest, binomial
tails from scipy.stats.binom, and a fresh seeded Monte Carlo with its own exact oracles (brute force for n ≤ 14,
a per-trial numpy meet-in-the-middle otherwise) that shares no code with the calibration.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from theory.er_factor import er_factor
from theory.testing import assert_rate_at_most
from theory.subset_sum import (
    LAWS,
    block_width,
    failure_curve,
    load_nss_table,
    mixture_success_probability,
    nss,
    nss_lookup,
    paper_literal_width,
    thinning_width,
)

ALPHA = 1e-3  # significance of the seeded Monte Carlo checks (fixed seeds: deterministic, cannot flake)
TABLE = load_nss_table()
EPS_GRID = sorted(TABLE["eps_grid"], reverse=True)
DELTA_GRID = sorted(TABLE["delta_grid"], reverse=True)


def _rows(law):
    return sorted(TABLE["laws"][law]["rows"], key=lambda r: -r["eps"])


# ---------------------------------------------------------------------------------------------------- the table


@pytest.mark.parametrize("law", LAWS)
def test_table_entries_certified_and_monotone(law):
    rows = _rows(law)
    assert [r["eps"] for r in rows] == EPS_GRID
    for row in rows:
        values = row["n_ss"]
        assert all(isinstance(v, int) for v in values)
        assert values == sorted(values)  # δ' decreasing → N_SS non-decreasing
    for j in range(len(DELTA_GRID)):
        column = [r["n_ss"][j] for r in rows]
        assert column == sorted(column)  # ε decreasing → N_SS non-decreasing


def test_product_law_needs_at_least_as_many_candidates_as_uniform():
    for ru, rp in zip(_rows("uniform"), _rows("product")):
        assert all(p >= u for u, p in zip(ru["n_ss"], rp["n_ss"]))


@pytest.mark.parametrize("law", LAWS)
def test_table_entries_follow_from_stored_counts(law):
    """Recompute the one-sided Clopper–Pearson bounds with binomtest and re-derive every N_SS entry."""
    trials = TABLE["provenance"]["trials"]
    confidence = TABLE["provenance"]["confidence"]
    for row in _rows(law):
        counts = np.asarray(row["fail_counts"])  # (grid z, k = 0..k_max)
        assert counts.shape == (len(TABLE["z_grid"]), TABLE["k_max"] + 1)
        worst = counts.max(axis=0)
        np.testing.assert_allclose(row["p_fail"], worst / trials)
        assert np.all(np.diff(counts, axis=1) <= 0)  # nested prefixes: failures never increase with k
        for j, delta in enumerate(DELTA_GRID):
            n = row["n_ss"][j]

            def upper(x):
                ci = stats.binomtest(int(x), trials).proportion_ci(confidence_level=2 * confidence - 1,
                                                                   method="exact")
                return ci.high

            assert upper(worst[n]) <= delta * (1 + 1e-9)
            if n > 0:
                assert upper(worst[n - 1]) > delta * (1 - 1e-9)


def _best_error_bruteforce(values, z):
    n = values.shape[1]
    codes = np.arange(1 << n)
    bits = ((codes[:, None] >> np.arange(n)) & 1).astype(float)
    return np.abs(values @ bits.T - z).min(axis=1)


def _best_error_mitm(values, z):
    """Per-trial meet in the middle with np.searchsorted (independent of the solver's merge kernel)."""
    n = values.shape[1]
    h = n // 2
    bits1 = ((np.arange(1 << h)[:, None] >> np.arange(h)) & 1).astype(float)
    bits2 = ((np.arange(1 << (n - h))[:, None] >> np.arange(n - h)) & 1).astype(float)
    out = np.empty(values.shape[0])
    for t, row in enumerate(values):
        a = bits1 @ row[:h]
        b = np.sort(bits2 @ row[h:])
        q = z - a
        pos = np.searchsorted(b, q)
        lo = b[np.clip(pos - 1, 0, b.size - 1)]
        hi = b[np.clip(pos, 0, b.size - 1)]
        out[t] = min(np.abs(q - lo).min(), np.abs(q - hi).min())
    return out


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("eps", [1e-1, 1e-2])
def test_independent_monte_carlo_at_calibrated_width(law, eps):
    """At N_SS(ε, 0.1) fresh candidates the failure rate is not significantly above 0.1 (binomtest, α = 1e-3)."""
    delta = 0.1
    n = nss(eps, delta, law)
    rng = np.random.default_rng(20230615)  # not the calibration's stream
    trials = 1500
    for z in (-1.0, -0.35, 0.5, 1.0):
        values = rng.uniform(-1, 1, (trials, n))
        if law == "product":
            values = values * rng.uniform(-1, 1, (trials, n))
        if n <= 14:
            err = np.concatenate([_best_error_bruteforce(values[s:s + 250], z) for s in range(0, trials, 250)])
        else:
            err = _best_error_mitm(values, z)
        failures = int(np.sum(err > eps))
        assert_rate_at_most(failures, trials, delta, alpha=ALPHA, what=f"z={z}")


# ------------------------------------------------------------------------------------------------------ lookups


def test_lookup_flags_on_grid_between_and_outside():
    on = nss_lookup(1e-3, 1e-2, "uniform")
    assert on.calibrated and not on.interpolated and not on.extrapolated
    assert on.value == _rows("uniform")[2]["n_ss"][1]
    between = nss_lookup(3e-3, 5e-2, "uniform")
    assert between.interpolated and not between.extrapolated and not between.calibrated
    assert between.eps_used == (1e-3,) and between.delta_used == (1e-2,)
    small_delta = nss_lookup(1e-2, 1e-9, "uniform")
    assert small_delta.extrapolated and not small_delta.calibrated
    small_eps = nss_lookup(1e-7, 1e-2, "uniform")
    assert small_eps.extrapolated and small_eps.eps_used == (1e-4, 1e-5)
    assert small_eps.value >= nss(1e-5, 1e-2, "uniform")


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("delta", [5e-4, 1e-6, 1e-12])
def test_delta_extrapolation_rule(law, delta):
    for row in _rows(law):
        n_a, n_b = row["n_ss"][2], row["n_ss"][1]
        expected = math.ceil(n_a + (n_a - n_b) / math.log(1e-2 / 1e-3) * math.log(1e-3 / delta) - 1e-9)
        got = nss_lookup(row["eps"], delta, law)
        assert got.extrapolated
        assert got.value >= max(expected, n_a)
        if not got.envelope:
            assert got.value == expected


@settings(max_examples=150)
@given(st.floats(1e-8, 0.9), st.floats(1e-8, 0.9), st.floats(1e-14, 0.9), st.floats(1e-14, 0.9),
       st.sampled_from(LAWS))
def test_nss_monotone_in_eps_and_delta(eps1, eps2, delta1, delta2, law):
    e_lo, e_hi = sorted((eps1, eps2))
    d_lo, d_hi = sorted((delta1, delta2))
    assert nss(e_lo, d_hi, law) >= nss(e_hi, d_hi, law)
    assert nss(e_hi, d_lo, law) >= nss(e_hi, d_hi, law)
    assert nss(e_lo, d_lo, law) >= nss(e_hi, d_hi, law)


# ------------------------------------------------------------------------------------------------------- widths


@settings(max_examples=150)
@given(st.floats(1e-6, 0.5), st.floats(1e-9, 0.5), st.floats(1e-3, 1.0), st.sampled_from(LAWS))
def test_thinning_width_survivors_exact_binomial_tail(eps, delta, density, law):
    """[ours-1]: with n = thinning_width, P(Bin(n, p) < N_SS(ε, δ/2)) ≤ δ/2 (exact binomial cdf)."""
    n = thinning_width(eps, delta, density, law)
    n_ss = nss(eps, delta / 2, law)
    assert n >= (2 * n_ss + 8 * math.log(2 / delta)) / density - 1e-9
    assert stats.binom.cdf(n_ss - 1, n, density) <= delta / 2


@pytest.mark.parametrize("eps, delta, density", [(1e-2, 0.1, 0.05), (1e-3, 0.02, 0.3), (1e-1, 0.2, 0.9)])
def test_thinning_width_survivors_monte_carlo(eps, delta, density):
    n = thinning_width(eps, delta, density)
    n_ss = nss(eps, delta / 2)
    trials = 20000
    survivors = np.random.default_rng(4242).binomial(n, density, size=trials)
    failures = int(np.sum(survivors < n_ss))
    assert_rate_at_most(failures, trials, delta / 2, alpha=ALPHA)


@settings(max_examples=150)
@given(st.floats(1e-6, 0.5), st.floats(1e-9, 0.5), st.floats(1e-4, 1.0), st.sampled_from(LAWS))
def test_block_width_every_block_keeps_a_candidate(eps, delta, density, law):
    """[ours-2]: P(every one of N_SS blocks of k keeps ≥ 1) = (1 − (1 − p)^k)^N_SS ≥ 1 − δ/2 (closed form)."""
    bw = block_width(eps, delta, density, law)
    assert bw.blocks == nss(eps, delta / 2, law)
    assert bw.total == bw.blocks * bw.block_size
    kappa = float(er_factor(density))
    needed = kappa * math.log(2 * bw.blocks / delta)
    assert bw.block_size >= needed - 1e-9
    assert bw.block_size == 1 or bw.block_size - 1 < needed + 1e-9  # ⌈·⌉, not more
    log_all_kept = bw.blocks * math.log1p(-math.exp(bw.block_size * math.log1p(-density))) if density < 1 else 0.0
    assert math.exp(log_all_kept) >= 1 - delta / 2 - 1e-12


def test_block_width_monte_carlo_and_limits():
    eps, delta, density = 1e-2, 0.1, 0.2
    bw = block_width(eps, delta, density)
    trials = 20000
    kept = np.random.default_rng(777).binomial(bw.block_size, density, size=(trials, bw.blocks))
    failures = int(np.sum((kept == 0).any(axis=1)))
    assert_rate_at_most(failures, trials, delta / 2, alpha=ALPHA)
    n_ss = nss(eps, delta / 2)
    assert block_width(eps, delta, 1.0).total == n_ss  # tends to N_SS as p → 1 (κ(1) = 0, blocks of 1)
    assert block_width(eps, delta, 0.999).total <= 2 * n_ss
    tiny = 1e-5  # κ-form as p → 0: total ≈ N_SS · κ(p) · log(2·N_SS/δ)
    ratio = block_width(eps, delta, tiny).total / (n_ss * float(er_factor(tiny)) * math.log(2 * n_ss / delta))
    assert 1.0 <= ratio < 1.0 + 1e-3


@settings(max_examples=120)
@given(st.floats(1e-6, 0.5), st.floats(1e-9, 0.5), st.floats(1e-3, 1.0), st.floats(1e-3, 1.0), st.sampled_from(LAWS))
def test_widths_monotone_in_density(eps, delta, p1, p2, law):
    lo, hi = sorted((p1, p2))
    assert thinning_width(eps, delta, lo, law) >= thinning_width(eps, delta, hi, law)
    assert block_width(eps, delta, lo, law).total >= block_width(eps, delta, hi, law).total


@settings(max_examples=120)
@given(st.floats(1e-6, 0.5), st.floats(1e-6, 0.5), st.floats(1e-9, 0.5), st.floats(1e-9, 0.5), st.floats(1e-3, 1.0))
def test_widths_monotone_in_eps_and_delta(e1, e2, d1, d2, density):
    e_lo, e_hi = sorted((e1, e2))
    d_lo, d_hi = sorted((d1, d2))
    assert thinning_width(e_lo, d_hi, density) >= thinning_width(e_hi, d_hi, density)
    assert thinning_width(e_hi, d_lo, density) >= thinning_width(e_hi, d_hi, density)
    assert block_width(e_lo, d_hi, density).total >= block_width(e_hi, d_hi, density).total
    assert block_width(e_hi, d_lo, density).total >= block_width(e_hi, d_hi, density).total


# ------------------------------------------------------------------------------------------------------ mixture


@pytest.mark.parametrize("law", LAWS)
def test_mixture_at_full_density_is_the_curve(law):
    curve = failure_curve(1e-2, law)
    for n in (0, 5, 17, len(curve) - 1, len(curve) + 10):
        expected = 1.0 - curve[min(n, len(curve) - 1)]
        assert mixture_success_probability(n, 1.0, 1e-2, law) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=80)
@given(st.integers(0, 300), st.integers(0, 300), st.floats(0.01, 1.0), st.sampled_from(EPS_GRID),
       st.sampled_from(LAWS))
def test_mixture_monotone_in_n_and_bounded(n1, n2, density, eps, law):
    lo, hi = sorted((n1, n2))
    a = mixture_success_probability(lo, density, eps, law)
    b = mixture_success_probability(hi, density, eps, law)
    assert 0.0 <= a <= b + 1e-12 <= 1.0 + 1e-12


def test_mixture_matches_direct_sum():
    curve = failure_curve(1e-3, "uniform")
    n, density = 60, 0.4
    direct = sum(math.comb(n, k) * density**k * (1 - density) ** (n - k) * (1 - curve[min(k, len(curve) - 1)])
                 for k in range(n + 1))
    assert mixture_success_probability(n, density, 1e-3) == pytest.approx(direct, rel=1e-10)


def test_mixture_rejects_uncalibrated_eps():
    with pytest.raises(ValueError, match="eps=0.003 is not calibrated"):
        mixture_success_probability(10, 0.5, 3e-3)


# -------------------------------------------------------------------------------------------- paper literal form


def test_paper_literal_width_formula_and_its_failure_at_full_density():
    assert paper_literal_width(1e-2, 1e-3, 0.1, 2.0) == math.ceil(2.0 * float(er_factor(0.1)) * math.log(1e3))
    # read literally, the width vanishes at p = 1 although 2^n sums cannot ε-cover [−1, 1] when 2^n < 1/ε
    assert paper_literal_width(1e-2, 1e-3, 1.0, 100.0) == 0 < nss(1e-2, 1e-3)


@pytest.mark.parametrize(
    "call, fragment",
    [
        (lambda: nss(0.0, 0.1), "eps=0.0"),
        (lambda: nss(1e-2, 1.5), "delta=1.5"),
        (lambda: nss(1e-2, 0.1, "normal"), "law='normal'"),
        (lambda: thinning_width(1e-2, 0.1, 0.0), "density=0.0"),
        (lambda: block_width(1e-2, 0.1, 1.2), "density=1.2"),
        (lambda: mixture_success_probability(-1, 0.5, 1e-2), "n=-1"),
        (lambda: paper_literal_width(1e-2, 0.1, 0.5, -1.0), "constant=-1.0"),
    ],
)
def test_bad_input_one_line_value_error(call, fragment):
    with pytest.raises(ValueError) as info:
        call()
    assert fragment in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("law", ["uniform", "product"])
@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-4])
def test_fitted_constant_agrees_with_the_independent_calibration(law, eps):
    """The fitted C comes from experiment E6; the calibration table is a different Monte Carlo study. At
    n = ⌈C·log2(1/ε)⌉ the calibration's worst-z failure rate must not be significantly above δ = 0.01."""
    from theory.subset_sum import failure_curve, fitted_width, load_nss_table

    n = fitted_width(eps, law)
    curve = failure_curve(eps, law)
    trials = load_nss_table()["provenance"]["trials"]
    failures = round(float(curve[min(n, curve.size - 1)]) * trials)
    assert_rate_at_most(failures, trials, 0.01, alpha=1e-3)



# ------------------------------------------------------------------ issue 14: solver cap, blocks, resolution, ε slope


def test_solver_cap_is_one_constant_shared_with_construct():
    from construct import subset_sum as solver
    from theory.subset_sum import SOLVER_MAX_CANDIDATES

    assert SOLVER_MAX_CANDIDATES == 40
    assert solver.DEFAULT_MAX_PREFIX == SOLVER_MAX_CANDIDATES


@settings(max_examples=60, deadline=None)
@given(eps=st.floats(1e-9, 0.5), delta=st.floats(1e-12, 0.5), law=st.sampled_from(LAWS),
       max_block=st.integers(12, 40))
def test_search_plan_blocks_within_the_cap_and_fail_at_most_delta(eps, delta, law, max_block):
    from theory.subset_sum import search_plan

    try:
        plan = search_plan(eps, delta, law, max_block=max_block)
    except ValueError as exc:
        # refused only when even a block at the largest calibrated δ' needs more than the cap
        assert nss(eps, max(DELTA_GRID), law) > max_block
        assert f"at most {max_block}" in str(exc) and "needs N_SS=" in str(exc) and "\n" not in str(exc)
        return
    assert 1 <= plan.block <= max_block and plan.total == plan.block * plan.blocks
    assert plan.block == nss(eps, plan.block_delta, law)
    assert plan.block_delta ** plan.blocks <= delta * (1 + 1e-9)  # all blocks fail w.p. ≤ δ (independence)
    if nss(eps, delta, law) <= max_block:
        assert plan.blocks == 1 and plan.total == nss(eps, delta, law)


def test_search_plan_blocks_monte_carlo():
    """Fresh candidates, searched as the plan's blocks with an independent exact oracle: the failure rate is not
    significantly above δ (binomtest, α = 1e-3)."""
    from theory.subset_sum import search_plan

    plan = search_plan(1e-2, 1e-3, "uniform", max_block=12)  # N_SS(1e-2, 1e-3) = 23 > 12: several blocks
    assert plan.blocks >= 2 and plan.block <= 12
    rng = np.random.default_rng(14014)
    trials = 2000
    for z in (-1.0, 0.3, 1.0):
        values = rng.uniform(-1, 1, (trials, plan.total))
        best = np.full(trials, np.inf)
        for b in range(plan.blocks):
            block = values[:, b * plan.block:(b + 1) * plan.block]
            best = np.minimum(best, np.concatenate([_best_error_bruteforce(block[s:s + 250], z)
                                                    for s in range(0, trials, 250)]))
        failures = int(np.sum(best > 1e-2))
        assert stats.binomtest(failures, trials, 1e-3, alternative="greater").pvalue > ALPHA, (z, failures)


@pytest.mark.parametrize("law", LAWS)
@pytest.mark.parametrize("delta", [1e-1, 1e-2, 1e-3])
def test_eps_extrapolation_needs_one_more_candidate_per_halving(law, delta):
    base = nss(1e-5, delta, law)
    for halvings in (1, 5, 10, 17):
        assert nss(1e-5 * 2.0 ** -halvings, delta, law) >= base + halvings


def test_eps_extrapolation_against_measured_tail():
    """Below the calibrated ε the old rule (the calibrated slope between ε = 1e-4 and 1e-5, 0.6-0.9 candidates per
    halving) under-provisions: at its N_SS(1e-9, 0.1, uniform) fresh float64 candidates miss z = 1 by more than 1e-9
    in significantly more than 10 % of draws. At the new value (≥ 1 candidate per halving) they do not."""
    from construct.subset_sum import solve_subset_sums_detailed

    rows = _rows("uniform")
    n_last, n_prev = rows[-1]["n_ss"][0], rows[-2]["n_ss"][0]
    old = math.ceil(n_last + (n_last - n_prev) / math.log2(10) * math.log2(1e-5 / 1e-9) - 1e-9)
    new = nss(1e-9, 0.1, "uniform")
    assert new > old
    rng = np.random.default_rng(9)
    trials = 400
    values = rng.uniform(-1, 1, (trials, new))
    z = np.ones(trials)
    for n, should_fail in ((old, True), (new, False)):
        err = solve_subset_sums_detailed(values[:, :n], z, 1e-300, stop="best").error  # exact best of n
        failures = int(np.sum(err > 1e-9))
        p = stats.binomtest(failures, trials, 0.1, alternative="greater").pvalue
        assert (p < ALPHA) == should_fail, (n, failures)  # measured: 33 → 65/400 fail, 35 → 20/400


def test_effective_tolerance_and_resolution():
    from theory.subset_sum import SOLVER_MAX_CANDIDATES, candidate_resolution, effective_tolerance

    assert candidate_resolution("float32", "uniform") == 2.0 ** -23
    assert candidate_resolution("float32", "product") == 2.0 ** -22
    assert candidate_resolution("float64", "product") == 2.0 ** -51
    assert effective_tolerance(1e-3, "float32", "product") == 1e-3 - SOLVER_MAX_CANDIDATES * 2.0 ** -22
    assert effective_tolerance(1e-6, "float32", "uniform") < 0  # below what 40 float32 weights can promise
    with pytest.raises(ValueError, match="source_dtype"):
        candidate_resolution("float16")


def test_float32_lattice_is_what_the_margin_covers():
    """Measured: float32 weights (multiples of 2^-23) put every subset sum on a lattice; at a target between lattice
    points the best error is ≥ the distance to the lattice, far above the float64 best error of the same draws."""
    from construct.subset_sum import solve_subset_sums_detailed

    rng = np.random.default_rng(3)
    u32 = rng.random((200, 32), dtype=np.float32)
    w32 = (u32 * np.float32(2) - np.float32(1)).astype(np.float64)
    w64 = w32 + rng.random(w32.shape) * 2.0 ** -23  # the refinement construct.source uses for float64 sources
    z = 0.3 + 2.0 ** -25  # a quarter of the lattice spacing off the lattice
    lattice = abs(z / 2.0 ** -23 - round(z / 2.0 ** -23)) * 2.0 ** -23
    e32 = solve_subset_sums_detailed(w32, np.full(200, z), 1e-300, stop="best").error  # exact best of 32
    e64 = solve_subset_sums_detailed(w64, np.full(200, z), 1e-300, stop="best").error
    assert np.all(e32 >= lattice - 1e-15)
    assert np.median(e64) < lattice / 4
