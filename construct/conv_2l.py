"""The strong 2L construction for convolutional and residual targets (docs/math.md §9, §6), pruning only.

Weighted target layer ℓ with weights W (c_out × fan_in over virtual inputs v = (j, r, s)) is approximated by the
source layers A_ℓ, B_ℓ of :mod:`construct.conv_source`: dedicated channel u of A_ℓ (u // k = v) is usable iff its
entry (u, v) is kept by the ER mask; output channel i approximates W[i, v] by a subset sum of v_{iu}·|a_u| over usable
u of v with a_u > 0 and M_B[i, u] = 1 (the coefficient of ReLU(x_v)) and, when the layer's input can be negative,
−W[i, v] over a_u < 0 (the coefficient of ReLU(−x_v)); the bias b_i by a subset sum of v_{iu}·β_u over the bias
group (β_u > 0). Weights |W| ≤ P are split into P parts over disjoint sub-groups (columns q, q + P, …), exactly as
the dense 2L construction (:mod:`construct.strong_2l`, whose grouping helpers this module uses).

Layers are solved in reverse execution order. Tolerances: ``weight_eps`` → every instance to that tolerance; ``eps``
→ the backward split on the graph: ε_ℓ = ε / (Lw·(‖B_ℓ‖_1 + 1)·G_ℓ), Lw the number of weighted layers, ‖B_ℓ‖_1 =
Σ_v B_{j(v)} over the layer's virtual inputs, G_ℓ the gain from the layer's output to the network output
(G(output) = 1; a value's gain is the sum over its readers of the reader's gain times its measured grouped
amplification Λ = max_i Σ_v max(|P_iv|, |N_iv|) for a weighted reader, 1 otherwise), never below the a-priori
tolerance theory used for the widths. Unrolling the grouped bound's recursion (:mod:`construct.conv_ticket`) gives
grouped bound ≤ Σ_ℓ G_ℓ·ε_ℓ·(‖B_ℓ‖_1 + 1) ≤ ε when every instance succeeds.
"""
from __future__ import annotations

import numpy as np

from construct.conv_source import ConvSource
from construct.conv_target import ConvTarget, WeightedLayer
from construct.conv_ticket import ConvTicket, LayerSelection, channel_bounds
from construct.instances import solve_instances
from construct.strong_2l import _padded_parts, _sign_groups

__all__ = ["build_conv_2l", "layer_input_norm", "graph_gains"]

_GATHER_ENTRIES = 1 << 23   # packed candidates per step (rows × groups × a·k)


def layer_input_norm(target: ConvTarget, bounds, wl: WeightedLayer) -> float:
    """‖B_ℓ‖_1 = Σ over the layer's virtual inputs v of sup_X |x_{j(v)}| (k_h·k_w copies of every channel bound)."""
    rec = next(r for r in target.architecture.layers if r.name == wl.name)
    lo, hi = bounds[rec.inputs[0]]
    return float(np.sum(np.maximum(np.abs(lo), np.abs(hi)))) * wl.kernel_entries


def graph_gains(target: ConvTarget, amplification: dict) -> dict:
    """{value name: G}: the gain from a value to the network output (module docstring); weighted readers whose
    amplification is not in ``amplification`` count as NaN (only values downstream of solved layers are exact)."""
    records = target.architecture.layers
    gains = {rec.name: 0.0 for rec in records}
    gains[records[-1].name] = 1.0
    weighted = {w.name for w in target.weighted}
    for rec in reversed(records):
        g = gains[rec.name]
        factor = amplification.get(rec.name, np.nan) if rec.name in weighted else 1.0
        for src in rec.inputs:
            gains[src] = gains.get(src, 0.0) + g * factor
    return gains


def _plan_total(cap) -> int:
    """a·k: how many kept candidates an instance with search plan ``cap`` reads (construct.instances)."""
    if cap is None:
        from construct.subset_sum import DEFAULT_MAX_PREFIX

        return DEFAULT_MAX_PREFIX
    return int(cap) if np.ndim(cap) == 0 else int(cap[0]) * int(cap[1])


def _first_kept(B, rr, groups, counts, need):
    """For every (row i ∈ rr, group g): the first need[g] candidate units u of groups[g] (in order) with
    M_B[i, u] = 1, and their weights v_{iu}; (r, G, max need) arrays padded with −1 / 0. Only the entries scanned are
    computed (:func:`construct.counter_kernel.first_kept`), rows shared by threads."""
    from construct.counter_kernel import first_kept
    from construct.source import _threads

    R, G = rr.size, groups.shape[0]
    width = int(need.max(initial=0))
    units = np.full((R, G, width), -1, dtype=np.int64)
    v = np.zeros((R, G, width))
    groups = np.ascontiguousarray(groups, dtype=np.int64)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    need = np.ascontiguousarray(need, dtype=np.int64)
    rows = np.ascontiguousarray(rr, dtype=np.int64)

    def run(sl):
        first_kept(B._key_m, B._key_w, B.density, B.dtype == "float64", rows[sl], B.shape[1], groups, counts, need,
                   units[sl], v[sl])

    threads = min(_threads(), R)
    if threads <= 1:
        run(slice(0, R))
    else:
        from concurrent.futures import ThreadPoolExecutor

        bounds = np.linspace(0, R, threads + 1).astype(int)
        with ThreadPoolExecutor(max_workers=threads) as pool:  # the kernel releases the GIL
            list(pool.map(run, [slice(bounds[i], bounds[i + 1]) for i in range(threads)]))
    return units, v


def _solve_layer(wl: WeightedLayer, A, B, parts: int, eps: float, cap, bias_cap):
    """Solve every instance of one weighted layer; returns (LayerSelection, errors of the weight instances
    (fan_out, G), errors of the bias instances (fan_out, P) or None)."""
    fan_in, fan_out, k, g0, P = wl.fan_in, wl.fan_out, A.k, A.g0, parts
    a_all, usable = A.diagonal()
    scale = np.zeros(B.shape[1])
    np.abs(a_all, out=scale[: fan_in * k], casting="unsafe")
    grp, tj, ts = [], [], []
    for sign in ((1.0, -1.0) if wl.signed else (1.0,)):
        for q in range(P):
            grp.append(_sign_groups(a_all, usable, fan_in, k, sign, q, P))
            tj.append(np.arange(fan_in))
            ts.append(np.full(fan_in, sign))
    W = wl.dense
    targets = W[:, np.concatenate(tj)] * np.concatenate(ts)[None, :] / P
    if g0 and wl.has_bias:
        b0 = fan_in * k + np.arange(g0)
        beta = A.bias[b0].astype(np.float64)
        scale[b0] = np.maximum(beta, 0.0)
        bias_ids = _padded_parts(b0, beta > 0, P)
        grp.append(bias_ids)
        targets = np.concatenate([targets, np.repeat(wl.bias[:, None] / P, P, axis=1)], axis=1)
    width = max(g.shape[1] for g in grp)
    groups = np.concatenate([np.pad(g, ((0, 0), (0, width - g.shape[1])), constant_values=-1) for g in grp])
    G = groups.shape[0]
    n_weight = G - (P if (g0 and wl.has_bias) else 0)
    counts = (groups >= 0).sum(axis=1)
    # every instance searches its first a·k kept candidates (construct.instances): B's entries are computed in
    # candidate order until that many kept ones are found
    need = np.array([_plan_total(cap)] * n_weight + [_plan_total(bias_cap)] * (G - n_weight))
    errors = np.zeros((fan_out, G))
    rows_out, cols_out, v_out = [], [], []
    step = max(1, _GATHER_ENTRIES // max(1, G * int(need.max(initial=1))))
    for r0 in range(0, fan_out, step):
        rr = np.arange(r0, min(fan_out, r0 + step))
        units, v = _first_kept(B, rr, groups, counts, need)  # (r, G, a·k) unit ids (−1: none), weights
        t = targets[rr]
        cand = v * scale[np.maximum(units, 0)]
        av = units >= 0
        m = np.zeros(av.shape, dtype=bool)
        e = np.zeros(t.shape)
        for sl, c in ((slice(0, n_weight), cap), (slice(n_weight, G), bias_cap)):
            if sl.stop <= sl.start:
                continue
            mm, ee = solve_instances(cand[:, sl].reshape(-1, cand.shape[2]), av[:, sl].reshape(-1, cand.shape[2]),
                                     t[:, sl].reshape(-1), eps / P, c)
            m[:, sl] = mm.reshape(av[:, sl].shape)
            e[:, sl] = ee.reshape(t[:, sl].shape)
        errors[rr] = e
        ri, gi, ci = np.nonzero(m)
        rows_out.append(rr[ri])
        cols_out.append(units[ri, gi, ci])
        v_out.append(v[ri, gi, ci])
    rows = np.concatenate(rows_out) if rows_out else np.zeros(0, np.int64)
    cols = np.concatenate(cols_out) if cols_out else np.zeros(0, np.int64)
    v = np.concatenate(v_out) if v_out else np.zeros(0)
    order = np.lexsort((cols, rows))
    rows, cols, v = rows[order].astype(np.int64), cols[order].astype(np.int64), v[order]
    used = np.unique(cols)
    ded = fan_in * k
    units, bias_units = used[used < ded], used[used >= ded]
    sel = LayerSelection(wl.name, k, g0, units, a_all[units].astype(np.float64), bias_units,
                         A.bias[bias_units].astype(np.float64), rows, cols, v)
    return sel, errors[:, :n_weight], (errors[:, n_weight:] if n_weight < G else None)


def build_conv_2l(target: ConvTarget, source: ConvSource, plan, *, eps=None, progress=None, effective_out=None):
    """Build the 2L ticket of ``target`` inside ``source``.

    ``plan``: per weighted layer a dict with "parts" P, "instance_eps" (the a-priori per-instance tolerance ε_ℓ that
    theory used for the widths), "cap" and "bias_cap" (the search plans, see :func:`construct.instances.solve_instances`).
    With ``eps`` (the network's sup-error) the backward split of the module docstring is used; without it every
    instance is solved to "instance_eps". ``progress``: a :class:`construct.progress.Progress` (one step per
    weighted layer) or None. ``effective_out``: a list that receives :func:`construct.conv_ticket.effective_weights`
    of every weighted layer in execution order (computed here anyway; callers reuse them). Returns (ConvTicket,
    per-layer report dicts in execution order)."""
    bounds = channel_bounds(target)
    Lw = len(target.weighted)
    amps, sels, reports, effective = {}, [None] * Lw, [None] * Lw, [None] * Lw
    for wl in reversed(target.weighted):
        p = plan[wl.index - 1]
        A, B = source.pairs[wl.index - 1]
        if A.fan_in != wl.fan_in or B.shape[0] != wl.fan_out:
            raise ValueError(f"layer {wl.name!r}: source pair {A.shape}, {B.shape} does not fit fan_in {wl.fan_in}, "
                             f"fan_out {wl.fan_out}")
        eps_l = float(p["instance_eps"])
        norm = layer_input_norm(target, bounds, wl)
        gain_out = None
        if eps is not None:
            gain_out = graph_gains(target, amps)[wl.name]
            backward = eps / (Lw * (norm + 1.0) * max(gain_out, 1e-300))
            eps_l = min(max(eps_l, backward), 0.5)
        sel, werr, berr = _solve_layer(wl, A, B, int(p["parts"]), eps_l, p["cap"], p["bias_cap"])
        sels[wl.index - 1] = sel
        tol = eps_l / int(p["parts"])
        errs = [werr] + ([berr] if berr is not None else [])
        # Λ_ℓ: the grouped amplification max_i Σ_v max(|P_iv|, |N_iv|) (|P_iv| for an input ≥ 0) of the kept entries
        from construct.conv_ticket import effective_weights

        effective[wl.index - 1] = effective_weights(sel, wl)
        P_, N_, _, l1 = effective[wl.index - 1]
        gain = np.maximum(np.abs(P_), np.abs(N_)) if wl.signed else np.abs(P_)
        amps[wl.name] = float(gain.sum(axis=1).max(initial=0.0))
        reports[wl.index - 1] = {
            "layer": wl.name, "kind": wl.kind, "fan_in": wl.fan_in, "fan_out": wl.fan_out, "signed": wl.signed,
            "instances": int(sum(e.size for e in errs)), "failures": int(sum(int(np.sum(e > tol)) for e in errs)),
            "max_instance_error": float(max(e.max(initial=0.0) for e in errs)), "instance_eps": eps_l,
            "input_bound_l1": norm, "gain": gain_out, "amplification": amps[wl.name],
            "l1_amplification": float(l1.max(initial=0.0)), "kept": sel.kept}
        if progress is not None:
            r = reports[wl.index - 1]
            progress.step(f"layer {wl.name}: {r['instances']:,} subset sums, {r['failures']} failed")
    if effective_out is not None:
        effective_out.extend(effective)
    return ConvTicket(target, source, tuple(sels), {}), reports
