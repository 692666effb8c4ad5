"""Strong tickets end to end (MATH.md §6), following Gadhikar et al. 2023: widths from
:func:`theory.strong_widths.strong_widths`, a seeded materialized source, the L+1 or 2L construction, the
a-posteriori certificate and the sampled error.

Tolerances: ``eps`` (network sup-error) → widths from the a-priori forward split, layers solved from L down to 1
with the backward split; each instance searches the candidates theory provisioned, its first a·k available ones
as a blocks of k = C_t ≤ 40 (:mod:`construct.instances`; at most C_t are chosen, so the measured amplifications
stay below the a-priori ones); the certificate is ≤ ε whenever every instance succeeds. ``weight_eps`` → every
instance is solved to that tolerance directly (same search) and the certificate is reported a posteriori.
The source is drawn in the dtype theory chose (``StrongWidths.source_dtype``: float64 unless every per-instance
tolerance is far above the float32 spacing); configurations theory refuses raise its one-line ValueError.
"""
from __future__ import annotations

import time

from construct.certificate import certify, sampled_error
from construct.report import LayerReport, TicketReport
from construct.source import sample_source
from construct.strong_2l import build_2l, twol_groups, twol_source_widths
from construct.strong_lplus1 import build_lplus1, lplus1_groups, lplus1_source_widths
from construct.targets import Target
from construct.ticket import effective_layers, Ticket
from construct.weak import _version
from theory.strong_widths import strong_widths
from theory.validation import check_choice, check_open_unit, check_positive_real

__all__ = ["plan_strong", "build_strong_ticket", "DEFAULT_MAX_SOURCE_PARAMS"]

DEFAULT_MAX_SOURCE_PARAMS = 400_000_000  # 2L: ≈ 0.4 GB of ticket bools (drawn source); L+1: ≈ 2.4 GB materialized


def plan_strong(target: Target, density, delta: float, *, eps=None, weight_eps=None, construction: str = "2l",
                box=(-1.0, 1.0), width_multiplier: float = 1.0):
    """(StrongWidths, group sizes, source widths) for a target: theory's widths with |W| ≤ max(1, max|W|, max|b|)
    (split into parts) and biases iff the target has a non-zero bias; group sizes times ``width_multiplier``."""
    construction = check_choice(construction, "construction", ("l+1", "2l"))
    if (eps is None) == (weight_eps is None):
        raise ValueError("eps and weight_eps: allowed exactly one (certified network error or per-instance tolerance)")
    mult = check_positive_real(width_multiplier, "width_multiplier")
    sw = strong_widths(target.widths, density, delta, eps=eps, instance_eps=weight_eps, construction=construction,
                       biases=target.has_biases, weight_bound=max(1.0, target.weight_bound), box=box)
    if construction == "l+1":
        groups = lplus1_groups(sw, mult)
        widths = lplus1_source_widths(target, groups)
    else:
        groups = twol_groups(sw, mult)
        widths = twol_source_widths(target, groups)
    return sw, groups, widths


def build_strong_ticket(target: Target, density, delta: float, seed: int, *, eps=None, weight_eps=None,
                        construction: str = "2l", box=(-1.0, 1.0), width_multiplier: float = 1.0,
                        law: str = "uniform", samples: int = 2048,
                        max_source_params: int = DEFAULT_MAX_SOURCE_PARAMS):
    """Sample the source and build the strong ticket; returns (Ticket, TicketReport).

    Raises ValueError (one line) when the source would exceed ``max_source_params`` weights, or for a weight law
    other than "uniform" (the N_SS calibration is for U[−1, 1] weights and their products)."""
    t0 = time.perf_counter()
    delta = check_open_unit(delta, "delta")
    if law != "uniform":
        raise ValueError(f"weight_law={law!r} is not supported for strong tickets: allowed 'uniform' "
                         "(the subset-sum calibration N_SS is for U[-1, 1] weights)")
    sw, groups, widths = plan_strong(target, density, delta, eps=eps, weight_eps=weight_eps,
                                     construction=construction, box=box, width_multiplier=width_multiplier)
    params = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if params > max_source_params:
        raise ValueError(f"source would have {params:.3g} weights (widths {list(widths)}): allowed at most "
                         f"{max_source_params:.3g}; use --width-multiplier < 1, a higher density or a smaller target")
    source = sample_source(widths, sw.densities, seed, dtype=sw.source_dtype)
    # every instance searches what theory provisioned: its first a·k available candidates as a blocks of k
    caps = [{key: (c[key], b[key]) if c[key] else None for key in c} for c, b in zip(sw.caps, sw.blocks)]
    build = build_lplus1 if construction == "l+1" else build_2l
    ticket, layer_info = build(target, source, groups, sw.instance_eps, caps, eps=eps, box=box)
    layers = effective_layers(ticket)
    cert = certify(ticket, box, layers)
    err = sampled_error(ticket, box, samples=samples, seed=seed, layers=layers)
    carrier = (lambda t: t) if construction == "l+1" else (lambda t: 2 * t - 1)
    reports = tuple(LayerReport(d["layer"], d["instances"], d["failures"], d["max_instance_error"], d["instance_eps"],
                                cert.layer_mismatch[carrier(d["layer"])], d["amplification"]) for d in layer_info)
    failures = sum(r.failures for r in reports)
    meta = {"construction": construction, "target": target.name, "densities": list(sw.densities), "delta": delta,
            "eps": eps, "weight_eps": weight_eps, "seed": seed, "box": list(box), "certificate": cert.certificate,
            "source_dtype": source.dtype,
            "tolerance_split": "backward (a-priori forward widths)" if eps is not None else "instance",
            "groups": {k: (list(v) if isinstance(v, tuple) else v) for k, v in groups.items()},
            "width_multiplier": width_multiplier, "package_version": _version()}
    ticket = Ticket(ticket.target, ticket.source, ticket.kept, ticket.bias_kept, ticket.roles, None, None, meta)
    report = TicketReport(
        construction=construction, target=target.to_dict(), densities=tuple(sw.densities), delta=delta, eps=eps,
        tolerance_split=meta["tolerance_split"], success=failures == 0, failures=failures,
        certificate=cert.certificate, sampled_error=err.sampled_error, corner_error=err.corner_error,
        source_params=source.params, er_kept_params=source.kept_params, ticket_params=ticket.kept_params,
        target_params=int(sum(target.nonzeros)),
        widths={"source_widths": list(widths), "groups": meta["groups"], "width_multiplier": width_multiplier,
                "a_priori_instance_eps": list(sw.instance_eps), "instance_delta": sw.instance_delta,
                "instances_union_bound": sw.instances, "parts": sw.parts, "source_dtype": sw.source_dtype,
                "caps": [dict(c) for c in sw.caps], "blocks": [dict(b) for b in sw.blocks],
                "width_factor": _width_factor(sw, widths, target)},
        layers=reports, seed=seed, seconds=time.perf_counter() - t0)
    return ticket, report


def _width_factor(sw, widths, target: Target) -> float:
    """Source weights / target weights (dense counts)."""
    tp = sum(a * b for a, b in zip(target.widths[:-1], target.widths[1:]))
    return sum(a * b for a, b in zip(widths[:-1], widths[1:])) / max(tp, 1)
