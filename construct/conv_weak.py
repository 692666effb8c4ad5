"""Weak tickets of plain CNNs: exact representation inside a seeded ER source of depth L+1 (docs/math.md §9 "weak /
L+1 ticket of a CNN", §4), following Gadhikar et al. 2023.

A *plain* CNN is a chain of records (conv2d, linear, ReLU, max/avg pooling, global average pooling, flatten;
BatchNorm folded into the conv before it by :func:`construct.conv_target.conv_target`) with L weighted layers.
Weighted layer t is a dense layer over V_t virtual inputs v = (j, r, s) (docs/math.md §9); residual additions are
refused. The source, with widths from :func:`theory.conv_weak_widths.conv_weak_widths`:

- **Source layer 1 (lifting)**: a convolution with target layer 1's kernel, stride and padding (a linear layer when
  target layer 1 is linear) from c_0 to 2·g·V_1 channels. Channel u = v·2g + σ·g + k (k < g) is the k-th channel of
  G_v^+ (σ = 0) or G_v^− (σ = 1); it is usable iff its entry M_1[u, v] (kernel entry (r, s) of input channel j) is
  1; a used channel keeps only that entry, weight ±1, bias 0: it outputs ReLU(±x_j(σy + (r, s) − π)). Drawn as an
  :class:`construct.conv_source.IntermediateLayer` with fan_in V_1, k = 2g, g0 = 0 (its first g dedicated channels
  of virtual input v are G_v^+, the next g are G_v^−); no other lifting entry is ever drawn.
- **Source layer 2**: a 1×1 convolution (a linear layer when target layer 1 is linear) from the 2·g·V_1 lifting
  channels to r_2·c_1 channels; channel o = i·r_2 + s is copy s of output channel i of target layer 1. For every v
  with W_1[i, v] ≠ 0 it keeps the first usable u ∈ G_v^+ with M_2[o, u] = 1 (weight W_1[i, v]) and the first of G_v^−
  (weight −W_1[i, v]); bias b_1[i]. Since x = ReLU(x) − ReLU(−x), copy s computes h_i^{(1)} exactly.
- **Source layer t+1** (t ≥ 2): target layer t's kind, kernel, stride and padding, from r_t·c_{t−1} to
  r_{t+1}·c_t channels (r_{L+1} = 1). Input channel j·r_t + u is copy u of target channel j. Copy s of output
  channel i keeps, for every virtual input v = (j, r, s') with W_t[i, v] ≠ 0, the first kept entry
  M_{t+1}[o, j·r_t + u, r, s'] over the copies u (each virtual input has its own candidates), weight W_t[i, v]; bias
  b_t[i]. For a linear layer after a flatten of C·r_t channels of S positions each, the virtual input is the feature
  f = j·S + q of the target and its candidates are the source features (j·r_t + u)·S + q (the copies' maps flattened
  in the same channel-major order).
- ReLU, pooling and flatten act on every copy. Everything else is pruned, and so are copies that nothing downstream
  reads. A needed edge without a kept candidate is a **failure** of this source: reported, never patched.

Every source layer ℓ ≥ 2 is a :class:`construct.source.SourceLayer` of shape (rows, in_channels·block) — PyTorch's
(c_out, c_in·k_h·k_w) layout, block = k_h·k_w for a convolution, S for a linear layer reading a flatten, 1 otherwise
— drawn block by block from (seed, ℓ). The ticket sets its own weights on the kept entries: only the masks matter.

**Certificate** (exact arithmetic): with e_c the error of source channel c (sup over positions) and B_v = sup_X |x_v|
of the target (:func:`construct.conv_ticket.channel_bounds`), output channel o of a source layer has error
≤ Σ_{kept (o, col)} |w|·e_{col // block} + Σ_{missing (i, v)} |W_t[i, v]|·B_v (once per missing side in source
layer 2); ReLU, pooling and flatten pass errors unchanged. It is 0 when nothing is missing.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from construct.architecture import INPUT, Architecture
from construct.conv_source import IntermediateLayer
from construct.conv_target import ConvTarget, conv_target, value_shapes
from construct.architecture import _windows
from construct.conv_ticket import channel_bounds
from construct.source import SourceLayer
from construct.strong_common import scaled_count
from theory.conv_weak_widths import conv_weak_widths
from theory.validation import check_open_unit, check_positive_int, check_positive_real

__all__ = ["WeakConvLayer", "ConvWeakSource", "ConvWeakTicket", "ConvWeakReport", "plain_chain",
           "plan_conv_weak", "conv_weak_ticket_in_source", "conv_weak_forward", "conv_weak_sampled_error",
           "conv_weak_accuracies", "restricted_weights", "sample_conv_weak_source",
           "conv_weak_build_bytes", "build_conv_weak_ticket", "RESIDUAL_REFUSAL"]

RESIDUAL_REFUSAL = ("residual networks are built by construct.conv_weak_residual, not by the plain-chain "
                    "construction: allowed construct.conv_weak.build_conv_weak_ticket")
_SAMPLE_TAG = 0x3EA4
_WINDOW_ENTRIES = 1 << 24  # float64 window entries per forward batch


# ------------------------------------------------------------------------------------------------ data structures
@dataclass(frozen=True)
class WeakConvLayer:
    """What the ticket keeps of source layer ``index`` (1 = lifting), in the (rows, in_channels·block) layout.

    ``carries``: the name of the weighted target record this source layer computes ("<name>:lifting" for the
    lifting, which reads target layer 1's input);
    ``kind``: "conv2d" or "linear"; ``kernel``, ``stride``, ``padding``: the convolution's ((1, 1), (1, 1), (0, 0)
    for the 1×1 layer and for linear layers); ``copies``: r, row o = i·r + s is copy s of target channel i (for the
    lifting: 2g, row u belongs to virtual input u // 2g); ``rows``/``cols``/``weight``: the kept entries; ``bias``
    (rows,) float64 (zeros for the lifting: pruned); ``active``: sorted output channels the ticket computes (read
    downstream); ``error``: certified error per output channel (module docstring)."""

    index: int
    carries: str
    kind: str
    n_rows: int
    in_channels: int
    block: int
    kernel: tuple
    stride: tuple
    padding: tuple
    copies: int
    rows: np.ndarray
    cols: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    active: np.ndarray
    error: np.ndarray

    @property
    def n_cols(self) -> int:
        return self.in_channels * self.block

    @property
    def kept(self) -> int:
        return int(self.rows.size)

    @property
    def kept_biases(self) -> int:
        return int(np.count_nonzero(self.bias[self.active]))


@dataclass
class ConvWeakSource:
    """The seeded ER source: the lifting (:class:`IntermediateLayer`, only its dedicated entries are drawn) and
    source layers 2..L+1 (:class:`SourceLayer`), drawn only where read."""

    lifting: IntermediateLayer
    layers: tuple
    seed: int

    @property
    def densities(self) -> tuple:
        return (self.lifting.density,) + tuple(layer.density for layer in self.layers)

    @property
    def params(self) -> int:
        return int(self.lifting.params + sum(layer.params for layer in self.layers))

    def expected_kept(self) -> float:
        return float(self.lifting.density * self.lifting.params + sum(l.density * l.params for l in self.layers))


@dataclass(frozen=True)
class ConvWeakTicket:
    """A weak ticket of a plain CNN: one :class:`WeakConvLayer` per source layer (L+1), the target, the source."""

    target: ConvTarget
    source: ConvWeakSource
    layers: tuple
    meta: dict = field(default_factory=dict)

    @property
    def kept_params(self) -> int:
        return int(sum(layer.kept for layer in self.layers))

    @property
    def certificate(self) -> float:
        last = self.layers[-1]
        return float(last.error.max(initial=0.0))

    def to_module(self, dtype=None):
        """The ticket as an ``nn.Module`` (the pruned source subnetwork over its computed channels; every array a
        buffer; default torch.float64): :func:`construct.conv_weak_export.weak_ticket_module`."""
        from construct.conv_weak_export import weak_ticket_module

        return weak_ticket_module(self, dtype)


# ------------------------------------------------------------------------------------------------ planning
def plain_chain(target: ConvTarget) -> None:
    """Refuse (one-line ValueError) a target that is not a plain chain: a residual addition, or a record that does
    not read the record before it."""
    prev = INPUT
    for rec in target.architecture.layers:
        if rec.kind == "add":
            raise ValueError(f"target {target.name!r} has a residual addition (layer {rec.name!r}): {RESIDUAL_REFUSAL}")
        if tuple(rec.inputs) != (prev,):
            raise ValueError(f"layer {rec.name!r} ({rec.kind}) reads {list(rec.inputs)}, not the layer before it "
                             f"({prev!r}): allowed a plain chain of conv2d/linear/ReLU/pooling/flatten layers")
        prev = rec.name


def _input_blocks(target: ConvTarget) -> dict:
    """{weighted layer name: block}: columns per input channel of its source layer (k_h·k_w for a conv, S for a
    linear layer reading a flatten of S positions per channel, 1 otherwise)."""
    shapes = value_shapes(target.architecture, target.input_shape)
    block = {INPUT: 1}
    out = {}
    weighted = {w.name: w for w in target.weighted}
    for rec in target.architecture.layers:
        src = rec.inputs[0]
        if rec.name in weighted:
            wl = weighted[rec.name]
            out[rec.name] = wl.kernel_entries if wl.kind == "conv2d" else block[src]
            block[rec.name] = 1
        elif rec.kind == "flatten":
            s = shapes[src]
            block[rec.name] = int(np.prod(s[1:])) if len(s) == 3 else block[src]
        else:
            block[rec.name] = block[src]
    return out


def plan_conv_weak(target: ConvTarget, density, delta: float, *, width_multiplier: float = 1.0):
    """(ConvWeakWidths from theory, g, copies (r_2, …, r_{L+1} = 1), source channels) with g and r_t times
    ``width_multiplier`` (rounded up; r_{L+1} stays 1)."""
    ww = conv_weak_widths([(w.fan_in, w.fan_out, max(1, int(np.count_nonzero(w.weight)))) for w in target.weighted],
                          density, delta)
    mult = check_positive_real(width_multiplier, "width_multiplier")
    g = max(1, scaled_count(ww.lifting_group, mult, "lifting group g"))
    copies = tuple(max(1, scaled_count(r, mult, "copies r_t")) for r in ww.copies[:-1]) + (1,)
    w = target.weighted
    channels = (2 * g * w[0].fan_in,) + tuple(copies[t] * w[t].fan_out for t in range(len(w)))
    return ww, g, copies, channels


def _source_shapes(target: ConvTarget, g: int, copies) -> list:
    """(rows, in_channels, block) of source layers 2..L+1."""
    w = target.weighted
    blocks = _input_blocks(target)
    out = [(copies[0] * w[0].fan_out, 2 * g * w[0].fan_in, 1)]
    for t in range(1, len(w)):
        K = blocks[w[t].name]
        out.append((copies[t] * w[t].fan_out, copies[t - 1] * (w[t].fan_in // K), K))
    return out


def sample_conv_weak_source(target: ConvTarget, g: int, copies, densities, seed: int) -> ConvWeakSource:
    """The seeded source (nothing drawn until read): lifting index 1, source layer ℓ index ℓ."""
    lift = IntermediateLayer(target.weighted[0].fan_in, 2 * g, 0, densities[0], seed=seed, index=1)
    layers = tuple(SourceLayer(rows, cin * K, densities[l], seed=seed, index=l + 1)
                   for l, (rows, cin, K) in enumerate(_source_shapes(target, g, copies), start=1))
    return ConvWeakSource(lift, layers, int(seed))


# ------------------------------------------------------------------------------------------------ construction
def _mask_rows(layer: SourceLayer, b: int) -> np.ndarray:
    """M rows of block b of a drawn source layer — the very mask :meth:`SourceLayer.block` draws (same child of the
    block's seed sequence), without drawing the weights, which a weak ticket never reads."""
    return layer._draw_mask(b, layer._children(b)[1])


def _layer2(wl, lift: IntermediateLayer, layer: SourceLayer, g: int, r: int, Bv: np.ndarray):
    """Kept entries of source layer 2 (target layer 1 over the lifting), per-row missing error, instances,
    failures."""
    V = wl.fan_in
    W = wl.dense
    usable = lift.diagonal()[1].reshape(V, 2, g)
    n_rows = layer.shape[0]
    rows_out, cols_out, w_out = [], [], []
    missing = np.zeros(n_rows)
    instances = failures = 0
    signs = np.array([1.0, -1.0])
    for o0 in range(0, n_rows, layer.rows_per_block):
        o = np.arange(o0, min(n_rows, o0 + layer.rows_per_block))
        M = _mask_rows(layer, o0 // layer.rows_per_block)
        avail = M.reshape(o.size, V, 2, g) & usable[None]
        has = avail.any(axis=3)
        first = avail.argmax(axis=3)
        Wi = W[o // r]                                  # (n, V)
        need = np.broadcast_to((Wi != 0)[:, :, None], has.shape)
        ok = need & has
        instances += int(need.sum())
        failures += int((need & ~has).sum())
        missing[o] = ((need & ~has).sum(axis=2) * np.abs(Wi)) @ Bv
        a, v, s = np.nonzero(ok)
        rows_out.append(o[a])
        cols_out.append(v * 2 * g + s * g + first[a, v, s])
        w_out.append(signs[s] * Wi[a, v])
    return _cat(rows_out, np.int64), _cat(cols_out, np.int64), _cat(w_out, np.float64), missing, instances, failures


def _layer_next(wl, layer: SourceLayer, r_in: int, r: int, K: int, Bv: np.ndarray):
    """Kept entries of source layer t+1 ≥ 3 (target layer t over r_in copies of its input channels)."""
    V = wl.fan_in
    C = V // K
    W = wl.dense
    n_rows = layer.shape[0]
    rows_out, cols_out, w_out = [], [], []
    missing = np.zeros(n_rows)
    instances = failures = 0
    v_all = np.arange(V)
    j_of, k_of = v_all // K, v_all % K
    for o0 in range(0, n_rows, layer.rows_per_block):
        o = np.arange(o0, min(n_rows, o0 + layer.rows_per_block))
        M = _mask_rows(layer, o0 // layer.rows_per_block)
        avail = M.reshape(o.size, C, r_in, K)
        has = avail.any(axis=2).reshape(o.size, V)
        first = avail.argmax(axis=2).reshape(o.size, V)
        Wi = W[o // r]
        need = Wi != 0
        ok = need & has
        instances += int(need.sum())
        failures += int((need & ~has).sum())
        missing[o] = ((need & ~has) * np.abs(Wi)) @ Bv
        a, v = np.nonzero(ok)
        rows_out.append(o[a])
        cols_out.append((j_of[v] * r_in + first[a, v]) * K + k_of[v])
        w_out.append(Wi[a, v])
    return _cat(rows_out, np.int64), _cat(cols_out, np.int64), _cat(w_out, np.float64), missing, instances, failures


def _cat(parts, dtype):
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def _virtual_bounds(target: ConvTarget, bounds: dict) -> dict:
    """{weighted layer name: B_v per virtual input} = sup_X |x| of the layer's input (per channel, repeated over
    the kernel entries; per feature for a linear layer)."""
    out = {}
    for rec in target.architecture.layers:
        for wl in target.weighted:
            if wl.name == rec.name:
                lo, hi = bounds[rec.inputs[0]]
                out[wl.name] = np.repeat(np.maximum(np.abs(lo), np.abs(hi)), wl.kernel_entries)
    return out


def conv_weak_ticket_in_source(target: ConvTarget, source: ConvWeakSource, g: int, copies, progress=None):
    """Build the weak ticket (module docstring) inside ``source``; returns (ConvWeakTicket, per target layer
    [instances, failures])."""
    plain_chain(target)
    w = target.weighted
    blocks = _input_blocks(target)
    Bv = _virtual_bounds(target, channel_bounds(target))
    built, counts = [], []
    for t, wl in enumerate(w, start=1):
        layer = source.layers[t - 1]
        r = copies[t - 1]
        if t == 1:
            rows, cols, wt, missing, inst, fail = _layer2(wl, source.lifting, layer, g, r, Bv[wl.name])
            err = missing
            block = 1
        else:
            r_in, K = copies[t - 2], blocks[wl.name]
            rows, cols, wt, missing, inst, fail = _layer_next(wl, layer, r_in, r, K, Bv[wl.name])
            prev_err = built[-1][4]
            err = np.bincount(rows, weights=np.abs(wt) * prev_err[cols // K], minlength=layer.shape[0]) + missing
            block = K
        built.append((rows, cols, wt, block, err))
        counts.append((inst, fail))
        if progress is not None:
            progress.step(f"target layer {t} ({wl.name}): {inst:,} edges needed, {fail} missing")
    # prune backwards: keep what the next layer reads
    active = np.arange(source.layers[-1].shape[0])
    out_layers = []
    for t in range(len(w), 0, -1):
        rows, cols, wt, block, err = built[t - 1]
        keep = np.isin(rows, active)
        rows, cols, wt = rows[keep], cols[keep], wt[keep]
        wl = w[t - 1]
        layer = source.layers[t - 1]
        bias = wl.bias[np.arange(layer.shape[0]) // copies[t - 1]].astype(np.float64)
        if t == 1:
            kind, kernel, stride, padding = wl.kind, (1, 1), (1, 1), (0, 0)
        else:
            kind = wl.kind
            kernel = tuple(wl.weight.shape[2:]) if kind == "conv2d" else (1, 1)
            stride, padding = (wl.stride, wl.padding) if kind == "conv2d" else ((1, 1), (0, 0))
        out_layers.append(WeakConvLayer(t + 1, wl.name, kind, layer.shape[0], layer.shape[1] // block, block,
                                        kernel, tuple(stride), tuple(padding), copies[t - 1], rows, cols, wt, bias,
                                        active, err))
        active = np.unique(cols // block)
    # the lifting: used channel u keeps its entry (u, u // 2g), weight +1 (G^+) or −1 (G^−), bias pruned
    wl = w[0]
    u = active
    sign = np.where(u % (2 * g) < g, 1.0, -1.0)
    kernel = tuple(wl.weight.shape[2:]) if wl.kind == "conv2d" else (1, 1)
    stride, padding = (wl.stride, wl.padding) if wl.kind == "conv2d" else ((1, 1), (0, 0))
    lift = WeakConvLayer(1, wl.name + ":lifting", wl.kind, source.lifting.shape[0], wl.in_channels if wl.kind ==
                         "conv2d" else wl.fan_in, wl.kernel_entries, kernel, tuple(stride), tuple(padding), 2 * g,
                         u.astype(np.int64), (u // (2 * g)).astype(np.int64), sign,
                         np.zeros(source.lifting.shape[0]), u.astype(np.int64), np.zeros(source.lifting.shape[0]))
    ticket = ConvWeakTicket(target, source, (lift,) + tuple(reversed(out_layers)), {})
    return ticket, counts


# ------------------------------------------------------------------------------------------------ forward
def _restricted(layer: WeakConvLayer, in_active: np.ndarray):
    """The layer's weights restricted to its active output and ``in_active`` input channels as a sparse
    (|A_in|·block, |A_out|) matrix (rows in PyTorch's (channel, k_h, k_w) order for a convolution), and its active
    biases."""
    A = layer.active
    ro = np.searchsorted(A, layer.rows)
    ci = np.searchsorted(in_active, layer.cols // layer.block)
    if layer.rows.size and (np.any(A[np.minimum(ro, A.size - 1)] != layer.rows)
                            or np.any(in_active[np.minimum(ci, in_active.size - 1)] != layer.cols // layer.block)):
        raise ValueError(f"source layer {layer.index}: a kept entry reads a channel that is not computed: not a "
                         "valid ticket")
    mat = sp.csr_matrix((layer.weight, (ci * layer.block + layer.cols % layer.block, ro)),
                        shape=(in_active.size * layer.block, A.size))
    return mat, layer.bias[A]


def _apply(layer: WeakConvLayer, mat, bias, h):
    """One source layer on a batch h: ``h @ mat`` for a linear layer; for a convolution the windows of h (zero
    padding) as rows (N·H'·W', C·k_h·k_w) times ``mat``, in batches of about 2^24 window entries."""
    if layer.kind == "linear":
        return np.asarray(mat.T @ h.T).T + bias
    kh, kw = layer.kernel
    n, c = h.shape[:2]
    per = max(1, _WINDOW_ENTRIES // max(1, c * kh * kw * h.shape[2] * h.shape[3]))
    outs = []
    for i in range(0, n, per):
        win = _windows(h[i:i + per], (kh, kw), layer.stride, layer.padding, 0.0)  # (n, C, H', W', kh, kw)
        b, _, ho, wo = win.shape[:4]
        cols = np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(b * ho * wo, c * kh * kw)
        y = np.asarray(mat.T @ cols.T).T.reshape(b, ho, wo, -1)
        outs.append(y.transpose(0, 3, 1, 2) + bias[None, :, None, None])
    return np.concatenate(outs)


def restricted_weights(ticket: ConvWeakTicket) -> list:
    """[(sparse weights, bias)] per source layer, restricted to the computed channels (what
    :func:`conv_weak_forward` evaluates)."""
    c0 = ticket.layers[0].in_channels
    out, in_active = [], np.arange(c0)
    for layer in ticket.layers:
        out.append(_restricted(layer, in_active))
        in_active = layer.active
    return out


def conv_weak_forward(ticket: ConvWeakTicket, x: np.ndarray, weights=None, values_out: dict | None = None):
    """The ticket's output for a batch x (N, *input_shape), float64: the source sub-network as real convolutions
    over every computed copy (the target's records, with weighted layer 1 replaced by lifting + ReLU + the 1×1
    layer and weighted layer t ≥ 2 by its source layer). ``values_out`` receives every value by target record name
    (channels: the ``active`` channels of the source layer that produced it, in order; the lifting's output under
    ``"<name>:lifting"``)."""
    from construct.architecture import architecture_forward

    weights = weights if weights is not None else restricted_weights(ticket)
    by_name = {layer.carries: i for i, layer in enumerate(ticket.layers) if i >= 1}
    h = np.asarray(x, dtype=np.float64)
    for rec in ticket.target.architecture.layers:
        if rec.name in by_name:
            i = by_name[rec.name]
            if i == 1:
                h = np.maximum(_apply(ticket.layers[0], *weights[0], h), 0.0)
                if values_out is not None:
                    values_out[ticket.layers[0].carries] = h
            h = _apply(ticket.layers[i], *weights[i], h)
        else:
            single = Architecture((rec.__class__(rec.kind, rec.name, (INPUT,), rec.params, rec.attrs),))
            h = architecture_forward(single, h)
        if values_out is not None:
            values_out[rec.name] = h
    return h


def _widest_value(ticket: ConvWeakTicket) -> int:
    """Entries of one input's widest value in the ticket's forward: the most computed channels of any source layer
    times the largest spatial size of any value (a bound)."""
    shapes = value_shapes(ticket.target.architecture, ticket.target.input_shape)
    spatial = max([int(np.prod(s[1:])) for s in shapes.values() if len(s) == 3] + [1])
    widest_target = max(int(np.prod(s)) for s in shapes.values())
    return max(widest_target, max(int(layer.active.size) for layer in ticket.layers) * spatial)


@dataclass(frozen=True)
class WeakErrorSample:
    sampled_error: float
    relative_error: float
    target_scale: float
    samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def sampled_error_of(ticket, forward, widest: int, *, samples: int, seed: int, batch: int) -> WeakErrorSample:
    """max |forward(x) − target(x)| over ``samples`` inputs drawn uniformly from the target's box (the stream
    (seed, tag) of every weak conv ticket), and that error over max |target(x)| (the absolute one if the target is
    0); batches of at most ``batch`` inputs, fewer when ``widest`` entries per input would exceed 2^24 per batch."""
    a, b = ticket.target.box
    batch = max(1, min(int(batch), _WINDOW_ENTRIES // widest))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _SAMPLE_TAG]))
    worst = scale = 0.0
    for i in range(0, samples, batch):
        x = rng.uniform(a, b, size=(min(batch, samples - i),) + tuple(ticket.target.input_shape))
        y = ticket.target.forward(x)
        worst = max(worst, float(np.abs(forward(x) - y).max(initial=0.0)))
        scale = max(scale, float(np.abs(y).max(initial=0.0)))
    return WeakErrorSample(worst, worst / scale if scale > 0 else worst, scale, int(samples))


def accuracies_of(ticket, forward, widest: int, x: np.ndarray, labels) -> dict:
    """Accuracy of the target and of ``forward`` (argmax of the outputs) on images x with integer ``labels``, and how
    many predictions differ (the keys of :func:`construct.conv_strong.digits_accuracies`)."""
    labels = np.asarray(labels)
    batch = max(1, _WINDOW_ENTRIES // widest)
    target_pred = np.concatenate([ticket.target.forward(x[i:i + batch]).argmax(axis=1)
                                  for i in range(0, len(x), batch)])
    ticket_pred = np.concatenate([forward(x[i:i + batch]).argmax(axis=1) for i in range(0, len(x), batch)])
    return {"digits test accuracy (target)": float(np.mean(target_pred == labels)),
            "digits test accuracy (ticket)": float(np.mean(ticket_pred == labels)),
            "test predictions that differ": int(np.sum(target_pred != ticket_pred))}


def conv_weak_sampled_error(ticket: ConvWeakTicket, *, samples: int = 256, seed: int = 0, weights=None,
                            batch: int = 32) -> WeakErrorSample:
    """max |ticket(x) − target(x)| over ``samples`` inputs drawn uniformly from the box (seeded), and that error
    divided by max |target(x)| over the same inputs (the relative error; the absolute one if the target is 0).
    Inputs go through in batches of at most ``batch``, fewer when the widest computed value would exceed 2^24
    float64 entries per batch."""
    weights = weights if weights is not None else restricted_weights(ticket)
    return sampled_error_of(ticket, lambda x: conv_weak_forward(ticket, x, weights), _widest_value(ticket),
                            samples=samples, seed=seed, batch=batch)


def conv_weak_accuracies(ticket: ConvWeakTicket, x: np.ndarray, labels) -> dict:
    """Accuracy of the target and of the ticket (argmax of the outputs) on images x with integer ``labels``, and how
    many predictions differ (the keys of :func:`construct.conv_strong.digits_accuracies`)."""
    if not isinstance(ticket, ConvWeakTicket):  # a residual network's (construct.conv_weak_residual)
        from construct.conv_weak_residual import residual_weak_accuracies

        return residual_weak_accuracies(ticket, x, labels)
    weights = restricted_weights(ticket)
    return accuracies_of(ticket, lambda h: conv_weak_forward(ticket, h, weights), _widest_value(ticket), x, labels)


# ------------------------------------------------------------------------------------------------ memory, report
def conv_weak_build_bytes(target: ConvTarget, g: int, copies) -> float:
    """Estimated peak bytes of :func:`build_conv_weak_ticket`: drawing the masks (one block of 2^22 entries at
    ≈ 9 bytes per entry — the float64 uniforms and the bool mask — plus ≈ 10 bytes per entry of candidate arrays),
    the lifting's dedicated entries (21 bytes per channel), the kept entries (≈ 48 bytes per needed edge while
    building, 16 more in the sparse forward weights), per-channel arrays of every source layer, and the forward:
    three values of one batch (batches are cut to 2^24 float64 entries of the widest computed value; one input at
    worst) and the window rows (2^24 float64 entries, twice). The masks are drawn one block at a time."""
    block = 1 << 22
    shapes = _source_shapes(target, g, copies)
    w = target.weighted
    V1 = w[0].fan_in
    draw = block * 19.0
    lift = 21.0 * 2 * g * V1
    nz1 = int(np.count_nonzero(w[0].weight))
    edges = 2 * copies[0] * nz1 + sum(copies[t] * int(np.count_nonzero(w[t].weight)) for t in range(1, len(w)))
    used_lift = min(2 * g * V1, 2 * copies[0] * nz1)
    vshapes = value_shapes(target.architecture, target.input_shape)
    spatial = max([int(np.prod(s[1:])) for s in vshapes.values() if len(s) == 3] + [1])
    one_input = max(max(int(np.prod(s)) for s in vshapes.values()),
                    max(used_lift, max(rows for rows, _, _ in shapes)) * spatial)  # a batch of one, at worst
    fwd = 3 * 8.0 * max(_WINDOW_ENTRIES, one_input) + 2 * 8.0 * _WINDOW_ENTRIES
    return draw + lift + 64.0 * edges + 24.0 * sum(rows for rows, _, _ in shapes) + fwd


@dataclass(frozen=True)
class ConvWeakReport:
    """Summary of one weak ticket of a plain CNN (a sibling of :class:`construct.conv_strong.ConvTicketReport`
    with the weak construction's quantities; ``--json`` gives :meth:`to_dict`)."""

    construction: str
    target: dict
    densities: tuple
    delta: float
    success: bool
    failures: int
    instances: int
    certificate: float
    sampled_error: float
    relative_error: float
    samples: int
    source_params: int
    er_kept_params: float
    ticket_params: int
    target_params: int
    width_multiplier: float
    lifting_group: int
    copies: tuple
    source_channels: tuple
    theory: dict
    layers: tuple
    seed: int
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("densities", "copies", "source_channels", "layers"):
            d[key] = list(d[key])
        return d

    def __str__(self) -> str:
        t = self.target
        folds = t.get("batchnorm_folded", [])
        lines = [f"weak (L+1) ticket of {t.get('name', '?')} (input {t.get('input_shape')}, {self.target_params:,} "
                 f"nonzero target weights, {len(self.layers) - 1} conv/linear layers), delta {self.delta}, seed "
                 f"{self.seed}",
                 f"  BatchNorm folded (eval mode): {', '.join(f['batchnorm'] + ' -> ' + f['into'] for f in folds)}"
                 if folds else "  no BatchNorm to fold",
                 f"  densities {', '.join(f'{p:g}' for p in self.densities)}; lifting group g = {self.lifting_group}, "
                 f"copies r = {list(self.copies)} (width multiplier {self.width_multiplier:g})",
                 f"  source: {self.source_params:,} weights (about {self.er_kept_params:.4g} kept by the ER masks, "
                 f"drawn only where read); ticket keeps {self.ticket_params:,}",
                 f"  {'source layer':>12} {'carries':>18} {'kind':>7} {'channels':>9} {'computed':>9} "
                 f"{'needed':>9} {'missing':>8} {'kept':>9} {'cert err':>9}"]
        for r in self.layers:
            lines.append(f"  {r['source_layer']:>12} {r['carries'][-18:]:>18} {r['kind']:>7} {r['channels']:>9,} "
                         f"{r['computed']:>9,} {r['needed']:>9,} {r['missing']:>8} {r['kept']:>9,} "
                         f"{r['certificate_error']:>9.2e}")
        lines.append(f"  success {self.success} ({self.failures} of {self.instances:,} needed edges missing); "
                     f"certificate {self.certificate:.3e} (exact arithmetic); sampled error {self.sampled_error:.3e} "
                     f"(relative {self.relative_error:.3e}) over {self.samples} inputs; {self.seconds:.1f} s")
        return "\n".join(lines)


def report_rows(ticket, counts) -> list:
    """The per-source-layer rows of a weak conv report (plain or residual ticket): channels, computed channels,
    needed and missing edges (``counts``: per weighted layer (needed, missing)), kept entries, certified error."""
    lift = ticket.layers[0]
    rows = [{"source_layer": 1, "carries": lift.carries, "kind": lift.kind, "channels": lift.n_rows,
             "computed": int(lift.active.size), "needed": 0, "missing": 0, "kept": lift.kept,
             "certificate_error": 0.0}]
    for layer, (inst, fail) in zip(ticket.layers[1:], counts):
        rows.append({"source_layer": layer.index, "carries": layer.carries, "kind": layer.kind,
                     "channels": layer.n_rows, "computed": int(layer.active.size), "needed": int(inst),
                     "missing": int(fail), "kept": layer.kept,
                     "certificate_error": float(layer.error[layer.active].max(initial=0.0))})
    return rows


# ------------------------------------------------------------------------------------------------ orchestration
def build_conv_weak_ticket(model, input_shape, density, delta: float, seed: int, *, box=(-1.0, 1.0),
                           width_multiplier: float = 1.0, samples: int = 256, max_memory=None, progress=None,
                           name=None):
    """Build the weak ticket of a plain CNN ``model`` (an ``nn.Module``, an Architecture or a :class:`ConvTarget`)
    with inputs of ``input_shape`` in ``box`` (docs/math.md §9, §4); returns (ConvWeakTicket, ConvWeakReport).

    ``density``: one density or L+1 (lifting, 1×1 layer, one per later weighted layer). Widths from
    :func:`theory.conv_weak_widths.conv_weak_widths` times ``width_multiplier``. Refuses in one line, before anything
    is drawn: graphs that are not chains (other than residual networks), and a build whose estimate
    (:func:`conv_weak_build_bytes`) exceeds ``max_memory`` bytes (None: the default fraction of the available memory). A target with residual additions is
    built by :func:`construct.conv_weak_residual.build_residual_weak_ticket` (same arguments and report)."""
    from theory.memory import check_memory

    t0 = time.perf_counter()
    target = conv_target(model, input_shape, box=box, name=name)
    from construct.conv_weak_residual import build_residual_weak_ticket, has_residual

    if has_residual(target):
        return build_residual_weak_ticket(target, input_shape, density, delta, seed, box=box,
                                          width_multiplier=width_multiplier, samples=samples, max_memory=max_memory,
                                          progress=progress, name=name)
    plain_chain(target)
    delta = check_open_unit(delta, "delta")
    seed = check_positive_int(seed, "seed", 0)
    samples = check_positive_int(samples, "samples")
    ww, g, copies, channels = plan_conv_weak(target, density, delta, width_multiplier=width_multiplier)
    check_memory(conv_weak_build_bytes(target, g, copies),
                 f"the weak ticket of {target.name} (lifting group {g}, copies {list(copies)})", max_memory)
    if progress is not None:
        progress.start(len(target.weighted) + 1)
    source = sample_conv_weak_source(target, g, copies, ww.densities, seed)
    ticket, counts = conv_weak_ticket_in_source(target, source, g, copies, progress)
    weights = restricted_weights(ticket)
    err = conv_weak_sampled_error(ticket, samples=samples, seed=seed, weights=weights)
    if progress is not None:
        progress.step(f"sampled error {err.sampled_error:.3e} over {samples:,} inputs")
    failures = sum(f for _, f in counts)
    rows = report_rows(ticket, counts)
    meta = {"construction": "weak-conv", "target": target.name, "densities": list(ww.densities), "delta": delta,
            "seed": seed, "box": list(target.box), "input_shape": list(target.input_shape), "lifting_group": g,
            "copies": list(copies), "certificate": ticket.certificate, "sampled_error": err.sampled_error,
            "width_multiplier": float(width_multiplier), "batchnorm_folded": [list(f) for f in target.folded]}
    ticket = ConvWeakTicket(ticket.target, ticket.source, ticket.layers, meta)
    report = ConvWeakReport(
        construction="weak", target=target.to_dict(), densities=tuple(ww.densities), delta=delta,
        success=failures == 0, failures=int(failures), instances=int(sum(i for i, _ in counts)),
        certificate=ticket.certificate, sampled_error=err.sampled_error, relative_error=err.relative_error,
        samples=samples, source_params=source.params, er_kept_params=source.expected_kept(),
        ticket_params=ticket.kept_params, target_params=int(target.nonzeros),
        width_multiplier=float(width_multiplier), lifting_group=g, copies=tuple(copies),
        source_channels=tuple(channels), theory=ww.to_dict(), layers=tuple(rows), seed=seed,
        seconds=time.perf_counter() - t0)
    if not math.isfinite(report.certificate):
        raise ValueError(f"the certificate of this ticket is {report.certificate} (a float overflow): refused; scale "
                         "the target or the box down")
    return ticket, report
