"""Compiled (numba) meet-in-the-middle kernel of the batched subset-sum solver (docs/math.md §6 "Subset-sum solving").

:func:`solve_all` is the ``backend="numba"`` implementation of
:func:`construct.subset_sum.solve_subset_sums_detailed`: for every row r independently it finds the exact best
subset of the first m available candidates (column order) for the target z_r, starting at the given m_0 and growing
m by ``growth`` until the error is ≤ ε_r, every available candidate was searched (infeasibility proven) or m reached
``max_prefix`` (unresolved). The numpy backend in :mod:`construct.subset_sum` is the reference implementation; both
search the same prefixes and so give the same status and prefix length per row.

Per row and prefix length m (Horowitz–Sahni meet in the middle):
  1. the prefix is split into two halves, each holding the 2^h subset sums of its h elements *sorted*: with S the
     sorted sums of a half, adding element c gives merge(S, S + c) — adding a constant keeps a sorted list sorted
     (rounded floating-point addition is monotone), so an element costs one linear merge and no sort is needed.
     The first m_0 positions are split as [0, m_0//2) and [m_0//2, m_0) (as in the numpy backend); when the prefix
     grows, each new position goes to the half with fewer elements and only that merge is done (the sums are
     extended, not rebuilt). Any split of the prefix gives the exact optimum over the prefix. A round whose target
     lies outside [Σ negatives, Σ positives] of the prefix by more than ε fails without search (its merges are
     done when a later round needs them).
  2. two-pointer walks (one half ascending, the other descending) find the pair a + b nearest to z: fl(a + b) is
     monotone in a and b, so discarding a whole row or column of pairs never discards a pair closer to z than one
     visited. With ``early_stop`` (the default) the search stops at the first pair with |a + b − z| ≤ ε — any
     subset within ε solves the row; without it the walks finish and give the best pair of the prefix.
  3. the pair is decoded into the two halves' subsets — small halves by re-enumerating their sums (accumulated in
     the order the elements were added, so bit-identical to the merged values), large ones by walking the entry
     back through the stored merge levels — and the error is recomputed from the chosen candidates, summed in
     column order. Only this recomputed error decides: if the early-stopped pair misses ε once recomputed
     (rounding), the full search is repeated, so a row that is not solved always reports the exact optimum over
     its prefix (up to rounding of the half-sums, a few ulps of Σ|c|). Decoding is skipped in rounds that cannot
     be final and whose optimum exceeds ε by far more than any rounding (1e−12·(Σ|c| + |z|)).

Rows whose target is out of reach (z − Σ positives > ε, or Σ negatives − z > ε, over the available candidates in
column order) are proven infeasible at once with all positives (all negatives) chosen.

Speed: the merges and walks compare random sums, so their branches are unpredictable; the loops are written with
min/max and 0/1 index increments (no data-dependent branches) and run several independent chains at once — merges
bidirectionally (a front chain takes the smallest, a back chain the largest entries), both halves' merges in one
loop while they are small, and for halves of ≥ 32 sums as four such pairs on output blocks cut at merge-path ranks
found by binary search; walks from both corners, and for large halves in two row blocks.

Threads: rows are cut into chunks of ROWS_PER_CHUNK; :func:`solve_all` runs :func:`solve_rows` (compiled with
``nogil``) in plain Python threads, on interleaved sets of chunks handed out as threads become free. Rows are
independent, so the output depends neither on the number of threads nor on the chunking. (numba's own
``parallel=True`` thread pools are not used: with the GNU OpenMP pool a process that forks after using it — as
``concurrent.futures`` process pools do, e.g. in the E5 experiment — is aborted, and the workqueue pool must not be
entered from two threads at once.) Work arrays are allocated once per chunk, not per row: about 4 · 2^{⌈m/2⌉}
doubles (32 MB per thread at m = 40).

Compilation: the first call in a fresh environment compiles the kernel (≈ 8 s on a 2-core machine);
``cache=True`` stores the machine code in ``__pycache__`` next to this file (or in NUMBA_CACHE_DIR), so later
processes load it in ≈ 0.1 s (plus ≈ 0.6 s to import numba). :func:`warm_up` triggers this outside timed regions.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from construct.subset_sum import STATUS_INFEASIBLE, STATUS_SOLVED, STATUS_UNRESOLVED

#: rows per chunk (each chunk allocates its work arrays once)
ROWS_PER_CHUNK = 256
#: tasks per thread that the chunks are dealt into (threads take tasks as they become free)
TASKS_PER_THREAD = 8
#: levels (0 … INITIAL_LEVELS − 1: halves of up to INITIAL_LEVELS − 1 elements) a chunk's work array starts with
INITIAL_LEVELS = 11
#: merges of at least this many sums use four chain pairs, walks over at least this many rows two blocks (below,
#: the binary searches cost more than they save)
MANY_CHAINS = 32
#: decoding is skipped in non-final rounds whose optimum exceeds ε by more than this factor times Σ|c| + |z|
ROUNDING_SLACK = 1e-12


# ----------------------------------------------------------------------------------------------------------------
# storage: all floating-point work of a chunk of rows lives in one array ``fw``, all integer work in one array ``iw``
# (layout at the top of :func:`_solve_rows_from`); helpers get these two arrays and offsets. A half keeps every
# merge level: level t (the sorted sums of its first t elements) at offset _level(t) of the half's area, 1-based
# with sentinels: [off] = −∞, [off + 1 … off + 2^t] ascending, [off + 2^t + 1] = +∞. The levels take about as
# much room as two ping-pong buffers would, and they let large halves be decoded without re-enumerating.
#
# Why so few arrays: measured, passing a dozen small work arrays to the (inlined) hot helpers and re-binding them
# in the row loop cost as much in reference counting (atomic increments / decrements) as a whole small merge. So
# ``fw`` / ``iw`` are never re-bound inside the row loop: a row that needs more levels returns to
# :func:`solve_rows`, which enlarges the arrays and solves that row again from its start.


# ----------------------------------------------------------------------------------------------------------------
# sorted subset sums of a half: merge(S, S + c)


@njit(cache=True, nogil=True, inline="always")
def _merge_small(buf, src, dst, w, c):
    """buf[dst + 1 … dst + 2w] = merge(S, S + c) for the ascending S = buf[src + 1 … src + w], with sentinels.

    Two independent chains: the front one takes the w smallest entries (min of the two heads), the back one the w
    largest (max of the two tails). Ties are ordered "S before S + c" by both, so every entry is written exactly
    once and neither chain reads outside S (each consumes w entries of the 2w). Unsigned 0/1 index increments and
    min/max keep the loop free of data-dependent branches (comparisons of random sums are unpredictable); the
    output position follows from the two read positions (front: i + j − 2·src − 1 + dst; back: i + j − 2·src + dst
    with i, j counted down from src + w).
    """
    one = np.uint64(1)
    front = np.uint64(dst - 2 * src - 1)
    back = np.uint64(dst - 2 * src)
    fi = np.uint64(src + 1)
    fj = fi
    bi = np.uint64(src + w)
    bj = bi
    for _ in range(w):
        a = buf[fi]
        b = buf[fj] + c
        t = np.uint64(a <= b)
        buf[fi + fj + front] = min(a, b)
        fi += t
        fj += one - t
        a = buf[bi]
        b = buf[bj] + c
        t = np.uint64(a > b)
        buf[bi + bj + back] = max(a, b)
        bi -= t
        bj -= one - t
    buf[dst] = -np.inf
    buf[dst + 2 * w + 1] = np.inf


@njit(cache=True, nogil=True, inline="always")
def _merge_small_pair(buf, srca, dsta, wa, ca, srcb, dstb, wb, cb):
    """:func:`_merge_small` of element ca into half A (wa sums, levels at srca → dsta) and of cb into half B (wb sums,
    srcb → dstb) in one loop — four independent chains instead of two — for min(wa, wb) steps, then the rest of
    the larger merge with its two chains."""
    one = np.uint64(1)
    front_a = np.uint64(dsta - 2 * srca - 1)
    back_a = np.uint64(dsta - 2 * srca)
    front_b = np.uint64(dstb - 2 * srcb - 1)
    back_b = np.uint64(dstb - 2 * srcb)
    fia = np.uint64(srca + 1)
    fja = fia
    bia = np.uint64(srca + wa)
    bja = bia
    fib = np.uint64(srcb + 1)
    fjb = fib
    bib = np.uint64(srcb + wb)
    bjb = bib
    for _ in range(min(wa, wb)):
        a = buf[fia]
        b = buf[fja] + ca
        t = np.uint64(a <= b)
        buf[fia + fja + front_a] = min(a, b)
        fia += t
        fja += one - t
        a = buf[fib]
        b = buf[fjb] + cb
        t = np.uint64(a <= b)
        buf[fib + fjb + front_b] = min(a, b)
        fib += t
        fjb += one - t
        a = buf[bia]
        b = buf[bja] + ca
        t = np.uint64(a > b)
        buf[bia + bja + back_a] = max(a, b)
        bia -= t
        bja -= one - t
        a = buf[bib]
        b = buf[bjb] + cb
        t = np.uint64(a > b)
        buf[bib + bjb + back_b] = max(a, b)
        bib -= t
        bjb -= one - t
    for _ in range(wa - min(wa, wb)):
        a = buf[fia]
        b = buf[fja] + ca
        t = np.uint64(a <= b)
        buf[fia + fja + front_a] = min(a, b)
        fia += t
        fja += one - t
        a = buf[bia]
        b = buf[bja] + ca
        t = np.uint64(a > b)
        buf[bia + bja + back_a] = max(a, b)
        bia -= t
        bja -= one - t
    for _ in range(wb - min(wa, wb)):
        a = buf[fib]
        b = buf[fjb] + cb
        t = np.uint64(a <= b)
        buf[fib + fjb + front_b] = min(a, b)
        fib += t
        fjb += one - t
        a = buf[bib]
        b = buf[bjb] + cb
        t = np.uint64(a > b)
        buf[bib + bjb + back_b] = max(a, b)
        bib -= t
        bjb -= one - t
    buf[dsta] = -np.inf
    buf[dsta + 2 * wa + 1] = np.inf
    buf[dstb] = -np.inf
    buf[dstb + 2 * wb + 1] = np.inf


@njit(cache=True, nogil=True, inline="always")
def _merge_split(buf, src, w, c, rank):
    """Number of S entries among the ``rank`` smallest entries of merge(S, S + c) (S = buf[src + 1 … src + w];
    ties ordered S first): the merge-path split, by binary search."""
    lo = max(0, rank - w)
    hi = min(rank, w)
    while lo < hi:
        i = (lo + hi) // 2
        if buf[src + rank - i] + c >= buf[src + i + 1]:  # S's (i+1)-th entry comes before S + c's (rank−i)-th
            lo = i + 1
        else:
            hi = i
    return lo


@njit(cache=True, nogil=True)
def _merge_blocks(buf, src, dst, w, c):
    """:func:`_merge_small` with eight chains, for w ≥ MANY_CHAINS (a power of two): the output ranks are cut
    into four blocks of w/2 ([1, w/2], [w/2 + 1, w], [w + 1, 3w/2], [3w/2 + 1, 2w]) at the merge-path splits, and
    each block is merged by a front and a back chain. A chain that runs out of its block's part of S or S + c reads
    the neighbouring block's entry or a sentinel, which sorts after (front) / before (back) everything it still has
    to take, so it never takes it."""
    one = np.uint64(1)
    front = np.uint64(dst - 2 * src - 1)
    back = np.uint64(dst - 2 * src)
    q = w // 2
    s1 = _merge_split(buf, src, w, c, q)
    s2 = _merge_split(buf, src, w, c, 2 * q)
    s3 = _merge_split(buf, src, w, c, 3 * q)
    f1i = np.uint64(src + 1)
    f1j = f1i
    b1i = np.uint64(src + s1)
    b1j = np.uint64(src + q - s1)
    f2i = b1i + one
    f2j = b1j + one
    b2i = np.uint64(src + s2)
    b2j = np.uint64(src + 2 * q - s2)
    f3i = b2i + one
    f3j = b2j + one
    b3i = np.uint64(src + s3)
    b3j = np.uint64(src + 3 * q - s3)
    f4i = b3i + one
    f4j = b3j + one
    b4i = np.uint64(src + w)
    b4j = b4i
    for _ in range(q // 2):
        a = buf[f1i]
        b = buf[f1j] + c
        t = np.uint64(a <= b)
        buf[f1i + f1j + front] = min(a, b)
        f1i += t
        f1j += one - t
        a = buf[b1i]
        b = buf[b1j] + c
        t = np.uint64(a > b)
        buf[b1i + b1j + back] = max(a, b)
        b1i -= t
        b1j -= one - t
        a = buf[f2i]
        b = buf[f2j] + c
        t = np.uint64(a <= b)
        buf[f2i + f2j + front] = min(a, b)
        f2i += t
        f2j += one - t
        a = buf[b2i]
        b = buf[b2j] + c
        t = np.uint64(a > b)
        buf[b2i + b2j + back] = max(a, b)
        b2i -= t
        b2j -= one - t
        a = buf[f3i]
        b = buf[f3j] + c
        t = np.uint64(a <= b)
        buf[f3i + f3j + front] = min(a, b)
        f3i += t
        f3j += one - t
        a = buf[b3i]
        b = buf[b3j] + c
        t = np.uint64(a > b)
        buf[b3i + b3j + back] = max(a, b)
        b3i -= t
        b3j -= one - t
        a = buf[f4i]
        b = buf[f4j] + c
        t = np.uint64(a <= b)
        buf[f4i + f4j + front] = min(a, b)
        f4i += t
        f4j += one - t
        a = buf[b4i]
        b = buf[b4j] + c
        t = np.uint64(a > b)
        buf[b4i + b4j + back] = max(a, b)
        b4i -= t
        b4j -= one - t
    buf[dst] = -np.inf
    buf[dst + 2 * w + 1] = np.inf


# ----------------------------------------------------------------------------------------------------------------
# nearest pair a + b to z


@njit(cache=True, nogil=True, inline="always")
def _walks(v, z, tol, early, fi, fj, bi, bj, best, ia, ib):
    """Two-pointer walks over the rows fi … bi and columns bj … fj (absolute indices into ``v``: the rows index half
    A's sorted sums, the columns half B's): forward from (fi, fj) (d < 0 → next row, else previous column) and
    backward from (bi, bj) (d ≥ 0 → previous row, else next column), d = (v[i] + v[j]) − z, until no row or no
    column is left between them. Returns the updated (best |d|, i, j); with ``early`` it stops once best ≤ tol. A
    walk moves past the first row or column at most onto the −∞ sentinel's index, so unsigned indices never wrap."""
    one = np.uint64(1)
    while fi <= bi and bj <= fj:
        d = (v[fi] + v[fj]) - z
        ad = abs(d)
        if ad < best:
            best = ad
            ia = fi
            ib = fj
        t = np.uint64(d < 0.0)
        fi += t
        fj -= one - t
        d = (v[bi] + v[bj]) - z
        ad = abs(d)
        if ad < best:
            best = ad
            ia = bi
            ib = bj
        t = np.uint64(d >= 0.0)
        bi -= t
        bj += one - t
        if early and best <= tol:
            break
    return best, ia, ib


@njit(cache=True, nogil=True)
def _nearest_pair_blocks(v, offa, na, offb, nb, z, tol, early):
    """:func:`_nearest_pair` for na ≥ MANY_CHAINS: the rows are cut at r = na/2 + 1 into two blocks walked at
    once (four chains). A forward walk may start at row r in the first column J with d(r, J) ≥ 0: every cell
    (i ≥ r, j > J) has d ≥ d(r, J) ≥ 0, no closer to z than (r, J). Likewise the backward walk of rows < r starts
    at row r − 1 in the last column J' with d(r − 1, J') < 0. Both columns are found by binary search (a column
    past the last / before the first stands for "no such column")."""
    one = np.uint64(1)
    best = np.inf
    ia = np.uint64(0)
    ib = np.uint64(0)
    r = offa + na // 2 + 1
    lo = offb + 1  # J: first column with d(r, j) ≥ 0
    hi = offb + nb + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if (v[r] + v[mid]) - z >= 0.0:
            hi = mid
        else:
            lo = mid + 1
    col_hi = min(lo, offb + nb)
    lo = offb  # J': last column with d(r − 1, j) < 0
    hi = offb + nb
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if (v[r - 1] + v[mid]) - z < 0.0:
            lo = mid
        else:
            hi = mid - 1
    col_lo = max(lo, offb + 1)
    f1i = np.uint64(offa + 1)
    f1j = np.uint64(offb + nb)
    b1i = np.uint64(r - 1)
    b1j = np.uint64(col_lo)
    f2i = np.uint64(r)
    f2j = np.uint64(col_hi)
    b2i = np.uint64(offa + na)
    b2j = np.uint64(offb + 1)
    while f1i <= b1i and b1j <= f1j and f2i <= b2i and b2j <= f2j:
        d = (v[f1i] + v[f1j]) - z
        ad = abs(d)
        if ad < best:
            best = ad
            ia = f1i
            ib = f1j
        t = np.uint64(d < 0.0)
        f1i += t
        f1j -= one - t
        d = (v[b1i] + v[b1j]) - z
        ad = abs(d)
        if ad < best:
            best = ad
            ia = b1i
            ib = b1j
        t = np.uint64(d >= 0.0)
        b1i -= t
        b1j += one - t
        d = (v[f2i] + v[f2j]) - z
        ad = abs(d)
        if ad < best:
            best = ad
            ia = f2i
            ib = f2j
        t = np.uint64(d < 0.0)
        f2i += t
        f2j -= one - t
        d = (v[b2i] + v[b2j]) - z
        ad = abs(d)
        if ad < best:
            best = ad
            ia = b2i
            ib = b2j
        t = np.uint64(d >= 0.0)
        b2i -= t
        b2j += one - t
        if early and best <= tol:
            return ia, ib, best
    for block in range(2):  # finish whichever block still has cells
        if early and best <= tol:
            break
        if block == 0:
            best, ia, ib = _walks(v, z, tol, early, f1i, f1j, b1i, b1j, best, ia, ib)
        else:
            best, ia, ib = _walks(v, z, tol, early, f2i, f2j, b2i, b2j, best, ia, ib)
    return ia, ib, best


@njit(cache=True, nogil=True, inline="always")
def _nearest_pair(v, offa, na, offb, nb, z, tol, early):
    """min over 1 ≤ i ≤ na, 1 ≤ j ≤ nb of |a_i + b_j − z| for the ascending a = v[offa + 1 …], b = v[offb + 1 …];
    returns the ranks (i, j) of a minimizing pair and its |a_i + b_j − z| (with ``early``: of the first pair found
    with |d| ≤ tol). fl(a + b) is monotone in a and b, so a walk only discards rows / columns whose cells are no
    closer to z than a visited cell; once no row or no column is left between the walks every cell is covered."""
    if na >= MANY_CHAINS:
        ia, ib, best = _nearest_pair_blocks(v, offa, na, offb, nb, z, tol, early)
    else:
        one = np.uint64(1)
        best, ia, ib = _walks(v, z, tol, early, np.uint64(offa) + one, np.uint64(offb + nb), np.uint64(offa + na),
                              np.uint64(offb) + one, np.inf, np.uint64(0), np.uint64(0))
    return np.int64(ia) - offa, np.int64(ib) - offb, best


# ----------------------------------------------------------------------------------------------------------------
# decoding and the decision of one round


@njit(cache=True, nogil=True, inline="always")
def _level(t):
    """Offset of level t (the sorted sums of a half's first t elements) in the half's area: levels 0, 1, … are
    stored one after another, level t taking 2^t + 2 entries (sums and the two sentinels)."""
    return (np.int64(1) << t) - 1 + 2 * t


#: halves of at most this many elements are decoded by enumerating their sums (fewer steps than the level walk)
ENUMERATE_UP_TO = 8


@njit(cache=True, nogil=True, inline="always")
def _code_by_enumeration(value, fw, iw, pos0, h, scratch):
    """The code of a half's sum equal to ``value``: the 2^h sums, accumulated in increasing bit order (the order the
    merges added the elements, so the float sums are bit-identical), are enumerated by doubling into
    fw[scratch …], checking each new sum at once."""
    fw[scratch] = 0.0
    if value == 0.0:
        return 0
    w = 1
    for t in range(h):
        c = fw[iw[pos0 + t]]
        for q in range(scratch, scratch + w):
            v = fw[q] + c
            fw[q + w] = v
            if v == value:
                return q + w - scratch
        w *= 2
    return 0  # unreachable: value is one of the sums


@njit(cache=True, nogil=True, inline="always")
def _code_at(fw, iw, pos0, h, base, rank):
    """The subset code (bit t ↔ the half's t-th element g[iw[pos0 + t]]) of the sum at 1-based ``rank`` of level h
    of the half stored at ``base``. Level t is merge(S, S + c) of level t − 1 (S) and the element c, ties S first;
    the merge-path split of the first ``rank`` entries tells how many came from S (i) and from S + c (j), and the
    entry at ``rank`` is the later of S[i] and (S + c)[j] — so one binary search per level walks the entry back to
    level 0, collecting a bit wherever it came from S + c."""
    code = 0
    for t in range(h, 0, -1):
        src = base + _level(t - 1)
        w = np.int64(1) << (t - 1)
        c = fw[iw[pos0 + t - 1]]
        i = _merge_split(fw, src, w, c, rank)
        j = rank - i
        if j == 0 or (i > 0 and fw[src + i] > fw[src + j] + c):
            rank = i
        else:
            code |= np.int64(1) << (t - 1)
            rank = j
    return code


@njit(cache=True, nogil=True, inline="always")
def _decide(fw, iw, n, m, ha, base_a, hb, base_b, scratch, z, tol, final, slack, early_stop):
    """One round at prefix m: nearest pair of the two halves' sorted sums (levels ha, hb; stopping at the first pair
    within ε when ``early_stop``, else the exact nearest pair of the prefix), decoded
    into sel = iw[5n:5n + m] (1 = chosen prefix position); returns the error recomputed from the chosen candidates,
    summed in increasing position (= column) order. If the early-stopped pair misses ε once recomputed (rounding),
    the exact optimum of the prefix is taken instead. In a round that is not ``final`` and whose optimum exceeds
    ε + slack (so that the recomputed error exceeds ε too) the optimum is returned undecoded."""
    pos_a = n
    pos_b = 2 * n
    sel = 5 * n
    err = np.inf
    for attempt in range(2):
        i, j, best = _nearest_pair(fw, base_a + _level(ha), np.int64(1) << ha, base_b + _level(hb),
                                   np.int64(1) << hb, z, tol, early_stop and attempt == 0)
        if not final and best > tol + slack:
            return best
        if ha <= ENUMERATE_UP_TO:
            code_a = _code_by_enumeration(fw[base_a + _level(ha) + i], fw, iw, pos_a, ha, scratch)
        else:
            code_a = _code_at(fw, iw, pos_a, ha, base_a, i)
        if hb <= ENUMERATE_UP_TO:
            code_b = _code_by_enumeration(fw[base_b + _level(hb) + j], fw, iw, pos_b, hb, scratch)
        else:
            code_b = _code_at(fw, iw, pos_b, hb, base_b, j)
        for t in range(ha):
            iw[sel + iw[pos_a + t]] = (code_a >> t) & 1
        for t in range(hb):
            iw[sel + iw[pos_b + t]] = (code_b >> t) & 1
        s = 0.0
        for p in range(m):
            s += fw[p] if iw[sel + p] else 0.0  # adding 0.0 leaves s unchanged; the select avoids a random branch
        err = abs(s - z)
        if not (best <= tol and err > tol):
            break
    return err


@njit(cache=True, nogil=True)
def _solve_rows_from(lo, hi, cand, z, tol, avail, has_avail, m0, growth, max_prefix, early_stop, mask, error, status,
                     prefix, fw, iw, levels):
    """Solve rows lo … hi − 1 with the work arrays of :func:`solve_rows` (room for ``levels`` levels per half).
    Returns −1, or the first row that needs more levels (its outputs are not written yet)."""
    n = cand.shape[1]
    # fw: g = [0, n), scratch = [n, n + 2^ENUMERATE_UP_TO), then the areas of half A and half B (levels
    # 0 … levels − 1 each); iw: cols = [0, n), pos_a = [n, 2n), pos_b = [2n, 3n), new_a = [3n, 4n),
    # new_b = [4n, 5n), sel = [5n, 6n)
    area = _level(levels)
    scratch = n
    base_a = n + (1 << ENUMERATE_UP_TO)
    base_b = base_a + area
    for r in range(lo, hi):
        zr = z[r]
        tr = tol[r]
        # gather the available candidates in column order; sums of positives / negatives for the reach test
        k = 0
        pos = 0.0
        neg = 0.0
        if has_avail:
            for col in range(n):
                c = cand[r, col]
                iw[k] = col
                fw[k] = c
                keep = avail[r, col]
                k += np.int64(keep)
                pos += max(c, 0.0) if keep else 0.0
                neg += min(c, 0.0) if keep else 0.0
        else:
            for col in range(n):
                c = cand[r, col]
                iw[col] = col
                fw[col] = c
                pos += max(c, 0.0)
                neg += min(c, 0.0)
            k = n
        n_avail = k
        too_high = zr - pos > tr
        too_low = (neg - zr > tr) and not too_high
        if too_high or too_low:
            s = 0.0
            for t in range(n_avail):
                c = fw[t]
                if (too_high and c > 0.0) or (too_low and c < 0.0):
                    s += c
                    mask[r, iw[t]] = True
            error[r] = abs(s - zr)
            status[r] = STATUS_INFEASIBLE
            prefix[r] = n_avail
            continue
        slack = ROUNDING_SLACK * ((pos - neg) + abs(zr))

        # both halves start empty: level 0 holds the single sum 0
        fw[base_a] = -np.inf
        fw[base_a + 1] = 0.0
        fw[base_a + 2] = np.inf
        fw[base_b] = -np.inf
        fw[base_b + 1] = 0.0
        fw[base_b + 2] = np.inf
        ha = 0
        hb = 0
        m_built = 0
        m_reach = 0  # the prefix sums of positives / negatives below cover positions [0, m_reach)
        pre_pos = 0.0
        pre_neg = 0.0
        m = min(m0[r], n_avail, max_prefix)
        m_init = m  # positions [0, m_init) are split [0, m_init//2) / rest, later ones balance the halves
        while True:
            final = m >= n_avail or m >= max_prefix
            if not final:
                # a round whose target is out of the prefix's reach fails without search (the optimum is at least
                # the distance from z to [Σ negatives, Σ positives]); its merges are done later
                for p in range(m_reach, m):
                    pre_pos += max(fw[p], 0.0)
                    pre_neg += min(fw[p], 0.0)
                m_reach = m
                if zr - pre_pos > tr + slack or pre_neg - zr > tr + slack:
                    m = min(m + growth, n_avail, max_prefix)
                    continue
            # the new positions of each half, in order (halves: [0, m_init//2) / [m_init//2, m_init), then each
            # later position to the half with fewer elements, B on a tie: with growth 2 each half gets one)
            na_new = 0
            nb_new = 0
            for p in range(m_built, m):
                if (p < m_init // 2) if p < m_init else (ha + na_new < hb + nb_new):
                    iw[3 * n + na_new] = p
                    na_new += 1
                else:
                    iw[4 * n + nb_new] = p
                    nb_new += 1
            if max(ha + na_new, hb + nb_new) >= levels:
                return r
            ia = 0
            ib = 0
            while ia < na_new or ib < nb_new:
                wa = np.int64(1) << ha
                wb = np.int64(1) << hb
                if ia < na_new and ib < nb_new and wa < MANY_CHAINS and wb < MANY_CHAINS:
                    _merge_small_pair(fw, base_a + _level(ha), base_a + _level(ha + 1), wa, fw[iw[3 * n + ia]],
                                      base_b + _level(hb), base_b + _level(hb + 1), wb, fw[iw[4 * n + ib]])
                    iw[n + ha] = iw[3 * n + ia]
                    iw[2 * n + hb] = iw[4 * n + ib]
                    ha += 1
                    hb += 1
                    ia += 1
                    ib += 1
                elif ia < na_new:
                    if wa < MANY_CHAINS:
                        _merge_small(fw, base_a + _level(ha), base_a + _level(ha + 1), wa, fw[iw[3 * n + ia]])
                    else:
                        _merge_blocks(fw, base_a + _level(ha), base_a + _level(ha + 1), wa, fw[iw[3 * n + ia]])
                    iw[n + ha] = iw[3 * n + ia]
                    ha += 1
                    ia += 1
                else:
                    if wb < MANY_CHAINS:
                        _merge_small(fw, base_b + _level(hb), base_b + _level(hb + 1), wb, fw[iw[4 * n + ib]])
                    else:
                        _merge_blocks(fw, base_b + _level(hb), base_b + _level(hb + 1), wb, fw[iw[4 * n + ib]])
                    iw[2 * n + hb] = iw[4 * n + ib]
                    hb += 1
                    ib += 1
            m_built = m
            err = _decide(fw, iw, n, m, ha, base_a, hb, base_b, scratch, zr, tr, final, slack, early_stop)
            if err <= tr:
                st = STATUS_SOLVED
            elif m >= n_avail:
                st = STATUS_INFEASIBLE
            elif m >= max_prefix:
                st = STATUS_UNRESOLVED
            else:
                m = min(m + growth, n_avail, max_prefix)
                continue
            for p in range(m):
                mask[r, iw[p]] = iw[5 * n + p] != 0
            error[r] = err
            status[r] = st
            prefix[r] = m
            break
    return -1


@njit(cache=True, nogil=True)
def solve_rows(cand, z, tol, avail, has_avail, m0, growth, max_prefix, early_stop, mask, error, status, prefix,
               rows_per_chunk, first_chunk, chunk_step):
    """Solve the rows of ``cand`` (B, n) float64 in the chunks first_chunk, first_chunk + chunk_step, … of
    ``rows_per_chunk`` rows (see the module docstring); writes their outputs in place.

    ``avail`` (B, n) bool is read only when ``has_avail`` (else every candidate is available and ``avail`` may be
    any bool array); ``m0`` (B,) int64 initial prefix lengths ⌈log2(1/ε_r)⌉ + margin; ``mask`` (B, n) bool must
    come in all False; ``error`` (B,) float64, ``status`` (B,) int8, ``prefix`` (B,) int64 are overwritten.
    Each chunk allocates its own work arrays (room for INITIAL_LEVELS levels per half, one more level each time a
    row needs it; that row is then solved again from its start). Compiled with ``nogil``: threads running disjoint
    chunk sets (as :func:`solve_all` starts them) run in parallel.
    """
    rows, n = cand.shape
    chunks = (rows + rows_per_chunk - 1) // rows_per_chunk
    for ch in range(first_chunk, chunks, chunk_step):
        r = ch * rows_per_chunk
        hi = min(rows, r + rows_per_chunk)
        levels = INITIAL_LEVELS
        fw = np.empty(n + (1 << ENUMERATE_UP_TO) + 2 * _level(levels), dtype=np.float64)
        iw = np.zeros(6 * n, dtype=np.int64)
        while r < hi:
            r = _solve_rows_from(r, hi, cand, z, tol, avail, has_avail, m0, growth, max_prefix, early_stop, mask, error,
                                 status,
                                 prefix, fw, iw, levels)
            if r < 0:
                break
            levels += 1
            fw = np.empty(n + (1 << ENUMERATE_UP_TO) + 2 * _level(levels), dtype=np.float64)


def solve_all(cand, z, tol, avail, m0, growth, max_prefix, threads, early_stop=True):
    """Run :func:`solve_rows` on all rows with ``threads`` Python threads; ``avail`` None means every candidate is
    available; ``early_stop``: a solved row takes the first pair within ε (True) or the best pair of its prefix
    (False). Returns (mask, error, status, prefix).

    The chunks are dealt into TASKS_PER_THREAD · threads interleaved tasks (task k: chunks k, k + tasks, …) that the
    threads take one after another, so a thread slowed down by other load on the machine does not hold up the
    rest. The kernel releases the GIL. Plain threads started per call rather than numba's ``parallel`` thread
    pools: the GNU OpenMP pool aborts a process that forks after using it (as ``concurrent.futures`` process pools
    do), and the workqueue pool must not be entered from two threads at once."""
    rows, n = cand.shape
    has_avail = avail is not None
    avail_arg = avail if has_avail else np.zeros((1, 1), dtype=bool)
    mask = np.zeros((rows, n), dtype=bool)
    error = np.empty(rows)
    status = np.empty(rows, dtype=np.int8)
    prefix = np.empty(rows, dtype=np.int64)
    chunks = -(-rows // ROWS_PER_CHUNK)
    threads = max(1, min(int(threads), chunks))
    args = (cand, z, tol, avail_arg, has_avail, m0, growth, max_prefix, bool(early_stop), mask, error, status, prefix,
            ROWS_PER_CHUNK)
    if threads == 1:
        solve_rows(*args, 0, 1)
    else:
        tasks = min(chunks, TASKS_PER_THREAD * threads)
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for job in [pool.submit(solve_rows, *args, k, tasks) for k in range(tasks)]:
                job.result()
    return mask, error, status, prefix


def warm_up() -> None:
    """Compile (or load from the on-disk cache) :func:`solve_rows` for the argument types the solver passes, so
    that the compile time does not land in a timed region."""
    solve_all(np.zeros((1, 2)), np.zeros(1), np.ones(1), np.ones((1, 2), dtype=bool), np.ones(1, dtype=np.int64),
              1, 2, 1)


__all__ = ["solve_rows", "solve_all", "warm_up", "ROWS_PER_CHUNK"]
