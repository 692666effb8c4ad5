"""A lower bound on the sup-error max_{x∈X} ‖f_ticket(x) − f_T(x)‖_∞: the largest error found by sampling, box
corners and projected (sign-)gradient ascent from several seeded starts.

Every value reported is the error of the *original* ticket (:func:`construct.ticket.ticket_forward`) against the
target at a point of the box, so it is a true value attained by the ticket: a lower bound on the sup-error. The
ascent runs on the exactly reduced networks (:mod:`construct.ticket_network`), which are small.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from construct.ticket_network import Network

__all__ = ["AttackResult", "attack_error"]

_MAX_CORNER_DIM = 12


@dataclass(frozen=True)
class AttackResult:
    """``error``: the largest |f_ticket − f_T| found, at input ``x``; how many points were evaluated."""

    error: float
    x: np.ndarray
    evaluated: int
    starts: int
    steps: int

    def to_dict(self) -> dict:
        return {"error": self.error, "evaluated": self.evaluated, "starts": self.starts, "steps": self.steps}


def _errors(ticket_net: Network, target_net: Network, x: np.ndarray) -> np.ndarray:
    return np.abs(ticket_net.forward(x) - target_net.forward(x))


def attack_error(ticket_net: Network, target_net: Network, box, *, seed: int = 0, samples: int = 4096,
                 starts: int = 32, steps: int = 60, extra_points=None, exact_check=None) -> AttackResult:
    """Largest error found over: ``samples`` uniform points, the 2^{n_0} corners (n_0 ≤ 12) or as many random
    corners, ``extra_points`` (e.g. a MILP maximizer), and ``starts`` runs of ``steps`` projected sign-gradient
    ascent steps on s·(f_ticket,k − f_T,k), started from the best sampled points and from random corners, each run
    ascending the output k and sign s that are largest at its start. ``exact_check(x) -> errors``: the error
    evaluated on the original ticket for the candidate points (the returned value is the largest of those)."""
    a, b = float(box[0]), float(box[1])
    n0 = ticket_net.widths[0]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA77AC]))
    pts = [rng.uniform(a, b, size=(samples, n0))]
    if n0 <= _MAX_CORNER_DIM:
        bits = ((np.arange(2 ** n0)[:, None] >> np.arange(n0)[None, :]) & 1).astype(bool)
    else:
        bits = rng.random((samples, n0)) < 0.5
    pts.append(np.where(bits, b, a).astype(np.float64))
    if extra_points is not None:
        pts.append(np.atleast_2d(np.asarray(extra_points, dtype=np.float64)))
    x_all = np.concatenate(pts)
    err = _errors(ticket_net, target_net, x_all)
    worst = err.max(axis=1)
    # starts: the best points found so far plus random corners
    k = min(starts, x_all.shape[0])
    best_idx = np.argsort(-worst)[: max(1, k // 2)]
    x = np.concatenate([x_all[best_idx], np.where(rng.random((k - best_idx.size, n0)) < 0.5, b, a)])
    diff = ticket_net.forward(x) - target_net.forward(x)
    out = np.argmax(np.abs(diff), axis=1)
    sign = np.sign(diff[np.arange(x.shape[0]), out])
    sign[sign == 0] = 1.0
    g_out = np.zeros_like(diff)
    g_out[np.arange(x.shape[0]), out] = sign
    cand = [x_all[np.argmax(worst)][None]]
    best_val = np.full(x.shape[0], -np.inf)
    best_x = x.copy()
    half = 0.5 * (b - a)
    for step in range(steps):
        _, pre_t = ticket_net.forward(x, keep=True)
        _, pre_g = target_net.forward(x, keep=True)
        yt, yg = ticket_net.forward(x), target_net.forward(x)
        val = (sign * (yt - yg)[np.arange(x.shape[0]), out])
        better = val > best_val
        best_val[better] = val[better]
        best_x[better] = x[better]
        grad = ticket_net.gradient(pre_t, g_out) - target_net.gradient(pre_g, g_out)
        eta = half * (0.5 * (1.0 - step / steps) + 0.002)
        x = np.clip(x + eta * np.sign(grad), a, b)
    cand.append(best_x)
    cand = np.concatenate(cand)
    if exact_check is not None:
        vals = np.asarray(exact_check(cand)).max(axis=1)
    else:
        vals = _errors(ticket_net, target_net, cand).max(axis=1)
    # the sampled points, evaluated on the original ticket as well
    top = x_all[np.argsort(-worst)[: 8]]
    top_vals = (np.asarray(exact_check(top)) if exact_check is not None else _errors(ticket_net, target_net, top)).max(axis=1)
    i = int(np.argmax(vals))
    j = int(np.argmax(top_vals))
    if top_vals[j] > vals[i]:
        return AttackResult(float(top_vals[j]), top[j], int(x_all.shape[0] + steps * x.shape[0]), k, steps)
    return AttackResult(float(vals[i]), cand[i], int(x_all.shape[0] + steps * x.shape[0]), k, steps)
