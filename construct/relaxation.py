"""Upper bounds on the sup-error max_{x∈X} ‖f_ticket(x) − f_T(x)‖_∞ that are cheaper than the exact program
(:mod:`construct.exact_bound`) and tighter than the a-posteriori certificate of :mod:`construct.certificate`.

1. **Reduced certificate**: docs/math.md §6's recursion e_s ≤ Σ_u |c_su| e_u + Σ_groups max |C_sq − T_sq|·B_q, applied to
   the exactly reduced ticket (:func:`construct.ticket_network.reduce_network`) instead of the source. Many source
   units that compute the same function of one unit (the intermediate units ReLU(a_u·x̂_i) = a_u·x̂_i of 2L, for
   x̂_i ≥ 0 and a_u > 0) are one unit there, so the amplification Σ_u |c_su| becomes |Σ_u c_su a_u| = |Ŵ_oi|: the
   cancellation inside a subset sum is no longer paid for. Sound for any roles, like the certificate itself (the
   merged units get the role their input's role implies, e.g. LIFT(0, j, ±1) for ReLU(±x_j)).
2. **Linear relaxation (CROWN/DeepPoly-style back-substitution)** through the joint network f_ticket − f_T: both
   networks' pre-activation bounds by back-substitution, the unstable ReLUs relaxed by the triangle's upper line
   and the adaptive lower line (slope 1 if u ≥ −l, else 0); the output rows of the ticket and of the target are
   back-substituted to the input, *summed there* (so the parts of the two networks that are the same linear
   function cancel) and maximized over the box. The ticket's units ReLU(±x_j) (which the reduction creates) are
   not relaxed: the back-substituted form is linear in r⁺ = ReLU(x), r⁻ = ReLU(−x) and maximized over the box
   coordinate by coordinate exactly (at x_j ∈ {a, 0, b}).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from construct.ticket import CONST, LIFT, NEURON, Roles, Ticket
from construct.ticket_network import Network, reduce_network, ticket_network

__all__ = ["reduced_certificate", "crown_max_error", "MAX_DENSE_ENTRIES"]

MAX_DENSE_ENTRIES = 1 << 26  # the relaxation works on dense layers of the reduced networks (512 MB per layer)


def _reduced_roles(ticket: Ticket, origins) -> list:
    """Roles of the reduced units (see module docstring)."""
    roles = []
    prev = None
    for k, org in enumerate(origins):
        n = org.unit.size
        r = Roles.empty(n)
        kept = org.unit >= 0
        got = ticket.roles[org.layer - 1].take(org.unit[kept])  # no dense array of the source layer's size
        r.kind[kept], r.layer[kept], r.index[kept], r.scale[kept] = got.kind, got.layer, got.index, got.scale
        for s in np.nonzero(~kept)[0]:
            c, sign = int(org.col[s]), float(org.sign[s])
            if k == 0:  # ReLU(sign·x_c)
                r.kind[s], r.layer[s], r.index[s], r.scale[s] = LIFT, 0, c, sign
                continue
            pk, pl, pi, ps = prev.kind[c], prev.layer[c], prev.index[c], prev.scale[c]
            if sign < 0:
                continue  # ReLU(−h), h ≥ 0: always 0 (UNUSED)
            if pk == NEURON:   # ReLU(x̂_i^{(t)}) = x̂_i^{(t)}
                r.kind[s], r.layer[s], r.index[s], r.scale[s] = LIFT, pl, pi, 1.0
            elif pk in (LIFT, CONST):
                r.kind[s], r.layer[s], r.index[s], r.scale[s] = pk, pl, pi, ps
        roles.append(r)
        prev = r
    return roles


def target_bounds(target, box):
    """Bounds [(lo_t, hi_t)], t = 0..L, of the target's x^{(t)} over the box in the format of
    :func:`construct.certificate.interval_bounds` (post-ReLU for 0 < t < L), from back-substitution intersected with
    interval arithmetic (:func:`layer_bounds`), widened by 1e−9·(1 + |lo| + |hi|) against rounding."""
    from construct.certificate import interval_bounds
    from construct.ticket_network import target_network

    ib = interval_bounds(target, box)
    lb = layer_bounds(target_network(target), box)
    if lb is None:
        return ib
    out = [ib[0]]
    for t, (lo, hi) in enumerate(lb, start=1):
        slack = 1e-9 * (1.0 + np.abs(lo) + np.abs(hi))
        lo, hi = lo - slack, hi + slack
        if t < target.depth:
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        out.append((np.maximum(lo, ib[t][0]), np.minimum(hi, ib[t][1])))
    return out


def reduced_certificate(ticket: Ticket, box, reduced=None) -> float:
    """The certificate of docs/math.md §6 computed on the reduced ticket (module docstring, item 1), with the target's
    bounds B from back-substitution (:func:`target_bounds`) instead of interval arithmetic."""
    from construct.certificate import certify

    net, origins = reduced if reduced is not None else reduce_network(ticket_network(ticket), with_origin=True)
    roles = _reduced_roles(ticket, origins)
    layers = [(sp.csr_matrix(w), b) for w, b in net.layers]
    fake = Ticket(ticket.target, None, tuple(w for w, _ in net.layers), (), tuple(roles), None, None, {})
    return certify(fake, box, layers, target_bounds(ticket.target, box)).certificate


@dataclass
class _Dense:
    W: list
    b: list
    split: np.ndarray | None  # first-layer units ReLU(±x_j) that are not relaxed: (unit, j, sign) rows


def _dense(net: Network, split_first: bool) -> _Dense:
    W = [np.asarray(w.toarray()) for w, _ in net.layers]
    b = [np.asarray(v, dtype=np.float64) for _, v in net.layers]
    split = None
    if split_first and net.depth > 1:
        w1 = W[0]
        nz = (w1 != 0).sum(axis=1)
        rows = np.nonzero((nz == 1) & (b[0] == 0))[0]
        cols = np.argmax(w1[rows] != 0, axis=1)
        vals = w1[rows, cols]
        split = np.stack([rows, cols, np.sign(vals), np.abs(vals)], axis=1) if rows.size else np.zeros((0, 4))
    return _Dense(W, b, split)


def _relax(l, u):
    """(upper slope, upper offset, lower slope) of ReLU on [l, u]."""
    au = np.zeros_like(l)
    bu = np.zeros_like(l)
    al = np.zeros_like(l)
    act = l >= 0
    au[act] = 1.0
    al[act] = 1.0
    un = (l < 0) & (u > 0)
    au[un] = u[un] / (u[un] - l[un])
    bu[un] = -l[un] * au[un]
    al[un] = (u[un] >= -l[un]).astype(float)
    return au, bu, al


def _backsub(net: _Dense, lam: np.ndarray, k: int, bounds: list):
    """Upper linear bound of lam·h_k (h_k = post-activation of layer k ≥ 1, or x for k = 0) as
    (coefficients on r⁺, coefficients on r⁻, constant) over the split input r = (ReLU(x), ReLU(−x))."""
    n0 = net.W[0].shape[1]
    const = np.zeros(lam.shape[0])
    cp = np.zeros((lam.shape[0], n0))
    cm = np.zeros((lam.shape[0], n0))
    for layer in range(k, 0, -1):
        l, u = bounds[layer - 1]
        au, bu, al = _relax(l, u)
        if layer == 1 and net.split is not None and net.split.shape[0]:
            rows = net.split[:, 0].astype(np.int64)
            cols = net.split[:, 1].astype(np.int64)
            sgn = net.split[:, 2]
            scl = net.split[:, 3]
            for s_val, target in ((1.0, cp), (-1.0, cm)):
                sel = sgn == s_val
                np.add.at(target.T, cols[sel], (lam[:, rows[sel]] * scl[sel]).T)
            lam = lam.copy()
            lam[:, rows] = 0.0
        pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
        const += pos @ bu
        lam = pos * au + neg * al            # now on z_layer
        const += lam @ net.b[layer - 1]
        lam = lam @ net.W[layer - 1]         # now on h_{layer-1}
    cp += lam
    cm -= lam
    return cp, cm, const


def _concretize(cp, cm, const, box):
    """max over x ∈ [a, b]^n of Σ_j cp_j ReLU(x_j) + cm_j ReLU(−x_j) + const (exact, coordinate-wise)."""
    a, b = float(box[0]), float(box[1])
    vals = [cp * max(b, 0.0) + cm * max(-b, 0.0), cp * max(a, 0.0) + cm * max(-a, 0.0)]
    if a < 0.0 < b:
        vals.append(np.zeros_like(cp))
    return np.max(vals, axis=0).sum(axis=1) + const


def _layer_bounds(net: _Dense, box) -> list:
    bounds = []
    for k in range(1, len(net.W) + 1):
        w, bias = net.W[k - 1], net.b[k - 1]
        up = _concretize(*_backsub(net, w, k - 1, bounds), box) + bias
        lo = -_concretize(*_backsub(net, -w, k - 1, bounds), box) + bias
        bounds.append((lo, up))
    return bounds


def layer_bounds(net: Network, box, split_first: bool = False):
    """[(l, u)] of the pre-activations of every layer of ``net`` over the box by back-substitution, intersected
    with interval arithmetic; None when a layer is too large to be made dense (``MAX_DENSE_ENTRIES``)."""
    from construct.exact_bound import network_interval_bounds

    if any(w.shape[0] * w.shape[1] > MAX_DENSE_ENTRIES for w, _ in net.layers):
        return None
    ib = network_interval_bounds(net, box)
    cb = _layer_bounds(_dense(net, split_first), box)
    return [(np.maximum(a[0], c[0]), np.minimum(a[1], c[1])) for a, c in zip(ib, cb)]


def crown_max_error(ticket_net: Network, target_net: Network, box) -> float | None:
    """Upper bound on max_x ‖ticket_net(x) − target_net(x)‖_∞ by joint back-substitution (module docstring,
    item 2); ``None`` when a layer has more than ``MAX_DENSE_ENTRIES`` entries."""
    for net in (ticket_net, target_net):
        if any(w.shape[0] * w.shape[1] > MAX_DENSE_ENTRIES for w, _ in net.layers):
            return None
    tn, gn = _dense(ticket_net, True), _dense(target_net, False)
    tb, gb = _layer_bounds(tn, box), _layer_bounds(gn, box)
    Dt, Dg = len(tn.W), len(gn.W)
    worst = 0.0
    for sgn in (1.0, -1.0):
        lt = sgn * tn.W[-1]
        lg = -sgn * gn.W[-1]
        cp1, cm1, c1 = _backsub(tn, lt, Dt - 1, tb)
        cp2, cm2, c2 = _backsub(gn, lg, Dg - 1, gb)
        up = _concretize(cp1 + cp2, cm1 + cm2, c1 + c2, box) + sgn * (tn.b[-1] - gn.b[-1])
        worst = max(worst, float(np.max(up)))
    # round-off allowance: the bound is computed in float64
    scale = sum(float(np.abs(w).sum()) for w in tn.W + gn.W)
    return worst + 1e-12 * (1.0 + scale)
