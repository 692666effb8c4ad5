"""Strong 2L tickets of convolutional and residual targets: the data structure, the forward pass, the a-posteriori
certificate and the sampled error (docs/math.md §6, §9).

A :class:`ConvTicket` keeps, for every weighted target layer ℓ (a conv2d or linear record), a sub-mask of the two
source layers A_ℓ, B_ℓ of :mod:`construct.conv_source` — stored sparsely, because the source is far too large to
hold a dense bool mask of (up to 10^11 entries for a ResNet-18):

- ``units``: the dedicated channels u of A_ℓ the ticket keeps (each keeps only its entry (u, u // k), weight a_u,
  bias pruned), ``a``: their weights;
- ``bias_units``: the kept bias-group channels of A_ℓ (every input entry pruned, bias β_u > 0 kept), ``beta``;
- ``rows``, ``cols``, ``v``: the kept entries of B_ℓ (output channel, A_ℓ channel, weight); B_ℓ's biases are pruned.

Channel u of A_ℓ outputs ReLU(a_u·x̂_j(σy + (r, s) − π)) for its virtual input v = (j, r, s) = u // k; output
channel i of B_ℓ sums v_{iu} over kept u. Grouping the kept units by virtual input and sign of a_u (ReLU(a·x) =
|a|·ReLU(±x)) gives the ticket layer exactly as

    ŷ_i = Σ_v P[i, v]·ReLU(x̂_v) + Σ_v N[i, v]·ReLU(−x̂_v) + b̂_i,
    P[i, v] = Σ_{u∈v, a_u>0} v_{iu}·a_u,  N[i, v] = Σ_{u∈v, a_u<0} v_{iu}·|a_u|,  b̂_i = Σ_{bias units u} v_{iu}·β_u,

which is how :func:`conv_ticket_forward` evaluates it (two convolutions with the target's kernel, stride and
padding; the same function up to floating-point summation order). The exported PyTorch module evaluates every
kept unit separately (:mod:`construct.conv_export`), and the tests compare both.

**Certificate** (docs/math.md §6 recursion over the graph, §9 per channel): with e_j the certified error of input
channel j (sup over positions), B_j = sup_X |x_j| of the target (interval arithmetic per channel, zero padding
included), the error of output channel i of layer ℓ is

    e_i ≤ Σ_{kept (i, u), u dedicated} |v_{iu}·a_u|·e_{j(u)} + Σ_v err_{iv}·B_{j(v)} + |b̂_i − b_i|,
    err_{iv} = max(|P[i, v] − W[i, v]|, |N[i, v] + W[i, v]|) (signed input),  |P[i, v] − W[i, v]| (input ≥ 0),

at every position; ReLU, max and average pooling and flatten pass errors unchanged (1-Lipschitz in the sup norm),
an addition adds them. The certificate is the largest error over the network's outputs.

**Grouped bound** [ours], tighter and also rigorous: the kept channels of one virtual input all read the same x̂_v,
and ReLU(a·x) = |a|·ReLU(±x), so their contribution is exactly P[i, v]·ReLU(x̂_v) + N[i, v]·ReLU(−x̂_v). Its error
against P·ReLU(x_v) + N·ReLU(−x_v) is at most max(|P[i, v]|, |N[i, v]|)·e_{j(v)} (when x̂_v and x_v have opposite
signs, |x̂_v| + |x_v| ≤ e), or |P[i, v]|·e_{j(v)} for an input ≥ 0: the same recursion with Σ_u |v_{iu}·a_u|
replaced by max(|P|, |N|), which does not pay for the cancellations inside a subset sum.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from construct.architecture import INPUT, _windows
from construct.conv_source import ConvSource
from construct.conv_target import ConvTarget, WeightedLayer, value_shapes

__all__ = ["LayerSelection", "ConvTicket", "effective_weights", "conv_ticket_forward", "channel_bounds",
           "conv_certificate", "ConvCertificate", "conv_sampled_error", "target_values"]

_CHUNK_ENTRIES = 1 << 24  # float64 entries of one conv's windows per forward batch


@dataclass(frozen=True)
class LayerSelection:
    """What a 2L ticket keeps of the source layers A_ℓ, B_ℓ of one weighted target layer (module docstring)."""

    name: str
    k: int
    g0: int
    units: np.ndarray        # int64, sorted: kept dedicated channels of A_ℓ
    a: np.ndarray            # float64: their weights a_u
    bias_units: np.ndarray   # int64, sorted: kept bias-group channels of A_ℓ (≥ fan_in·k)
    beta: np.ndarray         # float64: their biases β_u
    rows: np.ndarray         # int64: output channel of every kept B_ℓ entry
    cols: np.ndarray         # int64: A_ℓ channel of every kept B_ℓ entry
    v: np.ndarray            # float64: B_ℓ weight of every kept entry

    @property
    def kept(self) -> int:
        """Kept weights: one per kept dedicated A_ℓ channel plus the kept B_ℓ entries."""
        return int(self.units.size + self.v.size)


@dataclass(frozen=True)
class ConvTicket:
    """A strong 2L ticket of a :class:`ConvTarget` inside a :class:`ConvSource`: one :class:`LayerSelection` per
    weighted layer, plus metadata."""

    target: ConvTarget
    source: ConvSource
    layers: tuple
    meta: dict = field(default_factory=dict)

    @property
    def kept_params(self) -> int:
        return int(sum(s.kept for s in self.layers))

    def to_module(self, form: str = "units", dtype=None, **kwargs):
        """The ticket as a PyTorch ``nn.Module``: ``form="units"`` the pruned source subnetwork itself,
        ``"collapsed"`` two convolutions per layer (see :func:`construct.conv_export.conv_ticket_module`)."""
        from construct.conv_export import conv_ticket_module

        return conv_ticket_module(self, form, dtype, **kwargs)


def _unit_lookup(sel: LayerSelection, values: np.ndarray, units: np.ndarray, cols: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(units, cols)
    pos = np.minimum(pos, max(units.size - 1, 0))
    if units.size == 0 or np.any(units[pos] != cols):
        raise ValueError(f"layer {sel.name!r}: a kept B entry reads an A channel that is not kept: not a valid ticket")
    return values[pos]


def effective_weights(sel: LayerSelection, wl: WeightedLayer):
    """(P, N, b̂, l1): the ticket layer's coefficients on ReLU(x_v) and ReLU(−x_v) as (fan_out, fan_in) arrays, its
    bias b̂ (fan_out,), and l1[i] = Σ_{kept (i, u), u dedicated} |v_{iu}·a_u| per output channel (module docstring)."""
    fan_in, fan_out = wl.fan_in, wl.fan_out
    ded = fan_in * sel.k
    P = np.zeros((fan_out, fan_in))
    N = np.zeros((fan_out, fan_in))
    bhat = np.zeros(fan_out)
    is_ded = sel.cols < ded
    r, c, v = sel.rows[is_ded], sel.cols[is_ded], sel.v[is_ded]
    a = _unit_lookup(sel, sel.a, sel.units, c) if c.size else np.zeros(0)
    coef = v * a
    pos = a > 0
    np.add.at(P, (r[pos], c[pos] // sel.k), coef[pos])
    np.add.at(N, (r[~pos], c[~pos] // sel.k), -coef[~pos])
    l1 = np.bincount(r, weights=np.abs(coef), minlength=fan_out)
    rb, cb, vb = sel.rows[~is_ded], sel.cols[~is_ded], sel.v[~is_ded]
    if cb.size:
        beta = _unit_lookup(sel, sel.beta, sel.bias_units, cb)
        bhat = np.bincount(rb, weights=vb * np.maximum(beta, 0.0), minlength=fan_out)
    return P, N, bhat, l1


def _conv(x, weight, stride, padding):
    """Zero-padded convolution of x (N, C, H, W) with weight (O, C, k_h, k_w), batched to bound the windows."""
    n = x.shape[0]
    per = max(1, _CHUNK_ENTRIES // max(1, int(np.prod(x.shape[1:])) * weight.shape[2] * weight.shape[3]))
    outs = []
    for i in range(0, n, per):
        win = _windows(x[i:i + per], weight.shape[2:], stride, padding, 0.0)
        outs.append(np.einsum("nchwrs,ocrs->nohw", win, weight, optimize=True))
    return np.concatenate(outs) if outs else np.zeros((0, weight.shape[0], 0, 0))


def _weighted_forward(x, wl: WeightedLayer, P, N, bias):
    """Σ_v P·ReLU(x_v) + N·ReLU(−x_v) + bias for a conv2d or linear record (N skipped when the input is ≥ 0)."""
    pos, neg = np.maximum(x, 0.0), np.maximum(-x, 0.0)
    if wl.kind == "linear":
        out = pos @ P.T + (neg @ N.T if wl.signed else 0.0)
        return out + bias
    shape = wl.weight.shape
    out = _conv(pos, P.reshape(shape), wl.stride, wl.padding)
    if wl.signed:
        out = out + _conv(neg, N.reshape(shape), wl.stride, wl.padding)
    return out + bias[None, :, None, None]


def _walk(target: ConvTarget, x, weighted_fn, values_out: dict | None = None):
    """Evaluate the folded architecture on x, weighted records through ``weighted_fn(x, wl)``; every value is stored
    in ``values_out`` when given."""
    from construct.architecture import architecture_forward, Architecture

    values = {INPUT: np.asarray(x, dtype=np.float64)}
    by_name = {w.name: w for w in target.weighted}
    h = values[INPUT]
    for rec in target.architecture.layers:
        if rec.name in by_name:
            h = weighted_fn(values[rec.inputs[0]], by_name[rec.name])
        elif rec.kind == "add":
            h = values[rec.inputs[0]] + values[rec.inputs[1]]
        else:  # relu, pooling, flatten: the architecture's own evaluation of one record
            h = architecture_forward(Architecture((rec.__class__(rec.kind, rec.name, (INPUT,), rec.params, rec.attrs),)),
                                     values[rec.inputs[0]])
        values[rec.name] = h
    if values_out is not None:
        values_out.update(values)
    return h


def conv_ticket_forward(ticket: ConvTicket, x: np.ndarray, effective=None, values_out: dict | None = None) -> np.ndarray:
    """The ticket's output for a batch x (N, *input_shape) (float64). ``effective``: precomputed
    [effective_weights(...)] per weighted layer (optional); ``values_out``: a dict that receives every intermediate
    value by record name (the input under ``"<input>"``)."""
    eff = effective if effective is not None else [effective_weights(s, w) for s, w in
                                                   zip(ticket.layers, ticket.target.weighted)]
    by_index = {w.name: e for w, e in zip(ticket.target.weighted, eff)}

    def fn(h, wl):
        P, N, bhat, _ = by_index[wl.name]
        return _weighted_forward(h, wl, P, N, bhat)

    return _walk(ticket.target, x, fn, values_out)


def target_values(target: ConvTarget, x: np.ndarray) -> dict:
    """Every value of the target (by record name, the input under ``"<input>"``) for a batch x."""

    def fn(h, wl):
        if wl.kind == "linear":
            return h @ wl.weight.T + wl.bias
        return _conv(h, wl.weight, wl.stride, wl.padding) + wl.bias[None, :, None, None]

    values = {}
    _walk(target, x, fn, values)
    return values


def _pad_zero(lo, hi, padding):
    if padding is not None and any(int(p) > 0 for p in padding):
        return np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    return lo, hi


def _channels(shape) -> int:
    return int(shape[0])


def channel_bounds(target: ConvTarget) -> dict:
    """{value name: (lo, hi)} per channel (per feature for flat values): sound bounds of the target's values over the
    box, sup over positions, by interval arithmetic (zero padding included where a conv or pooling pads)."""
    shapes = value_shapes(target.architecture, target.input_shape)
    a, b = target.box
    c0 = _channels(target.input_shape)
    bounds = {INPUT: (np.full(c0, a), np.full(c0, b))}
    by_name = {w.name: w for w in target.weighted}
    for rec in target.architecture.layers:
        lo, hi = bounds[rec.inputs[0]]
        if rec.name in by_name:
            wl = by_name[rec.name]
            lo, hi = _pad_zero(lo, hi, wl.padding if wl.kind == "conv2d" else None)
            ke = wl.kernel_entries
            lo_v, hi_v = np.repeat(lo, ke), np.repeat(hi, ke)
            W = wl.dense
            wp, wn = np.maximum(W, 0.0), np.minimum(W, 0.0)
            lo, hi = wp @ lo_v + wn @ hi_v + wl.bias, wp @ hi_v + wn @ lo_v + wl.bias
        elif rec.kind == "relu":
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        elif rec.kind == "avgpool2d":
            lo, hi = _pad_zero(lo, hi, rec.attrs["padding"])
        elif rec.kind == "flatten":
            src = shapes[rec.inputs[0]]
            per = int(np.prod(src[1:])) if len(src) == 3 else 1
            lo, hi = np.repeat(lo, per), np.repeat(hi, per)
        elif rec.kind == "add":
            lo2, hi2 = bounds[rec.inputs[1]]
            lo, hi = lo + lo2, hi + hi2
        bounds[rec.name] = (lo, hi)
    return bounds


@dataclass(frozen=True)
class ConvCertificate:
    """``certificate``: max over outputs of the certified error; ``layer_error``: per weighted layer the largest
    certified error of its output channels; ``layer_mismatch``: per weighted layer max_i Σ_v err_{iv}·B_{j(v)} +
    |b̂_i − b_i| (its own contribution); ``amplification``: per weighted layer Λ_ℓ = max_i Σ |v_{iu}·a_u|."""

    certificate: float
    layer_error: dict
    layer_mismatch: dict
    amplification: dict
    value_errors: dict = field(default_factory=dict, repr=False)  # value name -> certified error per channel
    grouped_certificate: float = float("nan")
    grouped_value_errors: dict = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {"certificate": self.certificate, "grouped_certificate": self.grouped_certificate,
                "layer_error": self.layer_error,
                "layer_mismatch": self.layer_mismatch, "amplification": self.amplification}


def conv_certificate(ticket: ConvTicket, effective=None, bounds=None) -> ConvCertificate:
    """The a-posteriori certificate of the module docstring, from the ticket's arrays and the target alone; also the
    grouped bound (module docstring) in ``grouped_certificate`` / ``grouped_value_errors``."""
    target = ticket.target
    eff = effective if effective is not None else [effective_weights(s, w) for s, w in
                                                   zip(ticket.layers, target.weighted)]
    bounds = bounds if bounds is not None else channel_bounds(target)
    shapes = value_shapes(target.architecture, target.input_shape)
    by_name = {w.name: (w, e) for w, e in zip(target.weighted, eff)}
    zero = np.zeros(_channels(target.input_shape))
    errors, grouped = {INPUT: zero}, {INPUT: zero}
    layer_error, mismatch, amps = {}, {}, {}
    for rec in target.architecture.layers:
        e_in, g_in = errors[rec.inputs[0]], grouped[rec.inputs[0]]
        if rec.name in by_name:
            wl, (P, N, bhat, l1) = by_name[rec.name]
            sel = ticket.layers[wl.index - 1]
            lo, hi = bounds[rec.inputs[0]]
            B = np.maximum(np.abs(lo), np.abs(hi))
            ke = wl.kernel_entries
            W = wl.dense
            err = np.abs(P - W)
            if wl.signed:
                err = np.maximum(err, np.abs(N + W))
            local = err @ np.repeat(B, ke) + np.abs(bhat - wl.bias)
            ded = wl.fan_in * sel.k
            is_ded = sel.cols < ded
            r, c = sel.rows[is_ded], sel.cols[is_ded]
            a = _unit_lookup(sel, sel.a, sel.units, c) if c.size else np.zeros(0)
            carried = np.bincount(r, weights=np.abs(sel.v[is_ded] * a) * e_in[(c // sel.k) // ke],
                                  minlength=wl.fan_out)
            e = carried + local
            # grouped: the kept channels of one virtual input read the same x̂_v, so their errors add up to
            # |P|·|ΔReLU(x)| + |N|·|ΔReLU(−x)| ≤ max(|P|, |N|)·e_v (|P|·e_v when the input is ≥ 0)
            gain = np.maximum(np.abs(P), np.abs(N)) if wl.signed else np.abs(P)
            g = gain @ np.repeat(g_in, ke) + local
            layer_error[rec.name] = float(e.max(initial=0.0))
            mismatch[rec.name] = float(local.max(initial=0.0))
            amps[rec.name] = float(l1.max(initial=0.0))
        elif rec.kind == "flatten":
            src = shapes[rec.inputs[0]]
            per = int(np.prod(src[1:])) if len(src) == 3 else 1
            e, g = np.repeat(e_in, per), np.repeat(g_in, per)
        elif rec.kind == "add":
            e, g = e_in + errors[rec.inputs[1]], g_in + grouped[rec.inputs[1]]
        else:  # relu and pooling: 1-Lipschitz in the sup norm, per channel
            e, g = e_in, g_in
        errors[rec.name], grouped[rec.name] = e, g
    last = target.architecture.layers[-1].name
    return ConvCertificate(float(errors[last].max(initial=0.0)), layer_error, mismatch, amps, errors,
                           float(grouped[last].max(initial=0.0)), grouped)


@dataclass(frozen=True)
class ConvErrorSample:
    sampled_error: float
    samples: int

    def to_dict(self) -> dict:
        return {"sampled_error": self.sampled_error, "samples": self.samples}


def conv_sampled_error(ticket: ConvTicket, *, samples: int = 256, seed: int = 0, effective=None,
                       batch: int = 64) -> ConvErrorSample:
    """max over ``samples`` inputs drawn uniformly from the box (seeded) of max |ticket(x) − target(x)|."""
    a, b = ticket.target.box
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0AA]))
    eff = effective if effective is not None else [effective_weights(s, w) for s, w in
                                                   zip(ticket.layers, ticket.target.weighted)]
    worst = 0.0
    for i in range(0, samples, batch):
        x = rng.uniform(a, b, size=(min(batch, samples - i),) + tuple(ticket.target.input_shape))
        d = np.abs(conv_ticket_forward(ticket, x, eff) - ticket.target.forward(x))
        worst = max(worst, float(d.max(initial=0.0)))
    return ConvErrorSample(worst, int(samples))
