"""The explicit target representation: an ordered list of layer records (docs/math.md §1, §9). Pure numpy.

A PyTorch model (read by :mod:`construct.modules` with ``torch.fx``, in execution order), a ``state_dict`` with a
JSON architecture description, or a hand-built list all become an :class:`Architecture`: a tuple of
:class:`Layer` records in the order they are computed. Each record names its inputs (earlier records, or
``"<input>"`` for the network input), so residual additions are explicit; nothing is ever ordered by name.

Record kinds (``Layer.kind``), their arrays (``Layer.params``, float64) and attributes (``Layer.attrs``):

============== ======================================================== =========================================
kind           params                                                   attrs
============== ======================================================== =========================================
linear         weight (n_out, n_in), bias (n_out,)                      —
relu           —                                                        —
flatten        —                                                        — (flattens all but the batch dim)
conv2d         weight (c_out, c_in, k_h, k_w), bias (c_out,)            stride (s_h, s_w), padding (p_h, p_w);
                                                                        dilation 1, groups 1, zero padding
batchnorm2d    weight γ, bias β, running_mean μ, running_var σ² (c,)    eps (eval mode: an affine map per channel)
maxpool2d      —                                                        kernel_size, stride, padding (pairs)
avgpool2d      —                                                        kernel_size, stride, padding (pairs);
                                                                        zero padding counted in the mean
global_avgpool —                                                        — (mean over all positions)
add            —                                                        — (two inputs: a residual addition)
============== ======================================================== =========================================

The constructions of this package take ReLU MLPs: :meth:`Architecture.to_target` turns a chain
[flatten …] linear (relu linear)* into a :class:`construct.targets.Target` and refuses anything else in one line
naming the first layer it cannot take. :func:`architecture_forward` evaluates any architecture in numpy (float64),
so a reading can be checked against the model it came from.

The JSON architecture description (for a ``state_dict``; see :func:`construct.modules.architecture_from_json`) is
``{"layers": [{"kind": ..., "name": ..., "inputs": [...], <attrs>}, ...]}`` in execution order; a linear, conv2d
or batchnorm2d record's ``name`` is its key prefix in the state_dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["INPUT", "LAYER_KINDS", "MLP_KINDS", "Layer", "Architecture", "architecture_forward", "fold_batchnorm",
           "SUPPORTED_FOR_CONSTRUCTION"]

LAYER_KINDS = ("linear", "relu", "flatten", "conv2d", "batchnorm2d", "maxpool2d", "avgpool2d", "global_avgpool", "add")
MLP_KINDS = ("linear", "relu", "flatten")
INPUT = "<input>"  # the name by which records read the network input (no module path can contain "<")
SUPPORTED_FOR_CONSTRUCTION = "supported are MLPs of Linear+ReLU layers (Flatten allowed at the start), last layer Linear"

_PARAMS = {"linear": ("weight", "bias"), "conv2d": ("weight", "bias"),
           "batchnorm2d": ("weight", "bias", "running_mean", "running_var")}


@dataclass(frozen=True)
class Layer:
    """One record of an :class:`Architecture` (see the module docstring for kinds, params and attrs)."""

    kind: str
    name: str
    inputs: tuple
    params: dict = field(default_factory=dict)
    attrs: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """The record without its arrays (JSON-ready): kind, name, inputs, attrs and the shapes of the params."""
        out = {"kind": self.kind, "name": self.name, "inputs": list(self.inputs)}
        out.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in self.attrs.items()})
        if self.params:
            out["shapes"] = {k: list(v.shape) for k, v in self.params.items()}
        return out


@dataclass(frozen=True)
class Architecture:
    """Layer records in execution order; the last record is the network's output."""

    layers: tuple
    name: str = "model"

    def __post_init__(self):
        seen = {INPUT}
        if not self.layers:
            raise ValueError(f"{self.name}: the architecture has no layers: allowed at least one Linear layer")
        for rec in self.layers:
            if rec.kind not in LAYER_KINDS:
                raise ValueError(f"layer {rec.name!r} has kind {rec.kind!r}: allowed {', '.join(LAYER_KINDS)}")
            if rec.name in seen:
                raise ValueError(f"layer name {rec.name!r} is used twice: allowed unique names other than '<input>'")
            for src in rec.inputs:
                if src not in seen:
                    raise ValueError(f"layer {rec.name!r} reads {src!r}, which is not an earlier layer: allowed names "
                                     "of earlier layers or '<input>'")
            want = 2 if rec.kind == "add" else 1
            if len(rec.inputs) != want:
                raise ValueError(f"layer {rec.name!r} ({rec.kind}) has {len(rec.inputs)} inputs: allowed {want}")
            for key in _PARAMS.get(rec.kind, ()):
                if key not in rec.params:
                    raise ValueError(f"layer {rec.name!r} ({rec.kind}) has no {key}")
            seen.add(rec.name)

    def describe(self) -> list:
        """[record.describe() for every record] (JSON-ready)."""
        return [rec.describe() for rec in self.layers]

    @property
    def is_chain(self) -> bool:
        """Every record reads the record just before it (no branches, no residual additions)."""
        prev = INPUT
        for rec in self.layers:
            if rec.inputs != (prev,):
                return False
            prev = rec.name
        return True

    def to_target(self, name: str | None = None):
        """The :class:`construct.targets.Target` of a ReLU MLP: [flatten …] linear (relu linear)*.

        Anything else is refused in one line naming the first layer that does not fit (what the constructions
        support for now: :data:`SUPPORTED_FOR_CONSTRUCTION`)."""
        from construct.targets import make_target

        prev = INPUT
        expect = "start"  # start: flatten or linear; after_linear: relu; after_relu: linear
        weights, biases = [], []
        for rec in self.layers:
            if rec.inputs != (prev,):
                raise ValueError(f"layer {rec.name!r} ({rec.kind}) reads {list(rec.inputs)}: branches and residual "
                                 f"additions are not supported by the constructions yet; {SUPPORTED_FOR_CONSTRUCTION}")
            ok = {"start": ("flatten", "linear"), "after_linear": ("relu",), "after_relu": ("linear",)}[expect]
            if rec.kind not in ok:
                if rec.kind in ("flatten", "linear", "relu"):
                    where = {"start": "at the start", "after_linear": "right after a Linear layer",
                             "after_relu": "right after a ReLU"}[expect]
                    raise ValueError(f"layer {rec.name!r} ({rec.kind}) {where} is not supported by the constructions: "
                                     f"{SUPPORTED_FOR_CONSTRUCTION}")
                raise ValueError(f"layer {rec.name!r} ({rec.kind}) is not supported by the constructions yet: "
                                 f"{SUPPORTED_FOR_CONSTRUCTION}")
            if rec.kind == "linear":
                weights.append(rec.params["weight"])
                biases.append(rec.params["bias"])
                expect = "after_linear"
            elif rec.kind == "relu":
                expect = "after_relu"
            prev = rec.name
        if expect != "after_linear":
            last = self.layers[-1]
            raise ValueError(f"layer {last.name!r} ({last.kind}) ends the network: the constructions need a Linear "
                             f"last layer; {SUPPORTED_FOR_CONSTRUCTION}")
        return make_target(weights, biases, name=name or self.name)


def fold_batchnorm(conv: Layer, bn: Layer) -> Layer:
    """Eval-mode BatchNorm after a conv folded into the conv (docs/math.md §9):
    W ← (γ/√(σ²+ε))·W, b ← (γ/√(σ²+ε))·(b − μ) + β."""
    if conv.kind != "conv2d" or bn.kind != "batchnorm2d":
        raise ValueError(f"fold_batchnorm({conv.name!r}, {bn.name!r}): allowed a conv2d followed by a batchnorm2d")
    p = bn.params
    if p["weight"].shape[0] != conv.params["weight"].shape[0]:
        raise ValueError(f"layer {bn.name!r} has {p['weight'].shape[0]} channels but {conv.name!r} has "
                         f"{conv.params['weight'].shape[0]} outputs: allowed equal")
    scale = p["weight"] / np.sqrt(p["running_var"] + bn.attrs["eps"])
    weight = conv.params["weight"] * scale[:, None, None, None]
    bias = scale * (conv.params["bias"] - p["running_mean"]) + p["bias"]
    return Layer("conv2d", conv.name, conv.inputs, {"weight": weight, "bias": bias}, dict(conv.attrs))


def _windows(x: np.ndarray, kernel, stride, padding, fill: float) -> np.ndarray:
    """(N, C, H', W', k_h, k_w) windows of x (N, C, H, W) padded with ``fill``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    if xp.shape[2] < kh or xp.shape[3] < kw:
        raise ValueError(f"input of spatial size {x.shape[2:]} (padded {xp.shape[2:]}) is smaller than the kernel "
                         f"{(kh, kw)}: allowed inputs at least as large as every kernel")
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return win[:, :, ::sh, ::sw]


def architecture_forward(arch: Architecture, x: np.ndarray) -> np.ndarray:
    """The architecture's output for a batch x (N, …) in float64 (eval mode: BatchNorm uses running statistics)."""
    values = {INPUT: np.asarray(x, dtype=np.float64)}
    h = values[INPUT]
    for rec in arch.layers:
        a = values[rec.inputs[0]]
        p, at = rec.params, rec.attrs
        if rec.kind == "linear":
            h = a @ p["weight"].T + p["bias"]
        elif rec.kind == "relu":
            h = np.maximum(a, 0.0)
        elif rec.kind == "flatten":
            h = a.reshape(a.shape[0], -1)
        elif rec.kind == "add":
            h = a + values[rec.inputs[1]]
        elif rec.kind == "conv2d":
            win = _windows(a, p["weight"].shape[2:], at["stride"], at["padding"], 0.0)
            h = np.einsum("nchwrs,ocrs->nohw", win, p["weight"], optimize=True) + p["bias"][None, :, None, None]
        elif rec.kind == "batchnorm2d":
            scale = p["weight"] / np.sqrt(p["running_var"] + at["eps"])
            h = (a - p["running_mean"][None, :, None, None]) * scale[None, :, None, None] + p["bias"][None, :, None, None]
        elif rec.kind == "maxpool2d":
            h = _windows(a, at["kernel_size"], at["stride"], at["padding"], -np.inf).max(axis=(4, 5))
        elif rec.kind == "avgpool2d":
            h = _windows(a, at["kernel_size"], at["stride"], at["padding"], 0.0).mean(axis=(4, 5))
        elif rec.kind == "global_avgpool":
            h = a.mean(axis=(2, 3), keepdims=True)
        values[rec.name] = h
    return h
