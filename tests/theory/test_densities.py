"""Layer-wise density schemes (docs/math.md §7): budgets, scheme invariants, the released code's ResNet-18 numbers."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from theory import strategies
from theory.densities import SCHEMES, layer_densities


def resnet18_cifar_shapes():
    """21 masked layers: 3×3 stem 3→64; layer1: 4 convs 64→64; layers 2–4: first conv from the previous width,
    3 more, 1×1 shortcut; classifier as a 1×1 conv 512→10."""
    shapes = [[64, 3, 3, 3]] + [[64, 64, 3, 3]] * 4
    for cin, c in [(64, 128), (128, 256), (256, 512)]:
        shapes += [[c, cin, 3, 3]] + [[c, c, 3, 3]] * 3 + [[c, cin, 1, 1]]
    return shapes + [[10, 512, 1, 1]]


def test_resnet18_total_count_by_hand():
    shapes = resnet18_cifar_shapes()
    assert len(shapes) == 21
    # by hand: stem 1728; layer1 4·36864; layer2 73728 + 3·147456 + 8192; layer3 294912 + 3·589824 + 32768;
    # layer4 1179648 + 3·2359296 + 131072; fc 5120
    by_hand = 1728 + 4 * 36864 + 73728 + 3 * 147456 + 8192 + 294912 + 3 * 589824 + 32768 + 1179648 + 3 * 2359296 + 131072 + 5120
    assert by_hand == 11_164_352
    for scheme in SCHEMES:
        assert layer_densities(shapes, 0.5, scheme).total == by_hand


@pytest.mark.parametrize("label,balanced,erk", [(0.5, 0.266, 0.389), (0.1, 0.079, 0.092)])
def test_resnet18_compat_reproduces_released_code(label, balanced, erk):
    shapes = resnet18_cifar_shapes()
    assert layer_densities(shapes, label, "balanced", compat=True).global_density == pytest.approx(balanced, abs=5e-4)
    assert layer_densities(shapes, label, "erk", compat=True).global_density == pytest.approx(erk, abs=5e-4)
    for scheme in SCHEMES:  # exact mode hits the label; pyramidal and uniform are exact in both modes
        assert layer_densities(shapes, label, scheme).global_density == pytest.approx(label, rel=1e-12)
    for scheme in ("pyramidal", "uniform"):
        assert layer_densities(shapes, label, scheme, compat=True).global_density == pytest.approx(label, rel=1e-12)


shapes_st = strategies.shape_lists(min_layers=1, max_layers=12)
density_st = strategies.densities(min_density=1e-4)


@settings(max_examples=200)
@given(shapes_st, density_st, st.sampled_from(SCHEMES))
def test_exact_budget_and_range(shapes, p, scheme):
    r = layer_densities(shapes, p, scheme)
    numels = np.array([math.prod(s) for s in shapes], dtype=float)
    dens = np.array(r.densities)
    assert (dens > 0).all() and (dens <= 1).all()
    assert float(dens @ numels) == pytest.approx(p * numels.sum(), rel=1e-9)
    assert r.global_density == pytest.approx(p, rel=1e-9)
    assert list(r.numels) == numels.astype(int).tolist()
    assert list(r.dense) == [bool(x == 1.0) for x in dens]


@settings(max_examples=150)
@given(shapes_st, density_st)
def test_balanced_equal_kept_counts_and_water_filling(shapes, p):
    r = layer_densities(shapes, p, "balanced")
    kept = np.array(r.kept)
    numels = np.array(r.numels, dtype=float)
    free = ~np.array(r.dense)
    if free.any():
        X = kept[free][0]
        assert np.allclose(kept[free], X, rtol=1e-9)
        assert (numels[~free] <= X * (1 + 1e-9)).all()  # dense layers are the small ones
    # independent solution: X = pN / L when no layer is dense; else by sorting N_l ascending
    order = np.sort(numels)
    budget = p * numels.sum()
    solutions = []
    for k in range(len(order)):  # k smallest layers dense, the rest keep X each
        X = (budget - order[:k].sum()) / (len(order) - k)
        if (k == 0 or order[k - 1] <= X * (1 + 1e-12)) and order[k] >= X * (1 - 1e-12):
            solutions.append(X)
    assert solutions, "water-filling level not found"
    assert np.allclose(np.minimum(numels, solutions[0]), kept, rtol=1e-9)


@settings(max_examples=150)
@given(shapes_st, density_st)
def test_erk_proportional_to_raw_scores_on_unclamped_layers(shapes, p):
    r = layer_densities(shapes, p, "erk")
    raw = np.array([sum(s) / math.prod(s) for s in shapes])
    dens = np.array(r.densities)
    free = ~np.array(r.dense)
    if free.any():
        c = dens[free] / raw[free]
        assert np.allclose(c, c[0], rtol=1e-9)
        assert (c[0] * raw[~free] >= 1 - 1e-9).all()  # clamped layers would exceed 1


@settings(max_examples=150)
@given(shapes_st, density_st)
def test_pyramidal_is_geometric(shapes, p):
    dens = np.array(layer_densities(shapes, p, "pyramidal").densities)
    r = dens[0]
    assert 0 < r <= 1
    assert np.allclose(dens, r ** np.arange(1, len(shapes) + 1), rtol=1e-9)


@settings(max_examples=100)
@given(shapes_st, density_st, st.sampled_from(["balanced", "erk"]))
def test_compat_undershoots_and_agrees_without_clamping(shapes, p, scheme):
    exact = layer_densities(shapes, p, scheme)
    compat = layer_densities(shapes, p, scheme, compat=True)
    assert compat.global_density <= p * (1 + 1e-9)
    assert all(0 < x <= 1 for x in compat.densities)
    if not any(exact.dense):
        assert np.allclose(compat.densities, exact.densities, rtol=1e-9)


def test_uniform_is_the_density():
    assert layer_densities([[3, 4], [5, 6, 3, 3]], 0.3, "uniform").densities == (0.3, 0.3)


@pytest.mark.parametrize(
    "args",
    [
        ([], 0.1, "erk"),
        ("[[3, 4]]", 0.1, "erk"),
        ([[3]], 0.1, "erk"),
        ([[3, 0]], 0.1, "erk"),
        ([[3, 2.5]], 0.1, "erk"),
        ([[3, 4], "ab"], 0.1, "erk"),
        ([[3, 4]], 0.0, "erk"),
        ([[3, 4]], 1.5, "balanced"),
        ([[3, 4]], 0.1, "random"),
    ],
)
def test_bad_input(args):
    with pytest.raises(ValueError) as info:
        layer_densities(*args)
    msg = str(info.value)
    assert "\n" not in msg and "allowed" in msg


def test_bad_compat_flag():
    with pytest.raises(ValueError):
        layer_densities([[3, 4]], 0.1, "erk", compat="True")
