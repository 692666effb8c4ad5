"""PyTorch models in: read an ``nn.Module`` (traced with ``torch.fx``, in execution order), a ``state_dict`` with a
JSON architecture description, or a ``model.py:factory`` file into an :class:`construct.architecture.Architecture`.

Nothing is ordered by name: a module's layers are the nodes of its ``torch.fx`` graph in the order ``forward``
computes them; a ``state_dict``'s layers are the records of its architecture description in the order listed.
Layers the representation does not know (GELU, tanh, attention, dilated or grouped convolutions, …) are refused
in one line naming the layer. Every tensor read is validated (docs/math.md §1): a real, dense, strided, finite float
tensor of the shape its layer needs; string keys; no nested containers; no meta or sparse tensors.

Accepted modules (``call_module`` nodes): ``nn.Linear``; ``nn.Conv2d`` (dilation 1, groups 1, zero padding);
``nn.BatchNorm2d`` with running statistics (read as its eval-mode affine map); ``nn.ReLU``; ``nn.Flatten``
(start_dim 1); ``nn.MaxPool2d`` / ``nn.AvgPool2d`` (no ceil mode, no dilation/divisor override);
``nn.AdaptiveAvgPool2d(1)``; ``nn.Identity`` and ``nn.Dropout`` (identities in eval mode). Layers masked with
:func:`construct.er_masks` (parametrized) or ``experiments.infra.masked`` (a ``mask`` buffer) are read with
their masks applied. Functions: ``F.relu``/``torch.relu``/``.relu()``, ``torch.flatten``/``.flatten(1)``/
``.view(x.size(0), -1)``, ``F.max_pool2d``, ``F.avg_pool2d``, ``F.adaptive_avg_pool2d(x, 1)``, and ``+`` /
``torch.add`` of two tensors (a residual addition).

The JSON architecture description (``architecture_from_json``)::

    {"layers": [
        {"kind": "flatten"},
        {"kind": "linear", "name": "input"},          # reads input.weight, input.bias of the state_dict
        {"kind": "relu"},
        {"kind": "linear", "name": "hidden"},
        {"kind": "relu"},
        {"kind": "linear", "name": "output", "bias": false},
        {"kind": "conv2d", "name": "conv1", "stride": 2, "padding": 1},
        {"kind": "batchnorm2d", "name": "bn1", "eps": 1e-5},
        {"kind": "maxpool2d", "kernel_size": 2, "stride": 2, "padding": 0},
        {"kind": "add", "inputs": ["relu3", "shortcut"]}
    ]}

``kind`` is one of :data:`construct.architecture.LAYER_KINDS`; ``name`` is required for linear, conv2d and
batchnorm2d (their key prefix in the state_dict; ``<name>.weight``, ``<name>.bias``, BatchNorm's
``running_mean``/``running_var``) and defaults to ``<kind><position>`` otherwise; ``inputs`` defaults to the previous
record (``"<input>"`` for the first). ``"bias": false`` says the layer has no bias (zeros). A ``<name>.mask`` entry of
the weight's shape (0/1) is applied to the weight. Every state_dict key must be used by some record (except
BatchNorm's ``num_batches_tracked``), so a description that does not match the weights is refused.
"""
from __future__ import annotations

import importlib.util
import json
import math
import operator
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import fx, nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from construct.architecture import INPUT, LAYER_KINDS, Architecture, Layer

__all__ = ["read_module", "check_state_dict", "architecture_from_json", "architecture_from_state_dict",
           "load_module_factory", "load_weights", "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS = ("Linear, Conv2d (dilation 1, groups 1, zero padding), BatchNorm2d (eval), ReLU, Flatten, "
                    "MaxPool2d, AvgPool2d, AdaptiveAvgPool2d(1), Identity, Dropout and residual additions")


# ------------------------------------------------------------------------------------------- tensor validation
def _check_entry(key, value, where: str) -> None:
    if not isinstance(key, str):
        raise ValueError(f"{where}: state_dict key {key!r} is a {type(key).__name__}: allowed string keys")
    if isinstance(value, (Mapping, list, tuple)):
        raise ValueError(f"{where}: state_dict[{key!r}] is a nested {type(value).__name__}: allowed a tensor")
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{where}: state_dict[{key!r}] is a {type(value).__name__}: allowed a tensor")
    if value.is_meta:
        raise ValueError(f"{where}: state_dict[{key!r}] is a meta tensor (it holds no values): allowed a dense tensor")
    if value.layout != torch.strided:
        raise ValueError(f"{where}: state_dict[{key!r}] has layout {value.layout}: allowed a dense (strided) tensor")
    if value.is_complex():
        raise ValueError(f"{where}: state_dict[{key!r}] is complex ({value.dtype}): allowed a real tensor "
                         "(the imaginary part would be lost)")


def check_state_dict(state, where: str = "state_dict") -> dict:
    """Validate every entry of a state_dict: string keys, values dense strided real tensors (no nested dicts or
    lists, no meta, sparse or complex tensors). Returns a plain dict; one-line ValueError naming the bad key."""
    if not isinstance(state, Mapping):
        raise ValueError(f"{where}: contains a {type(state).__name__}: allowed a state_dict (a mapping of names "
                         "to tensors)")
    for key, value in state.items():
        _check_entry(key, value, where)
    return dict(state)


def _array(value: torch.Tensor, key: str, where: str, shape=None, ndim=None) -> np.ndarray:
    """A validated float64 copy of a parameter tensor (real float, finite, the given shape or ndim)."""
    _check_entry(key, value, where)
    if not value.is_floating_point():
        raise ValueError(f"{where}: {key} has dtype {value.dtype}: allowed a floating-point tensor")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}: allowed a {ndim}-D tensor")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}: allowed {tuple(shape)}")
    arr = value.detach().to("cpu", torch.float64).numpy().copy()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: {key} contains NaN or inf: allowed finite values")
    return arr


def _mask(value, key: str, where: str, shape) -> np.ndarray:
    _check_entry(key, value, where)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}: allowed the weight's shape {tuple(shape)}")
    arr = value.detach().cpu().numpy()
    if arr.dtype != np.bool_ and not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{where}: {key} has entries other than 0/1: allowed a 0/1 mask")
    return arr.astype(np.float64)


def _pair(value, name: str, layer: str) -> tuple:
    vals = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        vals = tuple(vals)
    except TypeError:
        vals = ()
    if len(vals) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in vals):
        raise ValueError(f"layer {layer!r}: {name}={value!r}: allowed a non-negative integer or a pair of them")
    return (int(vals[0]), int(vals[1]))


# ------------------------------------------------------------------------------------------- reading modules
def _unsupported(name: str, what: str) -> ValueError:
    return ValueError(f"layer {name!r} ({what}) is not supported: allowed {SUPPORTED_LAYERS}")


_ALIASES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)
_LEAVES = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Flatten, nn.MaxPool2d, nn.AvgPool2d,
           nn.AdaptiveAvgPool2d) + _ALIASES


class _Tracer(fx.Tracer):
    """Keeps the layers this reader knows (including parametrized and masked subclasses) as leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _LEAVES) or super().is_leaf_module(m, qualname)


def _effective_weight(module: nn.Module, qualname: str, base: type) -> torch.Tensor:
    """The weight the layer computes with: parametrized (er_masks), ``weight * mask`` (experiments.infra.masked) or plain;
    refuses a subclass that overrides forward in another way."""
    if parametrize.is_parametrized(module):
        if set(module.parametrizations.keys()) - {"weight"}:
            raise ValueError(f"layer {qualname!r} ({type(module).__name__}) has parametrizations on "
                             f"{sorted(module.parametrizations.keys())}: allowed only a weight parametrization")
        return module.weight
    if type(module).forward is base.forward:
        return module.weight
    mask = getattr(module, "mask", None)
    if isinstance(mask, torch.Tensor) and mask.shape == module.weight.shape and type(module).__module__ == "experiments.infra.masked":
        return module.weight * mask
    raise ValueError(f"layer {qualname!r} ({type(module).__name__}) overrides {base.__name__}.forward: allowed the "
                     "plain layer, a layer masked by construct.er_masks or experiments.infra.masked")


def _module_record(node, module: nn.Module, qualname: str, name: str, inputs: tuple) -> Layer | None:
    where = f"layer {qualname!r}"
    kind = type(module).__name__
    if isinstance(module, nn.Linear):
        w = _array(_effective_weight(module, qualname, nn.Linear), f"{qualname}.weight", where, ndim=2)
        b = np.zeros(w.shape[0]) if module.bias is None else _array(module.bias, f"{qualname}.bias", where, (w.shape[0],))
        return Layer("linear", name, inputs, {"weight": w, "bias": b})
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or tuple(module.dilation) != (1, 1) or module.padding_mode != "zeros" \
                or isinstance(module.padding, str):
            raise ValueError(f"layer {qualname!r} (Conv2d with groups={module.groups}, dilation={module.dilation}, "
                             f"padding={module.padding!r}, padding_mode={module.padding_mode!r}) is not supported: "
                             "allowed Conv2d with groups 1, dilation 1 and numeric zero padding")
        w = _array(_effective_weight(module, qualname, nn.Conv2d), f"{qualname}.weight", where, ndim=4)
        b = np.zeros(w.shape[0]) if module.bias is None else _array(module.bias, f"{qualname}.bias", where, (w.shape[0],))
        return Layer("conv2d", name, inputs, {"weight": w, "bias": b},
                     {"stride": _pair(module.stride, "stride", qualname), "padding": _pair(module.padding, "padding", qualname)})
    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or module.running_var is None:
            raise ValueError(f"layer {qualname!r} (BatchNorm2d without running statistics) is not supported: allowed "
                             "BatchNorm2d with track_running_stats=True (read in eval mode)")
        c = module.num_features
        params = {"running_mean": _array(module.running_mean, f"{qualname}.running_mean", where, (c,)),
                  "running_var": _array(module.running_var, f"{qualname}.running_var", where, (c,))}
        params["weight"] = np.ones(c) if module.weight is None else _array(module.weight, f"{qualname}.weight", where, (c,))
        params["bias"] = np.zeros(c) if module.bias is None else _array(module.bias, f"{qualname}.bias", where, (c,))
        if np.any(params["running_var"] + module.eps <= 0):
            raise ValueError(f"{where}: running_var + eps has entries <= 0: allowed positive variances")
        return Layer("batchnorm2d", name, inputs, params, {"eps": float(module.eps)})
    if isinstance(module, nn.ReLU):
        return Layer("relu", name, inputs)
    if isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise ValueError(f"layer {qualname!r} (Flatten(start_dim={module.start_dim}, end_dim={module.end_dim})) is "
                             "not supported: allowed Flatten(start_dim=1, end_dim=-1)")
        return Layer("flatten", name, inputs)
    if isinstance(module, nn.MaxPool2d):
        if _pair(module.dilation, "dilation", qualname) != (1, 1) or module.ceil_mode or module.return_indices:
            raise ValueError(f"layer {qualname!r} (MaxPool2d with dilation/ceil_mode/return_indices) is not supported: "
                             "allowed MaxPool2d with dilation 1, ceil_mode False")
        return _pool("maxpool2d", name, inputs, module.kernel_size, module.stride, module.padding, qualname)
    if isinstance(module, nn.AvgPool2d):
        if module.ceil_mode or module.divisor_override is not None or not module.count_include_pad:
            raise ValueError(f"layer {qualname!r} (AvgPool2d with ceil_mode/divisor_override/count_include_pad=False) "
                             "is not supported: allowed AvgPool2d with the defaults")
        return _pool("avgpool2d", name, inputs, module.kernel_size, module.stride, module.padding, qualname)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        if module.output_size not in (1, (1, 1)):
            raise ValueError(f"layer {qualname!r} (AdaptiveAvgPool2d({module.output_size})) is not supported: allowed "
                             "output size 1 (global average pooling)")
        return Layer("global_avgpool", name, inputs)
    if isinstance(module, _ALIASES):
        return None
    raise _unsupported(qualname, kind)


def _pool(kind, name, inputs, kernel, stride, padding, qualname) -> Layer:
    kernel = _pair(kernel, "kernel_size", qualname)
    stride = kernel if stride is None or stride == () or stride == [] else _pair(stride, "stride", qualname)
    return Layer(kind, name, inputs, {}, {"kernel_size": kernel, "stride": stride,
                                         "padding": _pair(padding, "padding", qualname)})


_RELU = {F.relu, torch.relu, torch.relu_, F.relu_}
_ADD = {operator.add, operator.iadd, torch.add}


def _arg(node, index: int, key: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(key, default)


def _function_record(node, name: str, inputs: tuple, shape_nodes: set) -> Layer:
    fn = node.target
    label = getattr(fn, "__name__", str(fn))
    if fn in _RELU:
        return Layer("relu", name, inputs[:1])
    if fn in _ADD:
        if len(inputs) != 2 or len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            raise ValueError(f"layer {node.name!r} ({label} of {node.args!r}) is not supported: allowed the sum of two "
                             "layer outputs (a residual addition)")
        return Layer("add", name, inputs)
    if fn is torch.flatten:
        if _arg(node, 1, "start_dim", 0) != 1 or _arg(node, 2, "end_dim", -1) != -1:
            raise ValueError(f"layer {node.name!r} (torch.flatten{tuple(node.args[1:])}) is not supported: allowed "
                             "torch.flatten(x, 1)")
        return Layer("flatten", name, inputs)
    if fn is F.max_pool2d or fn is F.avg_pool2d:
        kernel = _arg(node, 1, "kernel_size", None)
        stride = _arg(node, 2, "stride", None)
        padding = _arg(node, 3, "padding", 0)
        extra = (_arg(node, 4, "dilation", 1) not in (1, (1, 1))) if fn is F.max_pool2d else \
            (_arg(node, 5, "count_include_pad", True) is not True or _arg(node, 6, "divisor_override", None) is not None)
        if extra or _arg(node, 5 if fn is F.max_pool2d else 4, "ceil_mode", False):
            raise ValueError(f"layer {node.name!r} ({label} with ceil_mode/dilation/divisor options) is not supported: "
                             "allowed kernel_size, stride and padding only")
        return _pool("maxpool2d" if fn is F.max_pool2d else "avgpool2d", name, inputs, kernel, stride, padding, node.name)
    if fn is F.adaptive_avg_pool2d:
        if _arg(node, 1, "output_size", None) not in (1, (1, 1)):
            raise ValueError(f"layer {node.name!r} (adaptive_avg_pool2d to {_arg(node, 1, 'output_size', None)!r}) is "
                             "not supported: allowed output size 1 (global average pooling)")
        return Layer("global_avgpool", name, inputs)
    raise _unsupported(node.name, f"function {label}")


def _method_record(node, name: str, inputs: tuple, shape_nodes: set) -> Layer | None:
    method = node.target
    if method in ("relu", "relu_"):
        return Layer("relu", name, inputs)
    if method == "flatten":
        if _arg(node, 1, "start_dim", 0) != 1 or _arg(node, 2, "end_dim", -1) != -1:
            raise ValueError(f"layer {node.name!r} (.flatten{tuple(node.args[1:])}) is not supported: allowed .flatten(1)")
        return Layer("flatten", name, inputs)
    if method in ("view", "reshape") and len(node.args) == 3 and node.args[2] == -1:
        first = node.args[1]
        if isinstance(first, fx.Node) and first in shape_nodes and first.args[0] is node.args[0]:
            return Layer("flatten", name, inputs)
    if method == "add" and len(node.args) == 2 and not node.kwargs and len(inputs) == 2:
        return Layer("add", name, inputs)
    raise _unsupported(node.name, f"method .{method}")


def read_module(module, name: str | None = None) -> Architecture:
    """The :class:`Architecture` of an ``nn.Module``: its ``torch.fx`` graph in execution order, one record per layer.

    Refuses (one-line ValueError naming the layer) anything outside :data:`SUPPORTED_LAYERS`, forwards with more
    than one input or output, control flow that fx cannot trace, and parameters that are not real, finite floats.
    BatchNorm2d is read as its eval-mode map (running statistics) whatever ``module.training`` is."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"model is a {type(module).__name__}: allowed an nn.Module")
    label = name or type(module).__name__
    check_state_dict(module.state_dict(), where=label)
    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # noqa: BLE001 - fx raises many kinds of errors on untraceable code
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"{label}: torch.fx could not trace forward ({type(exc).__name__}: {first[:200]}): allowed "
                         "a forward without data-dependent control flow") from None
    modules = dict(module.named_modules())
    records, produced, shape_nodes, uses = [], {}, set(), {}
    output = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if produced:
                raise ValueError(f"{label}: forward takes more than one input ({node.name!r}): allowed one input tensor")
            produced[node] = INPUT
            continue
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node) or out not in produced:
                raise ValueError(f"{label}: forward returns {out!r}: allowed one tensor computed by supported layers")
            output = produced[out]
            continue
        if node.op == "get_attr":
            raise ValueError(f"layer {node.name!r} reads the attribute {node.target!r} directly in forward: allowed "
                             "parameters only through modules (" + SUPPORTED_LAYERS + ")")
        if node.op == "call_method" and node.target == "size":
            shape_nodes.add(node)
            continue
        tensor_args = [a for a in list(node.args) + list(node.kwargs.values()) if isinstance(a, fx.Node)]
        for a in tensor_args:
            if a in shape_nodes and not (node.op == "call_method" and node.target in ("view", "reshape")):
                raise ValueError(f"layer {node.name!r} uses a tensor size: allowed only in x.view(x.size(0), -1)")
        inputs = tuple(produced[a] for a in tensor_args if a in produced)
        if node.op == "call_module":
            sub = modules[node.target]
            qual = str(node.target)
            uses[qual] = uses.get(qual, 0) + 1
            rec_name = qual if uses[qual] == 1 else f"{qual}#{uses[qual]}"
            if len(inputs) != 1:
                raise ValueError(f"layer {qual!r} ({type(sub).__name__}) is called with {len(inputs)} tensor inputs: "
                                 "allowed one")
            rec = _module_record(node, sub, qual, rec_name, inputs)
        elif node.op == "call_function":
            rec = _function_record(node, node.name, inputs, shape_nodes)
        else:
            rec = _method_record(node, node.name, inputs, shape_nodes)
        if rec is None:  # identity (Identity, Dropout in eval mode)
            produced[node] = inputs[0]
        else:
            records.append(rec)
            produced[node] = rec.name
    if output is None or output == INPUT:
        raise ValueError(f"{label}: forward computes no layer: allowed at least one Linear layer")
    # keep only records the output depends on (dead branches compute nothing the network returns)
    needed = {output}
    for rec in reversed(records):
        if rec.name in needed:
            needed.update(rec.inputs)
    records = [r for r in records if r.name in needed]
    if records[-1].name != output:
        raise ValueError(f"{label}: forward returns {output!r}, computed before its last layer: allowed the output "
                         "of the last layer")
    return Architecture(tuple(records), name=label)


# ------------------------------------------------------------------------------- state_dict + architecture JSON
def _check_json_value(value, key: str, where: str):
    if isinstance(value, bool) or not isinstance(value, (int, float, list)):
        raise ValueError(f"{where}: {key}={value!r}: allowed a number or a pair of numbers")
    return value


def architecture_from_state_dict(state, description, name: str = "state_dict", where: str | None = None) -> Architecture:
    """The :class:`Architecture` of a state_dict laid out by a JSON description (a dict or list, see the module
    docstring). Every entry is validated and every key must be used (``num_batches_tracked`` excepted)."""
    where = where or name
    state = check_state_dict(state, where)
    layers = description.get("layers") if isinstance(description, Mapping) else description
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{where}: the architecture has no 'layers' list: allowed {{\"layers\": [{{\"kind\": ...}}, ...]}}")
    used, records, prev = set(), [], INPUT
    for i, item in enumerate(layers):
        if not isinstance(item, Mapping):
            raise ValueError(f"{where}: layers[{i}] is a {type(item).__name__}: allowed an object with 'kind'")
        kind = item.get("kind")
        if kind not in LAYER_KINDS:
            raise ValueError(f"{where}: layers[{i}] has kind {kind!r}: allowed {', '.join(LAYER_KINDS)}")
        allowed_keys = {"kind", "name", "inputs", "bias", "stride", "padding", "kernel_size", "eps"}
        extra = set(item) - allowed_keys
        if extra:
            raise ValueError(f"{where}: layers[{i}] has unknown fields {sorted(extra)}: allowed {sorted(allowed_keys)}")
        rec_name = item.get("name", f"{kind}{i}")
        if not isinstance(rec_name, str) or not rec_name:
            raise ValueError(f"{where}: layers[{i}] has name {rec_name!r}: allowed a non-empty string")
        if kind in ("linear", "conv2d", "batchnorm2d") and "name" not in item:
            raise ValueError(f"{where}: layers[{i}] ({kind}) has no 'name': allowed its key prefix in the state_dict")
        inputs = item.get("inputs", [prev])
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            raise ValueError(f"{where}: layers[{i}] has inputs {inputs!r}: allowed a list of earlier layer names")
        lw = f"{where}, layer {rec_name!r}"
        params, attrs = {}, {}
        if kind in ("linear", "conv2d"):
            key = f"{rec_name}.weight"
            if key not in state:
                raise ValueError(f"{where}: missing key {key!r} for layers[{i}] ({kind})")
            w = _array(state[key], key, where, ndim=2 if kind == "linear" else 4)
            used.add(key)
            if f"{rec_name}.mask" in state:
                w = w * _mask(state[f"{rec_name}.mask"], f"{rec_name}.mask", where, w.shape)
                used.add(f"{rec_name}.mask")
            has_bias = item.get("bias", True)
            if not isinstance(has_bias, bool):
                raise ValueError(f"{lw}: bias={has_bias!r}: allowed true or false")
            bkey = f"{rec_name}.bias"
            if has_bias and bkey in state:
                b = _array(state[bkey], bkey, where, (w.shape[0],))
                used.add(bkey)
            elif has_bias:
                raise ValueError(f"{where}: missing key {bkey!r} for layers[{i}] ({kind}): add it or set \"bias\": false")
            else:
                b = np.zeros(w.shape[0])
            params = {"weight": w, "bias": b}
            if kind == "conv2d":
                attrs = {"stride": _pair(_check_json_value(item.get("stride", 1), "stride", lw), "stride", rec_name),
                         "padding": _pair(_check_json_value(item.get("padding", 0), "padding", lw), "padding", rec_name)}
        elif kind == "batchnorm2d":
            for p in ("running_mean", "running_var", "weight", "bias"):
                key = f"{rec_name}.{p}"
                if key not in state:
                    raise ValueError(f"{where}: missing key {key!r} for layers[{i}] (batchnorm2d)")
                params[p] = _array(state[key], key, where, ndim=1)
                used.add(key)
            c = params["running_mean"].shape[0]
            for p, arr in params.items():
                if arr.shape != (c,):
                    raise ValueError(f"{where}: {rec_name}.{p} has shape {arr.shape}: allowed ({c},)")
            eps = item.get("eps", 1e-5)
            if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps >= 0):
                raise ValueError(f"{lw}: eps={eps!r}: allowed a finite number >= 0")
            if np.any(params["running_var"] + eps <= 0):
                raise ValueError(f"{where}: {rec_name}.running_var + eps has entries <= 0: allowed positive variances")
            attrs = {"eps": float(eps)}
        elif kind in ("maxpool2d", "avgpool2d"):
            if "kernel_size" not in item:
                raise ValueError(f"{lw} ({kind}) has no kernel_size: allowed an integer or a pair")
            kernel = _pair(_check_json_value(item["kernel_size"], "kernel_size", lw), "kernel_size", rec_name)
            stride = _pair(_check_json_value(item.get("stride", list(kernel)), "stride", lw), "stride", rec_name)
            attrs = {"kernel_size": kernel, "stride": stride,
                     "padding": _pair(_check_json_value(item.get("padding", 0), "padding", lw), "padding", rec_name)}
        records.append(Layer(kind, rec_name, tuple(inputs), params, attrs))
        prev = rec_name
    unused = [k for k in state if k not in used and not k.endswith("num_batches_tracked")]
    if unused:
        raise ValueError(f"{where}: state_dict key {unused[0]!r} is not used by the architecture description "
                         f"({len(unused)} unused): allowed a description that uses every weight")
    return Architecture(tuple(records), name=name)


def _read_regular_json(path: Path):
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file: allowed a JSON architecture description")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: not a valid JSON architecture description ({type(exc).__name__})") from None


def architecture_from_json(path, weights) -> Architecture:
    """The architecture described by the JSON file ``path`` with the tensors of the state_dict file ``weights``."""
    path = Path(path)
    return architecture_from_state_dict(load_weights(weights), _read_regular_json(path), name=path.name,
                                        where=f"{path} with {weights}")


def load_weights(path) -> dict:
    """A state_dict file loaded with ``torch.load(weights_only=True)`` (no pickle code runs) and validated."""
    from theory.input_files import check_input_file
    from theory.memory import check_memory

    if not Path(path).exists():
        raise FileNotFoundError(f"weights={str(path)!r}: no such file")
    path = check_input_file(path, "weights")  # a FIFO or device is refused before it is opened
    # a state_dict file holds its tensors uncompressed: at most 3 × its size once converted to float64
    check_memory(3.0 * path.stat().st_size, f"loading the weights {str(path)!r} (a torch file of "
                 f"{path.stat().st_size} bytes)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: not a loadable torch state_dict ({type(exc).__name__})") from None
    return check_state_dict(state, str(path))


def load_module_factory(spec: str, weights=None) -> nn.Module:
    """``path/to/model.py:factory``: import the Python file (it runs, like ``python model.py`` would), call
    ``factory()`` (a function or class, no arguments) and, with ``weights``, load that state_dict file into it
    (``torch.load(weights_only=True)``, validated, strict key match)."""
    file, _, attr = str(spec).rpartition(":")
    path = Path(file)
    if not file.endswith(".py") or not attr.isidentifier():
        raise ValueError(f"target={spec!r}: allowed path/to/model.py:factory (a function or class of that file)")
    if not path.is_file():
        raise FileNotFoundError(f"target={spec!r}: no such file {file!r}")
    mod_name = f"_construct_user_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    user = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = user
    try:
        loader_spec.loader.exec_module(user)
    except Exception as exc:  # noqa: BLE001 - the user's file raised while importing
        del sys.modules[mod_name]
        raise ValueError(f"target={spec!r}: importing {file} raised {type(exc).__name__}: {str(exc)[:200]}") from None
    factory = getattr(user, attr, None)
    if not callable(factory):
        raise ValueError(f"target={spec!r}: {file} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"target={spec!r}: {attr}() raised {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"target={spec!r}: {attr}() returned a {type(model).__name__}: allowed an nn.Module")
    if weights is not None:
        state = load_weights(weights)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{weights}: does not fit {attr}(): {' '.join(str(exc).split())[:300]}") from None
    return model.eval()
