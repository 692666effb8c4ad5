"""sympy derivations (theory.symbolic) agree with the numeric functions on grids (docs/math.md §1–§3)."""
import math

import mpmath
import numpy as np
import pytest
import sympy as sp

from theory import symbolic as S
from theory.er_factor import er_factor
from theory.lower_bound import lower_bound_width, lower_bound_width_closed_form



def mp_eval(expr, symbols, *values):
    """Evaluate a sympy expression at float values in 50-digit arithmetic (no float rounding of 1 − p)."""
    f = sp.lambdify(symbols, expr, "mpmath")
    with mpmath.workdps(50):
        return float(f(*[mpmath.mpf(float(v)) for v in values]))


GRID = np.concatenate([np.logspace(-12, -1, 23), np.linspace(0.1, 0.99, 19)])


def test_kappa_expression_matches_numeric():
    for x in GRID:
        assert er_factor(float(x)) == pytest.approx(mp_eval(S.er_factor_expr(), S.p, x), rel=1e-12)


def test_series_coefficients_and_accuracy():
    poly, order = S.er_factor_series(3)
    assert sp.simplify(poly - (1 / S.p - sp.Rational(1, 2) - S.p / 12 - S.p**2 / 24)) == 0
    assert order == sp.O(S.p**3)
    f = sp.lambdify(S.p, poly, "numpy")
    for x in np.logspace(-8, -2, 13):
        # remainder is O(p³): bounded by p³ for these p (the next coefficient is −19/720)
        assert abs(er_factor(float(x)) - f(x)) <= max(x**3, 1e-15 / x)


def test_log_bounds_proved_and_numeric():
    lower, upper = S.log_bounds()
    for side in (lower, upper):
        assert side.at_zero == 0
        assert side.derivative_positive
        assert sp.simplify(sp.diff(side.gap, S.p) - side.derivative) == 0
    assert sp.simplify(lower.derivative - S.p / (1 - S.p)) == 0
    assert sp.simplify(upper.derivative - S.p / (1 - S.p) ** 2) == 0
    for x in GRID:
        assert mp_eval(lower.gap, S.p, x) >= 0 and mp_eval(upper.gap, S.p, x) >= 0
        k = er_factor(float(x))
        assert (1 - x) / x * (1 - 1e-12) <= k <= (1 / x) * (1 + 1e-12)


def test_limits():
    lim = S.er_factor_limits()
    assert lim == {"kappa_at_0": sp.oo, "kappa_at_1": 0, "p_kappa_at_0": 1}
    assert er_factor(1.0) == 0.0 and er_factor(1e-300) * 1e-300 == pytest.approx(1.0)


def test_miss_probability_width():
    sol = S.miss_probability_width()
    # log(1/x) = −log x for x = 1 − p > 0 and x = δ > 0, so expand_log(force=True) is valid here
    assert sp.simplify(sp.expand_log(sol - S.er_factor_expr() * sp.log(1 / S.delta), force=True)) == 0
    for x in GRID[::3]:
        for dl in (1e-9, 1e-3, 0.1, 0.5):
            width = mp_eval(sol, (S.p, S.delta), x, dl)
            assert width == pytest.approx(er_factor(float(x)) * math.log(1 / dl), rel=1e-10)
            # and (1 − p)^n ≤ δ exactly at ⌈n⌉, not at ⌈n⌉ − 1 (in log space)
            m = math.ceil(width)
            assert m * math.log1p(-x) <= math.log(dl) + 1e-9
            assert m == 1 or (m - 1) * math.log1p(-x) > math.log(dl) - 1e-9 * abs(math.log(dl))


def test_lower_bound_width_expression():
    sol = S.lower_bound_width_expr()
    for x in GRID[::2]:
        for dd in (1, 10, 1000):
            for dl in (1e-6, 0.01, 0.3):
                val = mp_eval(sol, (S.p, S.d, S.delta), x, dd, dl)
                assert lower_bound_width_closed_form(dd, float(x), dl) == pytest.approx(val, rel=1e-8)
                if x > 1e-6:
                    assert lower_bound_width(dd, float(x), dl) == math.ceil(val - 1e-9 * val)


def test_higher_order_series_and_bad_order():
    poly, _ = S.er_factor_series(4)
    assert sp.simplify(poly - (1 / S.p - sp.Rational(1, 2) - S.p / 12 - S.p**2 / 24 - sp.Rational(19, 720) * S.p**3)) == 0
    for bad in (0, -1, 2.5, "3"):
        with pytest.raises(ValueError):
            S.er_factor_series(bad)
