"""Binomial tests for seeded Monte Carlo claims, for this project's tests and for users' own test suites.

A claim "event E holds with probability ≥ 1 − δ" (docs/math.md §2–§6) is checked by counting successes in a seeded
simulation and asking whether the count is *significantly* below what the claim allows: a one-sided exact binomial
test (``scipy.stats.binomtest``) at level ``alpha``. With a fixed seed the verdict is deterministic; with a valid
claim a test fails with probability at most ``alpha`` over seeds. Every failure message states the observed rate
and the exact Clopper–Pearson interval, so a failing run says how far off the simulation was; the optional
``what`` names the case (it prefixes the message).

Functions:

- :func:`assert_rate` — successes are not significantly fewer than ``at_least · trials`` (claims "P ≥ q").
- :func:`assert_rate_at_most` — events are not significantly more than ``at_most · trials`` (failure rates ≤ δ).
- :func:`assert_binomial` — a count is consistent with Binomial(trials, rate), two-sided (e.g. an ER(p) mask keeps
  a fraction p of its entries).
- :func:`clopper_pearson` — the exact two-sided interval behind the messages.

Only scipy is used; importing this module imports neither torch nor hypothesis.
"""
from __future__ import annotations

import numbers

from scipy import stats

__all__ = ["DEFAULT_ALPHA", "assert_rate", "assert_rate_at_most", "assert_binomial", "clopper_pearson"]

#: the project's significance level for seeded Monte Carlo claims (``python -m theory check`` uses it too)
DEFAULT_ALPHA = 1e-3


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}={value!r}: expected a non-negative integer")
    if value < 0:
        raise ValueError(f"{name}={value!r}: expected a non-negative integer")
    return int(value)


def _check(successes, trials, rate_name: str, rate, alpha) -> tuple[int, int, float, float]:
    trials = _count("trials", trials)
    successes = _count("successes", successes)
    if trials == 0:
        raise ValueError("trials=0: expected at least one trial")
    if successes > trials:
        raise ValueError(f"successes={successes}: expected at most trials={trials}")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"{rate_name}={rate!r}: expected a probability in [0, 1]")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha={alpha!r}: expected a significance level in (0, 1)")
    return successes, trials, float(rate), float(alpha)


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided interval for a binomial rate from ``successes`` of ``trials``.

    Its upper end at ``confidence = 1 − 2α`` is the one-sided (1 − α) upper bound that :func:`assert_rate` compares
    with (and symmetrically for the lower end and :func:`assert_rate_at_most`).
    """
    successes, trials, _, _ = _check(successes, trials, "rate", 0.5, 0.5)
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r}: expected a level in (0, 1)")
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=float(confidence), method="exact")
    return float(ci.low), float(ci.high)


def _prefix(what) -> str:
    return f"{what}: " if what else ""


def _describe(successes: int, trials: int, alpha: float) -> str:
    lo, hi = clopper_pearson(successes, trials, 1.0 - 2.0 * alpha)
    return (f"observed {successes}/{trials} = {successes / trials:.6g}; "
            f"Clopper-Pearson {100 * (1 - 2 * alpha):g}% interval [{lo:.6g}, {hi:.6g}]")


def assert_rate(successes: int, trials: int, at_least: float, alpha: float = DEFAULT_ALPHA, what: str = "") -> float:
    """Assert that a success rate is consistent with "P(success) ≥ ``at_least``".

    One-sided exact binomial test of H0: rate ≥ at_least against rate < at_least
    (``binomtest(successes, trials, at_least, alternative="less")``); raises ``AssertionError`` when its p-value is
    below ``alpha`` — equivalently, when ``at_least`` lies above the one-sided (1 − α) Clopper–Pearson upper bound.
    Returns the p-value. Example: ``assert_rate(ok, 200, 1 - delta)`` for a construction claimed to succeed with
    probability ≥ 1 − δ.
    """
    successes, trials, at_least, alpha = _check(successes, trials, "at_least", at_least, alpha)
    pvalue = float(stats.binomtest(successes, trials, at_least, alternative="less").pvalue)
    if not pvalue >= alpha:
        raise AssertionError(f"{_prefix(what)}rate significantly below at_least={at_least:g}: {_describe(successes, trials, alpha)}; "
                             f"one-sided binomial test p-value {pvalue:.3g} < alpha={alpha:g}")
    return pvalue


def assert_rate_at_most(events: int, trials: int, at_most: float, alpha: float = DEFAULT_ALPHA, what: str = "") -> float:
    """Assert that an event rate (typically failures) is consistent with "P(event) ≤ ``at_most``".

    One-sided exact binomial test of H0: rate ≤ at_most against rate > at_most
    (``binomtest(events, trials, at_most, alternative="greater")``); raises ``AssertionError`` when its p-value is
    below ``alpha``. Returns the p-value. Example: ``assert_rate_at_most(failures, 300, delta)``.
    """
    events, trials, at_most, alpha = _check(events, trials, "at_most", at_most, alpha)
    pvalue = float(stats.binomtest(events, trials, at_most, alternative="greater").pvalue)
    if not pvalue >= alpha:
        raise AssertionError(f"{_prefix(what)}rate significantly above at_most={at_most:g}: {_describe(events, trials, alpha)}; "
                             f"one-sided binomial test p-value {pvalue:.3g} < alpha={alpha:g}")
    return pvalue


def assert_binomial(successes: int, trials: int, rate: float, alpha: float = DEFAULT_ALPHA, what: str = "") -> float:
    """Assert that ``successes`` is a plausible draw of Binomial(``trials``, ``rate``) (two-sided exact test).

    Raises ``AssertionError`` when ``binomtest(successes, trials, rate).pvalue`` is at most ``alpha``. Returns the
    p-value. Example: an ER(p) mask (docs/math.md §1) with ``m.sum()`` kept entries of ``m.size``:
    ``assert_binomial(int(m.sum()), m.size, p)``.
    """
    successes, trials, rate, alpha = _check(successes, trials, "rate", rate, alpha)
    pvalue = float(stats.binomtest(successes, trials, rate).pvalue)
    if not pvalue > alpha:
        raise AssertionError(f"{_prefix(what)}count inconsistent with rate={rate:g}: {_describe(successes, trials, alpha / 2)}; "
                             f"two-sided binomial test p-value {pvalue:.3g} <= alpha={alpha:g}")
    return pvalue

