"""Batched subset-sum instances of the strong constructions (docs/math.md §6): candidate capping, weight splitting into
parts, zero targets, and the call to :func:`construct.subset_sum.solve_subset_sums`.

- **Cap and blocks**: an instance searches its first a·k available candidates (column order) as a consecutive
  blocks of k (``cap`` = (k, a), or an int k for a = 1), each block exactly on its own (k ≤
  :data:`theory.subset_sum.SOLVER_MAX_CANDIDATES`, the solver's prefix cap), and takes the best block (the first
  block within ε ends the search). Widths from :mod:`theory.strong_widths` guarantee ≥ a·k survivors w.h.p. and
  that all a blocks fail with probability ≤ δ'/2 (:func:`theory.subset_sum.search_plan`); at most k candidates are
  chosen, which bounds the amplification Λ_t used by the a-priori tolerance split.
- **Parts**: a target |W| ≤ P is split into P parts W/P, part q using the candidate columns q, q+P, … of its
  group, each solved to ε/P; the errors add up to ≤ ε.
- **Zero targets** (sparse targets) are solved by the empty subset without calling the solver.
- **Best, not first**: every instance takes the best subset of the prefix searched in its last round
  (``stop="best"``), not the first one within its tolerance: the instance errors, and with them the certificate
  and the network error, come out several times smaller at little extra time (construct/README.md).
"""
from __future__ import annotations

import numpy as np

from construct.subset_sum import DEFAULT_MAX_PREFIX, solve_subset_sums_detailed

__all__ = ["cap_available", "block_available", "solve_instances", "split_parts"]


def _block_plan(cap) -> tuple[int | None, int]:
    """(k, a) from ``cap``: None → (None, 1), int k → (k, 1), (k, a) → (k, a); k must be ≤ the solver's cap."""
    if cap is None:
        return None, 1
    k, a = (cap, 1) if np.ndim(cap) == 0 else tuple(cap)
    k, a = int(k), int(a)
    if not (1 <= k <= DEFAULT_MAX_PREFIX) or a < 1:
        raise ValueError(f"cap={cap!r} is out of range: allowed a block size k in [1, {DEFAULT_MAX_PREFIX}] (the solver's "
                         "prefix cap) and a >= 1 blocks")
    return k, a


def cap_available(available: np.ndarray, cap) -> np.ndarray:
    """available restricted to the first k·a True entries of each row (``cap`` = k, (k, a) or None: unchanged)."""
    k, a = _block_plan(cap)
    if k is None:
        return available
    return available & (np.cumsum(available, axis=-1) <= k * a)


def block_available(available: np.ndarray, k: int, b: int) -> np.ndarray:
    """available restricted to block b: the available entries of rank b·k + 1 … (b + 1)·k of each row."""
    rank = np.cumsum(available, axis=-1)
    return available & (rank > b * k) & (rank <= (b + 1) * k)


def split_parts(index: np.ndarray, parts: int) -> list[np.ndarray]:
    """Columns of a group split into ``parts`` strided sub-groups (q, q+P, …)."""
    return [index[q::parts] for q in range(parts)]


def solve_instances(candidates, available, targets, eps, cap=None):
    """(mask, error) of every instance row: mask ⊆ available (capped), error = |Σ chosen − target|.

    ``cap``: None (the first :data:`construct.subset_sum.DEFAULT_MAX_PREFIX` available candidates), k (the first
    k) or (k, a) (the first a·k as a blocks of k, best block taken; module docstring). Rows with target 0 get the
    empty subset and error 0 without a solver call."""
    candidates = np.asarray(candidates, dtype=np.float64)
    available = np.asarray(available, dtype=bool)
    k, a = _block_plan(cap)
    available = cap_available(available, cap)
    targets = np.asarray(targets, dtype=np.float64)
    eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), targets.shape)
    B, n = candidates.shape
    mask = np.zeros((B, n), dtype=bool)
    error = np.abs(targets).copy()
    todo = np.nonzero(targets != 0)[0]
    if not (todo.size and n):
        return mask, error
    for b in range(a):
        av = available[todo] if k is None else block_available(available[todo], k, b)
        if b > 0 and not av.any():
            break
        sol = solve_subset_sums_detailed(candidates[todo], targets[todo], eps[todo], av, stop="best",
                                         max_prefix=DEFAULT_MAX_PREFIX)
        better = (sol.error < error[todo]) | (b == 0)
        mask[todo[better]] = sol.mask[better]
        error[todo[better]] = sol.error[better]
        todo = todo[error[todo] > eps[todo]]  # rows within ε are done; the others try the next block
        if todo.size == 0:
            break
    return mask, error
