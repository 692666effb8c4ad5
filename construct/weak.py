"""Weak tickets: exact representation of a target inside an ER source of depth L+1 (docs/math.md §4), following
Gadhikar et al. 2023.

Source layout (widths from :func:`theory.weak_widths.weak_widths`, optionally times a width multiplier):
- layer 1 (lifting): unit j·2g + σ·g + k is the k-th unit of G_j^+ (σ = 0) or G_j^− (σ = 1); usable iff
  M_1[u, j] = 1; a used unit keeps only edge (u, j) with weight ±1 and no bias: x_u = ReLU(±x_j);
- layer t+1 (1 ≤ t ≤ L−1): unit i·r_{t+1} + c is copy c of target neuron i of layer t; layer L+1: the outputs.
For copy s of i and each input j with W_t[i, j] ≠ 0 the first kept edge is picked (t = 1: one from a usable unit of
G_j^+ with weight W_1[i, j] and one from G_j^− with weight −W_1[i, j]; t ≥ 2: one from any copy of j with weight
W_t[i, j]); bias b_t[i]. A missing edge is a *failure* of that source (reported, never patched by adding width).
Copies that no later unit uses are pruned at the end (they do not change the output).
"""
from __future__ import annotations

import math
import time

import numpy as np

from construct.certificate import certify, sampled_error
from construct.footprint import check_build_memory
from construct.report import LayerReport, TicketReport
from construct.source import Source, sample_source
from construct.strong_common import scaled_count
from construct.targets import Target, load_target
from construct.ticket import effective_layers, LIFT, NEURON, UNUSED, Roles, Ticket
from theory.validation import check_open_unit, check_positive_real
from theory.weak_widths import per_layer_densities, weak_widths

__all__ = ["weak_source_widths", "build_weak_ticket", "weak_ticket_in_source"]


def weak_source_widths(target: Target, density, delta: float, *, width_multiplier: float = 1.0):
    """(WeakWidths from theory, g, (r_2, …, r_{L+1}), source widths) with g and r_t multiplied by
    ``width_multiplier`` (rounded up; r_{L+1} stays 1)."""
    ww = weak_widths(target.widths, density, delta, nonzeros=[max(1, m) for m in target.nonzeros])
    mult = check_positive_real(width_multiplier, "width_multiplier")
    g = max(1, scaled_count(ww.lifting_group, mult, "lifting group g"))
    copies = tuple(max(1, scaled_count(r, mult, "copies r_t")) for r in ww.copies[:-1]) + (1,)
    n = target.widths
    widths = (n[0], 2 * g * n[0]) + tuple(copies[t - 2] * n[t - 1] for t in range(2, len(n))) + (n[-1],)
    return ww, g, copies, widths


def weak_ticket_in_source(target: Target, source: Source, g: int, copies, progress=None) -> tuple[Ticket, list]:
    """Build the weak ticket of docs/math.md §4 inside a given source with lifting group g and copies (r_2..r_{L+1}).

    ``progress``: a :class:`construct.progress.Progress` (one step per target layer) or None.
    Returns (ticket, per-layer [instances, failures])."""
    L = target.depth
    n = target.widths
    masks = source.masks
    kept = [np.zeros(m.shape, dtype=bool) for m in masks]
    tw = [np.zeros(m.shape, dtype=np.float64) for m in masks]
    tb = [np.zeros(m.shape[0], dtype=np.float64) for m in masks]
    bias_kept = [np.zeros(m.shape[0], dtype=bool) for m in masks]
    roles = [Roles.empty(m.shape[0]) for m in masks]
    counts = []
    # source layer t+1 carries target layer t; rows s -> target neuron i = s // r_{t+1}
    for t in range(1, L + 1):
        r_next = copies[t - 1]
        rows = n[t] * r_next
        neuron = np.arange(rows) // r_next
        W = target.weights[t - 1][neuron]  # (rows, n_{t-1})
        M = masks[t]  # source layer t+1 mask, 0-based index t
        instances = failures = 0
        if t == 1:
            M1 = masks[0]
            for j in range(n[0]):
                need = W[:, j] != 0
                if not need.any():
                    continue
                for sigma, sign in ((0, 1.0), (1, -1.0)):
                    grp = j * 2 * g + sigma * g + np.arange(g)
                    avail = M[:, grp] & M1[grp, j][None, :]
                    has = avail.any(axis=1)
                    pick = grp[np.argmax(avail, axis=1)]
                    ok = need & has
                    instances += int(need.sum())
                    failures += int((need & ~has).sum())
                    s_idx = np.nonzero(ok)[0]
                    u_idx = pick[ok]
                    kept[1][s_idx, u_idx] = True
                    tw[1][s_idx, u_idx] = sign * W[s_idx, j]
                    kept[0][u_idx, j] = True
                    tw[0][u_idx, j] = sign
                    roles[0].kind[u_idx] = LIFT
                    roles[0].layer[u_idx] = 0
                    roles[0].index[u_idx] = j
                    roles[0].scale[u_idx] = sign
        else:
            r_prev = copies[t - 2]
            avail = M.reshape(rows, n[t - 1], r_prev)
            has = avail.any(axis=2)
            pick = np.arange(n[t - 1])[None, :] * r_prev + np.argmax(avail, axis=2)
            need = W != 0
            ok = need & has
            instances += int(need.sum())
            failures += int((need & ~has).sum())
            s_idx, j_idx = np.nonzero(ok)
            u_idx = pick[s_idx, j_idx]
            kept[t][s_idx, u_idx] = True
            tw[t][s_idx, u_idx] = W[s_idx, j_idx]
        b = target.biases[t - 1][neuron]
        tb[t][:] = b
        bias_kept[t][:] = b != 0
        roles[t].kind[:] = NEURON
        roles[t].layer[:] = t
        roles[t].index[:] = neuron
        counts.append((instances, failures))
        if progress is not None:
            progress.step(f"target layer {t}: {instances:,} edges picked, {failures} missing")
    # prune copies that no later unit uses (source layers 2..L)
    for l in range(len(masks) - 1, 1, -1):
        unused = ~kept[l].any(axis=0)
        kept[l - 1][unused] = False
        tw[l - 1][unused] = 0.0
        tb[l - 1][unused] = 0.0
        bias_kept[l - 1][unused] = False
        roles[l - 1].kind[unused] = UNUSED
    unused = ~kept[1].any(axis=0)
    kept[0][unused] = False
    tw[0][unused] = 0.0
    roles[0].kind[unused] = UNUSED
    ticket = Ticket(target, source, tuple(kept), tuple(bias_kept), tuple(roles), tuple(tw), tuple(tb), {})
    return ticket, counts


def build_weak_ticket(target: Target, density, delta: float, seed: int, *, box=(-1.0, 1.0),
                      width_multiplier: float = 1.0, law: str = "uniform", samples: int = 2048, max_memory=None,
                      will_save: bool = False, progress=None):
    """Sample the source (widths from theory, seeded) and build the weak ticket (docs/math.md §4).

    ``density``: one density or L+1 per-source-layer densities. Before anything is drawn, refuses (one-line
    ValueError) a build whose memory estimate (:func:`construct.footprint.check_build_memory`, with the cost of
    saving when ``will_save``) exceeds ``max_memory`` bytes (None: the default fraction of the available memory).
    ``progress``: a :class:`construct.progress.Progress` (steps: every target layer, the certificate, the sampled
    error) or None. Returns (Ticket, TicketReport)."""
    t0 = time.perf_counter()
    target = load_target(target)  # a Target, an nn.Module, an Architecture (construct.modules)
    delta = check_open_unit(delta, "delta")
    ww, g, copies, widths = weak_source_widths(target, density, delta, width_multiplier=width_multiplier)
    dens = per_layer_densities(density, target.depth + 1)
    check_build_memory("weak", widths, max_memory, save=will_save)
    if progress is not None:
        progress.start(target.depth + 2)
    source = sample_source(widths, dens, seed, law=law)
    ticket, counts = weak_ticket_in_source(target, source, g, copies, progress)
    layers = effective_layers(ticket)
    cert = certify(ticket, box, layers)
    if progress is not None:
        progress.step(f"certificate {cert.certificate:.3e}")
    err = sampled_error(ticket, box, samples=samples, seed=seed, layers=layers)
    if progress is not None:
        progress.step(f"sampled error {err.sampled_error:.3e} over {samples:,} inputs")
    failures = sum(f for _, f in counts)
    layers = tuple(LayerReport(t, i, f, 0.0 if f == 0 else math.inf, 0.0,
                               cert.layer_mismatch[t], cert.layer_amplification[t])
                   for t, (i, f) in enumerate(counts, start=1))
    meta = {"construction": "weak", "target": target.name, "densities": list(dens), "delta": delta, "eps": None,
            "seed": seed, "box": list(box), "certificate": cert.certificate, "lifting_group": g,
            "copies": list(copies), "package_version": _version()}
    ticket = Ticket(ticket.target, ticket.source, ticket.kept, ticket.bias_kept, ticket.roles,
                    ticket.weak_weights, ticket.weak_biases, meta)
    report = TicketReport(
        construction="weak", target=target.to_dict(), densities=dens, delta=delta, eps=None,
        tolerance_split="exact", success=failures == 0, failures=failures, certificate=cert.certificate,
        sampled_error=err.sampled_error, corner_error=err.corner_error, source_params=source.params,
        er_kept_params=source.kept_params, ticket_params=ticket.kept_params,
        target_params=int(sum(target.nonzeros)),
        widths={"source_widths": list(widths), "lifting_group": g, "copies": list(copies),
                "theory": ww.to_dict(), "width_multiplier": width_multiplier},
        layers=layers, seed=seed, seconds=time.perf_counter() - t0)
    return ticket, report


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("er-tickets")
    except Exception:  # noqa: BLE001
        return "unknown"
