"""Verify a ticket file from its arrays alone (MATH.md §6): reload it (keys, dtypes, shapes, ticket ⊆ ER mask,
roles), recompute the certificate and the sampled error, and compare with what the file claims."""
from __future__ import annotations

from dataclasses import dataclass

from construct.certificate import certify, sampled_error
from construct.ticket import load_ticket

__all__ = ["VerifyResult", "verify_ticket"]


@dataclass(frozen=True)
class VerifyResult:
    """Verdict on a ticket file. ``valid`` iff the file is well formed, the ticket is a sub-mask of the ER mask,
    the recomputed certificate matches the stored one (relative 1e−9) and the sampled error does not exceed it
    (up to 1e−9·(1 + certificate) of floating-point rounding)."""

    path: str
    kind: str
    construction: str
    submask: bool
    certificate: float
    stored_certificate: float | None
    certificate_matches: bool
    sampled_error: float
    corner_error: float | None
    sampled_within_certificate: bool
    eps: float | None
    certificate_within_eps: bool | None
    kept_params: int
    valid: bool

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def verify_ticket(path, *, samples: int = 2048, seed: int = 0) -> VerifyResult:
    """Reload ``path`` and check it (one-line ValueError when the file is not a valid ticket)."""
    ticket = load_ticket(path)  # raises on missing keys, bad dtypes, S ⊄ M, bad roles
    box = tuple(ticket.meta.get("box", (-1.0, 1.0)))
    cert = certify(ticket, box)
    err = sampled_error(ticket, box, samples=samples, seed=seed)
    stored = ticket.meta.get("certificate")
    matches = stored is None or abs(float(stored) - cert.certificate) <= 1e-9 * max(1.0, abs(cert.certificate))
    worst = max(err.sampled_error, err.corner_error or 0.0)
    within = worst <= cert.certificate + 1e-9 * (1.0 + cert.certificate)
    eps = ticket.meta.get("eps")
    cert_eps = None if eps is None else bool(cert.certificate <= float(eps))
    return VerifyResult(str(path), "weak" if ticket.is_weak else "strong", str(ticket.meta.get("construction", "?")),
                        True, cert.certificate, stored, bool(matches), err.sampled_error, err.corner_error,
                        bool(within), eps, cert_eps, ticket.kept_params, bool(matches and within))
