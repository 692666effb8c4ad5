"""Strong tickets end to end (docs/math.md §6), following Gadhikar et al. 2023: widths from
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

import math
import numbers
import time

from construct.certificate import certify, sampled_error
from construct.footprint import check_build_memory, source_size
from construct.report import LayerReport, TicketReport
from construct.source import BYTES_PER_WEIGHT, sample_source
from construct.strong_2l import build_2l, twol_groups, twol_source_widths
from construct.strong_lplus1 import build_lplus1, lplus1_groups, lplus1_source_widths
from construct.targets import Target, load_target
from construct.active import used_layers
from construct.ticket import Ticket
from construct.weak import _version
from theory.strong_widths import strong_widths
from theory.validation import check_choice, check_open_unit, check_positive_real

__all__ = ["plan_strong", "build_strong_ticket", "check_max_source_params", "DEFAULT_MAX_SOURCE_PARAMS"]

#: default cap on the source's weight count (a size and run-time cap; memory is guarded by the estimate of
#: :mod:`construct.footprint`, which refuses what will not fit whatever this cap says)
DEFAULT_MAX_SOURCE_PARAMS = 400_000_000


def check_max_source_params(value):
    """The cap on source weights as an int, or None for no cap (None or +inf). Raises a one-line ValueError for
    NaN, values < 1 and non-numbers."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"max_source_params={value!r} is malformed: allowed a number >= 1 or inf (no cap)")
    if math.isinf(value) and value > 0:
        return None
    if not (value >= 1):  # NaN and values below 1
        raise ValueError(f"max_source_params={value!r} is out of range: allowed a number >= 1 or inf (no cap)")
    return int(value)


def plan_strong(target: Target, density, delta: float, *, eps=None, weight_eps=None, construction: str = "2l",
                box=(-1.0, 1.0), width_multiplier: float = 1.0):
    """(StrongWidths, group sizes, source widths) for a target: theory's widths with |W| ≤ max(1, max|W|, max|b|)
    (split into parts) and biases iff the target has a non-zero bias; group sizes times ``width_multiplier``."""
    target = load_target(target)  # a Target, an nn.Module, an Architecture (construct.modules)
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
                        max_source_params=DEFAULT_MAX_SOURCE_PARAMS, max_memory=None, will_save: bool = False,
                        progress=None):
    """Sample the source and build the strong ticket; returns (Ticket, TicketReport).

    Before anything is drawn, refuses (one-line ValueError) a source of more than ``max_source_params`` weights
    (None or inf: no cap) and a build whose memory estimate (:func:`construct.footprint.check_build_memory`, with
    the cost of saving when ``will_save``) exceeds ``max_memory`` bytes (None: the default fraction of the available
    memory); also refuses a weight law other than "uniform" (the N_SS calibration is for U[−1, 1] weights and their
    products). ``progress``: a :class:`construct.progress.Progress` (steps: every target layer, the certificate,
    the sampled error) or None."""
    t0 = time.perf_counter()
    target = load_target(target)  # a Target, an nn.Module, an Architecture (construct.modules)
    delta = check_open_unit(delta, "delta")
    if law != "uniform":
        raise ValueError(f"weight_law={law!r} is not supported for strong tickets: allowed 'uniform' "
                         "(the subset-sum calibration N_SS is for U[-1, 1] weights)")
    cap = check_max_source_params(max_source_params)
    sw, groups, widths = plan_strong(target, density, delta, eps=eps, weight_eps=weight_eps,
                                     construction=construction, box=box, width_multiplier=width_multiplier)
    params, _ = source_size(widths)
    if cap is not None and params > cap:
        raise ValueError(f"source would have {params:.3g} weights (widths {list(widths)}): allowed at most "
                         f"{cap:.3g} (--max-source-params); use --width-multiplier < 1, a higher density or a "
                         "smaller target")
    check_build_memory(construction, widths, max_memory, weight_bytes=BYTES_PER_WEIGHT[sw.source_dtype],
                       save=will_save)
    if progress is not None:
        progress.start(target.depth + 2)
    source = sample_source(widths, sw.densities, seed, dtype=sw.source_dtype)
    # every instance searches what theory provisioned: its first a·k available candidates as a blocks of k
    caps = [{key: (c[key], b[key]) if c[key] else None for key in c} for c, b in zip(sw.caps, sw.blocks)]
    build = build_lplus1 if construction == "l+1" else build_2l
    ticket, layer_info = build(target, source, groups, sw.instance_eps, caps, eps=eps, box=box, progress=progress)
    layers = used_layers(ticket)  # the used units only (construct.active): no array of the source's size
    cert = certify(ticket, box, layers)
    if progress is not None:
        progress.step(f"certificate {cert.certificate:.3e}")
    err = sampled_error(ticket, box, samples=samples, seed=seed, layers=layers)
    if progress is not None:
        progress.step(f"sampled error {err.sampled_error:.3e} over {samples:,} inputs")
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
