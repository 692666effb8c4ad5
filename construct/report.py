"""What a construction reports: per target layer instances, failures, largest instance error, tolerance, and the
ticket-level summary (success, certificate, sampled error, sizes, time). Plain data with ``to_dict()``."""
from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["LayerReport", "TicketReport", "interval_text"]


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
    interval: dict | None = None  # construct.error_interval.ErrorInterval.to_dict(), when computed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = [l.to_dict() if hasattr(l, "to_dict") else l for l in self.layers]
        d["densities"] = list(self.densities)
        return d

    def __str__(self) -> str:
        """A readable summary with one row per target layer (what ``python -m construct strong`` prints)."""
        target = self.target if isinstance(self.target, dict) else {}
        widths = self.widths.get("source_widths") if isinstance(self.widths, dict) else None
        lines = [f"{self.construction} ticket of {target.get('name', '?')} (widths {target.get('widths', '?')}), "
                 f"densities {[round(float(x), 4) for x in self.densities]}, delta {self.delta}, seed {self.seed}",
                 f"  source widths {widths}: {self.source_params:,} weights ({self.er_kept_params:,} kept by the ER "
                 f"masks); ticket keeps {self.ticket_params:,} (target has {self.target_params:,})",
                 f"  {'layer':>5} {'instances':>10} {'failures':>9} {'max inst err':>13} {'inst eps':>10} "
                 f"{'cert contrib':>13} {'amplif':>9}"]
        for l in self.layers:
            lines.append(f"  {l.layer:>5} {l.instances:>10} {l.failures:>9} {l.max_instance_error:>13.3e} "
                         f"{l.instance_eps:>10.3e} {l.certificate_contribution:>13.3e} {l.amplification:>9.3g}")
        eps = "" if self.eps is None else f" (a-priori eps {self.eps})"
        corner = "" if self.corner_error is None else f", corner error {self.corner_error:.3e}"
        lines.append(f"  success {self.success} ({self.failures} failed instances); certificate {self.certificate:.3e}"
                     f"{eps}; sampled error {self.sampled_error:.3e}{corner}; {self.seconds:.2f} s")
        if self.interval is not None:
            lines.append("  " + interval_text(self.interval))
        return "\n".join(lines)

    def _repr_pretty_(self, p, cycle):  # IPython: show the table, not the dataclass fields
        p.text(str(self))


def interval_text(iv: dict) -> str:
    """One line for an error interval (``ErrorInterval.to_dict()``)."""
    others = ", ".join(f"{k} {v:.3e}" for k, v in iv["bounds"].items() if v is not None)
    return (f"sup error in [{iv['attacked_error']:.3e}, {iv['best_bound']:.3e}] (attacked error, best certified bound: "
            f"{iv['method']}; ratio {iv['ratio']:.3g}); bounds: {others}"
            + ("" if iv["consistent"] else "; INCONSISTENT: a bound is below the attacked error")
            + ("; attacked > bound by floating-point rounding only (the bounds are exact-arithmetic)"
               if iv["consistent"] and iv["attacked_error"] > iv["best_bound"] else ""))
