"""Layer-wise density schemes (docs/math.md §7), following Gadhikar et al. 2023 and their released code.

Layers l = 1..L with N_l weights, N = Σ N_l, global density p. Each scheme returns per-layer densities
p_l ∈ (0, 1] with Σ p_l·N_l = p·N (exact up to float), except in compatibility mode, where balanced and ERK
clamp at 1 without redistributing (as the released code does) and the realized global density undershoots.
"""
from __future__ import annotations

import math
import numbers
import reprlib
from dataclasses import asdict, dataclass

import numpy as np
from scipy import special

from theory.validation import check_choice, check_density

__all__ = ["SCHEMES", "MAX_WEIGHTS", "LayerDensities", "layer_densities", "check_shapes"]

SCHEMES = ("uniform", "erk", "balanced", "pyramidal")
#: A model's weight count must stay below 2^63 (a numpy index; far beyond any real model).
MAX_WEIGHTS = 2**63
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxlong, _REPR.maxother = 3, 6, 40, 40


@dataclass(frozen=True)
class LayerDensities:
    """Result of :func:`layer_densities`.

    ``densities`` p_l per layer; ``numels`` N_l; ``kept`` p_l·N_l (expected kept weights of an ER(p_l) mask);
    ``dense`` whether p_l = 1; ``label_density`` the requested global density p; ``global_density`` the realized
    Σ p_l N_l / N (equal to p except for balanced/ERK with ``compat``).
    """

    scheme: str
    compat: bool
    label_density: float
    global_density: float
    total: int
    densities: tuple[float, ...]
    numels: tuple[int, ...]
    kept: tuple[float, ...]
    dense: tuple[bool, ...]

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def _short(value) -> str:
    """A bounded repr for messages (a hostile shapes file may be huge or deeply nested)."""
    try:
        return _REPR.repr(value)
    except (ValueError, RecursionError):  # e.g. an integer beyond Python's digit limit for str()
        return f"<{type(value).__name__}>"


def check_shapes(shapes, name: str = "shapes") -> tuple[tuple[int, ...], ...]:
    """A non-empty list of weight shapes, each a list of 2 to 5 positive integers ((out, in) for a linear layer,
    (out, in, kh, kw) for a 2-D convolution), with fewer than 2^63 weights in all; one-line ValueError otherwise."""
    if isinstance(shapes, (str, bytes, dict)) or shapes is None:
        raise ValueError(f"{name}={_short(shapes)} is not a list: allowed a non-empty list of weight shapes such as [[300, 784]]")
    try:
        items = list(shapes)
    except TypeError:
        raise ValueError(f"{name}={_short(shapes)} is not a list: allowed a non-empty list of weight shapes such as [[300, 784]]") from None
    if not items:
        raise ValueError(f"{name}=[] is empty: allowed a non-empty list of weight shapes such as [[300, 784]]")
    out = []
    total = 0
    for i, shape in enumerate(items):
        if isinstance(shape, (str, bytes, dict)) or not hasattr(shape, "__iter__"):
            raise ValueError(f"{name}[{i}]={_short(shape)} is not a shape: allowed a list of 2 to 5 positive integers")
        dims = list(shape)
        ok = 2 <= len(dims) <= 5 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= 1 for v in dims
        )
        if not ok:
            raise ValueError(f"{name}[{i}]={_short(dims)} is not a shape: allowed a list of 2 to 5 positive integers")
        total += math.prod(int(v) for v in dims)
        if total >= MAX_WEIGHTS:
            raise ValueError(f"{name}[{i}]={_short(dims)} brings the weight count to about 2^{total.bit_length() - 1}: "
                             "allowed fewer than 2^63 weights in all")
        out.append(tuple(int(v) for v in dims))
    return tuple(out)


def _water_fill(weights: np.ndarray, numels: np.ndarray, budget: float) -> np.ndarray:
    """p_l = min(1, c·weights_l / numels_l) with c chosen so that Σ p_l N_l = budget, layers that hit 1 fixed
    dense and c re-solved over the rest until consistent (ERK: weights = raw_l·N_l; balanced: weights = 1)."""
    L = len(numels)
    dense = np.zeros(L, dtype=bool)
    while True:
        free = ~dense
        remaining = budget - numels[dense].sum()
        c = remaining / weights[free].sum()
        dens = np.where(dense, 1.0, c * weights / numels)
        newly = free & (dens >= 1.0)
        if not newly.any():
            return np.minimum(dens, 1.0)
        dense |= newly
        if dense.all():  # only when budget == N
            return np.ones(L)


def _pyramidal(numels: np.ndarray, density: float) -> np.ndarray:
    """p_l = r^l (l = 1..L), r ∈ (0, 1] the root of Σ_l N_l r^l = p·N, by brentq in s = log r on [log p, 0]
    (Σ N_l r^l ≤ N·r bounds the root below by p)."""
    if density == 1.0:
        return np.ones(len(numels))
    ls = np.arange(1, len(numels) + 1, dtype=float)
    log_n = np.log(numels)
    target = math.log(density) + math.log(numels.sum())

    def f(s: float) -> float:
        return float(special.logsumexp(log_n + ls * s)) - target

    s_lo = math.log(density)
    if f(0.0) <= 0.0:  # density within rounding of 1
        s = 0.0
    elif f(s_lo) >= 0.0:  # only when all mass sits in layer 1 (L = 1), up to rounding
        s = s_lo
    else:
        from scipy import optimize  # imported here: scipy.optimize is slow to import

        s = optimize.brentq(f, s_lo, 0.0, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)
    out = np.exp(ls * s)
    if not (out > 0).all():
        raise ValueError(f"density={density!r} is too small for the pyramidal scheme over {len(numels)} layers: r^L underflows to 0")
    return out


def layer_densities(shapes, density, scheme, compat=False) -> LayerDensities:
    """Per-layer densities p_l for the weight ``shapes`` at global density p = ``density`` (docs/math.md §7).

    Schemes: "uniform" p_l = p; "erk" p_l = min(1, c·raw_l), raw_l = (sum of the layer's dims)/N_l;
    "balanced" every layer keeps the same X weights, layers with N_l ≤ X dense (water-filling);
    "pyramidal" p_l = r^l with Σ N_l r^l = p·N. Exact budget Σ p_l N_l = p·N unless ``compat`` is True, where
    balanced uses p_l = min(1, p·N/(L·N_l)) and ERK p_l = min(1, p·N·raw_l/Σ raw_k N_k) without redistributing
    (the released code's behaviour; pyramidal and uniform are the same in both modes).
    """
    dims = check_shapes(shapes)
    p = check_density(density, "density")
    scheme = check_choice(scheme, "scheme", SCHEMES)
    if not isinstance(compat, bool):
        raise ValueError(f"compat={compat!r} is not a bool: allowed True or False")
    numels = np.array([math.prod(s) for s in dims], dtype=float)
    N = int(sum(math.prod(s) for s in dims))
    budget = p * float(N)
    L = len(dims)
    if scheme == "uniform":
        dens = np.full(L, p)
    elif scheme == "pyramidal":
        dens = _pyramidal(numels, p)
    else:
        weights = np.array([float(sum(s)) for s in dims]) if scheme == "erk" else np.ones(L)
        if compat:
            dens = np.minimum(1.0, budget * weights / weights.sum() / numels)
        else:
            dens = _water_fill(weights, numels, budget)
    dens = np.clip(dens, np.finfo(float).tiny, 1.0)
    kept = dens * numels
    return LayerDensities(
        scheme=scheme,
        compat=compat,
        label_density=p,
        global_density=float(kept.sum() / N),
        total=N,
        densities=tuple(float(v) for v in dens),
        numels=tuple(int(math.prod(s)) for s in dims),
        kept=tuple(float(v) for v in kept),
        dense=tuple(bool(v >= 1.0) for v in dens),
    )
