"""Hypothesis strategies for the objects of docs/math.md, for this project's tests and for users' property tests.

Needs the ``hypothesis`` package (the ``test`` extra: ``pip install -e ".[test]"``); ``import theory`` never imports
this module, so hypothesis is not a dependency of the package itself.

Strategies (each a function returning a ``hypothesis`` strategy; keyword arguments bound the draws):

- :func:`densities` — a density p ∈ (0, 1] (fraction of weights kept; docs/math.md §1).
- :func:`deltas` — a failure budget δ ∈ (0, 1).
- :func:`epsilons` — an error tolerance ε ∈ (0, 1).
- :func:`widths` — layer widths (n_0, …, n_L) of an MLP target (docs/math.md §1).
- :func:`linear_shapes`, :func:`conv_shapes`, :func:`layer_shapes`, :func:`shape_lists` — weight shapes
  ``[n_out, n_in]`` / ``[c_out, c_in, k_h, k_w]`` as the layer-wise density schemes take them (docs/math.md §7).
- :func:`targets` — a ReLU MLP target as ``(weights, biases)`` lists of float64 arrays, W_t of shape (n_t, n_{t−1}),
  accepted by ``construct.make_target(weights, biases)`` (docs/math.md §1).

:func:`register_profiles` registers the project's two Hypothesis profiles ("ci": derandomized, no deadline — the
same examples on every run; "dev": no deadline) and loads "ci" when the environment variable ``CI`` is true.

Example::

    from hypothesis import given
    from theory import layer_densities
    from theory.strategies import densities, shape_lists

    @given(shape_lists(), densities(min_density=1e-4))
    def test_budget(shapes, density):
        assert abs(layer_densities(shapes, density, "balanced").global_density - density) <= 1e-9 * density
"""
from __future__ import annotations

import os

try:
    from hypothesis import settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as error:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError("theory.strategies needs the 'hypothesis' package, which is only in the test extra: "
                      "pip install hypothesis  (or pip install -e \".[test]\")") from error

import numpy as np

__all__ = ["densities", "deltas", "epsilons", "widths", "linear_shapes", "conv_shapes", "layer_shapes",
           "shape_lists", "targets", "register_profiles"]


def _positive_range(name: str, low: float, high: float, top: float, top_included: bool) -> None:
    if not (0.0 < low <= high) or high > top or (high == top and not top_included):
        bound = "]" if top_included else ")"
        raise ValueError(f"{name}=({low!r}, {high!r}): expected 0 < min <= max within (0, {top:g}{bound}")


def densities(min_density: float = 1e-6, max_density: float = 1.0) -> st.SearchStrategy[float]:
    """Densities p ∈ [min_density, max_density] ⊂ (0, 1] (fraction of weights kept)."""
    _positive_range("density range", min_density, max_density, 1.0, True)
    return st.floats(min_value=min_density, max_value=max_density)


def deltas(min_delta: float = 1e-9, max_delta: float = 0.99) -> st.SearchStrategy[float]:
    """Failure budgets δ ∈ [min_delta, max_delta] ⊂ (0, 1)."""
    _positive_range("delta range", min_delta, max_delta, 1.0, False)
    return st.floats(min_value=min_delta, max_value=max_delta)


def epsilons(min_eps: float = 1e-6, max_eps: float = 0.5) -> st.SearchStrategy[float]:
    """Error tolerances ε ∈ [min_eps, max_eps] ⊂ (0, 1)."""
    _positive_range("eps range", min_eps, max_eps, 1.0, False)
    return st.floats(min_value=min_eps, max_value=max_eps)


def widths(min_width: int = 1, max_width: int = 6, min_layers: int = 1, max_layers: int = 3
           ) -> st.SearchStrategy[list[int]]:
    """Widths [n_0, …, n_L] of an MLP with L ∈ [min_layers, max_layers] weight layers, every n_t in
    [min_width, max_width]."""
    if not (1 <= min_width <= max_width) or not (1 <= min_layers <= max_layers):
        raise ValueError(f"widths(min_width={min_width}, max_width={max_width}, min_layers={min_layers}, "
                         f"max_layers={max_layers}): expected 1 <= min <= max for both")
    return st.lists(st.integers(min_width, max_width), min_size=min_layers + 1, max_size=max_layers + 1)


def linear_shapes(max_features: int = 1000) -> st.SearchStrategy[list[int]]:
    """Linear weight shapes [n_out, n_in], each in [1, max_features]."""
    return st.tuples(st.integers(1, max_features), st.integers(1, max_features)).map(list)


def conv_shapes(max_channels: int = 256, max_kernel: int = 7) -> st.SearchStrategy[list[int]]:
    """Convolution weight shapes [c_out, c_in, k_h, k_w]."""
    return st.tuples(st.integers(1, max_channels), st.integers(1, max_channels), st.integers(1, max_kernel),
                     st.integers(1, max_kernel)).map(list)


def layer_shapes(max_features: int = 1000, max_channels: int = 256, max_kernel: int = 7
                 ) -> st.SearchStrategy[list[int]]:
    """A linear or a convolution weight shape."""
    return st.one_of(linear_shapes(max_features), conv_shapes(max_channels, max_kernel))


def shape_lists(min_layers: int = 1, max_layers: int = 12, **shape_bounds) -> st.SearchStrategy[list[list[int]]]:
    """Lists of weight shapes, the input of ``theory.layer_densities`` (docs/math.md §7); ``shape_bounds`` go to
    :func:`layer_shapes`."""
    return st.lists(layer_shapes(**shape_bounds), min_size=min_layers, max_size=max_layers)


@st.composite
def _targets(draw, widths_strategy, scale: float, sparse: bool, biases: bool):
    sizes = draw(widths_strategy)
    values = st.floats(-scale, scale, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    weights, bias_list = [], []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        w = draw(hnp.arrays(np.float64, (n_out, n_in), elements=values))
        if sparse:
            w = np.where(draw(hnp.arrays(np.bool_, (n_out, n_in))), w, 0.0)
        weights.append(w)
        bias_list.append(draw(hnp.arrays(np.float64, (n_out,), elements=values)) if biases else np.zeros(n_out))
    return weights, bias_list


def targets(widths_strategy: st.SearchStrategy[list[int]] | None = None, *, scale: float = 1.0, sparse: bool = True,
            biases: bool = True) -> st.SearchStrategy[tuple[list[np.ndarray], list[np.ndarray]]]:
    """ReLU MLP targets (docs/math.md §1) as ``(weights, biases)``: weights W_t of shape (n_t, n_{t−1}) and biases b_t
    of shape (n_t,), float64 entries in [−scale, scale]; ``sparse=True`` also zeroes an arbitrary subset of
    weights (so m_t < n_t·n_{t−1} is exercised); ``biases=False`` gives zero biases. Widths come from
    ``widths_strategy`` (default :func:`widths`). Use with ``construct.make_target(weights, biases)``."""
    if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale!r}: expected a positive finite number")
    return _targets(widths() if widths_strategy is None else widths_strategy, float(scale), bool(sparse),
                    bool(biases))


def register_profiles(environ=None) -> str:
    """Register the project's Hypothesis profiles and load one: "ci" (derandomized, no deadline, print the
    reproduction blob) when ``CI`` is 1/true/yes in ``environ`` (default ``os.environ``), else "dev" (no deadline).
    Returns the loaded profile's name. Call it from a ``conftest.py``."""
    env = os.environ if environ is None else environ
    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    settings.register_profile("dev", deadline=None)
    name = "ci" if env.get("CI", "").lower() in {"1", "true", "yes"} else "dev"
    settings.load_profile(name)
    return name
