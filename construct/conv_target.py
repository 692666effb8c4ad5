"""Convolutional and residual targets for the strong 2L construction (docs/math.md §9). Pure numpy.

A :class:`ConvTarget` is an :class:`construct.architecture.Architecture` made ready for the construction:

- every eval-mode BatchNorm directly after a convolution is **folded** into it (W ← (γ/√(σ²+ε))·W,
  b ← (γ/√(σ²+ε))·(b − μ) + β; :func:`construct.architecture.fold_batchnorm`); the report names each fold;
- every conv2d and linear record is a :class:`WeightedLayer`, a dense layer over **virtual inputs**: for a
  convolution W ∈ R^{c_out × c_in × k_h × k_w}, virtual input v = (j, r, s) is column j·k_h·k_w + r·k_w + s of
  W.reshape(c_out, −1) (PyTorch's flattening order), fan_in = c_in·k_h·k_w; for a linear layer v is an input feature;
- a weighted layer's input is **signed** unless it is the output of a ReLU (possibly through pooling or flatten,
  or an addition of two non-negative values), or the network input with a box [a, b], a ≥ 0. For a signed input
  both sides of the ± split are solved; otherwise ReLU(−x) = 0 for target and ticket alike, and only the positive
  side is (docs/math.md §6, 2L construction);
- shapes are checked along the graph from ``input_shape`` (c, H, W) (or (n,) for a flat input).

Accepted records: conv2d (dilation 1, groups 1, zero padding), linear (on a flat input), batchnorm2d directly after
a conv2d that nothing else reads, relu, maxpool2d, avgpool2d, global_avgpool, flatten and add. Anything else is
refused in one line naming the layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from construct.architecture import INPUT, Architecture, Layer, architecture_forward, fold_batchnorm

__all__ = ["WeightedLayer", "ConvTarget", "conv_target", "SUPPORTED_CONV_LAYERS", "value_shapes", "nonnegative_values"]

SUPPORTED_CONV_LAYERS = ("conv2d (dilation 1, groups 1, zero padding), linear, BatchNorm2d directly after a conv2d "
                         "(folded), ReLU, max/avg pooling, global average pooling, flatten and residual additions")


@dataclass(frozen=True)
class WeightedLayer:
    """One conv2d or linear record of a folded target, seen as a dense layer over virtual inputs (docs/math.md §9).

    ``index``: position among the weighted layers (1-based); ``signed``: its input can be negative."""

    index: int
    name: str
    kind: str
    weight: np.ndarray
    bias: np.ndarray
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    signed: bool = True

    @property
    def fan_out(self) -> int:
        return int(self.weight.shape[0])

    @property
    def fan_in(self) -> int:
        """Virtual inputs: c_in·k_h·k_w (conv) or n_in (linear)."""
        return int(np.prod(self.weight.shape[1:]))

    @property
    def kernel_entries(self) -> int:
        """k_h·k_w (1 for a linear layer): virtual input v reads input channel v // kernel_entries."""
        return int(np.prod(self.weight.shape[2:])) if self.kind == "conv2d" else 1

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def dense(self) -> np.ndarray:
        """W as a (fan_out, fan_in) matrix over virtual inputs."""
        return self.weight.reshape(self.fan_out, self.fan_in)

    @property
    def has_bias(self) -> bool:
        return bool(np.any(self.bias != 0))

    @property
    def sides(self) -> int:
        return 2 if self.signed else 1

    def describe(self) -> dict:
        out = {"index": self.index, "name": self.name, "kind": self.kind, "weight_shape": list(self.weight.shape),
               "fan_in": self.fan_in, "fan_out": self.fan_out, "signed": self.signed}
        if self.kind == "conv2d":
            out.update({"stride": list(self.stride), "padding": list(self.padding)})
        return out


@dataclass(frozen=True)
class ConvTarget:
    """A folded architecture (no BatchNorm left), its weighted layers in execution order, the folds made and the
    input shape."""

    architecture: Architecture
    weighted: tuple
    folded: tuple
    input_shape: tuple
    box: tuple
    name: str

    @property
    def params(self) -> int:
        """Number of target weights (Σ over weighted layers of c_out·c_in·k_h·k_w or n_out·n_in)."""
        return int(sum(w.weight.size for w in self.weighted))

    @property
    def nonzeros(self) -> int:
        return int(sum(np.count_nonzero(w.weight) for w in self.weighted))

    @property
    def weight_bound(self) -> float:
        """max |W|, |b| over every weighted layer."""
        return float(max(max(np.abs(w.weight).max(initial=0.0), np.abs(w.bias).max(initial=0.0))
                         for w in self.weighted))

    @property
    def has_biases(self) -> bool:
        return any(w.has_bias for w in self.weighted)

    def layer(self, name: str) -> WeightedLayer:
        for w in self.weighted:
            if w.name == name:
                return w
        raise KeyError(name)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The target's output for a batch x of shape (N, *input_shape), float64."""
        return architecture_forward(self.architecture, x)

    def to_dict(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape), "box": [float(v) for v in self.box],
                "params": self.params,
                "weighted_layers": [w.describe() for w in self.weighted],
                "batchnorm_folded": [{"batchnorm": bn, "into": conv} for bn, conv in self.folded],
                "layers": [{"kind": r.kind, "name": r.name, "inputs": list(r.inputs)} for r in self.architecture.layers]}


def _fold(arch: Architecture):
    """(records with every BatchNorm folded into the conv before it, [(bn, conv)]); one-line refusals otherwise."""
    consumers = {}
    for rec in arch.layers:
        for src in rec.inputs:
            consumers.setdefault(src, []).append(rec.name)
    by_name = {rec.name: rec for rec in arch.layers}
    rename, out, folds, folded_conv = {}, [], [], {}
    for rec in arch.layers:
        inputs = tuple(rename.get(s, s) for s in rec.inputs)
        if rec.kind == "batchnorm2d":
            src = rec.inputs[0]
            conv = by_name.get(src)
            if conv is None or conv.kind != "conv2d":
                what = "the network input" if src == INPUT else f"{src!r} ({conv.kind})"
                raise ValueError(f"layer {rec.name!r} (batchnorm2d) reads {what}: allowed BatchNorm directly after a "
                                 "conv2d (folded into it, docs/math.md §9)")
            if consumers.get(src, []) != [rec.name] or src in folded_conv:
                raise ValueError(f"layer {rec.name!r} (batchnorm2d) follows conv {src!r}, which other layers also read: "
                                 "allowed BatchNorm directly after a conv2d that nothing else reads")
            if np.any(rec.params["running_var"] + rec.attrs["eps"] <= 0):
                raise ValueError(f"layer {rec.name!r} (batchnorm2d) has running_var + eps <= 0: allowed positive "
                                 "variances (eval-mode statistics)")
            idx = next(i for i, r in enumerate(out) if r.name == src)
            out[idx] = fold_batchnorm(out[idx], rec)
            folded_conv[src] = rec.name
            folds.append((rec.name, src))
            rename[rec.name] = src
            continue
        out.append(Layer(rec.kind, rec.name, inputs, rec.params, rec.attrs))
    return out, tuple(folds)


def value_shapes(arch: Architecture, input_shape) -> dict:
    """Shape (without the batch) of every value of the architecture, from ``input_shape``; a one-line ValueError
    naming the first layer whose input does not fit."""
    shapes = {INPUT: tuple(int(v) for v in input_shape)}
    for rec in arch.layers:
        s = shapes[rec.inputs[0]]
        k, at, p = rec.kind, rec.attrs, rec.params
        if k in ("conv2d", "maxpool2d", "avgpool2d", "global_avgpool") and len(s) != 3:
            raise ValueError(f"layer {rec.name!r} ({k}) reads a value of shape {list(s)}: allowed (channels, H, W)")
        if k == "conv2d":
            c_out, c_in, kh, kw = p["weight"].shape
            if s[0] != c_in:
                raise ValueError(f"layer {rec.name!r} (conv2d) has {c_in} input channels but reads {s[0]}: allowed "
                                 "equal (shapes must chain)")
            (sh, sw), (ph, pw) = at["stride"], at["padding"]
            h, w = (s[1] + 2 * ph - kh) // sh + 1, (s[2] + 2 * pw - kw) // sw + 1
            if h < 1 or w < 1:
                raise ValueError(f"layer {rec.name!r} (conv2d) has a {kh}x{kw} kernel over a {s[1]}x{s[2]} input "
                                 f"(padding {ph},{pw}): allowed inputs at least as large as the kernel")
            shapes[rec.name] = (c_out, h, w)
        elif k in ("maxpool2d", "avgpool2d"):
            (kh, kw), (sh, sw), (ph, pw) = at["kernel_size"], at["stride"], at["padding"]
            h, w = (s[1] + 2 * ph - kh) // sh + 1, (s[2] + 2 * pw - kw) // sw + 1
            if h < 1 or w < 1:
                raise ValueError(f"layer {rec.name!r} ({k}) has a {kh}x{kw} window over a {s[1]}x{s[2]} input: "
                                 "allowed inputs at least as large as the window")
            shapes[rec.name] = (s[0], h, w)
        elif k == "global_avgpool":
            shapes[rec.name] = (s[0], 1, 1)
        elif k == "flatten":
            shapes[rec.name] = (int(np.prod(s)),)
        elif k == "linear":
            n_out, n_in = p["weight"].shape
            if len(s) != 1 or s[0] != n_in:
                raise ValueError(f"layer {rec.name!r} (linear) has {n_in} inputs but reads a value of shape {list(s)}: "
                                 "allowed a flat input of that size (add a flatten)")
            shapes[rec.name] = (n_out,)
        elif k == "add":
            other = shapes[rec.inputs[1]]
            if other != s:
                raise ValueError(f"layer {rec.name!r} (add) adds shapes {list(s)} and {list(other)}: allowed equal shapes")
            shapes[rec.name] = s
        elif k == "relu":
            shapes[rec.name] = s
        else:
            raise ValueError(f"layer {rec.name!r} ({k}) is not supported by the convolutional construction: allowed "
                             + SUPPORTED_CONV_LAYERS)
    return shapes


def nonnegative_values(arch: Architecture, box) -> dict:
    """For every value name: True iff it is ≥ 0 for every input in the box, *structurally* (a ReLU output, or a
    pooling/flatten/addition of non-negative values, or the input when a ≥ 0) — so it holds for the ticket, whose
    graph is the same, as well as for the target."""
    nonneg = {INPUT: float(box[0]) >= 0.0}
    for rec in arch.layers:
        if rec.kind == "relu":
            nonneg[rec.name] = True
        elif rec.kind in ("maxpool2d", "avgpool2d", "global_avgpool", "flatten"):
            nonneg[rec.name] = nonneg[rec.inputs[0]]
        elif rec.kind == "add":
            nonneg[rec.name] = nonneg[rec.inputs[0]] and nonneg[rec.inputs[1]]
        else:
            nonneg[rec.name] = False
    return nonneg


def conv_target(model, input_shape, *, box=(-1.0, 1.0), name: str | None = None) -> ConvTarget:
    """The :class:`ConvTarget` of an ``nn.Module`` (read with :func:`construct.modules.read_module`), an
    :class:`Architecture` or a :class:`ConvTarget` (returned as is when its input shape and box agree).

    ``input_shape``: (c, H, W) of one input image (or (n,) for a flat input); ``box``: the input box [a, b]."""
    if isinstance(model, ConvTarget):
        return model
    if not isinstance(model, Architecture):
        from construct.modules import read_module

        model = read_module(model, name=name)
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape={input_shape!r} is malformed: allowed (channels, H, W) or (features,)") from None
    if len(shape) not in (1, 3) or min(shape) < 1:
        raise ValueError(f"input_shape={list(shape)} is out of range: allowed (channels, H, W) or (features,), "
                         "positive integers")
    a, b = float(box[0]), float(box[1])
    if not (np.isfinite(a) and np.isfinite(b) and a < b):
        raise ValueError(f"box={box!r} is out of range: allowed finite a < b")
    for rec in model.layers:
        for key, arr in rec.params.items():
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"layer {rec.name!r} ({rec.kind}) has NaN or inf in its {key}: allowed finite values")
    records, folds = _fold(model)
    arch = Architecture(tuple(records), name=name or model.name)
    value_shapes(arch, shape)  # refuses shapes that do not chain and unsupported kinds
    nonneg = nonnegative_values(arch, (a, b))
    weighted = []
    for rec in arch.layers:
        if rec.kind in ("conv2d", "linear"):
            kw = {"stride": tuple(rec.attrs["stride"]), "padding": tuple(rec.attrs["padding"])} if rec.kind == "conv2d" else {}
            weighted.append(WeightedLayer(len(weighted) + 1, rec.name, rec.kind,
                                          np.asarray(rec.params["weight"], dtype=np.float64),
                                          np.asarray(rec.params["bias"], dtype=np.float64),
                                          signed=not nonneg[rec.inputs[0]], **kw))
    if not weighted:
        raise ValueError(f"{arch.name}: the network has no conv2d or linear layer: allowed at least one")
    return ConvTarget(arch, tuple(weighted), folds, shape, (a, b), arch.name)
