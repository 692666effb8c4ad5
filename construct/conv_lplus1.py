"""Strong tickets of plain CNNs inside a seeded ER source of depth L+1 (docs/math.md §9 "weak / L+1 ticket of a CNN",
§6 L+1 construction), following Gadhikar et al. 2023 (after Burkholz 2022, with ER thinning). Pruning only: the
ticket keeps a sub-mask of the source's ER masks and the source's own weights and biases.

It is the MLP L+1 construction (:mod:`construct.strong_lplus1`) on the weak conv layout (:mod:`construct.conv_weak`),
with the source's weights and constant channels. Widths from :func:`theory.conv_lplus1_widths.conv_lplus1_widths`.

- **Source layer 1 (lifting)**: a convolution with target layer 1's kernel, stride and padding (linear if layer 1 is
  linear), an :class:`construct.conv_source.IntermediateLayer` with g dedicated channels per virtual input v of layer 1
  and a bias group B_0 of g_0 channels. Channel u = v·g + k is usable iff its entry M_1[u, v] = 1 and keeps only that
  entry with its source weight a_u: x_u = ReLU(a_u·x_v). A B_0 channel keeps no entry and its bias β_u > 0: it outputs
  β_u at every position (it reads nothing, so borders included).
- **Source layer 2**: a 1×1 convolution (linear) to r_2 copies of each channel of target layer 1 (row o = i·r_2 + s)
  and c_2 constant channels. Copy o of i, virtual input v: Σ v_ou·|a_u| over chosen usable u of v with a_u > 0 and
  M_2[o, u] = 1 ≈ W_1[i, v], and over a_u < 0 ≈ −W_1[i, v] — the negative side only when the network input can be
  negative (:attr:`construct.conv_target.WeightedLayer.signed`, the rule of the 2L code); b_1[i] ≈ Σ v_ou·β_u over
  B_0; constant channels ≈ 1 over B_0. Copies' biases are pruned.
- **Source layer t+1** (t ≥ 2): target layer t's kind, kernel, stride and padding, from r_t·c_{t−1} + c_t channels to
  r_{t+1}·c_t + c_{t+1} (r_{L+1} = 1, no constants in the last layer); column (j·r_t + u)·K + k is copy u of input
  channel j at kernel entry k (K = k_h·k_w; for a linear layer reading a flatten of S positions per channel, K = S and
  k the position; K = 1 otherwise). Copy s of i, virtual input v = (j, k): Σ v_su over chosen kept copies u ≈ W_t[i, v]
  (uniform law); bias and constants of the next layer read the constant channels **only at the central kernel
  offset** k* = π_h·k_w + π_w (linear after a flatten: position 0; 1×1 or linear: the only entry) [ours]. That offset
  reads inside the image at every output position iff π_h < k_h, π_w < k_w and σ·(H_out − 1) ≤ H_in − 1 (both
  axes); otherwise a target with biases is refused in one line. An average pool with padding between layers would
  change a constant at the borders: refused too; max pooling and global average pooling keep it.
- Weights |W_t|, |b_t| ≤ P_t are split into P_t parts over strided sub-groups (as :mod:`construct.strong_lplus1`, but
  with one P_t per target layer: a folded first layer with |W| > 1 doubles only its own groups). Layers are
  solved from t = L down to 1: with ``eps`` each layer gets the larger of theory's a-priori ε_t and the backward value
  ε/(L·(‖B_{t−1}‖_1 + 1)·Π_{k>t} Λ_k) with the measured Λ_k = max over rows of Σ|v| over kept entries (constants
  included); with ``weight_eps`` every instance gets that tolerance. Failures are reported, never patched.

**Certificate** (rigorous, per source channel, sup over positions; docs/math.md §6 recursion on virtual inputs). With
B_v = sup_X |x_v| of the target (:func:`construct.conv_ticket.channel_bounds`, per channel repeated over kernel
entries), e_c the error of channel c and ĉ_q the *exact* value of constant channel q (computed layer by layer, so
constants carry no error):
- source layer 2: e_o = Σ_v max(|P_ov − W_1[i, v]|, |N_ov + W_1[i, v]|)·B_v + |Σ_{u∈B_0} v_ou·β_u − b_1[i]| with the
  realized P_ov = Σ v_ou·|a_u| (a_u > 0), N_ov (a_u < 0); only the first term for an input ≥ 0 (the lifting's input is
  exact, so only realized coefficients matter);
- source layer t+1: e_s = Σ_{kept copy entries} |v_su|·e_{ch} + Σ_v |Ŵ_sv − W_t[i, v]|·B_v + |Σ_q v_sq·ĉ_q − b_t[i]|,
  Ŵ_sv the realized sum of the chosen v_su;
- ReLU, max/global-average pooling and flatten pass errors unchanged. The certificate is max over output channels.
When every instance succeeds it is ≤ ε (the unrolled §6 split; constant errors |ĉ − 1| are carried by the
amplification, which counts constant columns).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from construct.conv_source import IntermediateLayer
from construct.conv_target import ConvTarget, conv_target, value_shapes
from construct.conv_ticket import channel_bounds
from construct.conv_weak import (ConvWeakSource, WeakConvLayer, _input_blocks, _virtual_bounds, _widest_value,
                                 conv_weak_forward, conv_weak_sampled_error, plain_chain, restricted_weights)
from construct.instances import solve_instances
from construct.source import SourceLayer
from construct.strong_common import compact_groups, scaled_group
from theory.conv_lplus1_widths import conv_lplus1_widths
from theory.strong_widths import backward_layer_tolerance
from theory.validation import check_open_unit, check_positive_int, check_positive_real

__all__ = ["ConvLPlus1Source", "ConvLPlus1Ticket", "ConvLPlus1Report", "plan_conv_lplus1", "constant_offsets",
           "sample_conv_lplus1_source", "conv_lplus1_ticket_in_source", "conv_lplus1_attack",
           "conv_lplus1_accuracies", "conv_lplus1_build_bytes", "build_conv_lplus1_ticket", "LPLUS1_RESIDUAL_REFUSAL"]

LPLUS1_RESIDUAL_REFUSAL = "the l+1 construction takes plain CNNs only: allowed --construction 2l"
_MAX_ENTRIES = 1 << 23  # candidate entries gathered per solver call
_WINDOW_ENTRIES = 1 << 24
_START_TAG = 0xA77AD


# ------------------------------------------------------------------------------------------------ data structures
@dataclass
class ConvLPlus1Source(ConvWeakSource):
    """The seeded source: the lifting (:class:`IntermediateLayer`, only its dedicated entries and biases are drawn)
    and source layers 2..L+1 (:class:`SourceLayer`, index ℓ), drawn block by block where read — the weak source's
    layout (:class:`construct.conv_weak.ConvWeakSource`) with weights in ``dtype``."""

    dtype: str = "float32"


@dataclass(frozen=True)
class ConvLPlus1Ticket:
    """A strong L+1 ticket of a plain CNN: one :class:`construct.conv_weak.WeakConvLayer` per source layer (the
    lifting first; ``weight`` = the source's own weights, ``bias`` = the kept source biases, 0 where pruned;
    ``error`` = the certified error per channel), the target and the source."""

    target: ConvTarget
    source: ConvLPlus1Source
    layers: tuple
    meta: dict = field(default_factory=dict)

    @property
    def kept_params(self) -> int:
        return int(sum(layer.kept for layer in self.layers))

    @property
    def certificate(self) -> float:
        last = self.layers[-1]
        return float(last.error[last.active].max(initial=0.0))

    def forward(self, x: np.ndarray, weights=None, values_out: dict | None = None) -> np.ndarray:
        """The ticket's output for a batch x (N, *input_shape), float64 (:func:`construct.conv_weak.conv_weak_forward`:
        the source sub-network as real convolutions over the computed channels)."""
        return conv_weak_forward(self, x, weights, values_out)

    def to_module(self, dtype=None):
        """An ``nn.Module`` computing :meth:`forward` in torch (default float64): every source layer a sparse
        convolution (unfold + sparse matrix product) or sparse linear layer over the computed channels, the target's
        ReLU, pooling and flatten records in between; every array is a buffer."""
        return _ticket_module(self, dtype)


# ------------------------------------------------------------------------------------------------ planning
def _refuse_residual(target: ConvTarget) -> None:
    for rec in target.architecture.layers:
        if rec.kind == "add":
            raise ValueError(f"target {target.name!r} has a residual addition (layer {rec.name!r}): "
                             f"{LPLUS1_RESIDUAL_REFUSAL}")
    plain_chain(target)


def _between(target: ConvTarget) -> dict:
    """{weighted layer name: [records after it up to the next weighted layer]}."""
    names = {w.name for w in target.weighted}
    out, current = {}, None
    for rec in target.architecture.layers:
        if rec.name in names:
            current = rec.name
            out[current] = []
        elif current is not None:
            out[current].append(rec)
    return out


def constant_offsets(target: ConvTarget, needs_constants: bool) -> list:
    """Per weighted layer t ≥ 2, the column k* (within a channel's block) where its bias and the next constants read
    the constant channels (module docstring; None for t = 1); one-line refusals when ``needs_constants`` and the
    central offset leaves the image or an average pool with padding would change a constant."""
    shapes = value_shapes(target.architecture, target.input_shape)
    by_name = {rec.name: rec for rec in target.architecture.layers}
    out = [None]
    after = _between(target)
    if needs_constants:
        for w in target.weighted[:-1]:
            for rec in after[w.name]:
                if rec.kind == "avgpool2d" and tuple(rec.attrs["padding"]) != (0, 0):
                    raise ValueError(f"layer {rec.name!r} (avgpool2d, padding {list(rec.attrs['padding'])}) averages "
                                     "zero padding into the constant channels of the l+1 construction at the borders: "
                                     "allowed avgpool2d without padding, max or global average pooling, a target "
                                     "without biases, or --construction 2l")
    for w in target.weighted[1:]:
        if w.kind != "conv2d":
            out.append(0)
            continue
        kh, kw = w.weight.shape[2:]
        (sh, sw), (ph, pw) = w.stride, w.padding
        src = by_name[w.name].inputs[0]
        _, hi, wi = shapes[src]
        _, ho, wo = shapes[w.name]
        inside = ph < kh and pw < kw and sh * (ho - 1) <= hi - 1 and sw * (wo - 1) <= wi - 1
        if needs_constants and not inside:
            raise ValueError(f"layer {w.name!r} (conv2d {kh}x{kw}, stride {sh},{sw}, padding {ph},{pw}, input "
                             f"{hi}x{wi}): the constant channels read at kernel offset ({ph}, {pw}) would leave the "
                             "image at some output position, so the l+1 construction cannot carry its bias: allowed "
                             "padding < kernel and stride·(H_out - 1) <= H_in - 1, a target without biases, or "
                             "--construction 2l")
        out.append(ph * kw + pw)
    return out


def plan_conv_lplus1(target: ConvTarget, density, delta: float, *, eps=None, weight_eps=None,
                     width_multiplier: float = 1.0):
    """(ConvLPlus1Widths from theory, groups {"g", "g0", "r" (r_2..r_L, r_{L+1} = 1), "c" (c_2..c_L, 0), "P"}) with the
    group sizes times ``width_multiplier`` (multiples of P, as :func:`construct.strong_lplus1.lplus1_groups`).
    Theory gets the actual target's ‖B_{t−1}‖_1 (:func:`construct.conv_ticket.channel_bounds`)."""
    w = target.weighted
    blocks = _input_blocks(target)
    Bv = _virtual_bounds(target, channel_bounds(target))
    layers = [(w[0].fan_in, w[0].fan_out)] + [(x.fan_in, x.fan_out, blocks[x.name]) for x in w[1:]]
    wb = [max(float(np.abs(x.weight).max(initial=0.0)), float(np.abs(x.bias).max(initial=0.0)), 1e-12) for x in w]
    sw = conv_lplus1_widths(layers, density, delta, eps=eps, instance_eps=weight_eps, signed_input=w[0].signed,
                            biases=target.has_biases, weight_bound=wb, box=target.box,
                            input_bounds_l1=[float(Bv[x.name].sum()) for x in w])
    mult = check_positive_real(width_multiplier, "width_multiplier")
    P = sw.parts
    G = sw.groups
    groups = {"g": scaled_group(G["g"], mult, P[0]), "g0": scaled_group(G["g0"], mult, 1),
              "r": tuple(scaled_group(r, mult, P[l]) for l, r in enumerate(G["r"], start=1)) + (1,),
              "c": tuple(scaled_group(c, mult, 1) for c in G["c"]) + (0,), "P": tuple(P)}
    return sw, groups


def _source_shapes(target: ConvTarget, groups) -> list:
    """(rows, columns) of source layers 2..L+1 in the (c_out, c_in·block) layout."""
    w = target.weighted
    blocks = _input_blocks(target)
    r, c = groups["r"], groups["c"]
    channels = [groups["g"] * w[0].fan_in + groups["g0"]]
    out = []
    for t, wl in enumerate(w, start=1):
        rows = r[t - 1] * wl.fan_out + c[t - 1]
        K = 1 if t == 1 else blocks[wl.name]
        out.append((rows, channels[-1] * K))
        channels.append(rows)
    return out


def sample_conv_lplus1_source(target: ConvTarget, groups, densities, seed: int, dtype: str) -> ConvLPlus1Source:
    """The seeded source (nothing drawn until read): lifting index 1, source layer ℓ index ℓ."""
    lift = IntermediateLayer(target.weighted[0].fan_in, groups["g"], groups["g0"], densities[0], seed=seed, index=1,
                             dtype=dtype)
    layers = tuple(SourceLayer(rows, cols, densities[l], seed=seed, index=l + 1, dtype=dtype)
                   for l, (rows, cols) in enumerate(_source_shapes(target, groups), start=1))
    return ConvLPlus1Source(lift, layers, int(seed), dtype)


# ------------------------------------------------------------------------------------------------ solving
def _solve_collect(layer, rows, groups, scale, targets, eps, cap, chosen: list):
    """Every (row r, group k) instance: candidates W[rows[r], groups[k, :]]·scale[groups[k, :]] available iff
    M[rows[r], u] (u ≠ −1), target targets[r, k], tolerance ``eps``; appends the chosen (row, column, source weight)
    to ``chosen`` and returns the errors (R, G). Rows are drawn a few at a time (as
    :func:`construct.strong_common.solve_grouped`)."""
    R, G = targets.shape
    errors = np.abs(targets).astype(np.float64)
    width = groups.shape[1] if groups.ndim == 2 else 0
    if R == 0 or G == 0 or width == 0:
        return errors
    safe = np.where(groups >= 0, groups, 0)
    valid = groups >= 0
    step = max(1, min(_MAX_ENTRIES // max(1, G * width), _MAX_ENTRIES // max(1, layer.shape[1])))
    for r0 in range(0, R, step):
        rr = rows[r0:r0 + step]
        w_rows, m_rows = layer.take_rows(rr)
        raw = w_rows[:, safe].astype(np.float64)
        av = m_rows[:, safe] & valid[None]
        del w_rows, m_rows
        t = targets[r0:r0 + step]
        m, e = solve_instances((raw * scale[safe][None]).reshape(-1, width), av.reshape(-1, width), t.reshape(-1),
                               eps, cap)
        errors[r0:r0 + step] = e.reshape(t.shape)
        ri, gi, ci = np.nonzero(m.reshape(av.shape))
        chosen.append((rr[ri], groups[gi, ci], raw[ri, gi, ci]))
    return errors


def _parts(ids: np.ndarray, select: np.ndarray, P: int) -> np.ndarray:
    """The selected ids of one candidate list split into P strided parts, one padded row per part."""
    parts = [compact_groups(ids[None, q::P], select[None, q::P])[0] for q in range(P)]
    wmax = max(p.size for p in parts)
    return np.stack([np.pad(p, (0, wmax - p.size), constant_values=-1) for p in parts])


def _plan(caps, key):
    return caps[key] if caps is not None else None


def _flatten_chosen(chosen):
    if not chosen:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return (np.concatenate([c[0] for c in chosen]).astype(np.int64), np.concatenate([c[1] for c in chosen]).astype(np.int64),
            np.concatenate([c[2] for c in chosen]).astype(np.float64))


def _solve_layer1(wl, source, groups, eps_t, caps):
    """Instances of target layer 1 over the lifting (source layer 2); returns (chosen, [(errors, tol)])."""
    P, g, g0 = groups["P"][0], groups["g"], groups["g0"]
    r, c = groups["r"][0], groups["c"][0]
    layer = source.layers[0]
    V = wl.fan_in
    a, usable = source.lifting.diagonal()
    a = a.astype(np.float64)
    rows = np.arange(r * wl.fan_out)
    neuron = rows // r
    const_rows = r * wl.fan_out + np.arange(c)
    ids = np.arange(V)[:, None] * g + np.arange(g)[None, :]
    scale = np.zeros(layer.shape[1])
    scale[: V * g] = np.abs(a)
    b0 = V * g + np.arange(g0)
    beta = source.lifting.bias[b0].astype(np.float64)
    scale[b0] = np.maximum(beta, 0.0)
    chosen, errs = [], []
    grp, sgn, vv = [], [], []
    for sign in ((1.0, -1.0) if wl.signed else (1.0,)):
        sel = usable[ids] & ((a[ids] > 0) if sign > 0 else (a[ids] < 0))
        for q in range(P):
            grp.append(compact_groups(ids[:, q::P], sel[:, q::P]))
            sgn.append(np.full(V, sign))
            vv.append(np.arange(V))
    width = max(x.shape[1] for x in grp)
    grp = np.concatenate([np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=-1) for x in grp])
    targets = wl.dense[neuron][:, np.concatenate(vv)] * np.concatenate(sgn)[None, :] / P
    errs.append((_solve_collect(layer, rows, grp, scale, targets, eps_t / P, _plan(caps, "weight"), chosen), eps_t / P))
    if g0 and wl.has_bias:
        bias_ids = _parts(b0, beta > 0, P)
        errs.append((_solve_collect(layer, rows, bias_ids, scale, np.repeat(wl.bias[neuron][:, None] / P, P, axis=1),
                                    eps_t / P, _plan(caps, "bias"), chosen), eps_t / P))
    if c and g0:
        one = compact_groups(b0[None, :], (beta > 0)[None, :])
        errs.append((_solve_collect(layer, const_rows, one, scale, np.ones((c, 1)), eps_t, _plan(caps, "const"), chosen),
                     eps_t))
    elif c:
        errs.append((np.ones((c, 1)), eps_t))
    return chosen, errs


def _solve_next(wl, t, layer, groups, K, kstar, eps_t, caps):
    """Instances of target layer t ≥ 2 (source layer t+1); returns (chosen, [(errors, tol)])."""
    P = groups["P"][t - 1]
    r_in, c_in = groups["r"][t - 2], groups["c"][t - 2]
    r, c = groups["r"][t - 1], groups["c"][t - 1]
    V = wl.fan_in
    C = V // K
    rows = np.arange(r * wl.fan_out)
    neuron = rows // r
    const_rows = r * wl.fan_out + np.arange(c)
    v_all = np.arange(V)
    cols = (v_all // K)[:, None] * r_in * K + np.arange(r_in)[None, :] * K + (v_all % K)[:, None]  # (V, r_in)
    scale = np.ones(layer.shape[1])
    chosen, errs = [], []
    grp = np.concatenate([cols[:, q::P] for q in range(P)])
    errs.append((_solve_collect(layer, rows, grp, scale, np.tile(wl.dense[neuron] / P, (1, P)), eps_t / P,
                                _plan(caps, "weight"), chosen), eps_t / P))
    ccols = (r_in * C + np.arange(c_in)) * K + (kstar or 0)
    if c_in and wl.has_bias:
        bias_ids = _parts(ccols, np.ones(c_in, dtype=bool), P)
        errs.append((_solve_collect(layer, rows, bias_ids, scale, np.repeat(wl.bias[neuron][:, None] / P, P, axis=1),
                                    eps_t / P, _plan(caps, "bias"), chosen), eps_t / P))
    elif wl.has_bias:
        errs.append((np.abs(wl.bias[neuron])[:, None], eps_t / P))
    if c and c_in:
        errs.append((_solve_collect(layer, const_rows, ccols[None, :], scale, np.ones((c, 1)), eps_t,
                                    _plan(caps, "const"), chosen), eps_t))
    elif c:
        errs.append((np.ones((c, 1)), eps_t))
    return chosen, errs


def _constant_value(value: np.ndarray, records) -> np.ndarray:
    """A constant channel's value after the records between two weighted layers (ReLU clips; max and global average
    pooling, average pooling without padding and flatten keep a constant — :func:`constant_offsets` refuses the
    rest)."""
    out = value
    for rec in records:
        if rec.kind == "relu":
            out = np.maximum(out, 0.0)
    return out


def conv_lplus1_ticket_in_source(target: ConvTarget, source: ConvLPlus1Source, groups, instance_eps, caps=None, *,
                                 eps=None, progress=None):
    """Build the strong L+1 ticket (module docstring) inside ``source``.

    ``instance_eps``: a-priori ε_t per target layer; with ``eps`` (network sup-error) the layers are solved from t = L
    down to 1 with the backward split and the measured amplifications, never below ``instance_eps``.
    ``caps``: per target layer {"weight", "bias", "const"} search plans for :func:`construct.instances.solve_instances`
    (None: the solver's default prefix). Returns (ConvLPlus1Ticket, per target layer dicts: instances, failures,
    max_instance_error, instance_eps, amplification)."""
    _refuse_residual(target)
    w = target.weighted
    L = len(w)
    blocks = _input_blocks(target)
    kstars = constant_offsets(target, target.has_biases)
    Bv = _virtual_bounds(target, channel_bounds(target))
    norms = [float(Bv[x.name].sum()) for x in w]
    caps = caps or [None] * L
    solved = [None] * L
    reports = [None] * L
    downstream = 1.0
    for t in range(L, 0, -1):
        wl = w[t - 1]
        eps_t = float(instance_eps[t - 1])
        if eps is not None:
            eps_t = min(max(eps_t, backward_layer_tolerance(eps, L, norms[t - 1], max(downstream, 1e-300))), 0.5)
        if t == 1:
            chosen, errs = _solve_layer1(wl, source, groups, eps_t, caps[0])
        else:
            chosen, errs = _solve_next(wl, t, source.layers[t - 1], groups, blocks[wl.name], kstars[t - 1], eps_t,
                                       caps[t - 1])
        rows, cols, vals = _flatten_chosen(chosen)
        amp = 0.0
        if t >= 2:
            amp = float(np.bincount(rows, weights=np.abs(vals), minlength=source.layers[t - 1].shape[0]).max(initial=0.0))
            downstream *= max(amp, 1e-300)
        solved[t - 1] = (rows, cols, vals)
        failures = int(sum(int(np.sum(e > tol)) for e, tol in errs))
        reports[t - 1] = {"layer": t, "name": wl.name, "instances": int(sum(e.size for e, _ in errs)),
                          "failures": failures, "max_instance_error": float(max((e.max(initial=0.0) for e, _ in errs),
                                                                                default=0.0)),
                          "instance_eps": eps_t, "amplification": amp}
        if progress is not None:
            progress.step(f"target layer {t} ({wl.name}): {reports[t - 1]['instances']:,} subset sums, {failures} failed")
    layers = _assemble(target, source, groups, solved, kstars, Bv)
    return ConvLPlus1Ticket(target, source, layers, {}), reports


def _assemble(target, source, groups, solved, kstars, Bv) -> tuple:
    """Prune what nothing downstream reads, then compute every layer's realized coefficients, constant values and
    per-channel certificate (module docstring) from the input forwards."""
    w = target.weighted
    L = len(w)
    blocks = _input_blocks(target)
    after = _between(target)
    g = groups["g"]
    # prune backwards
    shapes = _source_shapes(target, groups)
    active = np.arange(shapes[-1][0])
    kept = [None] * L
    for t in range(L, 0, -1):
        rows, cols, vals = solved[t - 1]
        keep = np.isin(rows, active)
        kept[t - 1] = (rows[keep], cols[keep], vals[keep], active)
        K = 1 if t == 1 else blocks[w[t - 1].name]
        active = np.unique(cols[keep] // K)
    lift_active = active
    # lifting: dedicated channel u keeps (u, u // g) with a_u; B_0 channel keeps its bias β_u
    V1 = w[0].fan_in
    a, _ = source.lifting.diagonal()
    a = a.astype(np.float64)
    beta_all = source.lifting.bias.astype(np.float64)
    ded = lift_active[lift_active < V1 * g]
    lift_bias = np.zeros(source.lifting.shape[0])
    bias_used = lift_active[lift_active >= V1 * g]
    lift_bias[bias_used] = beta_all[bias_used]
    w0 = w[0]
    kernel = tuple(w0.weight.shape[2:]) if w0.kind == "conv2d" else (1, 1)
    stride, padding = (w0.stride, w0.padding) if w0.kind == "conv2d" else ((1, 1), (0, 0))
    lift = WeakConvLayer(1, w0.name + ":lifting", w0.kind, source.lifting.shape[0],
                         w0.in_channels if w0.kind == "conv2d" else w0.fan_in, w0.kernel_entries, kernel,
                         tuple(stride), tuple(padding), g, ded.astype(np.int64), (ded // g).astype(np.int64), a[ded],
                         lift_bias, lift_active.astype(np.int64), np.zeros(source.lifting.shape[0]))
    out = [lift]
    err_prev = np.zeros(source.lifting.shape[0])
    const_prev = np.zeros(0)  # values of the previous layer's constant channels
    for t in range(1, L + 1):
        wl = w[t - 1]
        rows, cols, vals, act = kept[t - 1]
        n_rows = shapes[t - 1][0]
        r, c = groups["r"][t - 1], groups["c"][t - 1]
        R = r * wl.fan_out
        V = wl.fan_in
        neuron = np.minimum(np.arange(n_rows) // r, wl.fan_out - 1)
        bhat = np.zeros(n_rows)
        prop = np.zeros(n_rows)
        if t == 1:
            K = 1
            wt = cols < V1 * g
            v = cols[wt] // g
            coef = vals[wt] * np.abs(a[cols[wt]])
            pos = a[cols[wt]] > 0
            Pm, Nm = np.zeros((n_rows, V)), np.zeros((n_rows, V))
            np.add.at(Pm, (rows[wt][pos], v[pos]), coef[pos])
            np.add.at(Nm, (rows[wt][~pos], v[~pos]), coef[~pos])
            bt = ~wt
            np.add.at(bhat, rows[bt], vals[bt] * np.maximum(beta_all[cols[bt]], 0.0))
            dev = np.abs(Pm[:R] - wl.dense[neuron[:R]])
            if wl.signed:
                dev = np.maximum(dev, np.abs(Nm[:R] + wl.dense[neuron[:R]]))
            kind, kernel, stride, padding = wl.kind, (1, 1), (1, 1), (0, 0)
        else:
            K = blocks[wl.name]
            r_in = groups["r"][t - 2]
            C = V // K
            ch = cols // K
            wt = ch < r_in * C
            v = (ch[wt] // r_in) * K + cols[wt] % K
            What = np.zeros((n_rows, V))
            np.add.at(What, (rows[wt], v), vals[wt])
            prop = np.bincount(rows[wt], weights=np.abs(vals[wt]) * err_prev[ch[wt]], minlength=n_rows)
            bt = ~wt
            np.add.at(bhat, rows[bt], vals[bt] * const_prev[ch[bt] - r_in * C])
            dev = np.abs(What[:R] - wl.dense[neuron[:R]])
            kind = wl.kind
            kernel = tuple(wl.weight.shape[2:]) if kind == "conv2d" else (1, 1)
            stride, padding = (wl.stride, wl.padding) if kind == "conv2d" else ((1, 1), (0, 0))
        err = np.zeros(n_rows)
        err[:R] = prop[:R] + dev @ Bv[wl.name] + np.abs(bhat[:R] - wl.bias[neuron[:R]])
        if c:
            const_prev = _constant_value(bhat[R:R + c], after[wl.name])
        out.append(WeakConvLayer(t + 1, wl.name, kind, n_rows, shapes[t - 1][1] // K, K, kernel, tuple(stride),
                                 tuple(padding), r, rows, cols, vals, np.zeros(n_rows), act, err))
        err_prev = err
    return tuple(out)


# ------------------------------------------------------------------------------------------------ torch module
def _ticket_module(ticket: ConvLPlus1Ticket, dtype=None):
    import torch
    import torch.nn.functional as F
    from torch import nn

    from construct.conv_export import _classes, _dtype

    dtype = _dtype(dtype)
    weights = restricted_weights(ticket)

    class Sparse(nn.Module):
        """One source layer over its computed channels: y = W·unfold(x) + b with W sparse (COO buffers)."""

        def __init__(self, layer, mat, bias):
            super().__init__()
            coo = mat.T.tocoo()  # (out, in·block)
            self.kind = layer.kind
            self.kernel, self.stride, self.padding = layer.kernel, layer.stride, layer.padding
            self.shape = (int(coo.shape[0]), int(coo.shape[1]))
            self.register_buffer("index", torch.tensor(np.stack([coo.row, coo.col]), dtype=torch.int64))
            self.register_buffer("value", torch.tensor(coo.data, dtype=dtype))
            self.register_buffer("bias", torch.tensor(np.asarray(bias), dtype=dtype))

        def forward(self, x):
            W = torch.sparse_coo_tensor(self.index, self.value, self.shape, check_invariants=False)
            if self.kind == "linear":
                return torch.sparse.mm(W, x.T).T + self.bias
            n, _, h, w_ = x.shape
            cols = F.unfold(x, self.kernel, padding=self.padding, stride=self.stride)  # (n, in·block, L)
            ho = (h + 2 * self.padding[0] - self.kernel[0]) // self.stride[0] + 1
            wo = (w_ + 2 * self.padding[1] - self.kernel[1]) // self.stride[1] + 1
            y = torch.sparse.mm(W, cols.permute(1, 0, 2).reshape(cols.shape[1], -1))  # (out, n·L)
            return y.reshape(-1, n, ho, wo).permute(1, 0, 2, 3) + self.bias[None, :, None, None]

    class First(nn.Module):
        """Weighted layer 1: lifting, ReLU, the 1×1 layer."""

        def __init__(self, lift, second):
            super().__init__()
            self.lift, self.second = lift, second

        def forward(self, x):
            return self.second(F.relu(self.lift(x)))

    index = {rec.name: i for i, rec in enumerate(ticket.target.architecture.layers)}
    mods = {}
    for i, layer in enumerate(ticket.layers[1:], start=1):
        mod = Sparse(layer, *weights[i])
        if i == 1:
            mod = First(Sparse(ticket.layers[0], *weights[0]), mod)
        mods[index[layer.carries]] = mod
    return _classes()["Graph"](ticket.target.architecture, mods, dtype)


# ------------------------------------------------------------------------------------------------ errors
def conv_lplus1_attack(ticket: ConvLPlus1Ticket, *, seed: int = 0, samples: int = 64, starts: int = 4,
                       steps: int = 20, batch: int = 8) -> float:
    """A lower bound of the sup-error max_X ‖ticket(x) − target(x)‖_∞: the largest error over ``samples`` uniform
    points of the box and ``starts`` runs of ``steps`` projected sign-gradient ascent steps (torch, float64, on
    :meth:`ConvLPlus1Ticket.to_module` and the target's module), started from the best samples; every value is a numpy
    re-evaluation at a point of the box (as :func:`construct.conv_attack.conv_attack_error`)."""
    import torch

    from construct.conv_export import architecture_module

    target = ticket.target
    a, b = (float(v) for v in target.box)
    shape = tuple(target.input_shape)
    weights = restricted_weights(ticket)
    batch = max(1, min(int(batch), _WINDOW_ENTRIES // _widest_value(ticket)))

    def exact(x):
        d = np.abs(ticket.forward(x, weights) - target.forward(x))
        return d.reshape(d.shape[0], -1).max(axis=1)

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _START_TAG]))
    xs = rng.uniform(a, b, size=(samples,) + shape)
    vals = np.concatenate([exact(xs[i:i + batch]) for i in range(0, samples, batch)])
    order = np.argsort(-vals, kind="stable")[:starts]
    best = float(vals.max(initial=0.0))
    if starts == 0 or steps == 0:
        return best
    tmod = ticket.to_module(torch.float64)
    gmod = architecture_module(target.architecture, torch.float64)
    lo, hi = a + 1e-9 * (b - a), b - 1e-9 * (b - a)
    found = []
    for i in range(0, order.size, batch):
        x = torch.tensor(xs[order[i:i + batch]], dtype=torch.float64)
        with torch.no_grad():
            diff = (tmod(x) - gmod(x)).reshape(x.shape[0], -1)
        out = diff.abs().argmax(dim=1)
        sign = torch.sign(diff[torch.arange(x.shape[0]), out])
        sign[sign == 0] = 1.0
        for step in range(steps):
            x = x.clamp(lo, hi).requires_grad_(True)
            d = (tmod(x) - gmod(x)).reshape(x.shape[0], -1)
            (grad,) = torch.autograd.grad((sign * d[torch.arange(x.shape[0]), out]).sum(), x)
            with torch.no_grad():
                x = (x + 0.5 * (b - a) * (0.5 * (1.0 - step / steps) + 0.002) * torch.sign(grad)).clamp(a, b)
        found.append(x.detach().numpy())
    cand = np.concatenate(found)
    vals = np.concatenate([exact(cand[i:i + batch]) for i in range(0, cand.shape[0], batch)])
    return max(best, float(vals.max(initial=0.0)))


def conv_lplus1_accuracies(ticket: ConvLPlus1Ticket, x: np.ndarray, labels) -> dict:
    """Accuracy of the target and of the ticket on images x with integer ``labels`` and how many predictions differ
    (keys of :func:`construct.conv_strong.digits_accuracies`)."""
    labels = np.asarray(labels)
    weights = restricted_weights(ticket)
    batch = max(1, _WINDOW_ENTRIES // _widest_value(ticket))
    tp = np.concatenate([ticket.target.forward(x[i:i + batch]).argmax(axis=1) for i in range(0, len(x), batch)])
    kp = np.concatenate([ticket.forward(x[i:i + batch], weights).argmax(axis=1) for i in range(0, len(x), batch)])
    return {"digits test accuracy (target)": float(np.mean(tp == labels)),
            "digits test accuracy (ticket)": float(np.mean(kp == labels)),
            "test predictions that differ": int(np.sum(tp != kp))}


# ------------------------------------------------------------------------------------------------ memory, report
def conv_lplus1_build_bytes(target: ConvTarget, groups, expected_kept: float) -> float:
    """Estimated peak bytes of :func:`build_conv_lplus1_ticket`: one drawn block (2^22 entries: weights, float64
    uniforms, mask), the rows drawn for one solver step and the gathered candidates (2^23 entries, ≈ 40 bytes each:
    weights, products, availability and the solver's copies), the lifting's dedicated entries (13 bytes per channel),
    the chosen entries (≈ 64 bytes each while building, pruning and in the sparse forward weights; ``expected_kept``
    of them), the realized coefficient arrays (rows × V_t float64, three per layer) and the forward: three values of
    one batch and the window rows (2^24 float64 entries each, at least one input)."""
    shapes = _source_shapes(target, groups)
    w = target.weighted
    draw = (1 << 22) * 13.0 + (1 << 23) * 40.0
    lift = 13.0 * groups["g"] * w[0].fan_in
    coef = sum(3 * 8.0 * rows * wl.fan_in for (rows, _), wl in zip(shapes, w))
    vshapes = value_shapes(target.architecture, target.input_shape)
    spatial = max([int(np.prod(s[1:])) for s in vshapes.values() if len(s) == 3] + [1])
    widest = max(max(rows for rows, _ in shapes), groups["g"] * w[0].fan_in + groups["g0"]) * spatial
    fwd = 3 * 8.0 * max(_WINDOW_ENTRIES, widest) + 2 * 8.0 * max(_WINDOW_ENTRIES, max(c for _, c in shapes) * spatial)
    return draw + lift + 64.0 * expected_kept + coef + fwd


@dataclass(frozen=True)
class ConvLPlus1Report:
    """Summary of one strong L+1 ticket of a plain CNN (``--json`` gives :meth:`to_dict`)."""

    construction: str
    target: dict
    densities: tuple
    delta: float
    eps: float | None
    weight_eps: float | None
    tolerance_split: str
    success: bool
    failures: int
    instances: int
    certificate: float
    sampled_error: float
    relative_error: float
    samples: int
    attacked_error: float | None
    source_params: int
    er_kept_params: float
    ticket_params: int
    target_params: int
    width_multiplier: float
    groups: dict
    source_channels: tuple
    source_dtype: str
    theory: dict
    layers: tuple
    seed: int
    seconds: float
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("densities", "source_channels", "layers"):
            d[key] = list(d[key])
        d["groups"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.groups.items()}
        return d

    def __str__(self) -> str:
        t = self.target
        folds = t.get("batchnorm_folded", [])
        tol = f"eps {self.eps}" if self.eps is not None else f"weight-eps {self.weight_eps}"
        gr = self.groups
        lines = [f"strong (L+1) ticket of {t.get('name', '?')} (input {t.get('input_shape')}, {self.target_params:,} "
                 f"nonzero target weights, {len(self.layers)} conv/linear layers), {tol}, delta {self.delta}, seed "
                 f"{self.seed}",
                 f"  BatchNorm folded (eval mode): {', '.join(f['batchnorm'] + ' -> ' + f['into'] for f in folds)}"
                 if folds else "  no BatchNorm to fold",
                 f"  densities {', '.join(f'{p:g}' for p in self.densities)}; lifting group g = {gr['g']}, bias group "
                 f"g0 = {gr['g0']}, copies r = {list(gr['r'])}, constants c = {list(gr['c'])}, weight parts P = "
                 f"{list(gr['P'])} (width multiplier {self.width_multiplier:g}); {self.source_dtype} source",
                 f"  source: {self.source_params:,} weights, channels {list(self.source_channels)} (about "
                 f"{self.er_kept_params:.4g} kept by the ER masks, drawn only where read); ticket keeps "
                 f"{self.ticket_params:,}",
                 f"  {'target layer':>12} {'instances':>10} {'failed':>7} {'max inst err':>12} {'inst eps':>10} "
                 f"{'amplif.':>9} {'cert err':>10}"]
        for r in self.layers:
            lines.append(f"  {r['name'][-12:]:>12} {r['instances']:>10,} {r['failures']:>7} "
                         f"{r['max_instance_error']:>12.3e} {r['instance_eps']:>10.3e} {r['amplification']:>9.3g} "
                         f"{r['certificate_error']:>10.3e}")
        att = "" if self.attacked_error is None else f"; attacked error {self.attacked_error:.3e}"
        lines.append(f"  success {self.success} ({self.failures} of {self.instances:,} subset sums failed); "
                     f"certificate {self.certificate:.3e} ({self.tolerance_split} split); sampled error "
                     f"{self.sampled_error:.3e} (relative {self.relative_error:.3e}) over {self.samples} inputs{att}; "
                     f"{self.seconds:.1f} s")
        for k, v in self.extra.items():
            lines.append(f"  {k}: {v:.4f}" if isinstance(v, float) else f"  {k}: {v}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ orchestration
def build_conv_lplus1_ticket(model, input_shape, density, delta: float, seed: int, *, eps=None, weight_eps=None,
                             box=(-1.0, 1.0), width_multiplier: float = 1.0, samples: int = 256, progress=None,
                             max_memory=None, name=None):
    """Build the strong L+1 ticket of a plain CNN ``model`` (an ``nn.Module``, an Architecture or a
    :class:`ConvTarget`) with inputs of ``input_shape`` in ``box`` (docs/math.md §9, §6); returns
    (ConvLPlus1Ticket, ConvLPlus1Report).

    Exactly one of ``eps`` (network sup-error: theory's forward split sizes the source, the construction solves with
    the backward split, and the certificate is ≤ eps whenever every instance succeeds) and ``weight_eps`` (tolerance
    of every subset sum). ``density``: one density or L+1. Refuses in one line, before anything is drawn: residual
    networks (naming --construction 2l) and non-chains, biases that the central-offset rule cannot carry
    (:func:`constant_offsets`), tolerances theory cannot meet, and a build whose estimate
    (:func:`conv_lplus1_build_bytes`) exceeds ``max_memory`` bytes (None: the default fraction of the available
    memory)."""
    from theory.memory import check_memory

    t0 = time.perf_counter()
    target = conv_target(model, input_shape, box=box, name=name)
    _refuse_residual(target)
    delta = check_open_unit(delta, "delta")
    seed = check_positive_int(seed, "seed", 0)
    samples = check_positive_int(samples, "samples")
    if (eps is None) == (weight_eps is None):
        raise ValueError("eps and weight_eps: allowed exactly one of them (network sup-error or per-instance tolerance)")
    constant_offsets(target, target.has_biases)
    sw, groups = plan_conv_lplus1(target, density, delta, eps=eps, weight_eps=weight_eps,
                                  width_multiplier=width_multiplier)
    check_memory(conv_lplus1_build_bytes(target, groups, sw.expected_ticket_params * max(1.0, width_multiplier)),
                 f"the l+1 ticket of {target.name} (lifting group {groups['g']}, copies {list(groups['r'])})", max_memory)
    L = len(target.weighted)
    if progress is not None:
        progress.start(L + 1)
    source = sample_conv_lplus1_source(target, groups, sw.densities, seed, sw.source_dtype)
    caps = [{k: (c[k], b[k]) if c[k] else None for k in c} for c, b in zip(sw.caps, sw.blocks)]
    ticket, reps = conv_lplus1_ticket_in_source(target, source, groups, sw.instance_eps, caps, eps=eps,
                                                progress=progress)
    weights = restricted_weights(ticket)
    err = conv_weak_sampled_error(ticket, samples=samples, seed=seed, weights=weights)
    if progress is not None:
        progress.step(f"sampled error {err.sampled_error:.3e} over {samples:,} inputs")
    failures = sum(r["failures"] for r in reps)
    rows = tuple(dict(r, certificate_error=float(layer.error[layer.active].max(initial=0.0)))
                 for r, layer in zip(reps, ticket.layers[1:]))
    meta = {"construction": "l+1-conv", "target": target.name, "densities": list(sw.densities), "delta": delta,
            "seed": seed, "eps": eps, "weight_eps": weight_eps, "box": list(target.box),
            "input_shape": list(target.input_shape), "certificate": ticket.certificate,
            "sampled_error": err.sampled_error, "width_multiplier": float(width_multiplier),
            "batchnorm_folded": [list(f) for f in target.folded]}
    ticket = ConvLPlus1Ticket(ticket.target, ticket.source, ticket.layers, meta)
    shapes = _source_shapes(target, groups)
    report = ConvLPlus1Report(
        construction="l+1", target=target.to_dict(), densities=tuple(sw.densities), delta=delta, eps=eps,
        weight_eps=weight_eps, tolerance_split="backward" if eps is not None else "instance",
        success=failures == 0, failures=int(failures), instances=int(sum(r["instances"] for r in reps)),
        certificate=ticket.certificate, sampled_error=err.sampled_error, relative_error=err.relative_error,
        samples=samples, attacked_error=None, source_params=source.params, er_kept_params=source.expected_kept(),
        ticket_params=ticket.kept_params, target_params=int(target.nonzeros), width_multiplier=float(width_multiplier),
        groups=dict(groups), source_channels=(source.lifting.shape[0],) + tuple(r for r, _ in shapes),
        source_dtype=sw.source_dtype, theory=sw.to_dict(), layers=rows, seed=seed, seconds=time.perf_counter() - t0)
    if not math.isfinite(report.certificate):
        raise ValueError(f"the certificate of this ticket is {report.certificate} (a float overflow): refused; scale "
                         "the target or the box down")
    return ticket, report
