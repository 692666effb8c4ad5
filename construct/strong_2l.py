"""Strong tickets, 2L construction (docs/math.md §6, after Pensia et al. 2020 with ER thinning), following Gadhikar et
al. 2023. Pruning only: the ticket keeps a sub-mask of the source's ER mask and the source's own weights.

Source layout (group sizes from :func:`theory.strong_widths.strong_widths`, construction "2l"): target layer t
becomes source layers 2t−1 and 2t.
- Source layer 2t−1 (intermediate): unit j·k_t + m (m < k_t) belongs to input j of target layer t (the input x_j
  for t = 1, target neuron j of layer t−1, held by source layer 2t−2, for t ≥ 2); it is usable iff its edge to j is
  kept (M[u, j] = 1); it keeps only that edge, weight a_u, bias pruned: x_u = ReLU(a_u·x̂_j). Units
  n_{t−1}·k_t + m form the bias group (g0_t units, every input edge pruned, bias β_u kept, usable iff β_u > 0).
- Source layer 2t: the n_t target neurons (bias pruned).
Instances: W_t[o, j] ≈ Σ v_ou·|a_u| over chosen usable units u of j with a_u > 0 (the coefficient of ReLU(x_j)), and
−W_t[o, j] ≈ the same over a_u < 0 (the coefficient of ReLU(−x_j)); law: product of two uniforms. For t ≥ 2 only the
positive side is solved: hidden target values are ≥ 0, so ReLU(−x̂_j) = 0 and negative units contribute nothing.
Bias (our decision): b_t[o] ≈ Σ v_ou·β_u over chosen bias-group units (product law) — the same bias group as the
L+1 lifting layer; zero-bias targets get no bias group. Weights |W| ≤ P are split into P parts.
"""
from __future__ import annotations

import numpy as np

from construct.source import Source
from construct.strong_common import (compact_groups, empty_selection, layer_input_norms, layer_tolerance,
                                     prune_unused, scaled_group, solve_grouped)
from construct.targets import Target
from construct.ticket import CONST, LIFT, NEURON, Ticket

__all__ = ["twol_groups", "twol_source_widths", "build_2l"]

_DIAGONAL_CHUNK = 1 << 21  # intermediate units gathered per call


def twol_source_widths(target: Target, groups: dict) -> tuple[int, ...]:
    """(n_0, k_1·n_0 + g0_1, n_1, k_2·n_1 + g0_2, n_2, …, n_L)."""
    n = target.widths
    out = [n[0]]
    for t in range(1, target.depth + 1):
        out += [groups["k"][t - 1] * n[t - 1] + groups["g0"][t - 1], n[t]]
    return tuple(out)


def twol_groups(widths, multiplier: float = 1.0) -> dict:
    """Group sizes of a StrongWidths ("2l") times ``multiplier`` (multiples of the part count P)."""
    P = widths.parts
    return {"k": tuple(scaled_group(k, multiplier, P) for k in widths.groups["k"]),
            "g0": tuple(scaled_group(g, multiplier, P) for g in widths.groups["g0"]), "P": P}


def _padded_parts(ids: np.ndarray, select: np.ndarray, P: int) -> np.ndarray:
    parts = [compact_groups(ids[None, q::P], select[None, q::P])[0] for q in range(P)]
    width = max(p.size for p in parts)
    return np.stack([np.pad(p, (0, width - p.size), constant_values=-1) for p in parts])


def _diagonal(layer, nin: int, k: int):
    """(a_u float32, M[u, j] bool) for the intermediate units u = j·k + m < nin·k of a 2L intermediate source layer
    (column j = u // k), gathered in block-aligned chunks of about 2^21 units so that the index arrays stay small."""
    n = nin * k
    a = None  # in the source's weight dtype (float32 today)
    usable = np.empty(n, dtype=bool)
    chunk = layer.rows_per_block * max(1, _DIAGONAL_CHUNK // layer.rows_per_block)
    for u0 in range(0, n, chunk):
        u = np.arange(u0, min(n, u0 + chunk), dtype=np.int64)
        w, usable[u0:u0 + u.size] = layer.gather(u, u // k)
        if a is None:
            a = np.empty(n, dtype=w.dtype)
        a[u0:u0 + u.size] = w
    return (np.empty(0, dtype=np.float32) if a is None else a), usable


def _sign_groups(a32, usable, nin: int, k: int, sign: float, q: int, P: int) -> np.ndarray:
    """Candidate groups of part q for one sign: row j lists the usable units u = j·k + m (m ≡ q mod P) with
    sign(a_u) = sign, in increasing order, padded with −1 (the layout of :func:`compact_groups`, without its
    (n_in, k) temporaries)."""
    rows = []
    for j in range(nin):
        aj = a32[j * k + q:(j + 1) * k:P]
        sel = usable[j * k + q:(j + 1) * k:P] & ((aj > 0) if sign > 0 else (aj < 0))
        rows.append(j * k + q + P * np.flatnonzero(sel))
    width = max((r.size for r in rows), default=0)
    out = np.full((nin, width), -1, dtype=np.int64)
    for j, r in enumerate(rows):
        out[j, :r.size] = r
    return out


def build_2l(target: Target, source: Source, groups: dict, instance_eps, caps, *, eps=None, box=(-1.0, 1.0),
             progress=None):
    """Build the 2L strong ticket inside ``source`` (widths must be :func:`twol_source_widths`).

    Same conventions as :func:`construct.strong_lplus1.build_lplus1` (``progress``: a
    :class:`construct.progress.Progress`, one step per target layer). Returns (Ticket, per-layer dicts)."""
    n = target.widths
    L = target.depth
    P = groups["P"]
    kept, bias_kept, roles = empty_selection(source, twol_source_widths(target, groups), "2L")
    norms = layer_input_norms(target, box)
    caps = caps or [{"weight": None, "bias": None}] * L
    reports = [None] * L
    downstream = 1.0
    for t in range(L, 0, -1):
        eps_t = layer_tolerance(t, instance_eps, eps, target, norms, downstream)
        k, g0 = groups["k"][t - 1], groups["g0"][t - 1]
        inter_layer = source.layers[2 * t - 2]  # intermediate layer 2t-1: only its "diagonal" entries are read
        out_layer = source.layers[2 * t - 1]  # target layer 2t: read a few rows at a time
        nin = n[t - 1]
        rows = np.arange(n[t])
        roles[2 * t - 1].kind[:] = NEURON
        roles[2 * t - 1].layer[:] = t
        roles[2 * t - 1].index[:] = rows
        # a_u and "usable" (M[u, j] = 1) of the intermediate units u = j·k + m: the layer's "diagonal" entries
        a32, usable = _diagonal(inter_layer, nin, k)
        # |a_u| and β_u on the bias group, in the source's dtype (exact; cast to float64 by the solver's gather)
        scale = np.zeros(out_layer.shape[1], dtype=np.result_type(a32.dtype, inter_layer.bias.dtype))
        np.abs(a32, out=scale[: nin * k])
        grp, tj, ts = [], [], []
        for sign in ((1.0, -1.0) if t == 1 else (1.0,)):
            for q in range(P):
                grp.append(_sign_groups(a32, usable, nin, k, sign, q, P))
                tj.append(np.arange(nin))
                ts.append(np.full(nin, sign))
        width = max(x.shape[1] for x in grp)
        grp = np.concatenate([np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=-1) for x in grp])
        targets = target.weights[t - 1][:, np.concatenate(tj)] * np.concatenate(ts)[None, :] / P
        errs = []
        chosen_l1 = np.zeros(n[t])
        e = solve_grouped(out_layer, rows, grp, scale, targets, eps_t / P, caps[t - 1]["weight"], kept[2 * t - 1],
                          chosen_l1)
        errs.append(e)
        bt = target.biases[t - 1]
        b0 = nin * k + np.arange(g0)
        BA = inter_layer.bias
        if g0 and bt.any():
            beta = BA[b0].astype(np.float64)
            scale[b0] = np.maximum(BA[b0], 0)
            bias_ids = _padded_parts(b0, beta > 0, P)
            e = solve_grouped(out_layer, rows, bias_ids, scale, np.repeat(bt[:, None] / P, P, axis=1), eps_t / P,
                              caps[t - 1]["bias"], kept[2 * t - 1])
            errs.append(e)
        used = kept[2 * t - 1].any(axis=0)
        inter = np.nonzero(used[: nin * k])[0]
        j_of = inter // k
        kept[2 * t - 2][inter, j_of] = True
        roles[2 * t - 2].kind[inter] = LIFT
        roles[2 * t - 2].layer[inter] = t - 1
        roles[2 * t - 2].index[inter] = j_of
        roles[2 * t - 2].scale[inter] = a32[inter].astype(np.float64)
        bused = b0[used[b0]]
        bias_kept[2 * t - 2][bused] = True
        roles[2 * t - 2].kind[bused] = CONST
        roles[2 * t - 2].scale[bused] = BA[bused].astype(np.float64)
        amp = 0.0
        if t >= 2:
            amp = float(np.max(chosen_l1, initial=0.0))  # max_o Σ_{kept u < n·k} |v_ou|·|a_u|
            downstream *= max(amp, 1e-300)
        tol = eps_t / P
        reports[t - 1] = {"layer": t, "instances": int(sum(x.size for x in errs)),
                          "failures": int(sum(int(np.sum(x > tol)) for x in errs)),
                          "max_instance_error": float(max(x.max(initial=0.0) for x in errs)),
                          "instance_eps": eps_t, "amplification": amp}
        if progress is not None:
            progress.step(f"target layer {t}: {reports[t - 1]['instances']:,} subset sums, "
                          f"{reports[t - 1]['failures']} failed")
    prune_unused(kept, bias_kept, roles, 1, source.depth - 1)
    ticket = Ticket(target, source, tuple(kept), tuple(bias_kept), tuple(roles), None, None, {})
    return ticket, reports
