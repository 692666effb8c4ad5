"""The 3-layer lower bound (docs/math.md §3): connection probability, minimal width, closed form, error floor."""
import itertools
import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

from theory import strategies
from theory.testing import assert_binomial
from theory.er_factor import er_factor
from theory.lower_bound import (
    connected_inputs,
    connection_probability,
    disconnection_probability,
    error_floor,
    lower_bound_width,
    lower_bound_summary,
    lower_bound_width_closed_form,
    uniform_variance,
)

dens = strategies.densities(min_density=1e-6)
small_delta = strategies.deltas(min_delta=1e-12, max_delta=0.9)


@given(st.integers(1, 10_000), st.integers(0, 100_000), dens)
def test_full_output_density_matches_direct_formula(d, n, p1):
    # independent: (1 − (1 − p1)^n)^d evaluated in 60-digit arithmetic
    with mpmath.workdps(60):
        direct = float((1 - (1 - mpmath.mpf(p1)) ** n) ** d)
    got = connection_probability(d, n, p1)
    assert got == pytest.approx(direct, rel=1e-9, abs=1e-300)


@given(st.integers(1, 50), st.integers(1, 3000), dens, st.floats(min_value=1e-3, max_value=1.0))
def test_connection_plus_disconnection_is_one(d, n, p1, p2):
    c = connection_probability(d, n, p1, p2)
    f = disconnection_probability(d, n, p1, p2)
    assert 0.0 <= c <= 1.0 and 0.0 <= f <= 1.0
    assert c + f == pytest.approx(1.0, abs=1e-12)


def test_tiny_failure_probability_keeps_relative_precision():
    # 1 − (1 − q^n)^d ≈ d q^n when d q^n is tiny; evaluated independently via log1p/expm1
    d, n, p1 = 100, 5000, 0.01
    q_n = math.exp(n * math.log1p(-p1))
    expected = -math.expm1(d * math.log1p(-q_n))
    assert disconnection_probability(d, n, p1) == pytest.approx(expected, rel=1e-10)
    assert expected < 1e-19


def _brute_force(d, n, p1, p2):
    """Sum over every pair of masks M1 (n×d), M2 (1×n) of P(masks)·1[all inputs have a path]."""
    total = 0.0
    for bits1 in itertools.product((0, 1), repeat=n * d):
        m1 = np.array(bits1).reshape(n, d)
        w1 = p1 ** m1.sum() * (1 - p1) ** (n * d - m1.sum())
        for bits2 in itertools.product((0, 1), repeat=n):
            w2 = p2 ** sum(bits2) * (1 - p2) ** (n - sum(bits2))
            ok = all(any(m1[u, j] and bits2[u] for u in range(n)) for j in range(d))
            total += w1 * w2 * ok
    return total


@pytest.mark.parametrize("d,n,p1,p2", [(1, 1, 0.3, 0.6), (2, 3, 0.4, 0.7), (3, 2, 0.8, 0.2), (2, 4, 0.5, 0.5), (3, 3, 0.9, 0.95)])
def test_matches_brute_force_enumeration(d, n, p1, p2):
    assert connection_probability(d, n, p1, p2) == pytest.approx(_brute_force(d, n, p1, p2), rel=1e-12)


def test_monte_carlo_binomtest():
    rng = np.random.default_rng(20230)
    d, n, p1, p2, trials = 20, 60, 0.08, 0.5, 4000
    hits = 0
    for _ in range(trials):
        m1 = rng.random((n, d)) < p1
        m2 = rng.random((1, n)) < p2
        hits += bool(connected_inputs(m1, m2).all())
    exact = connection_probability(d, n, p1, p2)
    assert 0.05 < exact < 0.95  # a regime where the test has power
    assert_binomial(hits, trials, exact, alpha=1e-3)


@settings(max_examples=60)
@given(st.integers(1, 5000), st.floats(min_value=1e-4, max_value=1.0), small_delta, st.floats(min_value=0.05, max_value=1.0))
def test_lower_bound_width_is_minimal(d, p1, delta, p2):
    n = lower_bound_width(d, p1, delta, p2)
    assert isinstance(n, int) and n >= 1
    assert disconnection_probability(d, n, p1, p2) <= delta
    assert n == 1 or disconnection_probability(d, n - 1, p1, p2) > delta


@given(st.integers(1, 10**6), st.floats(min_value=1e-12, max_value=0.999), small_delta)
def test_lower_bound_width_is_ceiling_of_closed_form_when_output_dense(d, p1, delta):
    n = lower_bound_width(d, p1, delta)
    closed = lower_bound_width_closed_form(d, p1, delta)
    assert n - 1 <= closed * (1 + 1e-9) and closed <= n * (1 + 1e-9) + 1e-9


@given(st.integers(1, 10**6), st.floats(min_value=1e-9, max_value=0.999), small_delta)
def test_closed_form_formula_and_small_delta_approximation(d, p1, delta):
    closed = lower_bound_width_closed_form(d, p1, delta)
    # direct evaluation where 1 − (1 − δ)^{1/d} is well conditioned
    if delta > 1e-6 and d < 1000:
        assert closed == pytest.approx(er_factor(p1) * math.log(1 / (1 - (1 - delta) ** (1 / d))), rel=1e-6)
    # ≈ κ(p) log(d/δ): δ/d ≤ 1 − (1 − δ)^{1/d} ≤ −log(1 − δ)/d (Bernoulli / exp(x) ≥ 1 + x), so
    # κ·log(d/(−log(1 − δ))) ≤ n* ≤ κ·log(d/δ)
    k = er_factor(p1)
    assert closed <= k * math.log(d / delta) * (1 + 1e-12) + 1e-12
    assert closed >= k * math.log(d / -math.log1p(-delta)) - 1e-9 * (1 + abs(closed))


@given(st.integers(1, 2000), st.floats(1e-4, 1.0), st.floats(1e-4, 1.0), small_delta, small_delta)
def test_width_monotone_in_density_and_delta(d, pa, pb, da, db):
    p_lo, p_hi = sorted((pa, pb))
    d_lo, d_hi = sorted((da, db))
    assert lower_bound_width(d, p_lo, d_lo) >= lower_bound_width(d, p_hi, d_lo)
    assert lower_bound_width(d, p_lo, d_lo) >= lower_bound_width(d, p_lo, d_hi)
    assert lower_bound_width(d, p_hi, d_lo, 0.5) >= lower_bound_width(d, p_hi, d_lo, 1.0)


def test_extreme_densities():
    n = lower_bound_width(100, 1e-17, 1e-30)
    assert n == pytest.approx(1e17 * math.log(100 / 1e-30), rel=1e-9)
    assert lower_bound_width(10, 1.0, 0.1) == 1
    assert connection_probability(3, 0, 0.5) == 0.0


def test_large_width_with_sparse_output_layer_is_fast_and_sane():
    # n·p2 = 5e11: exercises the blocked binomial sum; compare with the Harris-inequality sandwich
    d, n, p1, p2 = 10, 10**12, 1e-11, 0.5
    c = connection_probability(d, n, p1, p2)
    one = 1 - (1 - p1 * p2) ** n
    assert one ** d * (1 - 1e-6) <= c <= one * (1 + 1e-6)


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3), st.integers(0, 2**31))
def test_connected_inputs_matches_loops(n, d, k, seed):
    rng = np.random.default_rng(seed)
    m1 = rng.random((n, d)) < 0.4
    m2 = (rng.random((k, n)) < 0.4).astype(int)
    expected = [any(m1[u, j] and m2[o, u] for u in range(n) for o in range(k)) for j in range(d)]
    assert connected_inputs(m1, m2).tolist() == expected
    # a 1-D output mask is the 1×n case
    assert connected_inputs(m1, m2[0]).tolist() == connected_inputs(m1, m2[:1]).tolist()


def test_error_floor_and_uniform_variance():
    from scipy import integrate

    var = integrate.quad(lambda x: x * x / 2.0, -1, 1)[0]  # E x² for x ~ U[−1, 1], mean 0
    assert uniform_variance(-1, 1) == pytest.approx(var)
    assert uniform_variance(2, 5) == pytest.approx(0.75)
    w = np.array([1.0, -2.0, 3.0, 0.5])
    conn = np.array([True, False, True, False])
    assert error_floor(w, conn, 1 / 3) == pytest.approx((4 + 0.25) / 3)
    assert error_floor(w, conn, [1, 2, 3, 4]) == pytest.approx(4 * 2 + 0.25 * 4)
    assert error_floor(w, np.ones(4, bool), 1.0) == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: connection_probability(0, 5, 0.5),
        lambda: connection_probability(3, -1, 0.5),
        lambda: connection_probability(3, 5, 0.0),
        lambda: connection_probability(3, 5, 0.5, 1.5),
        lambda: connection_probability(3.5, 5, 0.5),
        lambda: disconnection_probability(3, 5, "0.5"),
        lambda: lower_bound_width(3, 0.5, 0.0),
        lambda: lower_bound_width(3, 0.5, 1.0),
        lambda: lower_bound_width(3, 0.5, 0.1, 0.0),
        lambda: lower_bound_width_closed_form(0, 0.5, 0.1),
        lambda: lower_bound_width_closed_form(3, 2.0, 0.1),
        lambda: lower_bound_width_closed_form(3, 0.5, -0.1),
        lambda: connected_inputs(np.ones((3, 2)), np.ones((1, 4))),
        lambda: connected_inputs(np.full((3, 2), 2), np.ones((1, 3))),
        lambda: connected_inputs(np.ones(3), np.ones((1, 3))),
        lambda: uniform_variance(1, 1),
        lambda: uniform_variance(0, float("inf")),
        lambda: error_floor([1, 2], [True], 1.0),
        lambda: error_floor([1, 2], [True, False], -1.0),
        lambda: error_floor([1, 2], [True, False], [1.0, 2.0, 3.0]),
        lambda: lower_bound_summary(0, 0.5, 0.1),
        lambda: lower_bound_summary(3, 0.5, 0.1, 0.0),
        lambda: lower_bound_width(3, 1e-200, 0.1, 1e-200),
    ],
)
def test_bad_input_raises_one_line_value_error(call):
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg and ("allowed" in msg or "must be" in msg)


@pytest.mark.parametrize("n,k,p", [(10, 3, 0.3), (10**12, 5 * 10**11 + 12345, 0.5), (10**6, 3, 1e-5), (10**9, 10**9 - 2, 0.999), (40, 17, 1e-3), (7, 0, 0.2), (7, 7, 0.2)])
def test_private_binomial_log_pmf_against_60_digit_reference(n, k, p):
    from theory.lower_bound import _binom_logpmf

    with mpmath.workdps(60):
        ref = mpmath.log(mpmath.binomial(n, k)) + k * mpmath.log(mpmath.mpf(p)) + (n - k) * mpmath.log(1 - mpmath.mpf(p))
    assert _binom_logpmf(np.array([k]), n, p)[0] == pytest.approx(float(ref), rel=1e-13, abs=1e-13)


@pytest.mark.parametrize("d,n,p1,p2", [(10, 10**7, 3e-6, 0.5), (50, 10**8, 1e-7, 0.3), (3, 10**7, 0.5, 0.5), (100, 10**7, 1e-6, 0.01)])
def test_quadrature_path_agrees_with_exact_sum(monkeypatch, d, n, p1, p2):
    import theory.lower_bound as lb

    exact = (lb._log_connection_and_failure(d, n, p1, p2))
    monkeypatch.setattr(lb, "_MAX_TERMS", 1000)  # force the Gauss–Legendre path of _binomial_window
    quad = lb._log_connection_and_failure(d, n, p1, p2)
    assert quad[0] == pytest.approx(exact[0], rel=1e-9, abs=1e-12)
    assert quad[1] == pytest.approx(exact[1], rel=1e-9, abs=1e-300)


def test_astronomical_widths_scale_like_one_over_output_density():
    # n ≈ κ(p1·p2)·log(d/δ) far beyond 2^53: halving p2 doubles the width (to float resolution)
    n1 = lower_bound_width(100, 1e-100, 0.01)
    n2 = lower_bound_width(100, 1e-100, 0.01, 0.5)
    assert n1 == pytest.approx(lower_bound_width_closed_form(100, 1e-100, 0.01), rel=1e-12)
    assert n2 / n1 == pytest.approx(2.0, rel=1e-6)


def test_lower_bound_summary_fields():
    s = lower_bound_summary(100, 0.01, 0.01, 0.7)
    assert s.width == lower_bound_width(100, 0.01, 0.01, 0.7)
    assert s.connection_probability_at_width >= 0.99 > s.connection_probability_below_width
    assert s.closed_form_width == lower_bound_width_closed_form(100, 0.01, 0.01)
    assert set(s.to_dict()) >= {"width", "connection_probability_at_width", "er_factor", "closed_form_width"}
