"""Argument checks shared by the three packages.

Every check raises ``ValueError`` with a one-line message that names the parameter, the value received and
what is allowed, e.g. ``density=1.5 is out of range: allowed (0, 1]``. The command lines turn these into a
one-line error and exit status 2 (see :mod:`theory.cli`).

Vocabulary (docs/math.md §1): *density* p is the fraction of weights kept, *sparsity* is 1 − p.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Sequence

import numpy as np


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_density(value, name: str = "density") -> float:
    """Return ``value`` as a float if it is a density in (0, 1]; otherwise raise ``ValueError``."""
    if not _is_real(value) or not math.isfinite(float(value)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name}={value!r} is out of range: allowed (0, 1] (density = fraction of weights kept)")
    return float(value)


def check_densities(values, name: str = "densities") -> np.ndarray:
    """Check an array-like of densities, every entry in (0, 1]; returns a float64 array."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError(f"{name}=[] is empty: allowed a non-empty list of densities in (0, 1]")
    bad = ~np.isfinite(arr) | (arr <= 0.0) | (arr > 1.0)
    if bad.any():
        first = float(arr[bad].flat[0])
        raise ValueError(f"{name} contains {first!r}: allowed densities in (0, 1] only")
    return arr


def check_open_unit(value, name: str) -> float:
    """Return ``value`` as a float if it is in the open interval (0, 1) (used for ε and δ)."""
    if not _is_real(value) or not math.isfinite(float(value)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name}={value!r} is out of range: allowed (0, 1)")
    return float(value)


def check_positive_real(value, name: str) -> float:
    """Return ``value`` as a float if it is finite and > 0."""
    if not _is_real(value) or not math.isfinite(float(value)) or float(value) <= 0.0:
        raise ValueError(f"{name}={value!r} is out of range: allowed a finite number > 0")
    return float(value)


def check_positive_int(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer ≥ ``minimum`` (floats like 3.0 are accepted)."""
    if isinstance(value, bool) or not _is_real(value) or not float(value).is_integer():
        raise ValueError(f"{name}={value!r} is not an integer: allowed integers >= {minimum}")
    if int(value) < minimum:
        raise ValueError(f"{name}={value!r} is out of range: allowed integers >= {minimum}")
    return int(value)


def check_widths(values: Iterable, name: str = "widths", minimum_length: int = 2) -> tuple[int, ...]:
    """Check a list of layer widths (n_0, …, n_L): positive integers, at least ``minimum_length`` of them."""
    try:
        items = list(values)
    except TypeError:
        raise ValueError(f"{name}={values!r} is not a list: allowed a list of positive integers") from None
    if len(items) < minimum_length:
        raise ValueError(f"{name}={items!r} has {len(items)} entries: allowed at least {minimum_length} positive integers")
    out = tuple(check_positive_int(v, f"{name}[{i}]") for i, v in enumerate(items))
    for i, v in enumerate(out):
        if v >= 2**63:
            raise ValueError(f"{name}[{i}] has about 2^{v.bit_length() - 1} units: allowed widths below 2^63")
    return out


def check_choice(value, name: str, allowed: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``allowed`` (exact string match)."""
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is unknown: allowed {', '.join(map(repr, allowed))}")
    return value


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """Parse ``"784,300,10"`` into a tuple of positive ints; one-line ValueError otherwise."""
    try:
        parts = [p.strip() for p in str(text).split(",")]
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name}={text!r} is malformed: allowed comma-separated positive integers such as 784,300,10") from None
    return check_widths(values, name, minimum_length=1)


#: Every width, group size and count of a construction must stay below this many units (a signed 64-bit integer:
#: numpy indices and array sizes cannot go beyond it).
MAX_UNITS = 2**63


class WidthOverflowError(ValueError):
    """A width, group size or count would need 2^63 units or more (or its formula overflowed the float range):
    the construction is refused, not attempted. A ``ValueError``, so the command lines print one line, exit 2."""


def check_unit_count(value, what: str) -> int:
    """⌈value⌉ as an int when 0 ≤ value < 2^63 (:data:`MAX_UNITS`); otherwise raise :class:`WidthOverflowError`
    naming ``what`` ("lifting group g = ⌈κ(p_1·p_2)·log(…)⌉") and the reason. ``value`` may be an int, a float
    (inf and nan included) or anything ``float()`` accepts."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        count = int(value)
    else:
        try:
            real = float(value)
        except (TypeError, ValueError, OverflowError):
            raise WidthOverflowError(f"{what} is not a number ({value!r}): refused") from None
        if math.isnan(real):
            raise WidthOverflowError(f"{what} is undefined (nan; a float overflow in its formula): refused")
        if real >= float(MAX_UNITS):
            size = "its formula overflows the float range" if math.isinf(real) else f"about {real:.3g}"
            raise WidthOverflowError(f"{what} needs more than 2^63 units ({size}): refused; "
                                     "use a larger density, epsilon or delta, a smaller target or a smaller width multiplier")
        count = math.ceil(real)
    if count >= MAX_UNITS:
        raise WidthOverflowError(f"{what} needs more than 2^63 units (about 2^{count.bit_length() - 1}): refused; "
                                 "use a larger density, epsilon or delta, a smaller target or a smaller width multiplier")
    if count < 0:
        raise WidthOverflowError(f"{what}={count} is negative: refused")
    return count
