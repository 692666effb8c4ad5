"""Exact batched subset sum with masked candidates (docs/math.md §5 and §6 "Subset-sum solving").

Following Gadhikar et al. 2023 and the constructions of Pensia et al. (2020) / Burkholz (2022), every weight of a
strong ticket is a *subset-sum instance*: given candidates c_1..c_n (source weights, or products of two source
weights), of which only the ER-kept ones are *available*, and a target z (a target weight), choose a subset S of the
available candidates with |Σ_{i∈S} c_i − z| ≤ ε.

:func:`solve_subset_sums` solves many such instances at once, exactly, by meet-in-the-middle on a growing prefix of
each row's available candidates (see its docstring for the precise guarantee). :func:`best_subset_bruteforce` and
:func:`best_subset_milp` are two independent oracles used by the tests and the benchmark
(:mod:`construct.bench_solver`). :func:`smallest_sufficient_prefix` serves the N_SS calibration
(``scripts/calibrate_nss.py``).

The solver has two backends with the same guarantee: ``"numba"`` (the default, a compiled per-row kernel in
:mod:`construct.mitm_kernel`) and ``"numpy"`` (the batched reference implementation in this module).
:func:`best_prefix_subsets` and :func:`smallest_sufficient_prefix` are numpy. scipy is used for the MILP oracle
only; no global random state is used anywhere in this module.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from construct.cpus import available_cpus
from theory.subset_sum import SOLVER_MAX_CANDIDATES

#: Status codes of :class:`SubsetSumSolution.status`.
STATUS_SOLVED = 0  #: error ≤ ε
STATUS_INFEASIBLE = 1  #: proven: the exact best subset over *all* available candidates has error > ε (returned)
STATUS_UNRESOLVED = 2  #: error > ε on a prefix of ``max_prefix`` candidates; more were available but not searched

STATUS_NAMES = ("solved", "infeasible", "unresolved")

DEFAULT_MARGIN = 2  #: initial prefix m_0 = ⌈log2(1/ε)⌉ + DEFAULT_MARGIN (+2 measured 1.5–2x faster than +6)
DEFAULT_GROWTH = 2  #: prefix growth per round for the rows still above ε (2 measured faster than 4)
DEFAULT_MAX_PREFIX = SOLVER_MAX_CANDIDATES  #: largest prefix searched exactly (40: 2 · 2^20 half-sums per row); owned by theory
#: largest Σ_i |c_i| + |z| of a row: every partial sum, query z − a and gap between two of them stays finite below it
MAX_MAGNITUDE = float(np.finfo(np.float64).max) / 4
DEFAULT_MAX_BYTES = 1 << 28  #: working-set budget per batch of rows (peak memory stays well below 1 GB)
BRUTEFORCE_MAX_N = 14
BACKENDS = ("auto", "numba", "numpy")  #: allowed ``backend`` values of :func:`solve_subset_sums_detailed`
STOPS = ("first", "best")  #: allowed ``stop`` values: any subset within ε / the best subset of the searched prefix


@dataclass(frozen=True)
class SubsetSumSolution:
    """Result of :func:`solve_subset_sums_detailed` for B instances with n candidate columns.

    mask (B, n) bool ⊆ available; error (B,) = |Σ_i c_i·mask_i − z| recomputed from the chosen candidates;
    status (B,) int8 (STATUS_SOLVED / STATUS_INFEASIBLE / STATUS_UNRESOLVED); prefix_length (B,) number of
    available candidates (in column order) the final exact search used.
    """

    mask: np.ndarray
    error: np.ndarray
    status: np.ndarray
    prefix_length: np.ndarray

    @property
    def solved(self) -> np.ndarray:
        return self.status == STATUS_SOLVED

    def counts(self) -> dict:
        return {name: int(np.sum(self.status == code)) for code, name in enumerate(STATUS_NAMES)}

    def to_dict(self) -> dict:
        return {
            "mask": self.mask,
            "error": self.error,
            "status": [STATUS_NAMES[s] for s in self.status.tolist()],
            "prefix_length": self.prefix_length,
            "counts": self.counts(),
        }


# ----------------------------------------------------------------------------------------------------------------
# input checks


def _as_candidates(candidates) -> np.ndarray:
    arr = np.asarray(candidates, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"candidates has shape {arr.shape}: allowed a 2-D array (instances, candidates)")
    if not np.all(np.isfinite(arr)):
        raise ValueError("candidates contains a non-finite value: allowed finite real numbers")
    return arr


def _check_magnitude(cand: np.ndarray, targets: np.ndarray) -> None:
    """Refuse rows whose subset sums could overflow: Σ_i |c_i| + max |z| must be ≤ MAX_MAGNITUDE (≈ 4.5e307), so
    that every partial sum, every query z − a and every difference of two of them is finite (near the float limit
    the running sums would overflow to ±inf and a feasible instance would be reported infeasible)."""
    if cand.size == 0:
        return
    zrow = np.abs(targets).reshape(cand.shape[0], -1).max(axis=1, initial=0.0)
    if float(np.max(np.abs(cand))) * cand.shape[1] + float(zrow.max(initial=0.0)) <= MAX_MAGNITUDE:
        return  # fast path: no row can come close
    s = 2.0 ** -64  # rows summed after an exact scaling by a power of two, so that the check cannot overflow
    row = np.sum(np.abs(cand) * s, axis=1) + zrow * s
    bad = np.flatnonzero(~(row <= MAX_MAGNITUDE * s))
    if bad.size:
        r = int(bad[0])
        with np.errstate(over="ignore"):
            total = float(row[r] / s)
        raise ValueError(f"candidates: row {r} has sum of |candidates| plus |target| = {total:.3g} > "
                         f"{MAX_MAGNITUDE:.3g}: allowed magnitudes whose subset sums cannot overflow (rescale the "
                         "candidates, targets and eps by a power of two)")


def _as_rows(values, rows: int, name: str, positive: bool) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(rows, float(arr))
    if arr.shape != (rows,):
        raise ValueError(f"{name} has shape {np.shape(values)}: allowed a scalar or shape ({rows},)")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains a non-finite value: allowed finite real numbers")
    if positive and np.any(arr <= 0):
        bad = arr[arr <= 0][0]
        raise ValueError(f"{name} contains {bad!r}: allowed tolerances > 0")
    return arr


def _as_available(available, shape) -> np.ndarray:
    if available is None:
        return np.ones(shape, dtype=bool)
    arr = np.asarray(available)
    if arr.shape != shape:
        raise ValueError(f"available has shape {arr.shape}: allowed None or shape {shape} (bool)")
    if arr.dtype != np.bool_:
        if not np.all((arr == 0) | (arr == 1)):
            raise ValueError("available contains a value other than 0/1: allowed a boolean mask")
        arr = arr.astype(bool)
    return arr


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < minimum:
        raise ValueError(f"{name}={value!r} is out of range: allowed integers >= {minimum}")
    return int(value)


def initial_prefix_length(eps: float, margin: int = DEFAULT_MARGIN) -> int:
    """m_0(ε) = ⌈log2(1/ε)⌉ + margin (at least ``margin``): the first prefix searched (docs/math.md §6)."""
    eps = float(eps)
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps={eps!r} is out of range: allowed a finite tolerance > 0")
    return max(0, math.ceil(math.log2(1.0 / eps))) + int(margin)


# ----------------------------------------------------------------------------------------------------------------
# the meet-in-the-middle kernel


@functools.lru_cache(maxsize=64)
def _bits(h: int) -> np.ndarray:
    """(2^h, h) 0/1 matrix: row s is the binary expansion of subset code s (bit t ↔ element t)."""
    codes = np.arange(1 << h, dtype=np.int64)
    out = ((codes[:, None] >> np.arange(h, dtype=np.int64)) & 1).astype(np.float64)
    out.setflags(write=False)
    return out


def _bytes_per_row(m: int, k: int) -> int:
    n1 = 1 << (m // 2)
    n2 = 1 << (m - m // 2)
    return 8 * ((n1 + n2) * (6 * k + 4)) + 64 * k


def _half_sums(columns: np.ndarray) -> np.ndarray:
    """(R, 2^h) subset sums of the h columns: entry s is Σ_t bit_t(s)·columns[:, t] (built by doubling; equals
    ``columns @ _bits(h).T``)."""
    rows, h = columns.shape
    out = np.empty((rows, 1 << h), dtype=np.float64)
    out[:, 0] = 0.0
    for t in range(h):
        w = 1 << t
        np.add(out[:, :w], columns[:, t:t + 1], out=out[:, w:2 * w])
    return out


def _mitm(block: np.ndarray, targets: np.ndarray):
    """Exact best subsets of every row of ``block`` (R, m) for each of K targets per row (``targets`` (R, K)).

    Half-sums of the two halves are enumerated (subset code s ↔ bits of s) and sorted per row; for each target z
    the sorted second half and the sorted queries z − (first half) are merged (a stable sort of two sorted runs,
    i.e. a linear merge), the runs told apart by the last mantissa bit (moves values by ≤ 1 ulp); the closest
    cross pair is adjacent in the merged order. Returns (error, code1, code2), each (R, K): ``code1``/``code2``
    are the subset codes of the two halves, ``error`` the |a + b − z| of that pair. Optimal up to floating-point
    rounding of the half-sums (a few ulps of the largest |half-sum|).
    """
    rows, m = block.shape
    k = targets.shape[1]
    h1 = m // 2
    first = _half_sums(block[:, :h1])  # (R, N1)
    second = _half_sums(block[:, h1:])  # (R, N2)
    n1 = first.shape[1]
    n2 = second.shape[1]
    merged = np.empty((rows, k, n1 + n2), dtype=np.float64)
    merged[:, :, :n2] = np.sort(second, axis=1)[:, None, :]
    # ascending queries z − a (first half in descending order)
    np.subtract(targets[:, :, None], np.sort(first, axis=1)[:, None, ::-1], out=merged[:, :, n2:])
    as_int = merged.view(np.int64)
    as_int[:, :, :n2] &= ~np.int64(1)  # tag 0: second-half sums
    as_int[:, :, n2:] |= np.int64(1)  # tag 1: queries
    merged.sort(axis=2, kind="stable")  # two sorted runs: timsort merges them in linear time
    kind = as_int & 1
    gaps = np.diff(merged, axis=2)
    np.putmask(gaps, kind[:, :, 1:] == kind[:, :, :-1], np.inf)
    del kind
    pos = np.argmin(gaps, axis=2)[:, :, None]  # (R, K, 1)
    del gaps
    left = np.take_along_axis(merged, pos, axis=2)[:, :, 0]
    right = np.take_along_axis(merged, pos + 1, axis=2)[:, :, 0]
    left_is_second = (left.view(np.int64) & 1) == 0
    del merged, as_int
    b_val = np.where(left_is_second, left, right)
    a_val = targets - np.where(left_is_second, right, left)
    # recover the subset codes from the unsorted half-sums (nearest value; the tags moved values by ≤ 1 ulp)
    code2 = np.argmin(np.abs(second[:, None, :] - b_val[:, :, None]), axis=2)
    code1 = np.argmin(np.abs(first[:, None, :] - a_val[:, :, None]), axis=2)
    a = np.take_along_axis(first, code1, axis=1)
    b = np.take_along_axis(second, code2, axis=1)
    error = np.abs(a + b - targets)
    return error, code1, code2


def _masked_error(cand: np.ndarray, mask: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """|Σ_i c_i·mask_i − z| per row, summed over the chosen candidates in column order."""
    return np.abs(np.where(mask, cand, 0.0).sum(axis=1) - targets)


def _codes_to_selection(code1: np.ndarray, code2: np.ndarray, m: int) -> np.ndarray:
    """(R, m) bool selection of prefix positions from the half codes (R,)."""
    h1 = m // 2
    h2 = m - h1
    return np.concatenate([_bits(h1)[code1], _bits(h2)[code2]], axis=1).astype(bool)


def _chunks(rows: int, m: int, k: int, max_bytes: int):
    per = max(1, int(max_bytes // _bytes_per_row(m, k)))
    for start in range(0, rows, per):
        yield slice(start, min(rows, start + per))


def best_prefix_subsets(candidates, targets, max_bytes: int = DEFAULT_MAX_BYTES):
    """Exact best subset of *all* columns of ``candidates`` (R, m) for every target of ``targets`` (R, K).

    Returns (error (R, K), selection (R, K, m) bool). Meet-in-the-middle; m ≤ 44 is practical. This is the
    kernel of :func:`solve_subset_sums` exposed for callers that need several targets per candidate row.
    """
    cand = _as_candidates(candidates)
    tg = np.asarray(targets, dtype=np.float64)
    if tg.ndim != 2 or tg.shape[0] != cand.shape[0]:
        raise ValueError(f"targets has shape {tg.shape}: allowed ({cand.shape[0]}, K)")
    _check_magnitude(cand, tg)
    rows, m = cand.shape
    k = tg.shape[1]
    error = np.empty((rows, k))
    sel = np.zeros((rows, k, m), dtype=bool)
    for sl in _chunks(rows, m, k, max_bytes):
        err, c1, c2 = _mitm(cand[sl], tg[sl])
        error[sl] = err
        sel[sl] = _codes_to_selection(c1.ravel(), c2.ravel(), m).reshape(c1.shape + (m,))
    return error, sel


# ----------------------------------------------------------------------------------------------------------------
# the batched solver


def solve_subset_sums(candidates, targets, eps, available=None, *, stop: str = "first"):
    """Solve B masked subset-sum instances at once (docs/math.md §6 "Subset-sum solving"); returns ``(mask, error)``.

    Following Gadhikar et al. 2023 / Burkholz (2022). Row r asks for S ⊆ {i : available[r, i]} with
    |Σ_{i∈S} candidates[r, i] − targets[r]| ≤ eps[r].

    Parameters: ``candidates`` (B, n) finite floats; ``targets`` (B,); ``eps`` scalar or (B,), > 0;
    ``available`` (B, n) bool or None (= all available; masked-out candidates are never chosen); ``stop``:
    ``"first"`` (default) — a solved row may take any subset within eps (the compiled kernel stops at the first
    one it meets), or ``"best"`` — a solved row takes the best subset of the prefix searched in its last round
    (smaller errors, at some extra time; the ticket constructions use it).

    Returns ``mask`` (B, n) bool with mask ⊆ available, and ``error`` (B,) = |Σ_i candidates·mask − target|,
    recomputed from the chosen candidates (not taken from the search).

    Guarantee (up to floating-point rounding of the partial sums, a few ulps of Σ|c|): for every row either
      * error ≤ eps (solved), or
      * the row's infeasibility is PROVEN: every available candidate was searched exactly and ``error`` is the
        exact optimum min_S |Σ_{i∈S} c_i − z| > eps over all subsets of the available candidates, or
      * (only rows with more than ``DEFAULT_MAX_PREFIX`` = 40 available candidates) the exact optimum over the
        first 40 available candidates exceeds eps; this row is *unresolved* and reported with error > eps.
        :func:`solve_subset_sums_detailed` returns the status of every row and lets you raise the cap.
    Deterministic: no randomness, no retries. Rows whose target is out of reach (z > Σ positives + eps or
    z < Σ negatives − eps) are proven infeasible immediately, with the optimal subset (all positives / all negatives).

    Algorithm: exact meet-in-the-middle on the prefix of the first m available candidates of each row (column
    order), m_0 = ⌈log2(1/ε)⌉ + 2 (docs/math.md suggests ≈ +6; +2 measured 1.5–2x faster), grown by 2 for the rows
    still above ε until ε is met or every available candidate is used. Runs on the default backend of
    :func:`solve_subset_sums_detailed` (the compiled numba kernel of :mod:`construct.mitm_kernel`: per row, sorted
    half-sums built by merging, two-pointer nearest-pair walks that stop at the first pair within ε; rows in
    parallel). The first call in a fresh environment compiles the kernel (≈ 8 s); the compiled code is cached on
    disk, so later processes load it in a fraction of a second.
    """
    sol = solve_subset_sums_detailed(candidates, targets, eps, available, stop=stop)
    return sol.mask, sol.error


def solve_subset_sums_detailed(
    candidates,
    targets,
    eps,
    available=None,
    *,
    margin: int = DEFAULT_MARGIN,
    growth: int = DEFAULT_GROWTH,
    max_prefix: int = DEFAULT_MAX_PREFIX,
    max_bytes: int = DEFAULT_MAX_BYTES,
    backend: str = "auto",
    threads: Optional[int] = None,
    stop: str = "first",
) -> SubsetSumSolution:
    """:func:`solve_subset_sums` with the per-row status and prefix length, and the tuning knobs exposed.

    ``margin``: m_0 = ⌈log2(1/ε)⌉ + margin; ``growth``: prefix increment per round; ``max_prefix``: largest exact
    search (rows needing more are STATUS_UNRESOLVED); ``max_bytes``: working-set budget per batch of rows of the
    numpy backend (validated but unused by the numba backend, whose work arrays take ≈ 4 · 2^{⌈m/2⌉} doubles per
    thread, 32 MB at m = 40).

    ``backend``: ``"numba"`` (compiled kernel, :mod:`construct.mitm_kernel`), ``"numpy"`` (the batched reference
    implementation below) or ``"auto"`` (= ``"numba"``). Both give the guarantee of :func:`solve_subset_sums` with
    the same m_0, growth and cap, hence the same status and prefix length per row (barring ties within a few ulps
    of ε); with ``stop="first"`` a solved row's subset may differ (numba stops at the first subset within ε, numpy
    always takes the best of the prefix), with ``stop="best"`` both take the best subset of the same final prefix
    (the same error up to a few ulps; the subset may differ only between equally good ones), and an unsolved
    row's error agrees to a few ulps of Σ|c| (both are the exact optimum over the same
    prefix). ``threads`` (numba backend; default: the CPUs this process may use) Python threads share the rows in
    chunks of 256 (a batch of at most 256 rows runs on one); the results do not depend on it. The numba kernel
    is compiled on its first call in a fresh environment (≈ 8 s) and loaded from numba's on-disk cache afterwards
    (≈ 0.1 s, plus ≈ 0.6 s to import numba).
    """
    if not (isinstance(backend, str) and backend in BACKENDS):
        raise ValueError(f"backend={backend!r} is not allowed: allowed {', '.join(map(repr, BACKENDS))}")
    if not (isinstance(stop, str) and stop in STOPS):
        raise ValueError(f"stop={stop!r} is not allowed: allowed {', '.join(map(repr, STOPS))}")
    cand = _as_candidates(candidates)
    rows, n = cand.shape
    z = _as_rows(targets, rows, "targets", positive=False)
    tol = _as_rows(eps, rows, "eps", positive=True)
    _check_magnitude(cand, z)
    avail = None if backend != "numpy" and available is None else _as_available(available, cand.shape)
    margin = _check_int(margin, "margin", 0)
    growth = _check_int(growth, "growth", 1)
    max_prefix = _check_int(max_prefix, "max_prefix", 1)
    max_bytes = _check_int(max_bytes, "max_bytes", 1)
    threads = available_cpus() if threads is None else _check_int(threads, "threads", 1)

    if rows == 0:
        return SubsetSumSolution(np.zeros((0, n), dtype=bool), np.zeros(0), np.zeros(0, dtype=np.int8),
                                 np.zeros(0, dtype=np.int64))
    # m_0 = ⌈log2(1/ε)⌉ + margin, capped at n (a prefix never exceeds n: the cap changes nothing, but keeps m_0 an
    # int64 for huge margins and for subnormal ε, where 1/ε overflows and log2(1/ε) is taken as −log2(ε))
    with np.errstate(over="ignore"):
        bits = np.log2(1.0 / tol)
    bits = np.where(np.isfinite(bits), bits, -np.log2(tol))
    m0 = np.minimum(np.maximum(np.ceil(bits), 0), n).astype(np.int64) + min(margin, n)
    if backend != "numpy":
        return _solve_numba(cand, z, tol, avail, m0, growth, max_prefix, threads, stop == "first")

    mask = np.zeros((rows, n), dtype=bool)
    status = np.full(rows, -1, dtype=np.int8)
    prefix = np.zeros(rows, dtype=np.int64)

    n_avail = avail.sum(axis=1)
    c_avail = cand if avail.all() else np.where(avail, cand, 0.0)
    pos_sum = np.maximum(c_avail, 0.0).sum(axis=1)
    neg_sum = np.minimum(c_avail, 0.0).sum(axis=1)
    too_high = z - pos_sum > tol
    too_low = (neg_sum - z > tol) & ~too_high
    mask[too_high] = avail[too_high] & (cand[too_high] > 0)
    mask[too_low] = avail[too_low] & (cand[too_low] < 0)
    out_of_reach = too_high | too_low
    status[out_of_reach] = STATUS_INFEASIBLE
    prefix[out_of_reach] = n_avail[out_of_reach]
    error = np.zeros(rows)
    error[out_of_reach] = _masked_error(cand[out_of_reach], mask[out_of_reach], z[out_of_reach])

    # columns of the available candidates first, in column order (identity when everything is available)
    if avail.all():
        order = None
        gathered = cand
    else:
        order = np.argsort(~avail, axis=1, kind="stable")
        gathered = np.take_along_axis(cand, order, axis=1)
    current = np.minimum(np.minimum(m0, n_avail), max_prefix)
    active = status < 0
    while np.any(active):
        act = np.flatnonzero(active)
        for m in np.unique(current[act]):
            m = int(m)
            group = act[current[act] == m]
            for sl in _chunks(group.size, m, 1, max_bytes):
                idx = group[sl]
                _, c1, c2 = _mitm(gathered[idx, :m], z[idx, None])
                sel = _codes_to_selection(c1[:, 0], c2[:, 0], m)
                new_mask = np.zeros((idx.size, n), dtype=bool)
                if order is None:
                    new_mask[:, :m] = sel
                else:
                    np.put_along_axis(new_mask, order[idx, :m], sel, axis=1)
                mask[idx] = new_mask
                prefix[idx] = m
                # the decision uses the error recomputed from the chosen candidates — the value returned
                error[idx] = _masked_error(cand[idx], new_mask, z[idx])
        done_ok = error[act] <= tol[act]
        all_used = current[act] >= n_avail[act]
        capped = current[act] >= max_prefix
        status[act[done_ok]] = STATUS_SOLVED
        status[act[~done_ok & all_used]] = STATUS_INFEASIBLE
        status[act[~done_ok & ~all_used & capped]] = STATUS_UNRESOLVED
        grow = act[status[act] < 0]
        current[grow] = np.minimum(np.minimum(current[grow] + growth, n_avail[grow]), max_prefix)
        active = status < 0

    return SubsetSumSolution(mask, error, status, prefix)


def _kernel_array(arr: np.ndarray) -> np.ndarray:
    """C-contiguous, aligned and writeable (a copy only when needed): the one array layout the kernel is compiled
    for, so that no input layout triggers another compilation."""
    return np.require(arr, requirements=("C", "A", "W"))


def _solve_numba(cand, z, tol, avail, m0, growth, max_prefix, threads, early_stop) -> SubsetSumSolution:
    """The numba backend of :func:`solve_subset_sums_detailed` on validated inputs (``avail`` None = all)."""
    from construct.mitm_kernel import solve_all

    n = cand.shape[1]
    # a prefix never exceeds n, so capping growth and max_prefix at n changes nothing (and keeps them int64)
    mask, error, status, prefix = solve_all(
        _kernel_array(cand), _kernel_array(z), _kernel_array(tol), None if avail is None else _kernel_array(avail),
        m0, min(growth, max(n, 1)), min(max_prefix, max(n, 1)), threads, early_stop)
    return SubsetSumSolution(mask, error, status, prefix)


def smallest_sufficient_prefix(candidates, targets, eps, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """m_needed[r, k] = the smallest m such that the exact best subset of candidates[r, :m] is within eps of
    targets[r, k]; n + 1 if even all n candidates miss.

    Failure is monotone in m for nested prefixes of one draw (a subset of the first m is a subset of the first
    m + 1), so for this draw "k candidates fail" ⟺ m_needed > k. Scans m = 0, 1, 2, … with the exact kernel,
    dropping rows once all their targets are met (used by the N_SS calibration, docs/math.md §5).
    """
    cand = _as_candidates(candidates)
    rows, n = cand.shape
    tg = np.asarray(targets, dtype=np.float64)
    if tg.ndim != 2 or tg.shape[0] != rows:
        raise ValueError(f"targets has shape {tg.shape}: allowed ({rows}, K)")
    _check_magnitude(cand, tg)
    tol = float(eps)
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"eps={eps!r} is out of range: allowed a finite tolerance > 0")
    needed = np.full(tg.shape, n + 1, dtype=np.int64)
    needed[np.abs(tg) <= tol] = 0
    pos_cum = np.cumsum(np.maximum(cand, 0.0), axis=1)
    neg_cum = np.cumsum(np.minimum(cand, 0.0), axis=1)
    for m in range(1, n + 1):
        # a target beyond Σ positives (or below Σ negatives) of the prefix by more than ε is out of reach: skip it
        reachable = (tg - pos_cum[:, m - 1, None] <= tol) & (neg_cum[:, m - 1, None] - tg <= tol)
        is_open = (needed > n) & reachable
        n_open = is_open.sum(axis=1)
        open_rows = np.flatnonzero(n_open)
        if not np.any(needed > n):
            break
        if open_rows.size == 0:
            continue
        # compact every open row's still-open targets to the front; pad with its first open target
        width = int(n_open.max())
        cols = np.argsort(~is_open[open_rows], axis=1, kind="stable")[:, :width]
        pad = np.arange(width)[None, :] >= n_open[open_rows, None]
        cols = np.where(pad, cols[:, :1], cols)
        sub_targets = np.take_along_axis(tg[open_rows], cols, axis=1)
        # targets per kernel call: all of them unless one row's work would exceed the memory budget
        per_call = max(1, min(width, (max_bytes // (8 << m) - 4) // 6)) if _bytes_per_row(m, width) > max_bytes \
            else width
        for c0 in range(0, width, per_call):
            cs = slice(c0, min(width, c0 + per_call))
            for sl in _chunks(open_rows.size, m, cs.stop - cs.start, max_bytes):
                idx = open_rows[sl]
                err, _, _ = _mitm(cand[idx, :m], sub_targets[sl, cs])
                hit = (err <= tol) & ~pad[sl, cs]
                r_local, c_local = np.nonzero(hit)
                needed[idx[r_local], cols[sl, cs][r_local, c_local]] = m
    return needed


# ----------------------------------------------------------------------------------------------------------------
# independent oracles


def best_subset_bruteforce(candidates, target):
    """Exact best subset by enumerating all 2^n subsets (n ≤ 14); returns (mask (n,) bool, error).

    The test oracle: error = min_S |Σ_{i∈S} c_i − z| (ties broken by the smallest subset code).
    """
    c = np.asarray(candidates, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"candidates has shape {c.shape}: allowed a 1-D array")
    if c.size > BRUTEFORCE_MAX_N:
        raise ValueError(f"len(candidates)={c.size} is out of range: allowed at most {BRUTEFORCE_MAX_N}")
    bits = _bits(c.size)
    sums = bits @ c if c.size else np.zeros(1)
    errors = np.abs(sums - float(target))
    best = int(np.argmin(errors))
    mask = bits[best].astype(bool) if c.size else np.zeros(0, dtype=bool)
    return mask, float(np.abs(c[mask].sum() - float(target)))


def best_subset_milp(candidates, target, available=None, time_limit: Optional[float] = None,
                     eps: Optional[float] = None):
    """Best subset by mixed-integer programming (scipy.optimize.milp, HiGHS); returns (mask (n,) bool, error).

    minimize t  subject to  −t ≤ Σ_i c_i x_i − z ≤ t,  x_i ∈ {0, 1},  x_i = 0 where not available.
    Optimal up to HiGHS's tolerances (≈1e−7 absolute); the error is recomputed from the mask. With ``eps`` given,
    first solve the feasibility problem |Σ_i c_i x_i − z| ≤ ε (any feasible subset is returned — what a
    construction needs); only if that is infeasible is the optimization problem solved.
    ``time_limit`` (seconds per solve) may stop HiGHS early with its best subset so far (then not optimal).
    """
    from scipy.optimize import Bounds, LinearConstraint, milp

    c = np.asarray(candidates, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"candidates has shape {c.shape}: allowed a 1-D array")
    n = c.size
    avail = _as_available(available, (n,))
    z = float(target)
    if n == 0 or not avail.any():
        return np.zeros(n, dtype=bool), abs(z)
    options = {"mip_rel_gap": 0.0}
    if time_limit is not None:
        options["time_limit"] = float(time_limit)
    integrality = np.append(np.ones(n), 0)
    if eps is not None:
        tol = float(eps)
        feas = milp(np.zeros(n), constraints=LinearConstraint(c[None, :], [z - tol], [z + tol]),
                    integrality=np.ones(n), bounds=Bounds(np.zeros(n), avail.astype(float)), options=options)
        if feas.x is not None:
            mask = (feas.x > 0.5) & avail
            return mask, float(abs(c[mask].sum() - z))
    objective = np.zeros(n + 1)
    objective[-1] = 1.0
    a = np.zeros((2, n + 1))
    a[0, :n] = c
    a[0, -1] = -1.0  # Σ c x − t ≤ z
    a[1, :n] = c
    a[1, -1] = 1.0  # Σ c x + t ≥ z
    constraints = LinearConstraint(a, [-np.inf, z], [z, np.inf])
    upper = np.append(avail.astype(float), np.inf)
    res = milp(objective, constraints=constraints, integrality=integrality,
               bounds=Bounds(np.zeros(n + 1), upper), options=options)
    if res.x is None:
        raise ValueError(f"milp failed: {res.message}")
    mask = (res.x[:n] > 0.5) & avail
    return mask, float(abs(c[mask].sum() - z))
