"""Every ticket's sup-error E = max_{x∈X} ‖f_ticket(x) − f_T(x)‖_∞ as an interval [attacked error, best certified
bound] (docs/math.md §6).

- attacked error (a value E is at least): :func:`construct.attack.attack_error`, sampling + corners + projected
  gradient ascent, plus the MILP's maximizer when there is one, every point evaluated on the original ticket;
- best certified bound: the smallest of the sound upper bounds
  · the a-posteriori certificate (:mod:`construct.certificate`),
  · the reduced certificate and the joint linear relaxation (:mod:`construct.relaxation`),
  · the exact maximum by MILP (:mod:`construct.exact_bound`) when it finishes within the time budget, or HiGHS's
    dual bound when it does not; the MILP number gets an allowance of 1e−8 + 1e−6·|value| for the solver's
    tolerances.
``consistent`` is False iff some upper bound is below the attacked error (beyond rounding): an unsound bound.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from construct.active import active_subnetwork, used_layers
from construct.attack import attack_error
from construct.exact_bound import exact_max_error
from construct.relaxation import crown_max_error, reduced_certificate
from construct.targets import target_forward
from construct.ticket import Ticket, ticket_forward
from construct.ticket_network import reduce_network, target_network, ticket_network

__all__ = ["ErrorInterval", "error_interval", "MILP_MAX_BINARIES"]

MILP_MAX_BINARIES = 2000


@dataclass(frozen=True)
class ErrorInterval:
    attacked_error: float
    best_bound: float
    method: str               # which bound is the best: "exact (MILP)", "MILP dual bound", "reduced certificate", …
    exact: bool               # the MILP finished: best_bound is the maximum (up to solver tolerances)
    bounds: dict              # every upper bound computed, by name (None: not computed)
    consistent: bool
    seconds: float

    @property
    def ratio(self) -> float:
        """best certified bound / attacked error; 1 when the best bound is ≤ 1e−12 (an exact ticket: both ends are
        rounding), inf when the attack finds no error but the bound is larger."""
        if self.best_bound <= 1e-12:
            return 1.0
        return self.best_bound / self.attacked_error if self.attacked_error > 0 else math.inf

    def to_dict(self) -> dict:
        return {"attacked_error": self.attacked_error, "best_bound": self.best_bound, "method": self.method,
                "exact": self.exact, "ratio": self.ratio, "bounds": dict(self.bounds), "consistent": self.consistent,
                "seconds": self.seconds}

    def __str__(self) -> str:
        return (f"[{self.attacked_error:.3e}, {self.best_bound:.3e}] ({self.method}; ratio "
                f"{self.ratio:.3g})")


def error_interval(ticket: Ticket, box, certificate: float, *, seed: int = 0, seconds: float = 10.0,
                   layers=None, samples: int = 4096, max_binaries: int = MILP_MAX_BINARIES) -> ErrorInterval:
    """[attacked error, best certified bound] of ``ticket`` over the box (module docstring). ``seconds``: time
    budget of the MILP (0: skipped); programs with more than ``max_binaries`` binaries are skipped."""
    t0 = time.perf_counter()
    box = (float(box[0]), float(box[1]))
    # drawn once (a drawn source is regenerated); the used units only (construct.active.used_layers): same function
    layers = layers if layers is not None else used_layers(ticket)
    net = ticket_network(ticket, layers)
    reduced, origins = reduce_network(net, with_origin=True)
    tnet = target_network(ticket.target)
    bounds = {"certificate": float(certificate)}
    bounds["reduced certificate"] = reduced_certificate(ticket, box, (reduced, origins))
    bounds["linear relaxation"] = crown_max_error(reduced, tnet, box)

    # the original ticket on its active units only (construct.active: the same forward pass): a 2L source of
    # 10^7 hidden units would otherwise make (10^7 × candidates) float64 activations (2.6 GiB for 33 candidates)
    active = active_subnetwork(layers, ticket.roles)[0]

    def exact_check(x):
        return np.abs(ticket_forward(ticket, x, active) - target_forward(ticket.target, x))

    att = attack_error(reduced, tnet, box, seed=seed, samples=samples, exact_check=exact_check)
    attacked = att.error
    cheap = min([v for v in bounds.values() if v is not None and math.isfinite(v)], default=math.inf)
    milp = None
    # the MILP only when the cheap bounds leave a gap (a zero-error weak ticket needs none)
    if seconds > 0 and cheap > 1e-12 and cheap > attacked * (1.0 + 1e-9):
        milp = exact_max_error(reduced, tnet, box, time_limit=seconds, max_binaries=max_binaries)
    if milp is not None and math.isfinite(milp.upper):
        bounds["MILP"] = float(milp.upper) + 1e-8 + 1e-6 * abs(float(milp.upper))
    else:
        bounds["MILP"] = None
    if milp is not None and milp.x is not None:  # the maximizer, evaluated on the original ticket
        attacked = max(attacked, float(exact_check(milp.x[None]).max()))
    finite = {k: v for k, v in bounds.items() if v is not None and math.isfinite(v)}
    name = min(finite, key=finite.get) if finite else "certificate"
    best = finite.get(name, math.inf)
    exact = bool(milp is not None and milp.exact) or best <= max(attacked * (1.0 + 1e-9), 1e-12)
    method = ("exact (MILP)" if milp.exact else "MILP dual bound") if name == "MILP" else name
    slack = 1e-9 * (1.0 + attacked)
    consistent = all(v >= attacked - slack for v in finite.values())
    return ErrorInterval(attacked, best, method, exact, bounds, bool(consistent), time.perf_counter() - t0)
