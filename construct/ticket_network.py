"""A ticket (or target) as a plain ReLU network, and its exact reduction to a small equivalent network.

The error bounds of :mod:`construct.exact_bound`, :mod:`construct.relaxation` and the attack of
:mod:`construct.attack` work on networks f(x) = W_D ReLU(… ReLU(W_1 x + b_1) …) + b_D. A ticket's network is large
(every source unit) but mostly made of units that compute a *univariate* function of one unit of the previous layer:
the lifting units of L+1 and the intermediate units of 2L (docs/math.md §6). :func:`reduce_network` rewrites the network
into an equal one (same function; floating-point sums reassociated, so equal up to rounding) using only the
identities

- ReLU(w·h) = |w|·ReLU(sign(w)·h)  (all zero-bias units reading the same unit with the same sign merge into one);
- ReLU(w·h + c) = w·h + c for h ≥ 0 (post-ReLU), w > 0, c ≥ 0; ReLU(w·h + c) = 0 for h ≥ 0, w < 0, c ≤ 0;
- a unit with no kept input is the constant ReLU(b) (folded into the next layer's bias);
- a layer of pass-through units ReLU(h_v) = h_v (h_v ≥ 0) is composed into the next layer.

A 2L ticket of an L-layer target reduces to units ReLU(±x_j) followed by one unit per target neuron and part; the
reduction never uses the roles, so it is sound for any file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["Network", "Origin", "ticket_network", "target_network", "reduce_network"]


@dataclass(frozen=True)
class Network:
    """ReLU MLP: ``layers`` = ((W_1, b_1), …, (W_D, b_D)), W as float64 CSR (n_l × n_{l−1}); ReLU after every layer
    but the last. ``units`` (optional): per layer the source unit index of every row, when the network is a
    ticket's on a subset of its units (:func:`construct.active.used_layers`); :func:`reduce_network` reports
    origins in source unit indices."""

    layers: tuple
    units: tuple | None = None

    @property
    def widths(self) -> tuple:
        return (self.layers[0][0].shape[1],) + tuple(w.shape[0] for w, _ in self.layers)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def forward(self, x: np.ndarray, keep: bool = False):
        """Outputs for a batch x (N × n_0); with ``keep`` also the list of pre-activations of every layer."""
        h = np.asarray(x, dtype=np.float64)
        pre = []
        for l, (w, b) in enumerate(self.layers, start=1):
            z = np.asarray((w @ h.T).T) + b
            if keep:
                pre.append(z)
            h = np.maximum(z, 0.0) if l < self.depth else z
        return (h, pre) if keep else h

    def gradient(self, pre: list, g_out: np.ndarray) -> np.ndarray:
        """d(Σ g_out · f(x))/dx for the batch whose pre-activations are ``pre`` (ReLU'(0) = 0)."""
        g = np.asarray(g_out, dtype=np.float64)
        for l in range(self.depth, 0, -1):
            w, _ = self.layers[l - 1]
            if l < self.depth:
                g = g * (pre[l - 1] > 0)
            g = np.asarray((w.T @ g.T).T)
        return g


def ticket_network(ticket, layers=None) -> Network:
    """The ticket's network: W_t ⊙ S_t and b_t ⊙ bias_t of every source layer
    (:func:`construct.ticket.effective_layer`). ``layers``: the full :func:`construct.ticket.effective_layers` or :func:`construct.active.used_layers` (the
    default: the units with a kept edge, a kept bias or a role — the same function, since every other unit outputs
    0 — without arrays of the source's size; the network then carries their source indices in ``units``)."""
    from construct.active import used_layers

    layers = layers if layers is not None else used_layers(ticket)
    units = getattr(layers, "units", None)
    return Network(tuple((sp.csr_matrix(w, dtype=np.float64), np.asarray(b, dtype=np.float64)) for w, b in layers),
                   None if units is None else tuple(units))


def target_network(target) -> Network:
    return Network(tuple((sp.csr_matrix(np.asarray(w, dtype=np.float64)), np.asarray(b, dtype=np.float64))
                         for w, b in zip(target.weights, target.biases)))


def _reduce_layer(w: sp.csr_matrix, b: np.ndarray, w_next: sp.csr_matrix, b_next: np.ndarray, nonneg_in: bool):
    """Rewrite hidden layer (w, b) and the next layer's (w_next, b_next) into an equal pair with merged units.
    Returns (w, b, w_next, b_next, all_pass_through)."""
    w = w.tocsr(copy=True)
    w.eliminate_zeros()
    w.sort_indices()
    n, m = w.shape
    nnz = np.diff(w.indptr)
    first = np.minimum(w.indptr[:-1], max(w.nnz - 1, 0))
    col = w.indices[first] if w.nnz else np.zeros(n, np.int64)
    val = w.data[first] if w.nnz else np.zeros(n)
    dead = nnz == 0
    uni = nnz == 1
    sign = np.sign(val)
    zero_bias = uni & (b == 0)
    if nonneg_in:
        lin = uni & (sign > 0) & (b >= 0)          # w·h + c, exactly
        off = uni & (sign < 0) & (b <= 0)          # always 0
    else:
        lin = zero_bias.copy()                    # |w|·ReLU(sign·x)
        off = np.zeros(n, bool)
    merge = (zero_bias | lin) & ~off
    const = np.where(dead, np.maximum(b, 0.0), 0.0) + np.where(merge, np.where(lin & nonneg_in, b, 0.0), 0.0)
    keep = ~(dead | merge | off)
    # merged units: one per (input column, sign)
    key = col[merge] * 2 + (sign[merge] < 0)
    uniq, inv = np.unique(key, return_inverse=True)
    n_keep = int(keep.sum())
    new_index = np.full(n, -1, np.int64)
    new_index[keep] = np.arange(n_keep)
    new_index[np.nonzero(merge)[0]] = n_keep + inv
    scale = np.where(merge, np.abs(val), 1.0)
    n_new = n_keep + uniq.size
    rows = np.nonzero(new_index >= 0)[0]
    mapping = sp.csr_matrix((scale[rows], (rows, new_index[rows])), shape=(n, n_new))
    b_next = b_next + np.asarray(w_next @ const).ravel()
    w_next = (w_next @ mapping).tocsr()
    merged = sp.csr_matrix((np.where(uniq % 2 == 0, 1.0, -1.0), (np.arange(uniq.size), uniq // 2)),
                           shape=(uniq.size, m))
    w_new = sp.vstack([w[keep], merged]).tocsr()
    b_new = np.concatenate([b[keep], np.zeros(uniq.size)])
    pass_through = nonneg_in and n_keep == 0 and not np.any(uniq % 2)
    origin = (np.concatenate([np.nonzero(keep)[0], np.full(uniq.size, -1)]),
              np.concatenate([np.full(n_keep, -1), uniq // 2]), np.concatenate([np.zeros(n_keep), np.where(uniq % 2, -1.0, 1.0)]))
    return w_new, b_new, w_next, b_next, pass_through, origin


@dataclass(frozen=True)
class Origin:
    """Where the units of one reduced layer come from: source layer ``layer`` (1-based); per unit the original
    unit index (``unit``, −1 for a merged unit) or, for a merged unit ReLU(sign·h_col), the column ``col`` of the
    previous reduced layer (input j for the first) and its ``sign``."""

    layer: int
    unit: np.ndarray
    col: np.ndarray
    sign: np.ndarray


def reduce_network(net: Network, with_origin: bool = False):
    """An equal network with merged univariate units and pass-through layers composed away (module docstring).
    With ``with_origin``: (network, [Origin of every reduced layer], the last one being the output layer)."""
    layers = [(sp.csr_matrix(w, dtype=np.float64), np.asarray(b, dtype=np.float64).copy()) for w, b in net.layers]
    out, origins = [], []
    nonneg_in = False
    i = 0
    while i < len(layers) - 1:
        w, b = layers[i]
        w_next, b_next = layers[i + 1]
        w, b, w_next, b_next, pass_through, origin = _reduce_layer(w, b, w_next, b_next, nonneg_in)
        if pass_through:  # x_i = P h (h ≥ 0, P a selection): next layer reads h directly
            layers[i + 1] = ((w_next @ w).tocsr(), b_next)
        else:
            out.append((w, b))
            unit = origin[0]
            if net.units is not None:  # row indices of this layer → source unit indices
                unit = np.where(unit >= 0, np.asarray(net.units[i])[np.maximum(unit, 0)], -1)
            origins.append(Origin(i + 1, unit, *origin[1:]))
            layers[i + 1] = (w_next, b_next)
            nonneg_in = True
        i += 1
    out.append(layers[-1])
    n = layers[-1][0].shape[0]
    last = np.arange(n) if net.units is None else np.asarray(net.units[-1])
    origins.append(Origin(len(layers), last, np.full(n, -1), np.zeros(n)))
    return (Network(tuple(out)), origins) if with_origin else Network(tuple(out))
