"""Compiled (numba) SplitMix64 draws of :class:`construct.conv_source.CounterLayer`: the weight and the mask entry of
a source position are functions of its 64-bit counter i·n_in + u alone (docs/math.md §9, "Drawing the source").

SplitMix64 (Steele, Lea, Flood 2014): z = key + c·γ (mod 2^64), γ = 0x9E3779B97F4A7C15, then
z ← (z ⊕ z≫30)·0xBF58476D1CE4E5B9, z ← (z ⊕ z≫27)·0x94D049BB133111EB, z ← z ⊕ z≫31. Weight: the top 24 bits w give
2^−23·w − 1 ∈ [−1, 1) (float32, exact); float64 sources add (next 29 bits)·2^−29·2^−23. Mask: the top 53 bits give
u ∈ [0, 1) and the entry is kept iff u < p. The functions release the GIL (callers run chunks in threads) and are
cached on disk by numba (``cache=True``).
"""
from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["mask_from_counters", "weight32_from_counters", "weight64_from_counters"]

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11, _S40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11), np.uint64(40)
_LOW29 = np.uint64((1 << 29) - 1)


@njit(cache=True, nogil=True, inline="always")
def _mix(key, c):
    z = c * _GAMMA + key
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(cache=True, nogil=True)
def mask_from_counters(key, counters, density, out):
    """out[i] = (top 53 bits of SplitMix64(key, counters[i]))·2^−53 < density."""
    for i in range(counters.size):
        out[i] = np.float64(_mix(key, counters[i]) >> _S11) * 1.1102230246251565e-16 < density


@njit(cache=True, nogil=True)
def weight32_from_counters(key, counters, out):
    """out[i] = 2^−23·(top 24 bits of SplitMix64(key, counters[i])) − 1 (float32)."""
    for i in range(counters.size):
        out[i] = np.float32(np.float32(_mix(key, counters[i]) >> _S40) * np.float32(1.1920928955078125e-07)
                            - np.float32(1.0))


@njit(cache=True, nogil=True)
def weight64_from_counters(key, counters, out):
    """The float32 weight refined by the next 29 bits: + (bits 11..39)·2^−29·2^−23 (float64)."""
    for i in range(counters.size):
        z = _mix(key, counters[i])
        w = np.float32(np.float32(z >> _S40) * np.float32(1.1920928955078125e-07) - np.float32(1.0))
        out[i] = np.float64(w) + np.float64((z >> _S11) & _LOW29) * 1.862645149230957e-09 * 1.1920928955078125e-07


@njit(cache=True, nogil=True)
def first_kept(key_m, key_w, density, refine, rows, n_in, groups, counts, need, units_out, w_out):
    """For every row i = rows[r] and group g: scan groups[g, :counts[g]] in order, keep the first need[g] units u with
    mask entry (i, u) kept (u < density test as :func:`mask_from_counters`), write them to units_out[r, g, :] and
    their weights (as :func:`weight32_from_counters`, refined as :func:`weight64_from_counters` when ``refine``) to
    w_out[r, g, :]; unused slots keep their initial values (−1 / 0)."""
    for r in range(rows.size):
        base = np.uint64(rows[r]) * np.uint64(n_in)
        for g in range(groups.shape[0]):
            found = 0
            want = need[g]
            for c in range(counts[g]):
                if found >= want:
                    break
                u = groups[g, c]
                cnt = base + np.uint64(u)
                if density < 1.0:
                    if not (np.float64(_mix(key_m, cnt) >> _S11) * 1.1102230246251565e-16 < density):
                        continue
                z = _mix(key_w, cnt)
                w = np.float32(np.float32(z >> _S40) * np.float32(1.1920928955078125e-07) - np.float32(1.0))
                units_out[r, g, found] = u
                if refine:
                    w_out[r, g, found] = np.float64(w) + np.float64((z >> _S11) & _LOW29) * 1.862645149230957e-09 \
                        * 1.1920928955078125e-07
                else:
                    w_out[r, g, found] = np.float64(w)
                found += 1
