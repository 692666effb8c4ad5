"""What a construction reports: per target layer instances, failures, largest instance error, tolerance, and the
ticket-level summary (success, certificate, sampled error, sizes, time). Plain data with ``to_dict()``."""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["LayerReport", "TicketReport"]


@dataclass(frozen=True)
class LayerReport:
    """One target layer t: ``instances`` solved (edge picks for weak tickets, subset sums for strong ones),
    ``failures`` (no edge / best subset error > tolerance), ``max_instance_error`` over successful and failed
    instances, the per-instance tolerance ε_t, and the certificate contribution of the source layer(s) that carry
    target layer t (max over units of the mismatch term Σ err·B)."""

    layer: int
    instances: int
    failures: int
    max_instance_error: float
    instance_eps: float
    certificate_contribution: float = 0.0
    amplification: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TicketReport:
    """Summary of one constructed ticket (the ``--json`` document of ``python -m construct strong/weak``)."""

    construction: str
    target: dict
    densities: tuple
    delta: float
    eps: float | None
    tolerance_split: str
    success: bool
    failures: int
    certificate: float
    sampled_error: float
    corner_error: float | None
    source_params: int
    er_kept_params: int
    ticket_params: int
    target_params: int
    widths: dict
    layers: tuple
    seed: int
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [l.to_dict() if hasattr(l, "to_dict") else l for l in self.layers]
        d["densities"] = list(self.densities)
        return d
