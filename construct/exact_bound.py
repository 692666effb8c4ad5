"""The exact sup-error max_{x∈X} ‖f_ticket(x) − f_T(x)‖_∞ over the box by mixed-integer programming over the ReLU
activation regions (big-M with interval bounds), ``scipy.optimize.milp`` (HiGHS).

Both networks are first reduced exactly (:func:`construct.ticket_network.reduce_network`). Every hidden unit h of
either network with pre-activation z ∈ [l, u] (interval arithmetic, widened by 1e−9·(1 + |l| + |u|) against
rounding) is encoded as h = z (l ≥ 0), h = 0 (u ≤ 0) or, with a binary d,
h ≥ z, h ≥ 0, h ≤ z − l(1 − d), h ≤ u·d. For every output k and sign s the program maximizes s·(f_ticket,k − f_T,k);
the exact maximum is the largest optimum. With a time limit, HiGHS's dual bound of an unfinished program is still an
upper bound. All numbers are exact up to HiGHS's tolerances (primal feasibility, integrality and relative gap 1e−9 here;
with HiGHS's default integrality tolerance 1e−6 a "finished" maximum fell 1e−3 (relative) below a point the attack
found, which `construct check` caught).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from construct.ticket_network import Network

__all__ = ["ExactBound", "network_interval_bounds", "exact_max_error"]


def network_interval_bounds(net: Network, box) -> list:
    """[(l, u)] of the pre-activations of every layer of ``net`` over X = [a, b]^{n_0} (interval arithmetic)."""
    a, b = float(box[0]), float(box[1])
    lo = np.full(net.widths[0], a)
    hi = np.full(net.widths[0], b)
    out = []
    for l, (w, bias) in enumerate(net.layers, start=1):
        wp, wn = w.maximum(0), w.minimum(0)
        zl = np.asarray(wp @ lo + wn @ hi).ravel() + bias
        zu = np.asarray(wp @ hi + wn @ lo).ravel() + bias
        out.append((zl, zu))
        lo, hi = np.maximum(zl, 0.0), np.maximum(zu, 0.0)
    return out


@dataclass(frozen=True)
class ExactBound:
    """``lower``: the largest error at the programs' incumbents, re-evaluated in numpy (a true value);
    ``upper``: the largest optimum (all finished) or dual bound (time limit): an upper bound on the sup-error.
    ``exact`` iff every program finished (then lower ≈ upper = the maximum). ``x``: the maximizing input."""

    lower: float
    upper: float
    exact: bool
    binaries: int
    programs: int
    seconds: float
    x: np.ndarray | None

    def to_dict(self) -> dict:
        return {"lower": self.lower, "upper": self.upper, "exact": self.exact, "binaries": self.binaries,
                "programs": self.programs, "seconds": self.seconds}


class _Builder:
    def __init__(self, n0, box):
        self.n = n0
        self.lb = [np.full(n0, float(box[0]))]
        self.ub = [np.full(n0, float(box[1]))]
        self.integ = [np.zeros(n0)]
        self.rows, self.cols, self.vals, self.rlo, self.rhi = [], [], [], [], []
        self.n_rows = 0
        self.binaries = 0

    def new(self, k, lo, hi, integer=False):
        start = self.n
        self.n += k
        self.lb.append(np.broadcast_to(np.asarray(lo, float), (k,)).copy())
        self.ub.append(np.broadcast_to(np.asarray(hi, float), (k,)).copy())
        self.integ.append(np.full(k, 1.0 if integer else 0.0))
        return np.arange(start, start + k)

    def add(self, row, col, data, n_rows, lo, hi):
        """Rows lo ≤ A·v ≤ hi with A given as triplets (columns index the variables)."""
        self.rows.append(row + self.n_rows)
        self.cols.append(col)
        self.vals.append(data)
        self.rlo.append(np.broadcast_to(np.asarray(lo, float), (n_rows,)))
        self.rhi.append(np.broadcast_to(np.asarray(hi, float), (n_rows,)))
        self.n_rows += n_rows

    def encode(self, net: Network, x_ids, box, split_first: bool):
        """Variables of the last layer's linear output are not created: returns (ids of the last hidden layer's
        outputs (or inputs), last W, last b)."""
        from construct.relaxation import layer_bounds

        bounds = layer_bounds(net, box, split_first) or network_interval_bounds(net, box)
        prev = x_ids
        for l, (w, b) in enumerate(net.layers[:-1]):
            zl, zu = bounds[l]
            slack = 1e-9 * (1.0 + np.abs(zl) + np.abs(zu))
            zl, zu = zl - slack, zu + slack
            n = w.shape[0]
            h = self.new(n, 0.0, np.maximum(zu, 0.0))
            act = zl >= 0
            dead = zu <= 0
            unst = ~act & ~dead
            wc = sp.csr_matrix(w)
            # active: h − W·prev = b
            if act.any():
                sel = np.nonzero(act)[0]
                m = sp.hstack([-wc[sel], sp.csr_matrix((np.ones(sel.size), (np.arange(sel.size), sel)),
                                                      shape=(sel.size, n))]).tocoo()
                self._add_cols(m, prev, h, b[sel], b[sel])
            if dead.any():
                self.ub[-1][dead] = 0.0
            if unst.any():
                sel = np.nonzero(unst)[0]
                k = sel.size
                d = self.new(k, 0.0, 1.0, integer=True)
                self.binaries += k
                eye_h = sp.csr_matrix((np.ones(k), (np.arange(k), sel)), shape=(k, n))
                # h − W prev ≥ b
                self._add_cols(sp.hstack([-wc[sel], eye_h]).tocoo(), prev, h, b[sel], np.inf)
                # h − W prev − l_z·d ≤ b − l_z    (h ≤ z − l(1 − d))
                self._add_cols3(sp.hstack([-wc[sel], eye_h, sp.diags(-zl[sel])]).tocoo(), prev, h, d,
                                -np.inf, b[sel] - zl[sel])
                # h − u·d ≤ 0
                self._add_cols3(sp.hstack([sp.csr_matrix((k, w.shape[1])), eye_h, sp.diags(-zu[sel])]).tocoo(),
                                prev, h, d, -np.inf, 0.0)
            prev = h
        w, b = net.layers[-1]
        return prev, sp.csr_matrix(w), b

    def _add_cols(self, m, prev, h, lo, hi):
        ids = np.concatenate([prev, h])
        self.add(m.row, ids[m.col], m.data, m.shape[0], lo, hi)

    def _add_cols3(self, m, prev, h, d, lo, hi):
        ids = np.concatenate([prev, h, d])
        self.add(m.row, ids[m.col], m.data, m.shape[0], lo, hi)

    def problem(self):
        rows = np.concatenate(self.rows) if self.rows else np.zeros(0, np.int64)
        cols = np.concatenate(self.cols) if self.cols else np.zeros(0, np.int64)
        vals = np.concatenate(self.vals) if self.vals else np.zeros(0)
        A = sp.csr_matrix((vals, (rows, cols)), shape=(self.n_rows, self.n))
        lo = np.concatenate(self.rlo) if self.rlo else np.zeros(0)
        hi = np.concatenate(self.rhi) if self.rhi else np.zeros(0)
        return A, lo, hi, np.concatenate(self.lb), np.concatenate(self.ub), np.concatenate(self.integ)


@contextlib.contextmanager
def _c_stdout_silenced():
    """HiGHS prints some diagnostics straight to file descriptor 1, past Python: point fd 1 at /dev/null during a
    solve so that a command's stdout (e.g. ``--json``) holds only what the command prints."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def exact_max_error(ticket_net: Network, target_net: Network, box, *, time_limit: float = 10.0,
                    max_binaries: int | None = None) -> ExactBound | None:
    """The maximum over the box of ‖ticket_net(x) − target_net(x)‖_∞ (module docstring); ``time_limit`` seconds
    for all programs together. None when the program would have more than ``max_binaries`` binaries."""
    t0 = time.perf_counter()
    n0 = ticket_net.widths[0]
    bld = _Builder(n0, box)
    x_ids = np.arange(n0)
    hp, wp, bp = bld.encode(ticket_net, x_ids, box, True)
    hq, wq, bq = bld.encode(target_net, x_ids, box, False)
    if max_binaries is not None and bld.binaries > max_binaries:
        return None
    A, lo, hi, lb, ub, integ = bld.problem()
    cons = [LinearConstraint(A, lo, hi)] if A.shape[0] else []
    n_out = wp.shape[0]
    lower, upper, exact, best_x = 0.0, 0.0, True, None
    programs = 2 * n_out
    done = 0
    for k in range(n_out):
        for s in (1.0, -1.0):
            left = (time_limit - (time.perf_counter() - t0)) / (programs - done)  # the budget split evenly
            done += 1
            c = np.zeros(A.shape[1])
            np.add.at(c, hp, -s * wp[k].toarray().ravel())
            np.add.at(c, hq, s * wq[k].toarray().ravel())
            const = s * (bp[k] - bq[k])
            if left <= 0:
                return ExactBound(lower, np.inf, False, bld.binaries, programs, time.perf_counter() - t0, best_x)
            with warnings.catch_warnings(), _c_stdout_silenced():  # options scipy does not list pass verbatim
                warnings.simplefilter("ignore", RuntimeWarning)
                res = milp(c, integrality=integ, bounds=Bounds(lb, ub), constraints=cons,
                           options={"time_limit": left, "mip_rel_gap": 1e-9,
                                    "primal_feasibility_tolerance": 1e-9, "mip_feasibility_tolerance": 1e-9,
                                    "disp": False})
            dual = getattr(res, "mip_dual_bound", None)
            if res.status == 0:
                up = -res.fun + const
                if dual is not None and np.isfinite(dual):
                    up = max(up, -dual + const)
            else:
                exact = False
                up = (-dual + const) if dual is not None and np.isfinite(dual) else np.inf
            upper = max(upper, up)
            if res.x is not None:
                x = np.clip(res.x[:n0], float(box[0]), float(box[1]))
                val = float(np.max(np.abs(ticket_net.forward(x[None]) - target_net.forward(x[None]))))
                if best_x is None or val > lower:
                    lower, best_x = val, x
    return ExactBound(lower, upper, exact, bld.binaries, programs, time.perf_counter() - t0, best_x)
