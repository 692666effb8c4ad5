"""Weak tickets of CNNs and ResNets as networks: the pruned source subnetwork as an
:class:`construct.architecture.Architecture` (numpy) and as an ``nn.Module`` (docs/math.md §9, §4).

A weak ticket (:mod:`construct.conv_weak`, :mod:`construct.conv_weak_residual`) is a network of the target's own
records in which weighted layer 1 becomes lifting conv → ReLU → 1×1 conv and every later weighted layer becomes its
source layer, each restricted to the channels the ticket computes (pruned channels are removed, not zeroed). The
weights are the ticket's kept entries, zero elsewhere; ReLU, pooling, flatten and residual additions are the
target's records, acting on every computed copy.
"""
from __future__ import annotations

import numpy as np

from construct.architecture import Architecture, Layer

__all__ = ["weak_ticket_architecture", "weak_ticket_module"]


def _inputs_active(ticket) -> list:
    """The computed input channels of every source layer, in the order of ``ticket.layers``."""
    layers = ticket.layers
    out = [np.arange(layers[0].in_channels), layers[0].active]
    classes = getattr(ticket, "classes", None)
    for t in range(2, len(layers)):
        out.append(layers[t - 1].active if classes is None else ticket.active[classes.reads[t - 1]])
    return out


def _dense(layer, in_active) -> tuple[np.ndarray, np.ndarray]:
    """(weight in PyTorch's layout over the computed channels, bias of the computed output channels)."""
    from construct.conv_weak import _restricted

    mat, bias = _restricted(layer, in_active)
    dense = np.asarray(mat.T.todense(), dtype=np.float64)  # (|A_out|, |A_in|·block)
    if layer.kind == "conv2d":
        dense = dense.reshape(layer.active.size, in_active.size, *layer.kernel)
    return dense, np.asarray(bias, dtype=np.float64)


def weak_ticket_architecture(ticket) -> Architecture:
    """The weak ticket (plain or residual) as an Architecture: record ``<name>:lifting`` and ``<name>:lifting_relu``
    before weighted layer 1's record ``<name>`` (now the 1×1 layer), every later weighted record with its source
    layer's weights over the computed channels, every other record unchanged.
    :func:`construct.architecture.architecture_forward` of it equals the ticket's own forward."""
    by_name = {layer.carries: i for i, layer in enumerate(ticket.layers) if i >= 1}
    ins = _inputs_active(ticket)
    records = []
    for rec in ticket.target.architecture.layers:
        if rec.name not in by_name:
            records.append(rec)
            continue
        i = by_name[rec.name]
        layer = ticket.layers[i]
        src = rec.inputs[0]
        if i == 1:
            lift = ticket.layers[0]
            w, b = _dense(lift, ins[0])
            attrs = {"stride": tuple(lift.stride), "padding": tuple(lift.padding)} if lift.kind == "conv2d" else {}
            records.append(Layer(lift.kind, f"{rec.name}:lifting", (src,), {"weight": w, "bias": b}, attrs))
            records.append(Layer("relu", f"{rec.name}:lifting_relu", (f"{rec.name}:lifting",)))
            src = f"{rec.name}:lifting_relu"
        w, b = _dense(layer, ins[i])
        attrs = {"stride": tuple(layer.stride), "padding": tuple(layer.padding)} if layer.kind == "conv2d" else {}
        records.append(Layer(layer.kind, rec.name, (src,) + tuple(rec.inputs[1:]), {"weight": w, "bias": b}, attrs))
    return Architecture(tuple(records), name=f"weak ticket of {ticket.target.name}")


def weak_ticket_module(ticket, dtype=None):
    """The weak ticket as an ``nn.Module`` (:func:`construct.conv_export.architecture_module` of
    :func:`weak_ticket_architecture`; every array a buffer; default torch.float64), equal to the numpy forward."""
    from construct.conv_export import architecture_module

    return architecture_module(weak_ticket_architecture(ticket), dtype)
