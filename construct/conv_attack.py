"""A lower bound on the sup-error max_{x∈X} ‖ticket(x) − target(x)‖_∞ of a 2L conv ticket (docs/math.md §6, §9):
the largest error found by uniform samples in the box and by projected sign-gradient ascent from seeded starts.

The ascent runs in torch (float64, autograd) on the collapsed ticket module and the target's module
(:mod:`construct.conv_export`); every value reported is then re-evaluated with the numpy
:func:`construct.conv_ticket.conv_ticket_forward` against :meth:`construct.conv_target.ConvTarget.forward` at a point
of the box, so it is a value the ticket attains: a true lower bound of the sup-error (and ≤ the certificate when the
certificate is sound). Conventions as :func:`construct.attack.attack_error` (the MLP version).

Kinks on the box's faces: torch differentiates ReLU at 0 as 0, so at a face a = 0 (or b = 0) the gradient of a
coordinate sitting on the face misses the ticket's ReLU terms and the ascent bounces off the face. The ascent
therefore keeps its points 10^−9·(b − a) inside the box, where the gradient is the one-sided derivative into the
box, and the final points are re-evaluated both there and projected onto the faces.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ConvAttackResult", "conv_attack_error", "SAMPLE_TAG"]

#: the sampling stream is conv_sampled_error's: SeedSequence([seed, SAMPLE_TAG]) (same seed → same samples)
SAMPLE_TAG = 0xC0AA
_START_TAG = 0xA77AC
_NUDGE = 1e-9  # ascent points stay this far (relative) inside the box


@dataclass(frozen=True)
class ConvAttackResult:
    """``error``: the largest |ticket − target| found (numpy forward), at input ``x``; ``sampled_error``: the largest
    over the uniform samples alone; how many points were evaluated (samples + starts·steps)."""

    error: float
    sampled_error: float
    x: np.ndarray
    evaluated: int
    starts: int
    steps: int

    def to_dict(self) -> dict:
        return {"error": self.error, "sampled_error": self.sampled_error, "evaluated": self.evaluated,
                "starts": self.starts, "steps": self.steps}


def _check_count(value, name, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r}: allowed an integer >= {low}")
    return int(value)


def conv_attack_error(ticket, *, seed: int = 0, samples: int = 256, starts: int = 8, steps: int = 40,
                      batch: int = 16, effective=None) -> ConvAttackResult:
    """Largest error found over ``samples`` uniform points of the box and ``starts`` runs of ``steps`` projected
    sign-gradient ascent steps on s·(ticket_k − target_k) (docs/math.md §6: a lower bound of the sup-error).

    The samples are the stream of :func:`construct.conv_ticket.conv_sampled_error` with the same ``seed`` (the same
    inputs whatever the batch sizes; with the same ``batch`` the same values bit for bit), so the result is ≥ its
    value. Starts: the best samples (half, rounded up), each ascending the output k and sign s largest at its start,
    and random box corners, which take the pairs (k, s) in turn (k = 0, s = +1; k = 0, s = −1; k = 1, …).
    At most ``batch`` inputs are evaluated at once (the ascent keeps the activations of the collapsed ticket and of
    the target for backpropagation: about 6·batch·Σ_values(c·H·W)·8 bytes). Every reported value is a numpy
    re-evaluation at a point of the box."""
    import torch

    from construct.conv_export import architecture_module, conv_ticket_module
    from construct.conv_ticket import conv_ticket_forward, effective_weights

    samples = _check_count(samples, "samples", 1)
    starts = _check_count(starts, "starts", 0)
    steps = _check_count(steps, "steps", 0)
    batch = _check_count(batch, "batch", 1)
    target = ticket.target
    a, b = (float(v) for v in target.box)
    shape = tuple(target.input_shape)
    eff = effective if effective is not None else [effective_weights(s, w) for s, w in
                                                   zip(ticket.layers, target.weighted)]

    def exact(x):  # numpy: the true error of the ticket at x, per input
        d = np.abs(conv_ticket_forward(ticket, x, eff) - target.forward(x))
        return d.reshape(d.shape[0], -1).max(axis=1)

    # 1. uniform samples: the same stream and batches as conv_sampled_error
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SAMPLE_TAG]))
    top_x, top_v = np.zeros((0,) + shape), np.zeros(0)
    keep = max(1, -(-starts // 2))
    for i in range(0, samples, batch):
        x = rng.uniform(a, b, size=(min(batch, samples - i),) + shape)
        v = exact(x)
        top_x, top_v = np.concatenate([top_x, x]), np.concatenate([top_v, v])
        order = np.argsort(-top_v, kind="stable")[:keep]
        top_x, top_v = top_x[order], top_v[order]
    sampled = float(top_v[0])
    best_val, best_x = sampled, top_x[0]
    if starts == 0 or steps == 0:
        return ConvAttackResult(best_val, sampled, best_x, samples, starts, steps)

    # 2. starts: the best samples, then random corners
    srng = np.random.default_rng(np.random.SeedSequence([int(seed), _START_TAG]))
    n_best = min(keep, starts)
    corners = np.where(srng.random((starts - n_best,) + shape) < 0.5, b, a)
    x0 = np.concatenate([top_x[:n_best], corners])

    # 3. projected sign-gradient ascent (torch, float64) on the collapsed ticket and the target
    ticket_mod = conv_ticket_module(ticket, "collapsed", torch.float64, effective=eff)
    target_mod = architecture_module(target.architecture, torch.float64)
    half = 0.5 * (b - a)
    lo, hi = a + _NUDGE * (b - a), b - _NUDGE * (b - a)
    found = []
    for i in range(0, starts, batch):
        x = torch.tensor(x0[i:i + batch], dtype=torch.float64)
        with torch.no_grad():
            diff = (ticket_mod(x) - target_mod(x)).reshape(x.shape[0], -1)
        out = diff.abs().argmax(dim=1)
        sign = torch.sign(diff[torch.arange(x.shape[0]), out])
        sign[sign == 0] = 1.0
        corner = torch.arange(i, i + x.shape[0]) - n_best  # corner starts: every (output, sign) in turn
        rr = corner >= 0
        out[rr] = (corner[rr] // 2) % diff.shape[1]
        sign[rr] = 1.0 - 2.0 * (corner[rr] % 2).to(torch.float64)
        run_best = torch.full((x.shape[0],), -float("inf"), dtype=torch.float64)
        run_x = x.clone()
        for step in range(steps + 1):
            x = x.clamp(lo, hi).requires_grad_(True)  # nudged off the faces: module docstring
            d = (ticket_mod(x) - target_mod(x)).reshape(x.shape[0], -1)
            val = sign * d[torch.arange(x.shape[0]), out]
            with torch.no_grad():
                better = val > run_best
                run_best = torch.where(better, val, run_best)
                run_x[better] = x[better]
            if step == steps:
                break
            (grad,) = torch.autograd.grad(val.sum(), x)
            eta = half * (0.5 * (1.0 - step / steps) + 0.002)
            with torch.no_grad():
                x = (x + eta * torch.sign(grad)).clamp(a, b)
        found.append(run_x.detach().numpy())
    cand = np.concatenate(found)
    snapped = np.where(cand <= lo, a, np.where(cand >= hi, b, cand))  # the same points on the box's faces
    cand = np.concatenate([cand, snapped])
    vals = np.concatenate([exact(cand[i:i + batch]) for i in range(0, cand.shape[0], batch)])
    j = int(np.argmax(vals))
    if vals[j] > best_val:
        best_val, best_x = float(vals[j]), cand[j]
    return ConvAttackResult(float(best_val), sampled, best_x, samples + starts * steps, starts, steps)
