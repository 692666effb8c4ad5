"""Strong tickets, L+1 construction (docs/math.md §6, after Burkholz 2022 with ER thinning), following Gadhikar et al.
2023. Pruning only: the ticket keeps a sub-mask of the source's ER mask and the source's own weights.

Source layout (group sizes from :func:`theory.strong_widths.strong_widths`, construction "l+1"):
- layer 1: unit j·g + k is the k-th unit of group B_j (input j), usable iff M_1[u, j] = 1; it keeps only edge (u, j)
  and its bias is pruned: x_u = ReLU(w_u x_j). Units n_0·g + k form the bias group B_0 (no input edge, bias β_u
  kept, usable iff β_u > 0: output β_u).
- layer l = 2..L: unit i·r_l + c is copy c of target neuron i of layer l−1; units r_l·n_{l−1} + k are the c_l
  constant units (≈ 1). Layer L+1: the n_L outputs. Copies' and constant units' biases are pruned.
Instances (each solved exactly by :func:`construct.subset_sum.solve_subset_sums`, batched per layer):
- target layer 1, copy s of i, input j: Σ v_su·|w_u| over chosen u ∈ B_j with w_u > 0 ≈ W_1[i, j] and over w_u < 0
  ≈ −W_1[i, j] (law: product of two uniforms); b_1[i] ≈ Σ v_su·β_u over B_0; constant units of layer 2 ≈ 1 over B_0.
- target layer t ≥ 2, copy s of i, input j: Σ v_su over chosen copies u of j ≈ W_t[i, j] (uniform law);
  b_t[i] and the constant units of layer t+1 ≈ Σ v_su over chosen constant units of layer t.
Weights |W| ≤ P are split into P parts (see :mod:`construct.instances`). Failures are reported, never patched.
"""
from __future__ import annotations

import numpy as np

from construct.source import Source
from construct.strong_common import (compact_groups, empty_selection, layer_input_norms, layer_tolerance,
                                     prune_unused, scaled_group, solve_grouped)
from construct.targets import Target
from construct.ticket import CONST, LIFT, NEURON, Ticket

__all__ = ["lplus1_groups", "lplus1_source_widths", "build_lplus1"]


def lplus1_source_widths(target: Target, groups: dict) -> tuple[int, ...]:
    """(n_0, g·n_0 + g_0, r_2·n_1 + c_2, …, r_L·n_{L−1} + c_L, n_L)."""
    n = target.widths
    L = target.depth
    return ((n[0], groups["g"] * n[0] + groups["g0"])
            + tuple(groups["r"][l - 2] * n[l - 1] + groups["c"][l - 2] for l in range(2, L + 1)) + (n[L],))


def lplus1_groups(widths, multiplier: float = 1.0) -> dict:
    """The group sizes of a StrongWidths ("l+1"), times ``multiplier`` (multiples of the part count P)."""
    P = widths.parts
    g = widths.groups
    return {"g": scaled_group(g["g"], multiplier, P), "g0": scaled_group(g["g0"], multiplier, 1),
            "r": tuple(scaled_group(r, multiplier, P) for r in g["r"]),
            "c": tuple(scaled_group(c, multiplier, 1) for c in g["c"]), "P": P}


def _max_row_l1(kept: np.ndarray, V: np.ndarray) -> float:
    """max_o Σ_u |V[o, u]| over kept (o, u), row block by row block (the same row sums as on the whole array,
    without float64 temporaries of the layer's size)."""
    step = max(1, (1 << 22) // max(1, V.shape[1]))
    best = 0.0
    for r0 in range(0, V.shape[0], step):
        rows = np.abs(np.where(kept[r0:r0 + step], V[r0:r0 + step], 0).astype(np.float64)).sum(axis=1)
        best = max(best, float(np.max(rows, initial=0.0)))
    return best


def build_lplus1(target: Target, source: Source, groups: dict, instance_eps, caps, *, eps=None,
                 box=(-1.0, 1.0), progress=None):
    """Build the L+1 strong ticket inside ``source`` (widths must be :func:`lplus1_source_widths`).

    ``instance_eps``: a-priori ε_t per target layer; with ``eps`` (network sup-error) the layers are solved from
    t = L down to 1 with the backward split (docs/math.md §6) using the measured amplifications.
    ``caps``: per target layer {"weight", "bias", "const"} = the searched prefix length per part (None: no cap).
    ``progress``: a :class:`construct.progress.Progress` (one step per target layer) or None.
    Returns (Ticket, per-layer dicts: instances, failures, max_instance_error, instance_eps, amplification)."""
    n = target.widths
    L = target.depth
    P, g, g0, r, c = groups["P"], groups["g"], groups["g0"], groups["r"], groups["c"]
    kept, bias_kept, roles = empty_selection(source, lplus1_source_widths(target, groups), "L+1")
    masks, W, Bs = source.masks, source.weights, source.biases
    norms = layer_input_norms(target, box)
    caps = caps or [{"weight": None, "bias": None, "const": None}] * L

    # roles of the units carrying target layers (copies, constants, outputs)
    for l in range(2, L + 2):
        t = l - 1
        if l <= L:
            rl = r[l - 2]
            rows = np.arange(rl * n[t])
            roles[l - 1].kind[rows] = NEURON
            roles[l - 1].layer[rows] = t
            roles[l - 1].index[rows] = rows // rl
            const = rl * n[t] + np.arange(c[l - 2])
            roles[l - 1].kind[const] = CONST
            roles[l - 1].scale[const] = 1.0
        else:
            roles[L].kind[:] = NEURON
            roles[L].layer[:] = L
            roles[L].index[:] = np.arange(n[L])

    reports = [None] * L
    downstream = 1.0
    for t in range(L, 0, -1):
        eps_t = layer_tolerance(t, instance_eps, eps, target, norms, downstream)
        V = W[t]  # source layer t+1
        if t < L:
            r_next = r[t - 1]
            rows = np.arange(r_next * n[t])
            neuron = rows // r_next
            const_rows = r_next * n[t] + np.arange(c[t - 1])
        else:
            rows = np.arange(n[L])
            neuron = rows
            const_rows = np.zeros(0, dtype=np.int64)
        Wt, bt = target.weights[t - 1], target.biases[t - 1]
        errs = []
        if t == 1:
            w1 = W[0]
            ids = np.arange(n[0])[:, None] * g + np.arange(g)[None, :]  # (n0, g)
            wu = w1[ids, np.arange(n[0])[:, None]].astype(np.float64)
            usable = masks[0][ids, np.arange(n[0])[:, None]]
            scale = np.zeros(V.shape[1])
            scale[: n[0] * g] = np.abs(w1[np.arange(n[0] * g), np.repeat(np.arange(n[0]), g)])
            grp, tgt_sign, tgt_j = [], [], []
            for sign in (1.0, -1.0):
                sel = usable & ((wu > 0) if sign > 0 else (wu < 0))
                for q in range(P):
                    grp.append(compact_groups(ids[:, q::P], sel[:, q::P]))
                    tgt_sign.append(np.full(n[0], sign))
                    tgt_j.append(np.arange(n[0]))
            width = max(x.shape[1] for x in grp)
            grp = np.concatenate([np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=-1) for x in grp])
            targets = Wt[neuron][:, np.concatenate(tgt_j)] * np.concatenate(tgt_sign)[None, :] / P
            e = solve_grouped(source.layers[t], rows, grp, scale, targets, eps_t / P, caps[0]["weight"], kept[t])
            errs.append((e, eps_t / P))
            b0 = n[0] * g + np.arange(g0)
            beta = Bs[0][b0].astype(np.float64)
            scale[b0] = np.maximum(beta, 0.0)
            if g0 and bt.any():
                parts = [compact_groups(b0[None, q::P], (beta > 0)[None, q::P])[0] for q in range(P)]
                wmax = max(p.size for p in parts)
                bias_ids = np.stack([np.pad(p, (0, wmax - p.size), constant_values=-1) for p in parts])
                e = solve_grouped(source.layers[t], rows, bias_ids, scale, np.repeat(bt[neuron][:, None] / P, P, axis=1),
                                  eps_t / P, caps[0]["bias"], kept[t])
                errs.append((e, eps_t / P))
            if const_rows.size:
                one = compact_groups(b0[None, :], (beta > 0)[None, :])
                e = solve_grouped(source.layers[t], const_rows, one, scale, np.ones((const_rows.size, 1)), eps_t,
                                  caps[0]["const"], kept[t])
                errs.append((e, eps_t))
            # lifting and bias-group units that are used keep their edge / bias
            used = kept[1].any(axis=0)
            lift = np.nonzero(used[: n[0] * g])[0]
            j_of = lift // g
            kept[0][lift, j_of] = True
            roles[0].kind[lift] = LIFT
            roles[0].layer[lift] = 0
            roles[0].index[lift] = j_of
            roles[0].scale[lift] = w1[lift, j_of].astype(np.float64)
            bused = b0[used[b0]]
            bias_kept[0][bused] = True
            roles[0].kind[bused] = CONST
            roles[0].scale[bused] = Bs[0][bused].astype(np.float64)
        else:
            r_prev = r[t - 2]
            copies = np.arange(n[t - 1])[:, None] * r_prev + np.arange(r_prev)[None, :]
            scale = np.ones(V.shape[1])
            grp = np.concatenate([copies[:, q::P] for q in range(P)])
            targets = np.tile(Wt[neuron] / P, (1, P))
            e = solve_grouped(source.layers[t], rows, grp, scale, targets, eps_t / P, caps[t - 1]["weight"], kept[t])
            errs.append((e, eps_t / P))
            cprev = r_prev * n[t - 1] + np.arange(c[t - 2])
            if cprev.size and bt.any():
                parts = [cprev[q::P] for q in range(P)]
                wmax = max(p.size for p in parts)
                bias_ids = np.stack([np.pad(p, (0, wmax - p.size), constant_values=-1) for p in parts])
                e = solve_grouped(source.layers[t], rows, bias_ids, scale, np.repeat(bt[neuron][:, None] / P, P, axis=1),
                                  eps_t / P, caps[t - 1]["bias"], kept[t])
                errs.append((e, eps_t / P))
            if const_rows.size and cprev.size:
                e = solve_grouped(source.layers[t], const_rows, cprev[None, :], scale, np.ones((const_rows.size, 1)), eps_t,
                                  caps[t - 1]["const"], kept[t])
                errs.append((e, eps_t))
        failures = int(sum(int(np.sum(e > tl)) for e, tl in errs))
        max_err = float(max((e.max(initial=0.0) for e, _ in errs), default=0.0))
        amp = 0.0
        if t >= 2:
            amp = _max_row_l1(kept[t], V)
            downstream *= max(amp, 1e-300)
        reports[t - 1] = {"layer": t, "instances": int(sum(e.size for e, _ in errs)), "failures": failures,
                          "max_instance_error": max_err, "instance_eps": eps_t, "amplification": amp}
        if progress is not None:
            progress.step(f"target layer {t}: {reports[t - 1]['instances']:,} subset sums, {failures} failed")
    prune_unused(kept, bias_kept, roles, 1, L)
    ticket = Ticket(target, source, tuple(kept), tuple(bias_kept), tuple(roles), None, None, {})
    return ticket, reports
