"""Weak-ticket widths (docs/math.md §4.3): each width satisfies its union-bound event and is the smallest that does."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from theory import strategies
from theory.weak_widths import weak_widths

widths_st = strategies.widths(max_width=2000, max_layers=5)
dens_st = strategies.densities(min_density=1e-4)
delta_st = strategies.deltas(min_delta=1e-9, max_delta=0.99)


def _union_bound_ok(events: float, keep: float, count: int, budget: float) -> bool:
    """events·(1 − keep)^count ≤ budget, evaluated in log space with log1p(−keep): log(1.0 − keep) loses the digits
    of a tiny keep probability (1 − 1e−7 is stored with a relative error of 1e−9 in its logarithm). keep = 1: the
    edge is always there."""
    if keep >= 1.0:
        return True
    return math.log(events) + count * math.log1p(-keep) <= math.log(budget) + 1e-9


@settings(max_examples=150)
@given(widths_st, st.data(), delta_st)
def test_every_width_meets_its_union_bound_and_is_minimal(widths, data, delta):
    L = len(widths) - 1
    dens = data.draw(st.lists(dens_st, min_size=L + 1, max_size=L + 1))
    w = weak_widths(widths, dens, delta)
    r = {t: w.copies[t - 2] for t in range(2, L + 2)}
    assert r[L + 1] == 1 and len(w.copies) == L
    m = [widths[t] * widths[t - 1] for t in range(1, L + 1)]
    assert list(w.nonzeros) == m
    budget = delta / L
    for t in range(L, 1, -1):  # layer t+1: r_{t+1}·m_t events, each missing with prob (1 − p_{t+1})^{r_t}
        keep = dens[t]
        assert _union_bound_ok(r[t + 1] * m[t - 1], keep, r[t], budget)
        assert r[t] == 1 or not _union_bound_ok(r[t + 1] * m[t - 1], keep, r[t] - 1, budget * (1 - 1e-6))
    keep1 = dens[0] * dens[1]
    g = w.lifting_group
    assert _union_bound_ok(2 * r[2] * m[0], keep1, g, budget)
    assert g == 1 or not _union_bound_ok(2 * r[2] * m[0], keep1, g - 1, budget * (1 - 1e-6))



def test_lifting_group_at_tiny_densities_is_exactly_minimal():
    """Found by Hypothesis: p_1·p_2 = 1e−7, δ = 1e−9 puts the union bound within 3e−3 (relative) of the budget, where
    log(1 − p) in place of log1p(−p) misjudges it."""
    w = weak_widths([1, 28], [1e-3, 1e-4], 1e-9)
    events = 2 * w.copies[0] * 28
    g = w.lifting_group
    assert _union_bound_ok(events, 1e-7, g, 1e-9)
    assert not _union_bound_ok(events, 1e-7, g - 1, 1e-9)

@given(widths_st, dens_st, delta_st)
def test_sizes_follow_the_construction(widths, p, delta):
    w = weak_widths(widths, p, delta)
    L = len(widths) - 1
    g, r = w.lifting_group, (None, None) + w.copies  # r[t] for t ≥ 2
    expected_src = [widths[0], 2 * g * widths[0]] + [r[t] * widths[t - 1] for t in range(2, L + 1)] + [widths[L]]
    assert list(w.source_widths) == expected_src
    params = [expected_src[i] * expected_src[i + 1] for i in range(L + 1)]
    assert w.source_params == sum(params)
    assert w.expected_source_kept == pytest.approx(p * sum(params))
    ticket = 2 * g * widths[0] + 2 * r[2] * w.nonzeros[0] + sum(r[t + 1] * w.nonzeros[t - 1] for t in range(2, L + 1))
    assert w.ticket_params == ticket
    assert w.overparameterization == pytest.approx(sum(params) / sum(w.nonzeros))
    d = w.to_dict()
    assert d["source_widths"] == expected_src and d["lifting_group"] == g


@given(widths_st, dens_st, dens_st, delta_st, delta_st)
def test_widths_monotone_in_density_and_delta(widths, pa, pb, da, db):
    p_lo, p_hi = sorted((pa, pb))
    d_lo, d_hi = sorted((da, db))
    a = weak_widths(widths, p_lo, d_lo)
    for b in (weak_widths(widths, p_hi, d_lo), weak_widths(widths, p_lo, d_hi)):
        assert all(x >= y for x, y in zip(a.source_widths, b.source_widths))
        assert a.source_params >= b.source_params


def test_sparse_target_nonzeros_and_dense_source():
    w = weak_widths([4, 3, 2], 1.0, 0.1, nonzeros=[5, 2])
    assert w.lifting_group == 1 and w.copies == (1, 1)
    assert w.source_widths == (4, 8, 3, 2)
    assert w.ticket_params == 8 + 2 * 5 + 2


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(target_widths=[5], density=0.1, delta=0.1),
        dict(target_widths=[5, 0], density=0.1, delta=0.1),
        dict(target_widths=[5, 3], density=0.0, delta=0.1),
        dict(target_widths=[5, 3], density=[0.1], delta=0.1),
        dict(target_widths=[5, 3], density=[0.1, 1.5], delta=0.1),
        dict(target_widths=[5, 3], density="0.1", delta=0.1),
        dict(target_widths=[5, 3], density=0.1, delta=1.0),
        dict(target_widths=[5, 3], density=0.1, delta=0.1, nonzeros=[16]),
        dict(target_widths=[5, 3], density=0.1, delta=0.1, nonzeros=[0]),
        dict(target_widths=[5, 3], density=0.1, delta=0.1, nonzeros=[3, 3]),
    ],
)
def test_bad_input(kwargs):
    with pytest.raises(ValueError) as info:
        weak_widths(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg and ("allowed" in msg or "must be" in msg)
