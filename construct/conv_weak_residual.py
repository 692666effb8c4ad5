"""Weak tickets of CNNs with residual additions: exact representation inside a seeded ER source of depth L+1
(docs/math.md §9 "residual blocks", §4) [ours], following Gadhikar et al. 2023.

The plain-CNN construction (:mod:`construct.conv_weak`) carries every weighted target layer t by one source layer
that computes r copies of each of its output channels. A residual addition y = a + b adds copy s of channel j of a to
copy s of channel j of b, so a, b and y must have the same number of copies: values joined by an addition (and by
ReLU, pooling and flatten, which act on every copy) form one **copy class** c with r_c copies per channel, channel
j·r_c + s of every value of the class being copy s of target channel j. The copy counts come from
:func:`theory.conv_weak_widths.conv_weak_graph_widths` (a fixed point: a block's shortcut reads the class its own
last convolution writes).

- Source layer 1 (lifting) and source layer 2 (weighted target layer 1 over the lifting) are those of
  :mod:`construct.conv_weak`.
- Source layer t+1 (t ≥ 2) has target layer t's kind, kernel, stride and padding, from r_{reads(t)}·c_in to
  r_{writes(t)}·c_t channels; copy s of output channel i keeps, for every virtual input v = (j, r, s') with
  W_t[i, v] ≠ 0, the first kept entry over the r_{reads(t)} copies of j, weight W_t[i, v]; bias b_t[i] — exactly the
  plain construction's layer, with the copy counts of the two classes.
- An addition adds its two inputs channel by channel (no weights: it is not pruned, it is part of the architecture),
  as the source network of the same block structure does.
- The source computes, per class, the channels that any reader of the class needs (the union over its values), so
  both inputs of an addition provide the same channels; the rest is pruned.

**Certificate** (exact arithmetic, sup over positions): as for plain CNNs, plus e(a + b) = e(a) + e(b) per channel
at an addition (docs/math.md §9: a block's error is at most e_in + e_F). It is 0 when no needed edge is missing.
"""
from __future__ import annotations

import math
import time

import numpy as np

from construct.architecture import INPUT, Architecture, architecture_forward
from construct.conv_source import IntermediateLayer
from construct.conv_target import ConvTarget, conv_target, value_shapes
from construct.conv_ticket import channel_bounds
from construct.conv_weak import (_WINDOW_ENTRIES, ConvWeakReport, WeakConvLayer, WeakErrorSample, _apply,
                                 _input_blocks, _layer2, _layer_next, _restricted, _virtual_bounds, accuracies_of,
                                 report_rows, sampled_error_of)
from construct.source import SourceLayer
from construct.strong_common import scaled_count
from theory.conv_weak_widths import conv_weak_graph_widths
from theory.validation import check_open_unit, check_positive_int, check_positive_real

__all__ = ["CopyClasses", "copy_classes", "ResidualWeakTicket", "plan_residual_weak", "residual_weak_forward",
           "residual_weak_sampled_error", "residual_weak_accuracies", "residual_weak_build_bytes",
           "build_residual_weak_ticket", "has_residual"]



def has_residual(target: ConvTarget) -> bool:
    """Whether the target has a residual addition (then the weak ticket is built here)."""
    return any(rec.kind == "add" for rec in target.architecture.layers)


class CopyClasses:
    """The copy classes of a target's values (module docstring): ``of[name]`` is the class of value ``name``
    (None for the network input and what is computed from it before weighted layer 1), ``channels[c]`` the target
    channels of class c, ``reads``/``writes`` per weighted layer (in ``target.weighted`` order), ``output`` the class
    of the network's output."""

    def __init__(self, of: dict, channels: dict, reads: tuple, writes: tuple, output: int):
        self.of, self.channels, self.reads, self.writes, self.output = of, channels, reads, writes, output


def copy_classes(target: ConvTarget) -> CopyClasses:
    """Union the values of ``target`` into copy classes; refuse (one-line ValueError) what the construction cannot
    carry: an addition or a weighted layer after layer 1 that reads the network input (the input is not copied),
    a weighted layer 1 that does not read the input, and a network output that something else reads."""
    arch = target.architecture
    shapes = value_shapes(arch, target.input_shape)
    weighted = {w.name: t for t, w in enumerate(target.weighted)}
    parent: dict = {}

    def find(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    of: dict = {INPUT: None}
    for rec in arch.layers:
        if rec.name in weighted:
            t = weighted[rec.name]
            if (t == 0) != (of[rec.inputs[0]] is None):
                raise ValueError(f"layer {rec.name!r} reads {rec.inputs[0]!r}: allowed the network input for the first "
                                 "conv/linear layer only (weak tickets of residual networks)")
            parent[rec.name] = rec.name
            of[rec.name] = rec.name
        elif rec.kind == "add":
            a, b = (of[i] for i in rec.inputs)
            if a is None or b is None:
                raise ValueError(f"addition {rec.name!r} reads the network input: allowed additions of values computed "
                                 "by conv/linear layers (weak tickets of residual networks)")
            ra, rb = find(a), find(b)
            parent[rb] = ra
            of[rec.name] = ra
        else:
            of[rec.name] = of[rec.inputs[0]]
    out_name = arch.layers[-1].name
    readers = [rec.name for rec in arch.layers if out_name in rec.inputs]
    if readers:
        raise ValueError(f"the network output {out_name!r} is read by {readers}: allowed an output that nothing reads")
    roots = sorted({find(c) for c in parent}, key=list(parent).index)
    index = {r: i for i, r in enumerate(roots)}
    cls = {name: (None if c is None else index[find(c)]) for name, c in of.items()}
    channels: dict = {}
    for rec in arch.layers:
        c = cls[rec.name]
        if c is None or rec.kind == "flatten":
            continue
        n = int(shapes[rec.name][0])
        if channels.setdefault(c, n) != n:
            raise ValueError(f"value {rec.name!r} has {n} channels, others of its residual class "
                             f"{channels[c]}: not a valid residual network")
    for rec in arch.layers:  # a flatten keeps its input's channels (features are channel-major blocks)
        if rec.kind == "flatten" and cls[rec.name] is not None:
            channels.setdefault(cls[rec.name], int(shapes[rec.inputs[0]][0]))
    reads = tuple(None if t == 0 else cls[rec.inputs[0]] for rec in arch.layers if rec.name in weighted
                  for t in (weighted[rec.name],))
    writes = tuple(cls[w.name] for w in target.weighted)
    return CopyClasses(cls, channels, reads, writes, cls[out_name])


class ResidualWeakTicket:
    """A weak ticket of a residual CNN: ``layers`` (one :class:`construct.conv_weak.WeakConvLayer` per source layer:
    the lifting, then one per weighted target layer in ``target.weighted`` order), ``active[c]`` the computed
    channels of class c (sorted), ``classes``, the target and the source (lifting, layers), ``errors`` per value."""

    def __init__(self, target, lifting, source_layers, layers, classes, active, errors, meta):
        self.target, self.lifting, self.source_layers = target, lifting, source_layers
        self.layers, self.classes, self.active, self.errors, self.meta = layers, classes, active, errors, meta

    @property
    def kept_params(self) -> int:
        return int(sum(layer.kept for layer in self.layers))

    @property
    def certificate(self) -> float:
        out = self.target.architecture.layers[-1].name
        return float(self.errors[out][self.active[self.classes.output]].max(initial=0.0))

    @property
    def source_params(self) -> int:
        return int(self.lifting.params + sum(layer.params for layer in self.source_layers))

    def expected_kept(self) -> float:
        return float(self.lifting.density * self.lifting.params
                     + sum(layer.density * layer.params for layer in self.source_layers))

    def to_module(self, dtype=None):
        """The ticket as an ``nn.Module`` (:func:`construct.conv_weak_export.weak_ticket_module`)."""
        from construct.conv_weak_export import weak_ticket_module

        return weak_ticket_module(self, dtype)


def plan_residual_weak(target: ConvTarget, density, delta: float, *, width_multiplier: float = 1.0):
    """(ConvWeakGraphWidths, copy classes, g, r per class) with g and every r_c of a class that some layer reads
    times ``width_multiplier`` (rounded up); the output class keeps r = 1."""
    cc = copy_classes(target)
    layers = [(w.fan_in, w.fan_out, max(1, int(np.count_nonzero(w.weight)))) for w in target.weighted]
    ww = conv_weak_graph_widths(layers, cc.reads, cc.writes, density, delta)
    mult = check_positive_real(width_multiplier, "width_multiplier")
    g = max(1, scaled_count(ww.lifting_group, mult, "lifting group g"))
    classes = sorted({c for c in cc.reads[1:]} | set(cc.writes))
    read = set(cc.reads[1:])
    r = {c: (max(1, scaled_count(n, mult, "copies r_c")) if c in read else n)
         for c, n in zip(classes, ww.class_copies)}
    return ww, cc, g, r


def _source_layers(target: ConvTarget, cc: CopyClasses, g: int, r: dict, densities, seed: int):
    w = target.weighted
    blocks = _input_blocks(target)
    lift = IntermediateLayer(w[0].fan_in, 2 * g, 0, densities[0], seed=seed, index=1)
    layers = [SourceLayer(r[cc.writes[0]] * w[0].fan_out, 2 * g * w[0].fan_in, densities[1], seed=seed, index=2)]
    for t in range(1, len(w)):  # (rows, r_in·c_in·block): PyTorch's layout over the copies of the input class
        layers.append(SourceLayer(r[cc.writes[t]] * w[t].fan_out, r[cc.reads[t]] * w[t].fan_in, densities[t + 1],
                                  seed=seed, index=t + 2))
    return lift, tuple(layers), blocks


def residual_weak_build_bytes(target: ConvTarget, g: int, r: dict, cc: CopyClasses) -> float:
    """Estimated peak bytes of :func:`build_residual_weak_ticket`, on the terms of
    :func:`construct.conv_weak.conv_weak_build_bytes`: one mask block (2^22 entries at ≈ 19 bytes), the lifting's
    dedicated entries (21 bytes per channel), 64 bytes per needed edge, 24 per source channel plus one float64 error
    per channel of every value, and the forward (three values of one batch and two window matrices of 2^24 float64
    entries)."""
    w = target.weighted
    V1 = w[0].fan_in
    nz = [int(np.count_nonzero(x.weight)) for x in w]
    edges = 2 * r[cc.writes[0]] * nz[0] + sum(r[cc.writes[t]] * nz[t] for t in range(1, len(w)))
    rows = sum(r[cc.writes[t]] * w[t].fan_out for t in range(len(w)))
    values = sum(r[c] * cc.channels[c] for c in cc.channels) * (len(target.architecture.layers) + 1)
    shapes = value_shapes(target.architecture, target.input_shape)
    spatial = max([int(np.prod(s[1:])) for s in shapes.values() if len(s) == 3] + [1])
    one_input = max(max(int(np.prod(s)) for s in shapes.values()),
                    max([2 * g * V1] + [r[c] * n for c, n in cc.channels.items()]) * spatial)
    fwd = 3 * 8.0 * max(_WINDOW_ENTRIES, one_input) + 2 * 8.0 * _WINDOW_ENTRIES
    return (1 << 22) * 19.0 + 21.0 * 2 * g * V1 + 64.0 * edges + 24.0 * rows + 8.0 * values + fwd


def _layout(wl, t: int):
    if t == 0:
        return wl.kind, (1, 1), (1, 1), (0, 0)
    if wl.kind == "conv2d":
        return wl.kind, tuple(wl.weight.shape[2:]), tuple(wl.stride), tuple(wl.padding)
    return wl.kind, (1, 1), (1, 1), (0, 0)


def residual_weak_ticket_in_source(target: ConvTarget, cc: CopyClasses, g: int, r: dict, lift, source_layers,
                                   blocks, progress=None):
    """Build the weak ticket (module docstring) inside the source; returns (ResidualWeakTicket without meta,
    per weighted layer [needed edges, missing edges])."""
    w = target.weighted
    Bv = _virtual_bounds(target, channel_bounds(target))
    built, counts = [], []
    for t, wl in enumerate(w):
        layer = source_layers[t]
        r_out = r[cc.writes[t]]
        if t == 0:
            rows, cols, wt, missing, inst, fail = _layer2(wl, lift, layer, g, r_out, Bv[wl.name])
            K = 1
        else:
            K = blocks[wl.name]
            rows, cols, wt, missing, inst, fail = _layer_next(wl, layer, r[cc.reads[t]], r_out, K, Bv[wl.name])
        built.append([rows, cols, wt, missing, K])
        counts.append((inst, fail))
        if progress is not None:
            progress.step(f"target layer {t + 1} ({wl.name}): {inst:,} edges needed, {fail} missing")
    # the channels every class must compute: what its readers need, from the output back, until nothing changes
    sizes = {c: r[c] * n for c, n in cc.channels.items()}
    need = {c: np.zeros(sizes[c], dtype=bool) for c in sizes}
    out_c = cc.output
    need[out_c][::r[out_c]] = True  # copy 0 of every output channel (r = 1: all of them)
    changed = True
    while changed:
        changed = False
        for t in range(len(w) - 1, 0, -1):
            rows, cols, _, _, K = built[t]
            sel = need[cc.writes[t]][rows]
            read = np.unique(cols[sel] // K)
            c_in = cc.reads[t]
            if not need[c_in][read].all():
                need[c_in][read] = True
                changed = True
    active = {c: np.nonzero(need[c])[0] for c in need}
    # errors per value (forward), kept entries restricted to the computed rows
    errors: dict = {}
    weighted = {wl.name: t for t, wl in enumerate(w)}
    layers = []
    for rec in target.architecture.layers:
        c = cc.of[rec.name]
        if rec.name in weighted:
            t = weighted[rec.name]
            rows, cols, wt, missing, K = built[t]
            keep = need[c][rows]
            rows, cols, wt = rows[keep], cols[keep], wt[keep]
            n_rows = source_layers[t].shape[0]
            if t == 0:
                err = missing.copy()
            else:
                err = np.bincount(rows, weights=np.abs(wt) * errors[rec.inputs[0]][cols // K], minlength=n_rows)
                err += missing
            errors[rec.name] = err
            wl = w[t]
            kind, kernel, stride, padding = _layout(wl, t)
            bias = wl.bias[np.arange(n_rows) // r[c]].astype(np.float64)
            in_ch = source_layers[t].shape[1] // K
            layers.append(WeakConvLayer(t + 2, wl.name, kind, n_rows, in_ch, K, kernel, stride, padding, r[c],
                                        rows, cols, wt, bias, active[c], err))
        elif c is None:
            continue
        elif rec.kind == "add":
            errors[rec.name] = errors[rec.inputs[0]] + errors[rec.inputs[1]]
        else:
            errors[rec.name] = errors[rec.inputs[0]]
    # the lifting: used channel u keeps its entry (u, u // 2g), weight +1 (G^+) or −1 (G^−), bias pruned
    wl = w[0]
    u = np.unique(layers[0].cols).astype(np.int64)
    sign = np.where(u % (2 * g) < g, 1.0, -1.0)
    kind, _, _, _ = _layout(wl, 0)
    kernel, stride, padding = _layout(wl, 1)[1:]
    lifting = WeakConvLayer(1, wl.name + ":lifting", kind, lift.shape[0],
                            wl.in_channels if kind == "conv2d" else wl.fan_in, wl.kernel_entries, kernel, stride,
                            padding, 2 * g, u, u // (2 * g), sign, np.zeros(lift.shape[0]), u,
                            np.zeros(lift.shape[0]))
    ticket = ResidualWeakTicket(target, lift, source_layers, (lifting,) + tuple(layers), cc, active, errors, {})
    return ticket, counts


def restricted_weights(ticket: ResidualWeakTicket) -> list:
    """[(sparse weights, bias)] per source layer, restricted to the computed channels."""
    cc = ticket.classes
    out = [_restricted(ticket.layers[0], np.arange(ticket.layers[0].in_channels))]
    lift_active = ticket.layers[0].active
    for t, layer in enumerate(ticket.layers[1:]):
        in_active = lift_active if t == 0 else ticket.active[cc.reads[t]]
        out.append(_restricted(layer, in_active))
    return out


def residual_weak_forward(ticket: ResidualWeakTicket, x: np.ndarray, weights=None) -> np.ndarray:
    """The ticket's output for a batch x (N, *input_shape), float64: the source sub-network over the computed
    copies — weighted layer 1 as lifting + ReLU + the 1×1 layer, later weighted layers as their source layers,
    additions adding copy to copy, ReLU/pooling/flatten on every copy."""
    weights = weights if weights is not None else restricted_weights(ticket)
    weighted = {layer.carries: i for i, layer in enumerate(ticket.layers) if i >= 1}
    layers = ticket.target.architecture.layers
    last_read = {name: k for k, rec in enumerate(layers) for name in rec.inputs}  # the last record reading a value
    values = {INPUT: np.asarray(x, dtype=np.float64)}
    for k, rec in enumerate(layers):
        if rec.name in weighted:
            i = weighted[rec.name]
            h = values[rec.inputs[0]]
            if i == 1:
                h = np.maximum(_apply(ticket.layers[0], *weights[0], h), 0.0)
            values[rec.name] = _apply(ticket.layers[i], *weights[i], h)
        elif rec.kind == "add":
            values[rec.name] = values[rec.inputs[0]] + values[rec.inputs[1]]
        else:
            single = Architecture((rec.__class__(rec.kind, rec.name, (INPUT,), rec.params, rec.attrs),))
            values[rec.name] = architecture_forward(single, values[rec.inputs[0]])
        for name in rec.inputs:  # free values nothing later reads
            if name != INPUT and last_read[name] == k:
                values.pop(name, None)
    return values[layers[-1].name]


def _widest_value(ticket: ResidualWeakTicket) -> int:
    shapes = value_shapes(ticket.target.architecture, ticket.target.input_shape)
    spatial = max([int(np.prod(s[1:])) for s in shapes.values() if len(s) == 3] + [1])
    widest_target = max(int(np.prod(s)) for s in shapes.values())
    widest = max([ticket.layers[0].active.size] + [a.size for a in ticket.active.values()])
    return max(widest_target, int(widest) * spatial)


def residual_weak_sampled_error(ticket: ResidualWeakTicket, *, samples: int = 256, seed: int = 0, weights=None,
                                batch: int = 32) -> WeakErrorSample:
    """max |ticket(x) − target(x)| over ``samples`` inputs drawn uniformly from the box (the stream of
    :func:`construct.conv_weak.conv_weak_sampled_error`), and the relative error."""
    weights = weights if weights is not None else restricted_weights(ticket)
    return sampled_error_of(ticket, lambda x: residual_weak_forward(ticket, x, weights), _widest_value(ticket),
                            samples=samples, seed=seed, batch=batch)


def residual_weak_accuracies(ticket: ResidualWeakTicket, x: np.ndarray, labels) -> dict:
    """Accuracy of the target and of the ticket on images x with integer ``labels``, and how many predictions
    differ (the keys of :func:`construct.conv_weak.conv_weak_accuracies`)."""
    weights = restricted_weights(ticket)
    return accuracies_of(ticket, lambda h: residual_weak_forward(ticket, h, weights), _widest_value(ticket), x,
                         labels)


def build_residual_weak_ticket(model, input_shape, density, delta: float, seed: int, *, box=(-1.0, 1.0),
                               width_multiplier: float = 1.0, samples: int = 256, max_memory=None, progress=None,
                               name=None):
    """Build the weak ticket of a CNN with residual additions (docs/math.md §9, §4); returns (ResidualWeakTicket,
    :class:`construct.conv_weak.ConvWeakReport`) — ``copies`` in the report: r of every weighted layer's output.

    ``density``: one density or L+1 (lifting, the 1×1 layer, one per later weighted layer in topological order).
    Widths from :func:`theory.conv_weak_widths.conv_weak_graph_widths` times ``width_multiplier``. Refuses in one
    line, before anything is drawn: graphs the construction cannot carry (:func:`copy_classes`) and a build whose
    estimate (:func:`residual_weak_build_bytes`) exceeds ``max_memory`` bytes."""
    from theory.memory import check_memory

    t0 = time.perf_counter()
    target = conv_target(model, input_shape, box=box, name=name)
    delta = check_open_unit(delta, "delta")
    seed = check_positive_int(seed, "seed", 0)
    samples = check_positive_int(samples, "samples")
    ww, cc, g, r = plan_residual_weak(target, density, delta, width_multiplier=width_multiplier)
    check_memory(residual_weak_build_bytes(target, g, r, cc),
                 f"the weak ticket of {target.name} (lifting group {g}, copies per class {list(r.values())})",
                 max_memory)
    if progress is not None:
        progress.start(len(target.weighted) + 1)
    lift, layers, blocks = _source_layers(target, cc, g, r, ww.densities, seed)
    ticket, counts = residual_weak_ticket_in_source(target, cc, g, r, lift, layers, blocks, progress)
    weights = restricted_weights(ticket)
    err = residual_weak_sampled_error(ticket, samples=samples, seed=seed, weights=weights)
    if progress is not None:
        progress.step(f"sampled error {err.sampled_error:.3e} over {samples:,} inputs")
    failures = sum(f for _, f in counts)
    copies = tuple(r[c] for c in cc.writes)
    rows = report_rows(ticket, counts)
    ticket.meta = {"construction": "weak-conv-residual", "target": target.name, "densities": list(ww.densities),
                   "delta": delta, "seed": seed, "box": list(target.box), "input_shape": list(target.input_shape),
                   "lifting_group": g, "copies": list(copies), "certificate": ticket.certificate,
                   "sampled_error": err.sampled_error, "width_multiplier": float(width_multiplier),
                   "batchnorm_folded": [list(f) for f in target.folded]}
    channels = (2 * g * target.weighted[0].fan_in,) + tuple(layer.shape[0] for layer in layers)
    report = ConvWeakReport(
        construction="weak", target=target.to_dict(), densities=tuple(ww.densities), delta=delta,
        success=failures == 0, failures=int(failures), instances=int(sum(i for i, _ in counts)),
        certificate=ticket.certificate, sampled_error=err.sampled_error, relative_error=err.relative_error,
        samples=samples, source_params=ticket.source_params, er_kept_params=ticket.expected_kept(),
        ticket_params=ticket.kept_params, target_params=int(target.nonzeros),
        width_multiplier=float(width_multiplier), lifting_group=g, copies=copies, source_channels=channels,
        theory=ww.to_dict(), layers=tuple(rows), seed=seed, seconds=time.perf_counter() - t0)
    if not math.isfinite(report.certificate):
        raise ValueError(f"the certificate of this ticket is {report.certificate} (a float overflow): refused; scale "
                         "the target or the box down")
    return ticket, report
