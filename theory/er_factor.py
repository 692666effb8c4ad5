"""The ER factor κ(p) = 1 / log(1/(1 − p)) = −1 / log1p(−p) (docs/math.md §1), following Gadhikar et al. 2023.

κ(p) is the number of candidate edges, in units of log(1/δ'), that an ER(p) mask needs so that at least one of
them is kept with probability ≥ 1 − δ' (docs/math.md §2). It satisfies (1 − p)/p ≤ κ(p) ≤ 1/p,
κ(p) = 1/p − 1/2 − p/12 + O(p²) as p → 0 and κ(1) = 0.
"""
from __future__ import annotations

import numbers

import numpy as np

from theory.validation import check_densities, check_density

__all__ = ["er_factor"]


def er_factor(density):
    """κ(p) = −1 / log1p(−p) for a density p ∈ (0, 1] (docs/math.md §1).

    Computed with ``log1p`` so that it stays exact for tiny densities (``er_factor(1e-17)`` ≈ 1e17, where
    the naive −1/log(1 − p) returns inf) down to 1e−300; κ(1) = 0; ``math.inf`` (no warning) for subnormal
    densities, where κ(p) ≈ 1/p exceeds the float range. ``density`` may be a number (a float is
    returned) or an array-like of densities (a float64 array of the same shape is returned).
    """
    if isinstance(density, numbers.Real) and not isinstance(density, bool):
        p = check_density(density, "density")
        if p == 1.0:
            return 0.0
        with np.errstate(over="ignore"):  # p below ~1e-308: κ(p) exceeds the float range and is math.inf
            return float(-1.0 / np.log1p(-p))
    try:
        arr = None if density is None or isinstance(density, (bool, str, bytes)) else np.asarray(density, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is None:
        raise ValueError(f"density={density!r} is not a number or array of numbers: allowed densities in (0, 1]")
    if arr.ndim == 0:
        return er_factor(float(arr))
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=float)
    arr = check_densities(arr, "density")
    with np.errstate(divide="ignore", over="ignore"):
        out = -1.0 / np.log1p(-arr)
    out[arr == 1.0] = 0.0
    return out
