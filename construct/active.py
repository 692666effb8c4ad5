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

from construct.ticket import Roles, mask_nonzero

__all__ = ["active_units", "active_subnetwork", "used_layers", "UnitLayers"]


class UnitLayers(list):
    """[(W_l ⊙ S_l, b_l ⊙ bias_l)] for l = 1..L_S restricted to a subset of every layer's units that contains all
    its active units: ``units[l-1]`` (sorted) are the source units of the rows of layer l, the columns of layer l
    are ``units[l-2]`` (the inputs for l = 1), the last layer keeps all its units. A network in its own right that
    computes the ticket's function (dropped units output 0), accepted wherever the full
    :func:`construct.ticket.effective_layers` are (:func:`active_subnetwork` maps the roles with ``units``)."""

    def __init__(self, layers, units):
        super().__init__(layers)
        self.units = list(units)


def _positions(sorted_ids: np.ndarray, values: np.ndarray):
    """(positions of ``values`` in ``sorted_ids``, found) for a sorted id array."""
    pos = np.searchsorted(sorted_ids, values)
    if sorted_ids.size == 0:
        return pos, np.zeros(values.size, dtype=bool)
    found = sorted_ids[np.minimum(pos, sorted_ids.size - 1)] == values
    return pos, found & (pos < sorted_ids.size)


def used_layers(ticket) -> UnitLayers:
    """The ticket's effective layers (:func:`construct.ticket.effective_layer`: W_t ⊙ S_t and b_t ⊙ bias_t) on the
    units with a kept incoming edge, a kept bias or a role (every active unit; all units of the last layer), computed
    from the kept entries alone — for a sparse 2L ticket (:class:`construct.ticket.SparseMask`) nothing of the size
    of the source is allocated. Entries from units outside the previous layer's set (units that output 0) are
    dropped. Same forward pass and same certificate terms as the full layers (module docstring)."""
    depth = len(ticket.kept)
    layers, units = [], []
    prev = None
    for l in range(1, depth + 1):
        shape = ticket.kept[l - 1].shape
        rows, cols = mask_nonzero(ticket.kept[l - 1])
        brows = mask_nonzero(ticket.bias_kept[l - 1])[0]
        if l == depth:
            u = np.arange(shape[0], dtype=np.int64)
        else:
            u = np.union1d(np.union1d(np.unique(rows), brows), ticket.roles[l - 1].assigned()).astype(np.int64)
        if prev is None:
            ccols, n_cols = cols, shape[1]
        else:
            ccols, ok = _positions(prev, cols)
            rows, cols, ccols, n_cols = rows[ok], cols[ok], ccols[ok], prev.size
        if ticket.is_weak:
            vals = np.asarray(ticket.weak_weights[l - 1][rows, cols], dtype=np.float64)
            b = np.asarray(ticket.weak_biases[l - 1])[brows]
        else:  # gathered block by block: a drawn source layer is never materialized here
            layer = ticket.source.layers[l - 1]
            vals = layer.gather(rows, cols, with_mask=False)[0].astype(np.float64)
            b = layer.bias_at(brows)
        mat = sp.csr_matrix((vals, (np.searchsorted(u, rows), ccols)), shape=(u.size, n_cols))
        bias = np.zeros(u.size)
        bias[np.searchsorted(u, brows)] = np.asarray(b, dtype=np.float64)
        layers.append((mat, bias))
        units.append(u)
        prev = u
    return UnitLayers(layers, units)


def active_units(layers, roles) -> list:
    """Indices of the active units of every source layer l = 1..L_S (``layers[l-1]`` = (W_l ⊙ S_l as CSR,
    b_l ⊙ bias_l), ``roles[l-1]`` = :class:`construct.ticket.Roles` or :class:`construct.ticket.SparseRoles` of
    the same units); the last layer keeps all its units."""
    out = []
    depth = len(layers)
    for l, ((mat, bias), role) in enumerate(zip(layers, roles), start=1):
        if l == depth:
            out.append(np.arange(mat.shape[0]))
            continue
        mat = sp.csr_matrix(mat)
        active = (np.diff(mat.indptr) > 0) | (np.asarray(bias) != 0)
        active[role.assigned()] = True
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
    docstring). ``layers``: the full effective layers or :class:`UnitLayers` (whose ``units`` select the roles).
    Returns lists of (CSR, bias) and of :class:`Roles`."""
    units = getattr(layers, "units", None)
    if units is not None:
        roles = [role.take(u) for role, u in zip(roles, units)]
    keep = active_units(layers, roles)
    out_layers, out_roles = [], []
    prev = None
    for l, ((mat, bias), role) in enumerate(zip(layers, roles), start=1):
        rows = keep[l - 1]
        out_layers.append((_restrict(mat, rows, prev, mat.shape[1]), np.asarray(bias)[rows]))
        out_roles.append(role.take(rows))
        prev = rows
    return out_layers, out_roles
