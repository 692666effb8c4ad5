"""Tickets inside a materialized ER source: the data structure, its forward pass and the npz file format.

A ticket is a sub-mask S_t ≤ M_t of the source's ER masks plus a bias mask (docs/math.md §1). A *strong* ticket uses
the source's own weights and biases (pruning a bias sets it to 0); a *weak* ticket also carries the weights and
biases set on its sub-mask. Layer t of the ticket computes x_t = ReLU((W_t ⊙ S_t) x_{t−1} + b_t ⊙ bias_t), with a
linear last layer.

Every source unit also carries a *role* (what it is meant to compute), from which :mod:`construct.certificate`
recomputes the error certificate from the arrays alone (docs/math.md §6):

- ``UNUSED``: output ≈ 0;
- ``CONST`` with scale λ ≥ 0: output ≈ λ (bias groups, constant units);
- ``NEURON`` (t, i): output ≈ x_i^{(t)} of the target (h_i^{(L)} for t = L: the linear output);
- ``LIFT`` (t, j, λ): output ≈ ReLU(λ · x_j^{(t)}) (lifting units of L+1, intermediate units of 2L, t = 0 = input).

In memory the sub-masks and bias masks are bool arrays or, for the 2L construction (a few kept entries in sources
of 10^8–10^9 weights), :class:`SparseMask` (the sorted indices of the kept entries), and the roles :class:`Roles`
or :class:`SparseRoles` (the units with a role). Both sparse forms read like their dense arrays (``np.asarray``,
the ``kind``/``layer``/``index``/``scale`` arrays) and are written to the file as the same dense arrays, so a file
does not say which form built it.

npz keys (no pickle; loaded with ``allow_pickle=False``): ``target_W{t}``, ``target_b{t}`` (t = 1..L);
``source_W{t}``, ``source_b{t}``, ``source_M{t}`` (bool), ``ticket_S{t}`` (bool, ⊆ source_M{t}),
``ticket_bias{t}`` (bool) for t = 1..L_S; weak tickets also ``ticket_W{t}``, ``ticket_b{t}``; the roles
``role_kind{t}`` (int8), ``role_layer{t}``, ``role_index{t}`` (int32), ``role_scale{t}`` (float64); and ``meta``,
a JSON string (construction, kind, densities, eps, delta, seed, box, certificate, package version, …).
"""
from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from construct.source import Source
from construct.targets import Target, make_target
from theory.atomic import atomic_path

__all__ = ["Ticket", "Roles", "SparseRoles", "SparseMask", "mask_nonzero", "mask_count", "UNUSED", "CONST", "NEURON",
           "LIFT", "ticket_forward", "effective_layer", "effective_layers",
           "save_ticket", "load_ticket", "FORMAT_VERSION"]

UNUSED, CONST, NEURON, LIFT = 0, 1, 2, 3
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Roles:
    """Roles of the units of one source layer (see module docstring)."""

    kind: np.ndarray   # int8
    layer: np.ndarray  # int32: target layer t (NEURON, LIFT)
    index: np.ndarray  # int32: target neuron i / input j
    scale: np.ndarray  # float64: λ (CONST, LIFT)

    @staticmethod
    def empty(n: int) -> "Roles":
        return Roles(np.zeros(n, np.int8), np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.float64))

    @property
    def size(self) -> int:
        """Number of units of the layer."""
        return int(self.kind.size)

    def take(self, units) -> "Roles":
        """The roles of the given units (integer indices), in that order."""
        units = np.asarray(units, dtype=np.int64)
        return Roles(self.kind[units], self.layer[units], self.index[units], self.scale[units])

    def assigned(self) -> np.ndarray:
        """Sorted indices of the units whose kind is not UNUSED."""
        return np.flatnonzero(self.kind != UNUSED)


class SparseRoles:
    """The roles of a layer of ``n`` units stored only where they differ from :meth:`Roles.empty`: ``units`` (sorted,
    unique int64) and the kind/layer/index/scale of those units. The 2L construction assigns roles to a few units of
    sources of 10^7 units; a dense :class:`Roles` costs 17 bytes per source unit.

    ``kind``, ``layer``, ``index`` and ``scale`` give the dense arrays (built on each access, read-only: a write
    raises), so every reader of :class:`Roles` reads the same values; :meth:`take` and :meth:`assigned` do not build
    them. :meth:`dense` gives the equal :class:`Roles`."""

    def __init__(self, n: int, units, kind, layer, index, scale):
        units = np.asarray(units, dtype=np.int64)
        order = np.argsort(units, kind="stable")
        if units.size and (np.any(np.diff(units[order]) == 0) or units[order[0]] < 0 or units[order[-1]] >= n):
            raise ValueError(f"SparseRoles units must be distinct indices in 0..{n - 1}")
        self.n = int(n)
        self.units = units[order]
        self._kind = np.asarray(kind, dtype=np.int8)[order]
        self._layer = np.asarray(layer, dtype=np.int32)[order]
        self._index = np.asarray(index, dtype=np.int32)[order]
        self._scale = np.asarray(scale, dtype=np.float64)[order]

    def _dense(self, values, dtype) -> np.ndarray:
        out = np.zeros(self.n, dtype=dtype)
        out[self.units] = values
        out.flags.writeable = False
        return out

    kind = property(lambda self: self._dense(self._kind, np.int8))
    layer = property(lambda self: self._dense(self._layer, np.int32))
    index = property(lambda self: self._dense(self._index, np.int32))
    scale = property(lambda self: self._dense(self._scale, np.float64))

    @property
    def size(self) -> int:
        return self.n

    def dense(self) -> Roles:
        return Roles(self.kind.copy(), self.layer.copy(), self.index.copy(), self.scale.copy())

    def take(self, units) -> Roles:
        units = np.asarray(units, dtype=np.int64)
        pos = np.searchsorted(self.units, units)
        pos_c = np.minimum(pos, max(self.units.size - 1, 0))
        hit = (pos < self.units.size) & (self.units[pos_c] == units) if self.units.size else np.zeros(units.size, bool)
        out = Roles.empty(units.size)
        src = pos_c[hit]
        out.kind[hit], out.layer[hit] = self._kind[src], self._layer[src]
        out.index[hit], out.scale[hit] = self._index[src], self._scale[src]
        return out

    def assigned(self) -> np.ndarray:
        return self.units[self._kind != UNUSED]


class SparseMask:
    """A read-only bool array (1-D or 2-D) given by the sorted flat indices of its True entries — the sub-masks and
    bias masks of the 2L construction, which keeps a few entries per subset-sum instance of sources of 10^8–10^9
    weights (a dense bool sub-mask costs one byte per source weight).

    ``nonzero()`` gives the indices in the order of :func:`numpy.nonzero` of the dense array (row-major),
    ``count()`` the number of True entries, ``any(axis)`` as for ndarrays; ``numpy.asarray`` (``__array__``) builds
    the equal dense bool array (what the npz file stores), so ``np.savez``, ``np.where``, indexing and the bitwise
    operators give what they give for the dense array."""

    dtype = np.dtype(bool)

    def __init__(self, shape, flat_indices):
        self.shape = tuple(int(s) for s in shape)
        flat = np.unique(np.asarray(flat_indices, dtype=np.int64).ravel())
        size = int(np.prod(self.shape, dtype=object))
        if flat.size and (flat[0] < 0 or flat[-1] >= size):
            raise ValueError(f"SparseMask indices must lie in 0..{size - 1}")
        self.flat_indices = flat

    @classmethod
    def from_coords(cls, shape, rows, cols) -> "SparseMask":
        """The 2-D mask with True at (rows[i], cols[i]) (duplicates allowed)."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        return cls(shape, rows * int(shape[1]) + cols)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=object))

    def __len__(self) -> int:
        return self.shape[0]

    def count(self) -> int:
        return int(self.flat_indices.size)

    def nonzero(self) -> tuple:
        return np.unravel_index(self.flat_indices, self.shape) if self.ndim > 1 else (self.flat_indices.copy(),)

    def any(self, axis=None):
        """As ``ndarray.any``: a bool without ``axis`` (or for a 1-D mask), else the bool array along ``axis``."""
        if axis is None or self.ndim == 1:
            return bool(self.flat_indices.size)
        out = np.zeros(self.shape[1 - axis], dtype=bool)
        out[self.nonzero()[1 - axis]] = True
        return out

    def __array__(self, dtype=None, copy=None):
        out = np.zeros(self.shape, dtype=bool)
        out.reshape(-1)[self.flat_indices] = True
        return out if dtype is None else out.astype(dtype)

    def __getitem__(self, key):
        return np.asarray(self)[key]

    def __invert__(self):
        return ~np.asarray(self)

    def __and__(self, other):
        return np.asarray(self) & other

    def __or__(self, other):
        return np.asarray(self) | other

    def __xor__(self, other):
        return np.asarray(self) ^ other

    __rand__, __ror__, __rxor__ = __and__, __or__, __xor__

    def __repr__(self) -> str:
        return f"SparseMask(shape={self.shape}, count={self.count()})"


def mask_nonzero(mask) -> tuple:
    """``numpy.nonzero`` of a dense bool array or a :class:`SparseMask` (without building the dense array)."""
    return mask.nonzero() if isinstance(mask, SparseMask) else np.nonzero(mask)


def mask_count(mask) -> int:
    """Number of True entries of a dense bool array or a :class:`SparseMask`."""
    return mask.count() if isinstance(mask, SparseMask) else int(np.count_nonzero(mask))


@dataclass(frozen=True)
class Ticket:
    """A (weak or strong) ticket: target, source, sub-masks ``kept`` (S_t), ``bias_kept``, roles, metadata.
    ``kept``/``bias_kept``: bool arrays or :class:`SparseMask`; ``roles``: :class:`Roles` or :class:`SparseRoles`."""

    target: Target
    source: Source
    kept: tuple
    bias_kept: tuple
    roles: tuple
    weak_weights: tuple | None = None
    weak_biases: tuple | None = None
    meta: dict = field(default_factory=dict)

    @property
    def is_weak(self) -> bool:
        return self.weak_weights is not None

    @property
    def kept_params(self) -> int:
        """Number of weights the ticket keeps (Σ_t |S_t|)."""
        return int(sum(mask_count(s) for s in self.kept))

    def to_module(self, dtype=None, compact: bool = True, **kwargs):
        """The ticket as a PyTorch ``nn.Module`` (torch.float32 by default): only the units it uses when
        ``compact``, masks as ``torch.nn.utils.parametrize`` parametrizations. See :func:`construct.export.to_module`."""
        from construct.export import to_module

        return to_module(self, dtype, compact, **kwargs)


def effective_layer(ticket: Ticket, t: int):
    """(W_t ⊙ S_t as a float64 CSR matrix, b_t ⊙ bias_t as float64) for source layer t (1-based)."""
    s = ticket.kept[t - 1]
    rows, cols = mask_nonzero(s)
    if ticket.is_weak:
        vals = np.asarray(ticket.weak_weights[t - 1][rows, cols], dtype=np.float64)
        b = ticket.weak_biases[t - 1]
    else:  # gathered block by block: a drawn source layer is never materialized here
        layer = ticket.source.layers[t - 1]
        vals = layer.gather(rows, cols, with_mask=False)[0].astype(np.float64)
        b = layer.bias
    mat = sp.csr_matrix((vals, (rows, cols)), shape=s.shape)
    bias = np.where(np.asarray(ticket.bias_kept[t - 1], dtype=bool), np.asarray(b, dtype=np.float64), 0.0)
    return mat, bias


def effective_layers(ticket: Ticket) -> list:
    """[effective_layer(ticket, t) for t = 1..L_S] (compute once, pass to the functions that accept ``layers``)."""
    return [effective_layer(ticket, t) for t in range(1, len(ticket.kept) + 1)]


def ticket_forward(ticket: Ticket, x: np.ndarray, layers=None) -> np.ndarray:
    """The ticket's output for a batch x of shape (N, n_0): x_t = ReLU((W_t ⊙ S_t) x_{t−1} + b_t ⊙ bias_t).
    ``layers``: precomputed :func:`effective_layers` (optional)."""
    h = np.asarray(x, dtype=np.float64)
    depth = len(ticket.kept)
    for t in range(1, depth + 1):
        mat, bias = layers[t - 1] if layers is not None else effective_layer(ticket, t)
        h = (mat @ h.T).T + bias
        if t < depth:
            h = np.maximum(h, 0.0)
    return h


# ----------------------------------------------------------------------------------------------- npz format
def ticket_arrays(ticket: Ticket) -> dict:
    """The npz arrays of a ticket (see module docstring)."""
    arrays = {}
    for t, (w, b) in enumerate(zip(ticket.target.weights, ticket.target.biases), start=1):
        arrays[f"target_W{t}"] = w
        arrays[f"target_b{t}"] = b
    src = ticket.source
    for t in range(1, src.depth + 1):
        arrays[f"source_W{t}"] = src.weights[t - 1]
        arrays[f"source_b{t}"] = src.biases[t - 1]
        arrays[f"source_M{t}"] = src.masks[t - 1]
        arrays[f"ticket_S{t}"] = np.asarray(ticket.kept[t - 1])  # a SparseMask becomes its dense array
        arrays[f"ticket_bias{t}"] = np.asarray(ticket.bias_kept[t - 1])
        r = ticket.roles[t - 1]
        r = r.dense() if isinstance(r, SparseRoles) else r
        arrays[f"role_kind{t}"] = r.kind
        arrays[f"role_layer{t}"] = r.layer
        arrays[f"role_index{t}"] = r.index
        arrays[f"role_scale{t}"] = r.scale
        if ticket.is_weak:
            arrays[f"ticket_W{t}"] = ticket.weak_weights[t - 1]
            arrays[f"ticket_b{t}"] = ticket.weak_biases[t - 1]
    meta = dict(ticket.meta)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta["kind"] = "weak" if ticket.is_weak else "strong"
    meta["source_seed"] = src.seed
    meta["source_densities"] = list(src.densities)
    meta["weight_law"] = src.law
    arrays["meta"] = np.array(json.dumps(meta, default=float))
    return arrays


def save_ticket(path, ticket: Ticket) -> None:
    """Write the ticket to ``path`` as npz (atomically: a temporary file renamed into place; no pickle)."""
    arrays = ticket_arrays(ticket)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _need(data, key, path, dtype_kind, ndim, shape=None):
    if key not in data:
        raise ValueError(f"{path}: missing key {key}: not a valid ticket file")
    arr = data[key]
    if dtype_kind == "b" and arr.dtype != np.bool_:
        raise ValueError(f"{path}: {key} has dtype {arr.dtype}: allowed bool")
    if dtype_kind == "f" and not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: {key} has dtype {arr.dtype}: allowed a float dtype")
    if dtype_kind == "i" and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: {key} has dtype {arr.dtype}: allowed an integer dtype")
    if arr.ndim != ndim:
        raise ValueError(f"{path}: {key} has {arr.ndim} dimensions: allowed {ndim}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{path}: {key} has shape {arr.shape}: allowed {tuple(shape)}")
    if dtype_kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: {key} contains NaN or inf: allowed finite values")
    return arr


def _read_arrays(data, path):
    files = set(data.files)
    if "meta" not in files:
        raise ValueError(f"{path}: missing key meta: not a valid ticket file")
    try:
        meta = json.loads(str(data["meta"][()]))
    except (ValueError, TypeError, IndexError):
        raise ValueError(f"{path}: meta is not a JSON string") from None
    except RecursionError:
        raise ValueError(f"{path}: meta is JSON nested too deeply: allowed a flat JSON object") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: meta is not a JSON object")
    tw, tb = [], []
    t = 1
    while f"target_W{t}" in files:
        tw.append(_need(data, f"target_W{t}", path, "f", 2))
        tb.append(_need(data, f"target_b{t}", path, "f", 1))
        t += 1
    if not tw:
        raise ValueError(f"{path}: missing key target_W1: not a valid ticket file")
    target = make_target(tw, tb, name=str(meta.get("target", "target")))
    weak = meta.get("kind") == "weak"
    sw, sb, sm, ss, sbias, roles, ww, wb = [], [], [], [], [], [], [], []
    t = 1
    prev = target.widths[0]
    while f"source_W{t}" in files:
        w = _need(data, f"source_W{t}", path, "f", 2)
        if w.shape[1] != prev:
            raise ValueError(f"{path}: source_W{t} has {w.shape[1]} inputs, layer {t - 1} has {prev} units: allowed matching shapes")
        n = w.shape[0]
        sw.append(w)
        sb.append(_need(data, f"source_b{t}", path, "f", 1, (n,)))
        m = _need(data, f"source_M{t}", path, "b", 2, w.shape)
        s = _need(data, f"ticket_S{t}", path, "b", 2, w.shape)
        if np.any(s & ~m):
            raise ValueError(f"{path}: ticket_S{t} keeps {int(np.count_nonzero(s & ~m))} edges outside the ER mask source_M{t}: "
                             "a ticket must be a sub-mask")
        sm.append(m)
        ss.append(s)
        sbias.append(_need(data, f"ticket_bias{t}", path, "b", 1, (n,)))
        kind = _need(data, f"role_kind{t}", path, "i", 1, (n,))
        if np.any((kind < 0) | (kind > 3)):
            raise ValueError(f"{path}: role_kind{t} contains {int(kind[(kind < 0) | (kind > 3)][0])}: allowed 0..3")
        kind = kind.astype(np.int8)
        layer = _need(data, f"role_layer{t}", path, "i", 1, (n,)).astype(np.int64)
        index = _need(data, f"role_index{t}", path, "i", 1, (n,)).astype(np.int64)
        scale = _need(data, f"role_scale{t}", path, "f", 1, (n,)).astype(np.float64)
        roles.append(Roles(kind, layer, index, scale))
        if weak:
            ww.append(_need(data, f"ticket_W{t}", path, "f", 2, w.shape))
            wb.append(_need(data, f"ticket_b{t}", path, "f", 1, (n,)))
        prev = n
        t += 1
    if not sw:
        raise ValueError(f"{path}: missing key source_W1: not a valid ticket file")
    return meta, target, weak, sw, sb, sm, ss, sbias, roles, ww, wb, prev


def _is_number(value) -> bool:
    """A JSON number that converts to float64 (bools and integers beyond float range are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, float) or abs(value) < 2 ** 1023


_NUMBER_OR_NULL = ("certificate", "eps", "weight_eps", "delta")
_STRINGS = ("kind", "construction", "weight_law", "target")


def check_meta_types(meta: dict, path, source_depth: int) -> None:
    """Raise a one-line ValueError when a meta entry that ``load_ticket``/``verify`` read has the wrong JSON type
    (a malformed file). Values of the right type but outside what is allowed (a density 2.0, an unknown weight law, a
    box of three numbers, an infinite certificate) are *claims* that :func:`construct.verify.verify_ticket` reports
    as INVALID, not type errors."""
    for key in _NUMBER_OR_NULL:
        if key in meta and meta[key] is not None and not _is_number(meta[key]):
            raise ValueError(f"{path}: meta {key}={_short(meta[key])} has type {type(meta[key]).__name__}: "
                             "allowed a number or null")
    for key in _STRINGS:
        if key in meta and not isinstance(meta[key], str):
            raise ValueError(f"{path}: meta {key}={_short(meta[key])} has type {type(meta[key]).__name__}: "
                             "allowed a string")
    if "source_seed" in meta:
        seed = meta["source_seed"]
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"{path}: meta source_seed={_short(seed)} has type {type(seed).__name__}: "
                             "allowed an integer")
        if seed.bit_length() > 128:
            raise ValueError(f"{path}: meta source_seed has {seed.bit_length()} bits: allowed an integer below 2^128")
    if "box" in meta:
        box = meta["box"]
        if not isinstance(box, list) or not all(_is_number(v) for v in box):
            raise ValueError(f"{path}: meta box={_short(box)}: allowed a list of two numbers a < b")
    if "source_densities" in meta:
        dens = meta["source_densities"]
        if not _is_number(dens):
            if not isinstance(dens, list) or not all(_is_number(v) for v in dens):
                raise ValueError(f"{path}: meta source_densities={_short(dens)}: allowed a list of numbers, one per "
                                 "source layer")
            if len(dens) != source_depth:
                raise ValueError(f"{path}: meta source_densities has {len(dens)} entries: allowed {source_depth} "
                                 "(one per source layer)")


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def load_ticket(path) -> Ticket:
    """Read and validate a ticket npz (``allow_pickle=False``): keys, dtypes, shapes, S ⊆ M, roles in range.

    Raises a one-line ``ValueError`` naming what is wrong.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a valid npz file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    try:
        with data:
            return_value = _read_arrays(data, path)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: corrupted npz member ({type(exc).__name__})") from None
    meta, target, weak, sw, sb, sm, ss, sbias, roles, ww, wb, prev = return_value
    if prev != target.widths[-1]:
        raise ValueError(f"{path}: the source has {prev} outputs but the target has {target.widths[-1]}: allowed equal")
    check_meta_types(meta, path, len(sw))
    dens = meta.get("source_densities", 1.0)
    dens = [float(dens)] * len(sw) if _is_number(dens) else [float(d) for d in dens]
    seed = meta.get("source_seed", 0)
    source = Source.from_arrays(sw, sb, sm, dens, seed if seed >= 0 else 0, meta.get("weight_law", "uniform"))
    ticket = Ticket(target, source, tuple(ss), tuple(sbias), tuple(roles),
                    tuple(ww) if weak else None, tuple(wb) if weak else None, meta)
    from construct.certificate import check_roles  # validation of roles needs the target's widths

    check_roles(ticket, where=str(path))
    return ticket
