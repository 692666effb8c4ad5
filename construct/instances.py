"""Batched subset-sum instances of the strong constructions (MATH.md §6): candidate capping, weight splitting into
parts, zero targets, and the call to :func:`construct.subset_sum.solve_subset_sums`.

- **Cap**: an instance searches only its first ``cap`` available candidates (column order). Widths from
  :mod:`theory.strong_widths` guarantee ≥ cap = N_SS(ε, δ'/2) survivors w.h.p.; the cap bounds the number of chosen
  candidates, hence the amplification Λ_t used by the a-priori tolerance split.
- **Parts**: a target |W| ≤ P is split into P parts W/P, part q using the candidate columns q, q+P, … of its
  group, each solved to ε/P; the errors add up to ≤ ε.
- **Zero targets** (sparse targets) are solved by the empty subset without calling the solver.
- **Best, not first**: every instance takes the best subset of the prefix searched in its last round
  (``stop="best"``), not the first one within its tolerance: the instance errors, and with them the certificate
  and the network error, come out several times smaller at little extra time (construct/README.md).
"""
from __future__ import annotations

import numpy as np

from construct.subset_sum import solve_subset_sums

__all__ = ["cap_available", "solve_instances", "split_parts"]


def cap_available(available: np.ndarray, cap: int | None) -> np.ndarray:
    """available restricted to the first ``cap`` True entries of each row (None: unchanged)."""
    if cap is None:
        return available
    return available & (np.cumsum(available, axis=-1) <= cap)


def split_parts(index: np.ndarray, parts: int) -> list[np.ndarray]:
    """Columns of a group split into ``parts`` strided sub-groups (q, q+P, …)."""
    return [index[q::parts] for q in range(parts)]


def solve_instances(candidates, available, targets, eps, cap: int | None = None):
    """(mask, error) of every instance row: mask ⊆ available (capped), error = |Σ chosen − target|.

    Rows with target 0 get the empty subset and error 0 without a solver call."""
    candidates = np.asarray(candidates, dtype=np.float64)
    available = cap_available(np.asarray(available, dtype=bool), cap)
    targets = np.asarray(targets, dtype=np.float64)
    eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), targets.shape)
    B, n = candidates.shape
    mask = np.zeros((B, n), dtype=bool)
    error = np.abs(targets).copy()
    todo = np.nonzero(targets != 0)[0]
    if todo.size and n:
        m, e = solve_subset_sums(candidates[todo], targets[todo], eps[todo], available[todo], stop="best")
        mask[todo] = m
        error[todo] = e
    return mask, error
