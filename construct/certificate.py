"""The a-posteriori error certificate of a ticket (docs/math.md §6), computed from the ticket's arrays and roles alone.

Target bounds: B_{t,j} = sup_{x∈X} |x_j^{(t)}| by interval arithmetic on the target, with B_0 from the box X.

Quantities: the constant 1, the raw inputs x_j, and r^±_{t,j} = ReLU(±x_j^{(t)}) for t = 0..L−1 (for t ≥ 1,
r^+_{t,j} = x_j^{(t)} and r^−_{t,j} = 0). A unit u with a role (see :mod:`construct.ticket`) ideally outputs
|λ_u|·q_u for one quantity q_u; e_u bounds |x̂_u − |λ_u| q_u| over X. For a unit s of source layer l with kept
coefficients c_{su} and kept bias b̂_s, write C_{sq} = Σ_{u: q_u = q} c_{su}|λ_u| (+ b̂_s on the constant) and T_{sq}
for the coefficients of s's ideal pre-activation (W_t[i, ·], b_t[i] for a target neuron; λ for a lifting unit).
Since Σ_u c_{su} x̂_u + b̂_s − Σ_q T_{sq} q = Σ_u c_{su}(x̂_u − |λ_u| q_u) + Σ_q (C_{sq} − T_{sq}) q and ReLU is 1-Lipschitz,

  e_s ≤ Σ_u |c_{su}|·e_u + Σ_groups max_{q∈group} |C_{sq} − T_{sq}|·B_q,     e_{inputs} = 0,

where a group is {r^+_{t,j}, r^−_{t,j}} (only one of them is non-zero at a time: the "larger of the two halves")
or a single quantity. This is docs/math.md §6's recursion (err_{sj}·B_{t−1,j} is the second term, Σ|c|·e the first);
the certificate is max over output units of e. It is sound for *any* roles, so ``verify`` needs nothing but the file.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from construct.active import active_subnetwork, used_layers
from construct.targets import Target, target_forward
from construct.ticket import CONST, LIFT, NEURON, UNUSED, Ticket, ticket_forward

_ACTIVATION_ENTRIES = 1 << 22  # float64 entries of one layer's activations per forward batch (32 MB)

__all__ = ["interval_bounds", "Certificate", "certify", "check_roles", "sampled_error", "ErrorSample"]


def interval_bounds(target: Target, box=(-1.0, 1.0)):
    """[(lo_t, hi_t)] for t = 0..L: bounds of x^{(t)} over X = [a, b]^{n_0} (post-ReLU for 0 < t < L, the linear
    output for t = L) by interval arithmetic."""
    a, b = float(box[0]), float(box[1])
    lo = np.full(target.widths[0], a)
    hi = np.full(target.widths[0], b)
    out = [(lo, hi)]
    for t, (w, bias) in enumerate(zip(target.weights, target.biases), start=1):
        wp, wn = np.maximum(w, 0.0), np.minimum(w, 0.0)
        nlo = wp @ lo + wn @ hi + bias
        nhi = wp @ hi + wn @ lo + bias
        if t < target.depth:
            nlo, nhi = np.maximum(nlo, 0.0), np.maximum(nhi, 0.0)
        lo, hi = nlo, nhi
        out.append((lo, hi))
    return out


class _Quantities:
    """Index maps of the quantity space (const, raw inputs, r^±_{t,j}) and their bounds B_q."""

    def __init__(self, target: Target, box, target_bounds=None):
        widths = target.widths
        self.n0 = widths[0]
        self.L = target.depth
        self.base = 1 + self.n0
        self.offsets = np.concatenate([[0], np.cumsum([2 * n for n in widths[:-1]])]).astype(np.int64)
        self.size = int(self.base + self.offsets[-1])
        self.n_groups = int(1 + self.n0 + self.offsets[-1] // 2)
        bounds = interval_bounds(target, box) if target_bounds is None else target_bounds
        self.bounds_layers = bounds
        B = np.zeros(self.size)
        B[0] = 1.0
        B[1:self.base] = max(abs(box[0]), abs(box[1]))
        group = np.zeros(self.size, dtype=np.int64)
        group[1:self.base] = np.arange(1, self.base)
        for t in range(self.L):
            lo, hi = bounds[t]
            ids = self.base + self.offsets[t] + 2 * np.arange(widths[t])
            B[ids] = np.maximum(hi, 0.0)
            B[ids + 1] = np.maximum(-lo, 0.0)
            g = self.base + self.offsets[t] // 2 + np.arange(widths[t])
            group[ids] = g
            group[ids + 1] = g
        self.B = B
        self.group = group

    def r(self, t, j, negative):
        return self.base + self.offsets[t] + 2 * np.asarray(j, dtype=np.int64) + np.asarray(negative, dtype=np.int64)

    def outputs(self, roles, first_layer: bool):
        """(quantity id or −1, |λ|) of every unit of a layer (the input layer when ``roles`` is None)."""
        if roles is None:
            return np.arange(1, self.base), np.ones(self.n0)
        n = roles.kind.size
        q = np.full(n, -1, dtype=np.int64)
        s = np.zeros(n)
        k = roles.kind
        c = k == CONST
        q[c] = 0
        s[c] = np.maximum(roles.scale[c], 0.0)
        nr = k == NEURON
        q[nr] = self.r(roles.layer[nr], roles.index[nr], 0)
        s[nr] = 1.0
        lf = (k == LIFT) & (roles.scale != 0)
        q[lf] = self.r(roles.layer[lf], roles.index[lf], roles.scale[lf] < 0)
        s[lf] = np.abs(roles.scale[lf])
        return q, s

    def targets(self, roles, target: Target, prev_raw: bool):
        """Sparse T (n × size): coefficients of every unit's ideal pre-activation in the quantities."""
        rows, cols, vals = [], [], []
        k = roles.kind

        def add_signal(r, t, j, coef):
            # coef · x_j^{(t)} in the quantities available from the previous layer
            if t == 0 and prev_raw:
                rows.append(r); cols.append(1 + j); vals.append(coef)
            elif t == 0:
                rows.extend([r, r]); cols.extend([self.r(0, j, 0), self.r(0, j, 1)]); vals.extend([coef, -coef])
            else:
                rows.append(r); cols.append(self.r(t, j, 0)); vals.append(coef)

        c = np.nonzero(k == CONST)[0]
        rows.append(c); cols.append(np.zeros(c.size, np.int64)); vals.append(roles.scale[c])
        lf = np.nonzero(k == LIFT)[0]
        for t in np.unique(roles.layer[lf]):
            sel = lf[roles.layer[lf] == t]
            add_signal(sel, int(t), roles.index[sel].astype(np.int64), roles.scale[sel])
        nr = np.nonzero(k == NEURON)[0]
        for t in np.unique(roles.layer[nr]):
            t = int(t)
            sel = nr[roles.layer[nr] == t]
            idx = roles.index[sel]
            w = target.weights[t - 1][idx]  # (|sel|, n_{t-1})
            rr = np.repeat(sel, w.shape[1])
            jj = np.tile(np.arange(w.shape[1], dtype=np.int64), sel.size)
            add_signal(rr, t - 1, jj, w.ravel())
            rows.append(sel); cols.append(np.zeros(sel.size, np.int64)); vals.append(target.biases[t - 1][idx])
        if rows:
            rows = np.concatenate([np.atleast_1d(np.asarray(x, dtype=np.int64)) for x in rows])
            cols = np.concatenate([np.atleast_1d(np.asarray(x, dtype=np.int64)) for x in cols])
            vals = np.concatenate([np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in vals])
        else:
            rows = cols = np.zeros(0, np.int64)
            vals = np.zeros(0)
        return sp.csr_matrix((vals, (rows, cols)), shape=(k.size, self.size))


def check_roles(ticket: Ticket, where: str = "ticket") -> None:
    """Raise a one-line ValueError unless every role references an existing target neuron / input and the last
    source layer's units are the target outputs NEURON (L, 0..n_L−1) in order."""
    widths = ticket.target.widths
    L = ticket.target.depth
    for l, r in enumerate(ticket.roles, start=1):
        bad_kind = ~np.isin(r.kind, [UNUSED, CONST, NEURON, LIFT])
        if bad_kind.any():
            raise ValueError(f"{where}: role_kind{l} contains {int(r.kind[bad_kind][0])}: allowed 0..3")
        nr = r.kind == NEURON
        if np.any((r.layer[nr] < 1) | (r.layer[nr] > L)):
            raise ValueError(f"{where}: role_layer{l} has a NEURON role outside target layers 1..{L}")
        lf = r.kind == LIFT
        if np.any((r.layer[lf] < 0) | (r.layer[lf] > L - 1)):
            raise ValueError(f"{where}: role_layer{l} has a LIFT role outside target layers 0..{L - 1}")
        for mask in (nr, lf):
            if mask.any():
                lim = np.asarray(widths)[r.layer[mask]]
                if np.any((r.index[mask] < 0) | (r.index[mask] >= lim)):
                    raise ValueError(f"{where}: role_index{l} references a neuron outside its target layer")
        if l < len(ticket.roles) and np.any(nr & (r.layer == L)):
            raise ValueError(f"{where}: role_layer{l} uses the linear output layer {L} as a hidden unit")
    last = ticket.roles[-1]
    if not (np.all(last.kind == NEURON) and np.all(last.layer == L)
            and np.array_equal(last.index, np.arange(widths[-1]))):
        raise ValueError(f"{where}: the last source layer's roles are not the target outputs NEURON ({L}, 0..{widths[-1] - 1})")


@dataclass(frozen=True)
class Certificate:
    """certificate = max_s e_{L_S, s}; per source layer: max e, max mismatch term, amplification."""

    certificate: float
    layer_errors: tuple        # max_s e_{l,s}
    layer_mismatch: tuple      # max_s Σ_groups max |C − T|·B (the instance-error term of layer l)
    layer_amplification: tuple  # max_s Σ_u |c_su| over units u with e_u > 0
    output_errors: np.ndarray  # e of every output unit

    def to_dict(self) -> dict:
        return {"certificate": self.certificate, "layer_errors": list(self.layer_errors),
                "layer_mismatch": list(self.layer_mismatch), "layer_amplification": list(self.layer_amplification)}


def certify(ticket: Ticket, box=(-1.0, 1.0), layers=None, target_bounds=None) -> Certificate:
    """The a-posteriori certificate of docs/math.md §6 for any ticket with roles (sound for any roles).
    ``layers``: precomputed :func:`construct.ticket.effective_layers` or :func:`construct.active.used_layers`
    (optional; default the latter). ``target_bounds``: sound bounds
    [(lo_t, hi_t)] of the target's x^{(t)}, t = 0..L, in the format of :func:`interval_bounds` (default: those)."""
    Q = _Quantities(ticket.target, box, target_bounds)
    # only the active units (construct.active): same terms, cost proportional to the ticket, not the source
    layers, active_roles = active_subnetwork(layers if layers is not None else used_layers(ticket), ticket.roles)
    e_prev = np.zeros(Q.n0)
    q_prev, s_prev = Q.outputs(None, True)
    errs, mism, amps = [], [], []
    for l in range(1, len(ticket.kept) + 1):
        mat, bias = layers[l - 1]
        roles = active_roles[l - 1]
        n_prev = mat.shape[1]
        has = q_prev >= 0
        P = sp.csr_matrix((s_prev[has], (np.nonzero(has)[0], q_prev[has])), shape=(n_prev, Q.size))
        C = (mat @ P).tocsr()
        C = C + sp.csr_matrix((bias, (np.arange(bias.size), np.zeros(bias.size, np.int64))), shape=C.shape)
        T = Q.targets(roles, ticket.target, prev_raw=(l == 1))
        D = (C - T).tocoo()
        contrib = np.abs(D.data) * Q.B[D.col]
        key = D.row.astype(np.int64) * Q.n_groups + Q.group[D.col]
        mismatch = np.zeros(mat.shape[0])
        if key.size:
            order = np.argsort(key, kind="stable")
            key_s, val_s = key[order], contrib[order]
            starts = np.concatenate([[0], np.nonzero(np.diff(key_s))[0] + 1])
            gmax = np.maximum.reduceat(val_s, starts)
            np.add.at(mismatch, key_s[starts] // Q.n_groups, gmax)
        absmat = abs(mat)
        e = absmat @ e_prev + mismatch
        amp = absmat @ (e_prev > 0).astype(np.float64)
        errs.append(float(e.max(initial=0.0)))
        mism.append(float(mismatch.max(initial=0.0)))
        amps.append(float(np.asarray(amp).max(initial=0.0)))
        e_prev = e
        q_prev, s_prev = Q.outputs(roles, False)
    return Certificate(float(e_prev.max(initial=0.0)), tuple(errs), tuple(mism), tuple(amps), e_prev)


@dataclass(frozen=True)
class ErrorSample:
    """Largest |f_ticket − f_T| over sampled inputs and (for n_0 ≤ 12) all box corners."""

    sampled_error: float
    corner_error: float | None
    samples: int

    def to_dict(self) -> dict:
        return {"sampled_error": self.sampled_error, "corner_error": self.corner_error, "samples": self.samples}


def sampled_error(ticket: Ticket, box=(-1.0, 1.0), *, samples: int = 2048, seed: int = 0,
                  max_corner_dim: int = 12, layers=None) -> ErrorSample:
    """max over N uniform inputs in X (and over the 2^{n_0} corners when n_0 ≤ ``max_corner_dim``) of the sup-norm
    difference between the ticket and the target."""
    n0 = ticket.target.widths[0]
    layers = layers if layers is not None else used_layers(ticket)
    layers = active_subnetwork(layers, ticket.roles)[0]  # inactive units output 0 (construct.active)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE77]))
    x = rng.uniform(box[0], box[1], size=(samples, n0))
    err = 0.0
    chunk = max(1, min(1024, _ACTIVATION_ENTRIES // max(mat.shape[0] for mat, _ in layers)))  # bounds the hidden activations
    for i in range(0, samples, chunk):
        xb = x[i:i + chunk]
        err = max(err, float(np.max(np.abs(ticket_forward(ticket, xb, layers) - target_forward(ticket.target, xb)))))
    corner = None
    if n0 <= max_corner_dim:
        bits = ((np.arange(2 ** n0)[:, None] >> np.arange(n0)[None, :]) & 1).astype(bool)
        xc = np.where(bits, box[1], box[0]).astype(np.float64)
        corner = float(np.max(np.abs(ticket_forward(ticket, xc, layers) - target_forward(ticket.target, xc))))
    return ErrorSample(err, corner, samples)
