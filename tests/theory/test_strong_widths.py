"""theory.strong_widths (docs/math.md §6): monotonicity, ~1/p scaling, the tolerance split identity, consistency with
what construct builds."""
import math

import pytest
from hypothesis import given, settings, strategies as st

from theory import strategies
from theory.strong_widths import (backward_layer_tolerance, forward_tolerance_split, input_bounds_l1,
                                  strong_widths, weight_parts)

WIDTHS = strategies.widths(max_width=6, max_layers=3)


def _sizes(sw):
    g = sw.groups
    if sw.construction == "l+1":
        return [g["g"], g["g0"], *g["r"], *g["c"]]
    return [*g["k"], *g["g0"]]


@settings(max_examples=25, deadline=None)
@given(widths=WIDTHS, construction=st.sampled_from(["l+1", "2l"]), p=st.floats(0.05, 0.9),
       factor=st.floats(1.05, 3.0), delta=st.floats(0.01, 0.5), eps=st.sampled_from([0.1, 0.01, 0.001]))
def test_monotone_in_density_delta_eps(widths, construction, p, factor, delta, eps):
    base = strong_widths(widths, p, delta, instance_eps=eps, construction=construction)
    denser = strong_widths(widths, min(1.0, p * factor), delta, instance_eps=eps, construction=construction)
    looser_delta = strong_widths(widths, p, min(0.99, delta * factor), instance_eps=eps, construction=construction)
    looser_eps = strong_widths(widths, p, delta, instance_eps=min(0.5, eps * factor), construction=construction)
    for other in (denser, looser_delta, looser_eps):
        assert all(a >= b for a, b in zip(_sizes(base), _sizes(other)))
        assert base.source_params >= other.source_params


@settings(max_examples=15, deadline=None)
@given(widths=WIDTHS, construction=st.sampled_from(["l+1", "2l"]), eps=st.sampled_from([0.1, 0.01]),
       delta=st.floats(0.01, 0.5))
def test_network_eps_monotone(widths, construction, eps, delta):
    a = strong_widths(widths, 0.5, delta, eps=eps, construction=construction)
    b = strong_widths(widths, 0.5, delta, eps=eps * 2, construction=construction)
    assert all(x <= y for x, y in zip(a.instance_eps, b.instance_eps))
    assert all(x >= y for x, y in zip(_sizes(a), _sizes(b)))
    assert a.tolerance_split == "forward"


def test_copies_scale_like_inverse_density():
    # r_t ≈ (2 N_SS + 8 log(2/δ')) / p: halving p doubles r up to rounding and the (logarithmic) change of δ'
    a = strong_widths((3, 4, 2), 0.4, 0.1, instance_eps=0.01, construction="l+1", biases=False)
    b = strong_widths((3, 4, 2), 0.2, 0.1, instance_eps=0.01, construction="l+1", biases=False)
    ratio = b.groups["r"][0] / a.groups["r"][0]
    assert 1.9 <= ratio <= 2.6, ratio
    # lifting groups need both masks: g ≈ 1/(p1 p2), so halving both densities multiplies g by about 4
    assert 3.8 <= b.groups["g"] / a.groups["g"] <= 5.2


@settings(max_examples=30, deadline=None)
@given(eps=st.floats(1e-4, 0.5), bounds=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=5),
       amps=st.lists(st.floats(0.1, 50.0), min_size=5, max_size=5))
def test_forward_split_unrolls_to_eps(eps, bounds, amps):
    amps = amps[: len(bounds)]
    split = forward_tolerance_split(eps, bounds, amps)
    L = len(bounds)
    total = sum(split[t] * (bounds[t] + 1) * math.prod(amps[t + 1:]) for t in range(L))
    assert total == pytest.approx(eps, rel=1e-9)
    assert split[-1] == pytest.approx(backward_layer_tolerance(eps, L, bounds[-1], 1.0))


def test_input_bounds_and_parts():
    assert input_bounds_l1((3, 2, 1), 1.0, (-2.0, 1.0)) == (6.0, 2 * (3 * 2 + 1))
    assert weight_parts(1.0) == 1 and weight_parts(1.2) == 2 and weight_parts(3.0) == 3
    sw1 = strong_widths((2, 2), 1.0, 0.1, instance_eps=0.01, construction="2l", weight_bound=1.0)
    sw3 = strong_widths((2, 2), 1.0, 0.1, instance_eps=0.01, construction="2l", weight_bound=2.5)
    assert sw3.parts == 3 and sw3.groups["k"][0] >= 3 * sw1.groups["k"][0]


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(eps=0.1, instance_eps=0.1), "exactly one"),
    (dict(), "exactly one"),
    (dict(eps=1.5), "eps"),
    (dict(instance_eps=[0.1, 0.1, 0.1]), "instance_eps"),
    (dict(eps=0.1, construction="3l"), "construction"),
    (dict(eps=0.1, weight_bound=-1), "weight_bound"),
])
def test_bad_arguments(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        strong_widths((3, 2), 0.5, 0.1, **kwargs)


@pytest.mark.parametrize("construction", ["l+1", "2l"])
def test_construct_builds_exactly_these_widths(construction):
    from construct.source import sample_source
    from construct.strong import plan_strong
    from construct.targets import random_target

    target = random_target((2, 3, 1), 0)
    sw, groups, widths = plan_strong(target, 1.0, 0.1, eps=0.05, construction=construction)
    assert tuple(widths) == tuple(sw.source_widths)
    assert sample_source(widths, sw.densities, 0).widths == tuple(sw.source_widths)


# ------------------------------------------------------------------ issue 14: what the solver searches, precision


@settings(max_examples=20, deadline=None)
@given(widths=WIDTHS, construction=st.sampled_from(["l+1", "2l"]), eps=st.sampled_from([0.1, 0.01, 1e-3]),
       box=st.sampled_from([1.0, 10.0]), p=st.floats(0.1, 1.0))
def test_theory_provisions_only_what_the_solver_searches(widths, construction, eps, box, p):
    from theory.subset_sum import SOLVER_MAX_CANDIDATES, effective_tolerance, search_plan

    try:
        sw = strong_widths(widths, p, 0.1, eps=eps, construction=construction, box=(-box, box))
    except ValueError as exc:
        assert "at most 40" in str(exc) and "per-instance tolerance eps=" in str(exc)
        return
    for t, (cap, blocks) in enumerate(zip(sw.caps, sw.blocks), start=1):
        law = "product" if (construction == "2l" or t == 1) else "uniform"
        assert 1 <= cap["weight"] <= SOLVER_MAX_CANDIDATES and blocks["weight"] >= 1
        plan = search_plan(effective_tolerance(sw.instance_eps[t - 1] / sw.parts, sw.source_dtype, law),
                           sw.instance_delta / 2, law)
        # the widths were sized at the a-priori tolerances, which the forward check can only lower
        assert cap["weight"] * blocks["weight"] <= sw.candidates[t - 1]["weight"]
        assert plan.total >= cap["weight"] * blocks["weight"]


def test_issue_14_case_refused_with_tolerance_nss_and_cap():
    with pytest.raises(ValueError, match=r"^per-instance tolerance eps=\S+ .*needs N_SS=\d+ candidates .*but the exact "
                                         r"solver searches at most 40"):
        strong_widths((8, 8, 8, 8, 2), 0.5, 0.1, eps=0.01, construction="l+1")


def test_source_dtype_choice_and_resolution_refusal():
    from theory.strong_widths import FLOAT32_MIN_TOLERANCE
    from theory.subset_sum import SOLVER_MAX_CANDIDATES, candidate_resolution

    assert FLOAT32_MIN_TOLERANCE == 2 * SOLVER_MAX_CANDIDATES * candidate_resolution("float32", "product")
    assert strong_widths((3, 2), 0.5, 0.1, instance_eps=1e-2, construction="2l").source_dtype == "float32"
    assert strong_widths((3, 2), 0.5, 0.1, instance_eps=1e-6, construction="2l").source_dtype == "float64"
    with pytest.raises(ValueError, match=r"^per-instance tolerance eps=1e-06 is below the resolution of float32"):
        strong_widths((3, 2), 0.5, 0.1, instance_eps=1e-6, construction="2l", source_dtype="float32")
    # the float32 margin makes float32 widths at least as large as float64 ones
    a = strong_widths((3, 2), 0.5, 0.1, instance_eps=1e-4, construction="2l", source_dtype="float32")
    b = strong_widths((3, 2), 0.5, 0.1, instance_eps=1e-4, construction="2l", source_dtype="float64")
    assert a.source_params >= b.source_params
