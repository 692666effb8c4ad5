"""Convolutional targets and their 2L tickets as PyTorch modules (docs/math.md §9; torch is imported inside the
functions, so importing :mod:`construct` needs no torch).

- :func:`architecture_module`: an ``nn.Module`` that executes any :class:`construct.architecture.Architecture`
  (every kind of :data:`construct.architecture.LAYER_KINDS`, residual additions, in record order), float64 by
  default; it equals :func:`construct.architecture.architecture_forward`.
- :func:`conv_ticket_module`: a :class:`construct.conv_ticket.ConvTicket` as an ``nn.Module``, in one of two forms:

  ``"units"`` — the pruned source subnetwork itself. Weighted target layer ℓ is the pair of source layers A_ℓ, B_ℓ
  (docs/math.md §9, 2L strong ticket of a conv layer): the input is unfolded with the target's kernel, stride and
  padding (``F.unfold``, whose rows are the virtual inputs v = (j, r, s) in PyTorch's flattening order); every kept
  dedicated channel u of A_ℓ reads its one virtual input v = u // k and outputs ReLU(a_u·x_v) (its other entries
  and its bias pruned); every kept bias-group channel outputs the constant ReLU(β_u) (every input entry pruned);
  B_ℓ (a 1×1 convolution, its bias pruned) is the matrix of its kept entries v_{iu} over the kept A_ℓ channels,
  sparse (CSR) or dense when small. Computation is chunked so that at most ``chunk_entries`` A_ℓ activations exist
  at once.

  ``"collapsed"`` — the same function, with the kept units of every virtual input summed by sign (docs/math.md §6):
  conv(ReLU(x), P) + conv(ReLU(−x), N) + b̂, with P, N, b̂ from :func:`construct.conv_ticket.effective_weights`
  (N skipped when the layer's input is ≥ 0). Small, differentiable, fast: what the attack ascends on.

Every array is a buffer (``register_buffer``), so ``.to(device)`` and ``.to(dtype)`` convert the module and nothing
is tied to a device. Inputs are cast to the module's dtype. Non-weighted records (ReLU, pooling, flatten, additions)
are executed exactly as :func:`architecture_module` does.
"""
from __future__ import annotations

import warnings

import numpy as np

__all__ = ["architecture_module", "conv_ticket_module", "units_module_bytes", "FORMS", "DENSE_LIMIT", "CHUNK_ENTRIES"]

FORMS = ("units", "collapsed")
#: B_ℓ is stored dense (in addition to its kept entries) when c_out × (kept A_ℓ channels) is at most this
DENSE_LIMIT = 1 << 20
#: at most this many A_ℓ activations (or unfolded inputs) are held at once by the units form
CHUNK_ENTRIES = 1 << 24

_CACHE: dict = {}


def _classes():
    """The torch classes of this module, built on first use (importing :mod:`construct` stays torch-free)."""
    if _CACHE:
        return _CACHE
    import torch
    import torch.nn.functional as F
    from torch import nn

    def as_tensor(arr, dtype):
        """A copy: the module never shares memory with the ticket's or the target's arrays."""
        return torch.tensor(np.asarray(arr), dtype=dtype)

    def own(arr, dtype):
        """A fresh array of this module's own (no copy when the dtype already fits)."""
        return torch.from_numpy(arr).to(dtype)

    class Linear(nn.Module):
        """y = W x + b (a ``linear`` record)."""

        def __init__(self, weight, bias, dtype):
            super().__init__()
            self.register_buffer("weight", as_tensor(weight, dtype))
            self.register_buffer("bias", as_tensor(bias, dtype))

        def forward(self, x):
            return F.linear(x, self.weight, self.bias)

    class Conv(nn.Module):
        """A zero-padded convolution (a ``conv2d`` record: dilation 1, groups 1)."""

        def __init__(self, weight, bias, stride, padding, dtype):
            super().__init__()
            self.register_buffer("weight", as_tensor(weight, dtype))
            self.register_buffer("bias", as_tensor(bias, dtype))
            self.stride, self.padding = tuple(int(s) for s in stride), tuple(int(p) for p in padding)

        def forward(self, x):
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    class BatchNorm(nn.Module):
        """Eval-mode BatchNorm: (x − μ)·γ/√(σ² + ε) + β per channel."""

        def __init__(self, params, eps, dtype):
            super().__init__()
            for key in ("weight", "bias", "running_mean", "running_var"):
                self.register_buffer(key, as_tensor(params[key], dtype))
            self.eps = float(eps)

        def forward(self, x):
            scale = self.weight / torch.sqrt(self.running_var + self.eps)
            return (x - self.running_mean[None, :, None, None]) * scale[None, :, None, None] + self.bias[None, :, None, None]

    class Collapsed(nn.Module):
        """A 2L ticket layer as Σ_v P·ReLU(x_v) + N·ReLU(−x_v) + b̂ (docs/math.md §6, §9)."""

        def __init__(self, P, N, bhat, wl, dtype):
            super().__init__()
            shape = wl.weight.shape
            self.kind, self.signed = wl.kind, bool(wl.signed)
            self.stride, self.padding = tuple(int(s) for s in wl.stride), tuple(int(p) for p in wl.padding)
            self.register_buffer("P", as_tensor(P.reshape(shape), dtype))
            self.register_buffer("N", as_tensor(N.reshape(shape), dtype) if self.signed else None)
            self.register_buffer("bhat", as_tensor(bhat, dtype))

        def forward(self, x):
            if self.kind == "linear":
                out = F.linear(F.relu(x), self.P, self.bhat)
                return out + F.linear(F.relu(-x), self.N) if self.signed else out
            out = F.conv2d(F.relu(x), self.P, self.bhat, self.stride, self.padding)
            if self.signed:
                out = out + F.conv2d(F.relu(-x), self.N, None, self.stride, self.padding)
            return out

    class Units(nn.Module):
        """A 2L ticket layer as the pruned source layers A_ℓ, B_ℓ (module docstring, form "units").

        Buffers: ``units`` (kept dedicated A_ℓ channels, source ids), ``virtual`` (= units // k: the virtual input
        each reads), ``a`` (their kept weights), ``bias_units`` / ``beta`` (kept bias-group channels and their
        biases), and B_ℓ's kept entries in CSR form over the kept A_ℓ channels (``units`` then ``bias_units``):
        ``crow``, ``col``, ``val``; ``dense_B`` as well when small."""

        def __init__(self, sel, wl, dtype, dense_limit, chunk_entries):
            super().__init__()
            self.kind = wl.kind
            self.kernel = tuple(int(s) for s in wl.weight.shape[2:]) if wl.kind == "conv2d" else (1, 1)
            self.stride, self.padding = tuple(int(s) for s in wl.stride), tuple(int(p) for p in wl.padding)
            self.fan_in, self.fan_out = wl.fan_in, wl.fan_out
            self.chunk_entries = int(chunk_entries)
            units = np.asarray(sel.units, dtype=np.int64)
            bias_units = np.asarray(sel.bias_units, dtype=np.int64)
            rows, cols = np.asarray(sel.rows, dtype=np.int64), np.asarray(sel.cols, dtype=np.int64)
            ded = wl.fan_in * sel.k
            is_ded = cols < ded
            pos = np.empty(cols.size, dtype=np.int64)
            pos[is_ded] = np.searchsorted(units, cols[is_ded])
            pos[~is_ded] = units.size + np.searchsorted(bias_units, cols[~is_ded])
            channels = np.concatenate([units, bias_units])
            if cols.size and (np.any(pos >= channels.size) or np.any(channels[np.minimum(pos, channels.size - 1)] != cols)):
                raise ValueError(f"layer {sel.name!r}: a kept B entry reads an A channel that is not kept: not a valid "
                                 "ticket")
            order = np.lexsort((pos, rows))
            rows, pos, val = rows[order], pos[order], np.asarray(sel.v, dtype=np.float64)[order]
            crow = np.zeros(wl.fan_out + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=wl.fan_out), out=crow[1:])
            self.n_channels = int(channels.size)
            self.register_buffer("units", as_tensor(units, torch.int64))
            self.register_buffer("virtual", own(units // sel.k, torch.int64))
            self.register_buffer("a", as_tensor(sel.a, dtype))
            self.register_buffer("bias_units", as_tensor(bias_units, torch.int64))
            self.register_buffer("beta", as_tensor(sel.beta, dtype))
            self.register_buffer("crow", own(crow, torch.int64))
            self.register_buffer("col", own(pos, torch.int64))
            self.register_buffer("val", own(val, dtype))
            dense = None
            if wl.fan_out * self.n_channels <= dense_limit:
                dense = np.zeros((wl.fan_out, self.n_channels))
                np.add.at(dense, (rows, pos), val)
                dense = own(dense, dtype)
            self.register_buffer("dense_B", dense)

        def kept_weights(self) -> int:
            """Kept source weights: one per kept dedicated A_ℓ channel plus the kept B_ℓ entries."""
            return int(self.a.numel() + self.val.numel())

        def B(self):
            """B_ℓ over the kept A_ℓ channels: dense when small, else a CSR tensor built from the buffers."""
            if self.dense_B is not None:
                return self.dense_B
            with warnings.catch_warnings():  # "CSR support is in beta": the tests compare both forms
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                return torch.sparse_csr_tensor(self.crow, self.col, self.val, (self.fan_out, self.n_channels),
                                               check_invariants=False)

        def _columns(self, xcols, B):
            """B · [ReLU(a_u·x_{v(u)}); ReLU(β_u)] for xcols (fan_in, n) (virtual inputs × positions), chunked."""
            n = xcols.shape[1]
            step = max(1, self.chunk_entries // max(1, self.n_channels))
            out = []
            n_units = self.virtual.numel()
            const = F.relu(self.beta)[:, None]
            for c0 in range(0, n, step):
                c1 = min(n, c0 + step)
                if xcols.requires_grad and torch.is_grad_enabled():  # differentiable path
                    h = F.relu(xcols[self.virtual, c0:c1] * self.a[:, None])
                    h = torch.cat([h, const.expand(-1, c1 - c0)])
                else:  # the same numbers, written in place (fewer allocations)
                    h = xcols.new_empty((self.n_channels, c1 - c0))
                    torch.index_select(xcols[:, c0:c1], 0, self.virtual, out=h[:n_units])
                    h[:n_units].mul_(self.a[:, None]).relu_()  # dedicated units: ReLU(a_u·x_v)
                    h[n_units:] = const                         # bias units: ReLU(β_u)
                out.append(B @ h)
            if not out:
                return xcols.new_zeros((self.fan_out, 0))
            return torch.cat(out, dim=1)

        def forward(self, x):
            B = self.B()
            if self.kind == "linear":
                return self._columns(x.T, B).T
            n, _, h, w = x.shape
            (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
            ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            per = max(1, self.chunk_entries // max(1, self.fan_in * ho * wo))
            outs = []
            for i in range(0, n, per):
                xc = F.unfold(x[i:i + per], self.kernel, padding=self.padding, stride=self.stride)  # (n_c, fan_in, L)
                nc = xc.shape[0]
                cols = xc.permute(1, 0, 2).reshape(self.fan_in, nc * ho * wo)
                y = self._columns(cols, B).reshape(self.fan_out, nc, ho, wo).permute(1, 0, 2, 3)
                outs.append(y)
            return torch.cat(outs) if outs else x.new_zeros((0, self.fan_out, ho, wo))

    class Graph(nn.Module):
        """Records executed in order: weighted records (and BatchNorm) through submodules ``layers["r<i>"]``,
        ReLU, pooling, flatten and additions as in :func:`construct.architecture.architecture_forward`."""

        def __init__(self, arch, modules: dict, dtype):
            super().__init__()
            index = {"<input>": -1}
            self.kinds, self.record_names, self.sources, self.attrs = [], [], [], []
            for i, rec in enumerate(arch.layers):
                self.kinds.append(rec.kind)
                self.record_names.append(rec.name)
                self.sources.append(tuple(index[s] for s in rec.inputs))
                self.attrs.append({k: tuple(int(u) for u in v) if isinstance(v, (tuple, list)) else v
                                   for k, v in rec.attrs.items()})
                index[rec.name] = i
            self.layers = nn.ModuleDict({f"r{i}": m for i, m in modules.items()})
            self.register_buffer("dtype_ref", torch.zeros(0, dtype=dtype), persistent=False)

        def kept_weights(self) -> int:
            """Σ kept source weights over the weighted layers (units form only)."""
            return int(sum(m.kept_weights() for m in self.layers.values() if hasattr(m, "kept_weights")))

        def forward(self, x):
            x = x.to(self.dtype_ref.dtype)
            values = []
            for i, kind in enumerate(self.kinds):
                srcs = self.sources[i]
                a = x if srcs[0] < 0 else values[srcs[0]]
                at = self.attrs[i]
                key = f"r{i}"
                if key in self.layers:
                    h = self.layers[key](a)
                elif kind == "relu":
                    h = F.relu(a)
                elif kind == "flatten":
                    h = a.reshape(a.shape[0], -1)
                elif kind == "add":
                    h = a + (x if srcs[1] < 0 else values[srcs[1]])
                elif kind == "maxpool2d":
                    (ph, pw) = at["padding"]
                    h = F.max_pool2d(F.pad(a, (pw, pw, ph, ph), value=float("-inf")), at["kernel_size"], at["stride"])
                elif kind == "avgpool2d":  # zero padding counted in the mean
                    (ph, pw) = at["padding"]
                    h = F.avg_pool2d(F.pad(a, (pw, pw, ph, ph), value=0.0), at["kernel_size"], at["stride"])
                elif kind == "global_avgpool":
                    h = a.mean(dim=(2, 3), keepdim=True)
                else:
                    raise ValueError(f"layer {self.record_names[i]!r} has kind {kind!r} without parameters")
                values.append(h)
            return values[-1]

    _CACHE.update(torch=torch, Linear=Linear, Conv=Conv, BatchNorm=BatchNorm, Collapsed=Collapsed, Units=Units,
                  Graph=Graph)
    return _CACHE


def _dtype(dtype):
    import torch

    dtype = torch.float64 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype={dtype!r}: allowed a torch floating dtype such as torch.float64")
    return dtype


def architecture_module(arch, dtype=None):
    """An ``nn.Module`` computing :func:`construct.architecture.architecture_forward` of ``arch`` (any
    :class:`~construct.architecture.Architecture` or the ``.architecture`` of a ConvTarget) in ``dtype``
    (default torch.float64); every array is a buffer."""
    C = _classes()
    dtype = _dtype(dtype)
    arch = getattr(arch, "architecture", arch)
    mods = {}
    for i, rec in enumerate(arch.layers):
        if rec.kind == "linear":
            mods[i] = C["Linear"](rec.params["weight"], rec.params["bias"], dtype)
        elif rec.kind == "conv2d":
            mods[i] = C["Conv"](rec.params["weight"], rec.params["bias"], rec.attrs["stride"], rec.attrs["padding"],
                                dtype)
        elif rec.kind == "batchnorm2d":
            mods[i] = C["BatchNorm"](rec.params, rec.attrs["eps"], dtype)
    return C["Graph"](arch, mods, dtype)


def units_module_bytes(ticket, itemsize: int = 8, dense_limit: int = DENSE_LIMIT,
                       chunk_entries: int = CHUNK_ENTRIES) -> int:
    """Estimated peak bytes of building and running the units module: per kept B entry an int64 column and a value
    of ``itemsize`` bytes, per kept unit its id, virtual input and weight, the dense copies of the small B_ℓ; plus
    the numpy temporaries of the largest layer while it is built (positions, order, sorted copies: 40 bytes per
    entry) and three chunks of ``chunk_entries`` activations while it runs."""
    total, largest = 0, 0
    for sel, wl in zip(ticket.layers, ticket.target.weighted):
        nnz, channels, fan_out = int(sel.v.size), int(sel.units.size + sel.bias_units.size), wl.fan_out
        total += nnz * (8 + itemsize) + channels * (16 + itemsize)
        if fan_out * channels <= dense_limit:
            total += 2 * fan_out * channels * 8
        largest = max(largest, nnz)
    return int(total + 40 * largest + 3 * chunk_entries * itemsize)


def conv_ticket_module(ticket, form: str = "units", dtype=None, *, dense_limit: int = DENSE_LIMIT,
                       chunk_entries: int = CHUNK_ENTRIES, effective=None, max_memory=None):
    """The 2L ticket ``ticket`` (:class:`construct.conv_ticket.ConvTicket`) as an ``nn.Module`` in ``form``
    "units" (the pruned source subnetwork) or "collapsed" (kept units summed by sign), ``dtype`` default
    torch.float64 (module docstring). ``dense_limit``: B_ℓ also dense when c_out × kept A_ℓ channels ≤ it;
    ``chunk_entries``: bound on the A_ℓ activations held at once; ``effective``: precomputed
    [effective_weights(...)] per weighted layer (collapsed form). The units form is refused (MemoryBudgetError, a
    ValueError) when :func:`units_module_bytes` exceeds ``max_memory`` bytes (default: 80 % of the available
    memory; :func:`theory.memory.check_memory`)."""
    from construct.conv_ticket import effective_weights

    if form not in FORMS:
        raise ValueError(f"form={form!r}: allowed one of {', '.join(FORMS)}")
    for name, value in (("dense_limit", dense_limit), ("chunk_entries", chunk_entries)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "dense_limit" else 1):
            raise ValueError(f"{name}={value!r}: allowed an integer >= {0 if name == 'dense_limit' else 1}")
    C = _classes()
    dtype = _dtype(dtype)
    if form == "units":
        from theory.memory import check_memory

        nnz = sum(int(s.v.size) for s in ticket.layers)
        check_memory(units_module_bytes(ticket, dtype.itemsize, int(dense_limit), int(chunk_entries)),
                     f"the units module of this ticket ({nnz:,} kept B entries)", max_memory)
    target = ticket.target
    arch = target.architecture
    by_name = {w.name: w for w in target.weighted}
    mods = {}
    for i, rec in enumerate(arch.layers):
        if rec.name in by_name:
            wl = by_name[rec.name]
            sel = ticket.layers[wl.index - 1]
            if form == "units":
                mods[i] = C["Units"](sel, wl, dtype, int(dense_limit), int(chunk_entries))
            else:
                P, N, bhat, _ = effective[wl.index - 1] if effective is not None else effective_weights(sel, wl)
                mods[i] = C["Collapsed"](P, N, bhat, wl, dtype)
        elif rec.params:
            raise ValueError(f"layer {rec.name!r} ({rec.kind}) has parameters but is not a weighted layer of the "
                             "folded target: allowed a ConvTarget's architecture")
    return C["Graph"](arch, mods, dtype)
