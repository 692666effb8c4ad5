"""The public testing helpers: theory.testing (binomial tests) and theory.strategies (hypothesis strategies).

Expected verdicts are computed independently of the helpers: exact binomial tail sums with math.comb."""
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings

from theory import layer_densities, strategies
from theory.testing import assert_binomial, assert_rate, assert_rate_at_most, clopper_pearson


def _lower_tail(k, n, q):
    return sum(math.comb(n, i) * q**i * (1 - q) ** (n - i) for i in range(k + 1))


def test_assert_rate_matches_exact_lower_tail():
    # 40 trials at claimed q = 0.9: P(X <= 28) and P(X <= 29) by direct summation bracket alpha = 1e-3
    assert _lower_tail(28, 40, 0.9) < 1e-3 < _lower_tail(29, 40, 0.9)
    assert assert_rate(29, 40, 0.9, alpha=1e-3) == pytest.approx(_lower_tail(29, 40, 0.9), rel=1e-9)
    with pytest.raises(AssertionError) as info:
        assert_rate(28, 40, 0.9, alpha=1e-3, what="weak 3-4-2")
    text = str(info.value)
    assert text.startswith("weak 3-4-2: ") and "28/40" in text and "Clopper-Pearson" in text and "0.9" in text


def test_assert_rate_at_most_is_the_mirror_image():
    # failures = trials - successes, rate 1 - q
    assert assert_rate_at_most(11, 40, 0.1, alpha=1e-3) == pytest.approx(_lower_tail(29, 40, 0.9), rel=1e-9)
    with pytest.raises(AssertionError, match="above at_most=0.1"):
        assert_rate_at_most(12, 40, 0.1, alpha=1e-3)


def test_message_interval_is_the_one_sided_bound():
    # the upper end of the (1 - 2 alpha) interval is where assert_rate switches from failing to passing
    lo, hi = clopper_pearson(30, 40, 1 - 2e-3)
    assert 0 < lo < 30 / 40 < hi < 1
    assert _lower_tail(30, 40, hi) == pytest.approx(1e-3, rel=1e-6)
    assert_rate(30, 40, hi * (1 - 1e-9), alpha=1e-3)
    with pytest.raises(AssertionError):
        assert_rate(30, 40, hi * (1 + 1e-6), alpha=1e-3)


def test_assert_binomial_two_sided():
    assert_binomial(500, 1000, 0.5)
    with pytest.raises(AssertionError, match="inconsistent with rate=0.5"):
        assert_binomial(600, 1000, 0.5)
    with pytest.raises(AssertionError):
        assert_binomial(400, 1000, 0.5)


@pytest.mark.parametrize("call, fragment", [
    (lambda: assert_rate(5, 4, 0.5), "successes=5"),
    (lambda: assert_rate(1, 0, 0.5), "trials=0"),
    (lambda: assert_rate(1.5, 4, 0.5), "successes=1.5"),
    (lambda: assert_rate(1, 4, 1.5), "at_least=1.5"),
    (lambda: assert_rate_at_most(1, 4, -0.1), "at_most=-0.1"),
    (lambda: assert_binomial(1, 4, 0.5, alpha=0), "alpha=0"),
    (lambda: clopper_pearson(1, 4, confidence=1.0), "confidence=1.0"),
])
def test_bad_arguments_are_value_errors(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()


@settings(max_examples=40)
@given(strategies.shape_lists(max_layers=6), strategies.densities(min_density=1e-3))
def test_strategies_feed_layer_densities(shapes, density):
    assert all(len(s) in (2, 4) and min(s) >= 1 for s in shapes)
    assert 1e-3 <= density <= 1.0
    assert layer_densities(shapes, density, "balanced").global_density == pytest.approx(density, rel=1e-9)


@settings(max_examples=40)
@given(strategies.targets(strategies.widths(max_width=4, max_layers=3), scale=2.0), strategies.deltas(),
       strategies.epsilons())
def test_targets_shapes_and_ranges(target, delta, eps):
    weights, biases = target
    assert 1 <= len(weights) <= 3 and len(biases) == len(weights)
    for t, (w, b) in enumerate(zip(weights, biases)):
        assert w.dtype == np.float64 and w.shape[0] == b.shape[0]
        if t:
            assert w.shape[1] == weights[t - 1].shape[0]
        assert np.all(np.abs(w) <= 2.0) and np.all(np.abs(b) <= 2.0)
    assert 0 < delta < 1 and 0 < eps < 1


@settings(max_examples=20)
@given(strategies.targets(strategies.widths(max_width=4, max_layers=3)))
def test_targets_are_accepted_by_construct(target):
    from construct.targets import make_target, target_forward

    weights, biases = target
    x = np.linspace(-1, 1, 3 * weights[0].shape[1]).reshape(3, -1)
    h = x
    for t, (w, b) in enumerate(zip(weights, biases)):  # ReLU hidden layers, linear output (docs/math.md §1)
        h = h @ w.T + b
        h = np.maximum(h, 0) if t < len(weights) - 1 else h
    assert np.allclose(target_forward(make_target(weights, biases), x), h)


@pytest.mark.parametrize("bad", [
    lambda: strategies.densities(min_density=0.0),
    lambda: strategies.densities(max_density=1.5),
    lambda: strategies.deltas(max_delta=1.0),
    lambda: strategies.widths(min_width=3, max_width=2),
    lambda: strategies.targets(scale=0.0),
])
def test_strategy_bounds_are_checked(bad):
    with pytest.raises(ValueError):
        bad()


def test_profiles():
    assert strategies.register_profiles({"CI": "true"}) == "ci"
    assert strategies.register_profiles({}) == "dev"
    strategies.register_profiles()  # restore the session's profile


def test_import_theory_does_not_import_hypothesis_and_strategies_explain_a_missing_hypothesis():
    code = ("import sys; import theory, theory.testing; assert 'hypothesis' not in sys.modules; "
            "sys.modules['hypothesis'] = None\n"
            "try:\n    import theory.strategies\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "needs the 'hypothesis' package" in out.stdout and "pip install" in out.stdout
