"""Widths of the weak ticket of a plain CNN (docs/math.md §9, §4.3): every width meets its union-bound event and is
the smallest that does; an MLP seen as a CNN gets exactly the MLP widths; sizes follow the construction."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from theory import strategies
from theory.conv_weak_widths import conv_weak_graph_widths, conv_weak_widths
from theory.weak_widths import weak_widths

dens_st = strategies.densities(min_density=1e-2)  # far from the 2^63 weight-count refusal
delta_st = strategies.deltas(min_delta=1e-9, max_delta=0.99)


@st.composite
def cnn_layers(draw, max_layers=5):
    """(fan_in V_t, fan_out c_t, nonzeros m_t) per weighted layer."""
    L = draw(st.integers(1, max_layers))
    out = []
    for _ in range(L):
        fan_in = draw(st.integers(1, 2000))
        fan_out = draw(st.integers(1, 300))
        nz = draw(st.integers(1, fan_in * fan_out))
        out.append((fan_in, fan_out, nz))
    return out


def _union_bound_ok(events: float, keep: float, count: int, budget: float) -> bool:
    """events·(1 − keep)^count ≤ budget, evaluated in log space with log1p(−keep): log(1.0 − keep) loses the digits
    of a tiny keep probability (1 − 1e−7 is stored with a relative error of 1e−9 in its logarithm). keep = 1: the
    edge is always there."""
    if keep >= 1.0:
        return True
    return math.log(events) + count * math.log1p(-keep) <= math.log(budget) + 1e-9


@settings(max_examples=150)
@given(cnn_layers(), st.data(), delta_st)
def test_every_width_meets_its_union_bound_and_is_minimal(layers, data, delta):
    L = len(layers)
    dens = data.draw(st.lists(dens_st, min_size=L + 1, max_size=L + 1))
    w = conv_weak_widths(layers, dens, delta)
    r = {t: w.copies[t - 2] for t in range(2, L + 2)}
    assert r[L + 1] == 1 and len(w.copies) == L
    m = [nz for _, _, nz in layers]
    budget = delta / L
    for t in range(L, 1, -1):  # source layer t+1: r_{t+1}·m_t needed edges, each missing w.p. (1 − p_{t+1})^{r_t}
        keep = dens[t]
        assert _union_bound_ok(r[t + 1] * m[t - 1], keep, r[t], budget)
        assert r[t] == 1 or not _union_bound_ok(r[t + 1] * m[t - 1], keep, r[t] - 1, budget * (1 - 1e-6))
    keep1 = dens[0] * dens[1]
    g = w.lifting_group
    assert _union_bound_ok(2 * r[2] * m[0], keep1, g, budget)
    assert g == 1 or not _union_bound_ok(2 * r[2] * m[0], keep1, g - 1, budget * (1 - 1e-6))


@settings(max_examples=100)
@given(strategies.widths(max_width=300, max_layers=4), dens_st, delta_st)
def test_an_mlp_as_a_cnn_gets_the_mlp_widths(widths, p, delta):
    L = len(widths) - 1
    layers = [(widths[t - 1], widths[t], widths[t - 1] * widths[t]) for t in range(1, L + 1)]
    c = conv_weak_widths(layers, p, delta)
    w = weak_widths(widths, p, delta)
    assert c.lifting_group == w.lifting_group and c.copies == w.copies
    assert list(c.source_channels) == list(w.source_widths[1:])
    assert c.source_params == w.source_params and c.expected_source_kept == pytest.approx(w.expected_source_kept)


@given(cnn_layers(max_layers=4), dens_st, delta_st)
def test_sizes_follow_the_construction(layers, p, delta):
    w = conv_weak_widths(layers, p, delta)
    L = len(layers)
    g, r = w.lifting_group, (None, None) + w.copies  # r[t] for t >= 2
    V = [fi for fi, _, _ in layers]
    c = [fo for _, fo, _ in layers]
    m = [nz for _, _, nz in layers]
    channels = [2 * g * V[0]] + [r[t + 1] * c[t - 1] for t in range(1, L + 1)]
    assert list(w.source_channels) == channels
    params = [channels[0] * V[0], channels[1] * channels[0]] + [channels[t] * r[t] * V[t - 1] for t in range(2, L + 1)]
    assert w.source_params == sum(params)
    assert w.expected_source_kept == pytest.approx(p * sum(params))
    assert w.ticket_params == min(2 * g * V[0], 2 * r[2] * m[0]) + 2 * r[2] * m[0] + sum(
        r[t + 1] * m[t - 1] for t in range(2, L + 1))
    assert w.target_params == sum(m)
    assert w.to_dict()["source_channels"] == channels


def test_a_small_cnn_by_hand():
    # conv 1->2 (3x3), conv 2->3 (3x3), linear 3->2; p = 0.2, delta = 0.1, L = 3
    kappa = -1.0 / math.log1p(-0.2)
    r3 = math.ceil(kappa * math.log(1 * 6 * 3 / 0.1))
    r2 = math.ceil(kappa * math.log(r3 * 54 * 3 / 0.1))
    g = math.ceil(-1.0 / math.log1p(-0.04) * math.log(2 * r2 * 18 * 3 / 0.1))
    w = conv_weak_widths([(9, 2, 18), (18, 3, 54), (3, 2, 6)], 0.2, 0.1)
    assert (w.lifting_group, w.copies) == (g, (r2, r3, 1)) == (266, (48, 24, 1))
    assert w.source_channels == (2 * 266 * 9, 48 * 2, 24 * 3, 2)


@pytest.mark.parametrize("kwargs", [
    dict(layers=[], density=0.1, delta=0.1),
    dict(layers=[(3, 2)], density=0.1, delta=0.1),
    dict(layers=[(3, 2, 7)], density=0.1, delta=0.1),
    dict(layers=[(3, 2, 0)], density=0.1, delta=0.1),
    dict(layers=[(0, 2, 1)], density=0.1, delta=0.1),
    dict(layers=[(3, 2, 6)], density=[0.1], delta=0.1),
    dict(layers=[(3, 2, 6)], density=0.0, delta=0.1),
    dict(layers=[(3, 2, 6)], density=0.1, delta=1.0),
    dict(layers=5, density=0.1, delta=0.1),
])
def test_bad_input(kwargs):
    with pytest.raises(ValueError) as info:
        conv_weak_widths(**kwargs)
    msg = str(info.value)
    assert "\n" not in msg and "allowed" in msg


def test_a_source_of_2_63_weights_is_refused_in_one_line():
    from theory.validation import WidthOverflowError

    with pytest.raises(WidthOverflowError) as info:
        conv_weak_widths([(2000, 300, 600000), (300, 10, 3000)], 1e-4, 1e-9)
    assert "\n" not in str(info.value) and "2^63" in str(info.value)


def test_graph_widths_are_the_least_fixed_point_and_a_chain_is_the_plain_case():
    layers = [(9, 8, 72), (72, 8, 576), (72, 8, 576), (72, 16, 1152), (144, 16, 2304), (8, 16, 128), (16, 10, 160)]
    reads, writes = (None, 0, 1, 0, 2, 0, 3), (0, 1, 0, 2, 3, 3, 4)
    dens, delta = [0.5, 0.4, 0.5, 0.6, 0.5, 0.3, 0.5, 0.7], 0.05
    w = conv_weak_graph_widths(layers, reads, writes, dens, delta)
    r = dict(zip(range(5), w.class_copies))
    L = len(layers)

    def need(t, rr):  # ⌈κ(p_{t+1})·log(r_{writes}·m_t·L/δ)⌉, κ(p) = −1/log1p(−p)
        x = -math.log(rr[writes[t - 1]] * layers[t - 1][2] * L / delta) / math.log1p(-dens[t])
        return max(1, math.ceil(x))

    for c in r:  # a fixed point: every class exactly the largest need of its readers (or 1)
        assert r[c] == max([1] + [need(t, r) for t in range(2, L + 1) if reads[t - 1] == c])
    for c in r:  # the least one: lowering any class breaks one of its readers' union bounds
        if r[c] > 1:
            lower = {**r, c: r[c] - 1}
            assert any(lower[c] < need(t, lower) for t in range(2, L + 1) if reads[t - 1] == c)
    chain = [(9, 8, 72), (72, 16, 1152), (256, 10, 2560)]
    a = conv_weak_widths(chain, dens[:4], delta)
    b = conv_weak_graph_widths(chain, (None, 0, 1), (0, 1, 2), dens[:4], delta)
    assert (a.lifting_group, a.copies, a.source_params, a.ticket_params) == \
        (b.lifting_group, b.copies, b.source_params, b.ticket_params)


@pytest.mark.parametrize("reads,writes,needle", [
    ((None, 0), (0,), "one per weighted layer"),
    ((0, 0), (0, 1), "None for layer 1"),
    ((None, None), (0, 1), "None for layer 1"),
    ((None, -1), (-1, 0), "non-negative"),
])
def test_graph_widths_refuse_malformed_classes(reads, writes, needle):
    with pytest.raises(ValueError) as info:
        conv_weak_graph_widths([(9, 2, 18), (18, 2, 36)], reads, writes, 0.5, 0.1)
    assert needle in str(info.value) and "\n" not in str(info.value)
