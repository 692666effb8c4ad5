"""κ(p) = −1/log1p(−p) (docs/math.md §1): inequalities, series, extremes, vectorization, bad input."""
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, strategies as st

from theory import strategies
from theory.er_factor import er_factor

densities = strategies.densities(min_density=1e-300)


@given(densities)
def test_bounds_one_minus_p_over_p_le_kappa_le_one_over_p(p):
    k = er_factor(p)
    # (1 − p)/p ≤ κ(p) ≤ 1/p, up to float rounding of the three computations
    assert k <= (1.0 / p) * (1 + 1e-12)
    assert k >= ((1.0 - p) / p) * (1 - 1e-12)


@given(st.floats(min_value=1e-300, max_value=1e-3))
def test_series_one_over_p_minus_half(p):
    # κ(p) = 1/p − 1/2 − p/12 + O(p²): κ − (1/p − 1/2) ≈ −p/12 to within O(p²)
    k = er_factor(p)
    approx = 1.0 / p - 0.5 - p / 12.0
    assert abs(k - approx) <= 1e-15 * (1.0 / p) + 0.1 * p * p + 1e-12


def test_exact_for_tiny_densities_and_one():
    assert er_factor(1e-17) == pytest.approx(1e17, rel=1e-15)
    assert er_factor(1e-300) == pytest.approx(1e300, rel=1e-15)
    assert er_factor(1.0) == 0.0
    assert er_factor(1) == 0.0
    # an independent value: log 2 exactly
    assert er_factor(0.5) == pytest.approx(1.0 / math.log(2.0), rel=1e-15)
    # against a high-precision computation with Fraction-free mpmath-like series via math.log on exact 1 − p
    for p in [0.1, 0.3, 0.9, 0.999]:
        assert er_factor(p) == pytest.approx(1.0 / math.log(1.0 / float(Fraction(1) - Fraction(p))), rel=1e-12)


def test_returns_float_for_scalar_and_array_for_array():
    assert isinstance(er_factor(0.25), float)
    assert isinstance(er_factor(np.float64(0.25)), float)
    grid = np.array([[1e-17, 0.25], [0.5, 1.0]])
    out = er_factor(grid)
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)
    for idx in np.ndindex(grid.shape):
        assert out[idx] == er_factor(float(grid[idx]))


@given(st.floats(min_value=1e-300, max_value=1.0), st.floats(min_value=1e-300, max_value=1.0))
def test_decreasing_in_density(p, q):
    lo, hi = sorted((p, q))
    assert er_factor(lo) >= er_factor(hi)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.0000001, float("nan"), float("inf"), "0.5", None, True, [0.5, 0.0], [0.5, "a"]])
def test_bad_density_one_line_value_error(bad):
    with pytest.raises(ValueError) as info:
        er_factor(bad)
    assert "density" in str(info.value) and "\n" not in str(info.value)
