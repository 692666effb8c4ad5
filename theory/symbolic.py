"""Symbolic (sympy) derivations of the facts the numerics rely on (docs/math.md §1–§3), following Gadhikar et al. 2023.

Each function returns sympy expressions; the tests lambdify them and compare with the numeric functions of
:mod:`theory.er_factor` and :mod:`theory.lower_bound` on grids. Symbols: p = density ∈ (0, 1), n = width,
d = number of inputs, delta = δ ∈ (0, 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from theory.validation import check_positive_int

__all__ = [
    "p", "n", "d", "delta",
    "er_factor_expr",
    "er_factor_series",
    "LogBound",
    "log_bounds",
    "er_factor_limits",
    "miss_probability_width",
    "lower_bound_width_expr",
]

p = sp.Symbol("p", positive=True)  # density
n = sp.Symbol("n", positive=True)  # width (number of candidates)
d = sp.Symbol("d", positive=True)  # number of inputs
delta = sp.Symbol("delta", positive=True)

_IN_UNIT = sp.Q.positive(p) & sp.Q.positive(1 - p)


def er_factor_expr() -> sp.Expr:
    """κ(p) = 1 / log(1/(1 − p)) (docs/math.md §1)."""
    return 1 / sp.log(1 / (1 - p))


def er_factor_series(order: int = 3) -> tuple[sp.Expr, sp.Expr]:
    """(polynomial part, order term) of the Laurent series of κ at p = 0 up to O(p^order):
    κ(p) = 1/p − 1/2 − p/12 − p²/24 + O(p³) for order = 3 (docs/math.md §1)."""
    order = check_positive_int(order, "order")
    s = sp.series(er_factor_expr(), p, 0, order)
    return s.removeO(), s.getO()


@dataclass(frozen=True)
class LogBound:
    """One side of p ≤ log(1/(1−p)) ≤ p/(1−p) on (0, 1) proved as: gap(0) = 0 and gap'(p) = derivative ≥ 0.

    ``gap`` is the non-negative difference, ``derivative`` its simplified derivative, ``at_zero`` gap(0),
    ``derivative_positive`` sympy's verdict that the derivative is > 0 for 0 < p < 1."""

    statement: str
    gap: sp.Expr
    derivative: sp.Expr
    at_zero: sp.Expr
    derivative_positive: bool


def log_bounds() -> tuple[LogBound, LogBound]:
    """p ≤ log(1/(1−p)) ≤ p/(1−p) for 0 < p < 1 (docs/math.md §1), each side by derivative signs: both gaps vanish at
    p = 0 and have derivatives p/(1−p) > 0 and p/(1−p)² > 0. Hence (1−p)/p ≤ κ(p) ≤ 1/p."""
    log_term = sp.log(1 / (1 - p))
    out = []
    for statement, gap in (("p <= log(1/(1-p))", log_term - p), ("log(1/(1-p)) <= p/(1-p)", p / (1 - p) - log_term)):
        der = sp.factor(sp.simplify(sp.diff(gap, p)))
        out.append(
            LogBound(
                statement=statement,
                gap=gap,
                derivative=der,
                at_zero=sp.simplify(gap.subs(p, 0)),
                derivative_positive=bool(sp.ask(sp.Q.positive(der), _IN_UNIT)),
            )
        )
    return out[0], out[1]


def er_factor_limits() -> dict[str, sp.Expr]:
    """Limits of κ: p → 0+ (∞), p → 1− (0), and p·κ(p) → 1 as p → 0 (docs/math.md §1)."""
    k = er_factor_expr()
    return {
        "kappa_at_0": sp.limit(k, p, 0, "+"),
        "kappa_at_1": sp.limit(k, p, 1, "-"),
        "p_kappa_at_0": sp.limit(p * k, p, 0, "+"),
    }


def miss_probability_width() -> sp.Expr:
    """The n solving (1 − p)^n = δ, i.e. n = log(δ)/log(1 − p) = κ(p)·log(1/δ) (docs/math.md §2): with n candidate
    edges or more, P(no kept edge) = (1 − p)^n ≤ δ (the left side decreases in n)."""
    (sol,) = sp.solve(sp.Eq((1 - p) ** n, delta), n)
    return sol


def lower_bound_width_expr() -> sp.Expr:
    """The n solving (1 − (1 − p)^n)^d = 1 − δ (docs/math.md §3, p_2 = 1):
    n = log(1 − (1 − δ)^{1/d}) / log(1 − p) = κ(p)·log(1/(1 − (1 − δ)^{1/d}))."""
    (sol,) = sp.solve(sp.Eq((1 - (1 - p) ** n) ** d, 1 - delta), n)
    return sol
