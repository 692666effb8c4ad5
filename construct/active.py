"""The active sub-network of a ticket: the units that can be non-zero or carry a claim.

A hidden unit u of source layer l is *inactive* when it has no kept incoming edge, a zero (or pruned) bias and the
role UNUSED: it outputs ReLU(0) = 0 for every input, and in the certificate of docs/math.md §6 its error bound is
e_u = 0 (no coefficients, no target: C_u = T_u = 0) and its quantity is none (UNUSED), so it contributes nothing
to any later unit. Dropping the inactive units (their rows, and their columns in the next layer) therefore leaves
the forward pass and every term of the certificate recursion unchanged — the same non-zero terms summed in the
same order. The input units and the output units are always kept.

Strong tickets of narrow targets live in sources of 10^7 units of which a few thousand are used; computing the
certificate and the sampled error on the active units makes their cost proportional to the ticket, not the source
(before: 2048 forward passes over 10^7-wide activations, one sample at a time).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from construct.ticket import UNUSED, Roles

__all__ = ["active_units", "active_subnetwork"]


def active_units(layers, roles) -> list:
    """Indices of the active units of every source layer l = 1..L_S (``layers[l-1]`` = (W_l ⊙ S_l as CSR,
    b_l ⊙ bias_l), ``roles[l-1]`` = :class:`construct.ticket.Roles`); the last layer keeps all its units."""
    out = []
    depth = len(layers)
    for l, ((mat, bias), role) in enumerate(zip(layers, roles), start=1):
        if l == depth:
            out.append(np.arange(mat.shape[0]))
            continue
        mat = sp.csr_matrix(mat)
        has_in = np.diff(mat.indptr) > 0
        active = has_in | (np.asarray(bias) != 0) | (role.kind != UNUSED)
        out.append(np.flatnonzero(active))
    return out


def _restrict(mat, rows: np.ndarray, cols: np.ndarray | None, n_cols: int):
    """mat[rows][:, cols] as CSR (cols None: all columns); entries in dropped columns are dropped."""
    mat = sp.csr_matrix(mat)[rows]
    if cols is None:
        return mat
    new_col = np.full(n_cols, -1, dtype=np.int64)
    new_col[cols] = np.arange(cols.size)
    coo = mat.tocoo()
    c = new_col[coo.col]
    keep = c >= 0
    return sp.csr_matrix((coo.data[keep], (coo.row[keep], c[keep])), shape=(rows.size, cols.size))


def active_subnetwork(layers, roles):
    """(layers, roles) restricted to :func:`active_units`: same forward pass and same certificate terms (module
    docstring). Returns lists of (CSR, bias) and of :class:`Roles`."""
    keep = active_units(layers, roles)
    out_layers, out_roles = [], []
    prev = None
    for l, ((mat, bias), role) in enumerate(zip(layers, roles), start=1):
        rows = keep[l - 1]
        out_layers.append((_restrict(mat, rows, prev, mat.shape[1]), np.asarray(bias)[rows]))
        out_roles.append(Roles(role.kind[rows], role.layer[rows], role.index[rows], role.scale[rows]))
        prev = rows
    return out_layers, out_roles
