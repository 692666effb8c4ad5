"""Tickets out as PyTorch modules (torch is imported only here and in :mod:`construct.modules`).

:func:`to_module` returns a :class:`TicketModule`: an ``nn.Sequential`` of ``nn.Linear`` layers with a ReLU after
every layer but the last, computing the ticket x_t = ReLU((W_t ⊙ S_t) x_{t−1} + b_t ⊙ bias_t) (docs/math.md §1).

Masks are ``torch.nn.utils.parametrize`` parametrizations (:class:`KeptEntries`): a layer's trainable tensor
(``parametrizations.weight.original``) holds only the values of its kept entries, and ``layer.weight`` is the dense
matrix with those values and exact zeros elsewhere. Pruned weights therefore stay exactly 0 through any optimizer
(SGD with momentum, Adam, weight decay) and through ``state_dict`` save/load, and the module's parameter count is the
ticket's kept weights plus its kept biases. Biases are parametrized the same way (a pruned bias stays 0).

``compact=True`` (default) keeps only the units the ticket uses (docs/math.md §6 roles aside, decided from the arrays):
a hidden unit none of whose kept incoming weights comes from a non-constant unit outputs the constant
c = ReLU(Σ kept weights·(constant inputs) + bias); it is removed and its effect w·c folded exactly into the biases
of the units it feeds; then every hidden unit without a kept path to an output is removed. Inputs and outputs keep
their layout. ``compact=False`` keeps the full source layout (every source unit). The forward pass materializes
each layer's dense weight, so both layouts are checked against the memory budget before anything is allocated
(:func:`theory.memory.check_memory`).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from construct.ticket import Ticket, effective_layers
from theory.memory import check_memory

__all__ = ["to_module", "to_torch", "TicketModule", "KeptEntries", "compact_layers"]


def _torch():
    import torch
    from torch import nn

    return torch, nn


def compact_layers(ticket: Ticket, compact: bool = True) -> list:
    """Per layer (rows, cols, values, bias, bias_kept, shape) of the exported network in numpy (float64).

    ``compact``: remove constant units (folding ReLU(bias)-type constants into the next biases, exactly) and units
    without a kept path to an output; otherwise the full source layout. Pure numpy; :func:`to_module` builds on it."""
    layers = []
    for t, (mat, bias) in enumerate(effective_layers(ticket)):
        coo = mat.tocoo()
        layers.append((coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float64),
                       np.asarray(bias, dtype=np.float64), np.asarray(ticket.bias_kept[t], dtype=bool), mat.shape))
    if not compact:
        return layers
    depth = len(layers)
    n_in = layers[0][5][1]
    const_prev, value_prev = np.zeros(n_in, dtype=bool), np.zeros(n_in)
    folded, consts = [], [const_prev]
    for t, (rows, cols, vals, bias, bkept, shape) in enumerate(layers, start=1):
        from_const = const_prev[cols]
        contrib = np.bincount(rows[from_const], weights=vals[from_const] * value_prev[cols[from_const]],
                              minlength=shape[0])
        touched = np.bincount(rows[from_const], minlength=shape[0]) > 0
        keep = ~from_const
        new_bias = bias + contrib
        has_live_input = np.bincount(rows[keep], minlength=shape[0]) > 0
        const = ~has_live_input if t < depth else np.zeros(shape[0], dtype=bool)
        value = np.maximum(new_bias, 0.0) if t < depth else new_bias
        folded.append((rows[keep], cols[keep], vals[keep], new_bias, bkept | touched, shape))
        const_prev, value_prev = const, np.where(const, value, 0.0)
        consts.append(const)
    live = [None] * (depth + 1)
    live[depth] = np.ones(folded[-1][5][0], dtype=bool)
    for t in range(depth, 0, -1):
        rows, cols = folded[t - 1][0], folded[t - 1][1]
        if t == 1:
            live[0] = np.ones(n_in, dtype=bool)
            break
        used = np.zeros(folded[t - 1][5][1], dtype=bool)
        used[cols[live[t][rows]]] = True
        live[t - 1] = used & ~consts[t - 1]
    out = []
    for t, (rows, cols, vals, bias, bkept, shape) in enumerate(folded, start=1):
        new_row = np.cumsum(live[t]) - 1
        new_col = np.cumsum(live[t - 1]) - 1
        keep = live[t][rows] & live[t - 1][cols]
        out.append((new_row[rows[keep]], new_col[cols[keep]], vals[keep], bias[live[t]], bkept[live[t]],
                    (int(live[t].sum()), int(live[t - 1].sum()))))
    return out


def _kept_entries_class():
    torch, nn = _torch()

    class KeptEntries(nn.Module):
        """Parametrization: the kept values (a 1-D tensor) → the dense tensor of ``shape`` with those values at the
        flat positions ``index`` and exact zeros elsewhere (``right_inverse`` gathers them back)."""

        def __init__(self, shape, index):
            super().__init__()
            self.shape = tuple(int(s) for s in shape)
            self.register_buffer("index", torch.as_tensor(index, dtype=torch.int64))

        def forward(self, values):
            out = values.new_zeros(math.prod(self.shape))
            return out.index_put((self.index,), values).view(self.shape)

        def right_inverse(self, dense):
            return dense.reshape(-1)[self.index]

    return KeptEntries


def __getattr__(name):  # KeptEntries / TicketModule are built on first use so that importing construct needs no torch
    if name == "KeptEntries":
        return _kept_entries_class_cached()
    if name == "TicketModule":
        return _ticket_module_class_cached()
    raise AttributeError(name)


_CACHE = {}


def _kept_entries_class_cached():
    if "KeptEntries" not in _CACHE:
        _CACHE["KeptEntries"] = _kept_entries_class()
    return _CACHE["KeptEntries"]


def _ticket_module_class_cached():
    if "TicketModule" not in _CACHE:
        torch, nn = _torch()

        class TicketModule(nn.Sequential):
            """The ticket as ``nn.Sequential`` of parametrized ``nn.Linear`` + ``nn.ReLU``. Inputs of any float
            dtype are cast to the module's dtype; inputs with more than 2 dimensions are flattened (N, n_0)."""

            def forward(self, x):
                if x.ndim > 2:
                    x = x.flatten(1)
                first = next(self.parameters(), None)
                if first is not None and x.dtype != first.dtype:
                    x = x.to(first.dtype)
                return super().forward(x)

            def kept_weights(self) -> int:
                """Trainable weight entries (the kept weights of the layout)."""
                return sum(int(m.parametrizations.weight.original.numel()) for m in self if isinstance(m, nn.Linear))

        _CACHE["TicketModule"] = TicketModule
    return _CACHE["TicketModule"]


def to_module(ticket: Ticket, dtype=None, compact: bool = True, *, device="cpu", max_memory=None):
    """The ticket as a :class:`TicketModule` (see the module docstring): ``dtype`` any torch float dtype
    (default torch.float32), ``compact`` removes the units the ticket does not use (biases kept exact), masks are
    :class:`KeptEntries` parametrizations. Refuses (MemoryBudgetError, a ValueError) when the dense per-layer
    weights would exceed ``max_memory`` bytes (default: 80 % of the available memory)."""
    torch, nn = _torch()
    from torch.nn.utils import parametrize

    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype!r}: allowed a torch floating-point dtype (torch.float32, torch.float64, ...)")
    if not isinstance(compact, bool):
        raise ValueError(f"compact={compact!r}: allowed True or False")
    layers = compact_layers(ticket, compact)
    itemsize = torch.empty((), dtype=dtype).element_size()
    estimate = sum(shape[0] * shape[1] for *_, shape in layers) * itemsize * 2 \
        + sum(len(rows) for rows, *_ in layers) * (8 + itemsize) * 2
    check_memory(estimate, f"the {'compact' if compact else 'full source'} ticket module (dense layer weights "
                           f"{[list(s) for *_, s in layers]})", budget=max_memory, flag="max_memory")
    KeptEntries = _kept_entries_class_cached()
    mods = []
    for t, (rows, cols, vals, bias, bkept, shape) in enumerate(layers, start=1):
        with warnings.catch_warnings():  # a layer left with no unit (all outputs constant) has zero elements
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            lin = nn.Linear(shape[1], shape[0], bias=True, dtype=dtype, device=device)
        order = np.argsort(rows * shape[1] + cols, kind="stable")
        flat = (rows * shape[1] + cols)[order]
        bidx = np.flatnonzero(bkept)
        with torch.no_grad():
            dense = torch.zeros(shape, dtype=dtype, device=device)
            dense.view(-1)[torch.as_tensor(flat, device=device)] = torch.as_tensor(vals[order], dtype=dtype, device=device)
            lin.weight.copy_(dense)
            lin.bias.copy_(torch.as_tensor(np.where(bkept, bias, 0.0), dtype=dtype, device=device))
        del dense
        parametrize.register_parametrization(lin, "weight", KeptEntries(shape, flat).to(device), unsafe=True)
        parametrize.register_parametrization(lin, "bias", KeptEntries((shape[0],), bidx).to(device), unsafe=True)
        mods.append(lin)
        if t < len(layers):
            mods.append(nn.ReLU())
    return _ticket_module_class_cached()(*mods)


def to_torch(ticket: Ticket, *, dtype=None, device="cpu", compact: bool = False, max_memory=None):
    """``to_module(ticket, dtype, compact)`` with the earlier defaults: the full source layout in torch.float64."""
    torch, _ = _torch()
    return to_module(ticket, torch.float64 if dtype is None else dtype, compact, device=device, max_memory=max_memory)
