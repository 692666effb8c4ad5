"""Pieces shared by the two strong constructions (docs/math.md §6): grouping candidate units, gathering one batched
instance array per (rows × groups), per-layer tolerances of the backward split, and pruning unused units."""
from __future__ import annotations

import math

import numpy as np

from construct.certificate import interval_bounds
from construct.instances import solve_instances
from construct.targets import Target
from construct.ticket import Roles
from theory.strong_widths import backward_layer_tolerance

__all__ = ["empty_selection", "compact_groups", "solve_grouped", "layer_input_norms", "layer_tolerance", "prune_unused",
           "scaled_group", "scaled_count"]

_MAX_ENTRIES = 1 << 20  # candidate entries gathered per solver call (≈ 40 MB of float64 products, copies and the
# solver's work arrays)


def empty_selection(source, expected_widths, layout: str):
    """Check that ``source`` has the construction's widths; return everything pruned: per source layer the kept
    edges (bool, like the mask), the kept biases (bool) and the unit roles (all UNUSED)."""
    if source.widths != tuple(expected_widths):
        raise ValueError(f"source widths {source.widths} do not match the {layout} layout {tuple(expected_widths)}")
    shapes = [layer.shape for layer in source.layers]
    kept = [np.zeros(shape, dtype=bool) for shape in shapes]
    bias_kept = [np.zeros(shape[0], dtype=bool) for shape in shapes]
    roles = [Roles.empty(shape[0]) for shape in shapes]
    return kept, bias_kept, roles


def scaled_group(size: int, multiplier: float, parts: int) -> int:
    """Group size times the width multiplier, rounded up to a multiple of ``parts`` (0 stays 0)."""
    if size == 0:
        return 0
    return parts * max(1, scaled_count(size, multiplier, "group size", parts))


def scaled_count(size: int, multiplier: float, what: str, parts: int = 1) -> int:
    """⌈size·multiplier/parts⌉ for a unit count scaled by the width multiplier; a count that overflows (≥ 2^63, or
    not a finite float) is refused in one line ("needs more than 2^63 units") instead of an OverflowError."""
    try:
        value = size * multiplier / parts
    except OverflowError:
        value = math.inf
    if not value < 2.0**63:  # also NaN and inf
        raise ValueError(f"the source needs more than 2^63 units ({what} {size} times --width-multiplier "
                         f"{multiplier:g}): allowed a smaller --width-multiplier")
    return math.ceil(value)


def compact_groups(ids: np.ndarray, select: np.ndarray) -> np.ndarray:
    """For G groups of candidate unit ids (G, K) and a selection (G, K) bool, the selected ids of every group moved
    to the front in their original order, padded with −1: shape (G, max selected)."""
    order = np.argsort(~select, axis=1, kind="stable")
    counts = select.sum(axis=1)
    width = int(counts.max(initial=0))
    out = np.take_along_axis(ids, order, axis=1)[:, :width]
    out[np.arange(width)[None, :] >= counts[:, None]] = -1
    return out


def solve_grouped(layer, rows: np.ndarray, groups: np.ndarray, scale: np.ndarray, targets: np.ndarray, eps: float,
                  cap: int | None, kept, chosen_l1: np.ndarray | None = None, unit_ids: np.ndarray | None = None):
    """Solve every (row r, group k) instance: candidates W[rows[r], groups[k, :]]·scale[groups[k, :]] of the source
    layer ``layer`` (:class:`construct.source.SourceLayer`, whose rows are drawn a few at a time, never all at once),
    available iff M[rows[r], u] (and u ≠ −1), target targets[r, k], tolerance ``eps``. Marks the chosen edges in
    ``kept`` (rows[r], u), adds Σ |chosen candidate| of row r to ``chosen_l1[r]`` when given, and returns the
    errors (R, G).

    ``unit_ids`` (sparse form, the 2L construction): ``groups`` hold positions c into ``unit_ids``/``scale`` (the
    candidate c is source unit unit_ids[c], scaled by scale[c]); only those columns of the rows are read
    (:meth:`construct.source.SourceLayer.take_rows` with ``cols``). ``kept``: a bool array marked in place, or a
    list to which the chosen (rows, units) index arrays are appended."""
    R, G = targets.shape
    width = groups.shape[1]
    errors = np.zeros((R, G))
    if R == 0 or G == 0:
        return errors
    if width == 0:
        return np.abs(targets)
    safe = np.where(groups >= 0, groups, 0)
    valid = groups >= 0
    # rows per step: bounded by the gathered candidates (and, reading whole rows, by the drawn rows of the layer);
    # groups per solver call: bounded by the gathered candidates (a row's instances may be split over several calls;
    # every instance is solved on its own, so the results do not depend on the split)
    read = layer.shape[1] if unit_ids is None else 1
    step = max(1, min(_MAX_ENTRIES // max(1, G * width), _MAX_ENTRIES // read))
    gstep = max(1, _MAX_ENTRIES // max(1, step * width))
    for r0 in range(0, R, step):
        rr = rows[r0:r0 + step]
        if unit_ids is None:
            w_rows, m_rows = layer.take_rows(rr)
        for g0 in range(0, G, gstep):
            gs = slice(g0, g0 + gstep)
            pos = safe[gs]
            if unit_ids is not None:  # only the columns of this call's candidates are read
                uc, inv = np.unique(pos, return_inverse=True)
                w_rows, m_rows = layer.take_rows(rr, cols=unit_ids[uc])
                pos = inv.reshape(pos.shape)
            w = np.multiply(w_rows[:, pos], scale[safe[gs]][None], dtype=np.float64)  # (r, g, width), float64
            av = m_rows[:, pos] & valid[gs][None]
            if unit_ids is not None:
                del w_rows, m_rows
            t = targets[r0:r0 + step, gs]
            m, e = solve_instances(w.reshape(-1, width), av.reshape(-1, width), t.reshape(-1), eps, cap)
            errors[r0:r0 + step, gs] = e.reshape(t.shape)
            m = m.reshape(av.shape)
            ri, gi, ci = np.nonzero(m)
            units = groups[g0 + gi, ci] if unit_ids is None else unit_ids[groups[g0 + gi, ci]]
            if isinstance(kept, list):
                kept.append((rr[ri], units.astype(np.int64)))
            else:
                kept[rr[ri], units] = True
            if chosen_l1 is not None:
                chosen_l1[r0:r0 + rr.size] += np.bincount(ri, weights=np.abs(w[ri, gi, ci]), minlength=rr.size)
            del w, av, m
        if unit_ids is None:
            del w_rows, m_rows
    return errors


def layer_input_norms(target: Target, box) -> list[float]:
    """‖B_{t−1}‖_1 = Σ_j sup_X |x_j^{(t−1)}| for t = 1..L (interval arithmetic on the target, docs/math.md §6)."""
    bounds = interval_bounds(target, box)
    return [float(np.sum(np.maximum(np.abs(lo), np.abs(hi)))) for lo, hi in bounds[:-1]]


def layer_tolerance(t: int, widths_eps, eps, target: Target, norms, downstream: float) -> float:
    """ε_t used for target layer t: the a-priori (forward) ε_t, or with ``eps`` the larger backward value
    ε/(L·(‖B_{t−1}‖_1 + 1)·Π_{k>t} Λ_k) with the actual norms and the measured amplifications of layers k > t (both
    keep every layer's term ≤ ε/L, so the certificate stays ≤ ε when every instance succeeds)."""
    forward = float(widths_eps[t - 1])
    if eps is None:
        return forward
    backward = backward_layer_tolerance(eps, target.depth, norms[t - 1], max(downstream, 1e-300))
    return min(max(forward, backward), 0.5)


def prune_unused(kept, bias_kept, roles, first: int, last: int) -> None:
    """Units of source layers first..last (1-based) with no kept outgoing edge lose all their incoming edges, their
    bias and their role (they do not change the output). Done from the top down so chains are pruned."""
    from construct.ticket import UNUSED

    for l in range(last, first - 1, -1):
        unused = ~kept[l].any(axis=0)  # units of source layer l (kept[l] is layer l+1's mask)
        kept[l - 1][unused] = False
        bias_kept[l - 1][unused] = False
        roles[l - 1].kind[unused] = UNUSED
