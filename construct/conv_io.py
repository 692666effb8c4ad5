"""Ticket files of strong 2L tickets of convolutional and residual targets (docs/math.md §6, §9). Pure numpy.

One npz (written atomically, loaded with ``allow_pickle=False``; no pickle anywhere). The source is *not* stored: it
is regenerated from its seed, dtype, densities and layer shapes (:func:`construct.conv_source.sample_conv_source`
draws only what is read), which is what :func:`construct.conv_verify.verify_conv_ticket` checks the ticket against.

Keys (Lw = number of weighted layers, i = 1..Lw in execution order):

- ``architecture``: JSON string ``{"name": ..., "layers": [{"kind", "name", "inputs", <attrs>}, ...]}``, the
  *folded* target's records in execution order (no BatchNorm left; conv2d attrs stride, padding; pooling attrs
  kernel_size, stride, padding);
- ``target_<i>_weight`` (float64, (c_out, c_in, k_h, k_w) or (n_out, n_in)), ``target_<i>_bias`` (float64);
- ``input_shape`` (int64, (c, H, W) or (n,)), ``box`` (float64, [a, b]);
- per weighted layer the selection (:class:`construct.conv_ticket.LayerSelection`): ``ticket_<i>_units`` (int64,
  strictly increasing, < fan_in·k), ``ticket_<i>_a`` (float64), ``ticket_<i>_bias_units`` (int64, strictly
  increasing, in [fan_in·k, fan_in·k + g0)), ``ticket_<i>_beta`` (float64), ``ticket_<i>_rows``, ``ticket_<i>_cols``
  (int64, (row, col) strictly increasing row-major, every col a kept A channel), ``ticket_<i>_v`` (float64);
- ``source``: JSON string ``{"seed", "dtype", "densities": [p_A1, p_B1, …], "layers": [[fan_in, fan_out, k, g0],
  …]}``;
- ``meta``: JSON string: ``construction`` "2l-conv", ``format_version``, ``certificate``, ``eps``, ``weight_eps``,
  ``delta`` (numbers or null), ``densities``, ``batchnorm_folded`` ([[batchnorm, conv], …]), ``package_version``
  and whatever else the builder stored.

:func:`load_conv_ticket` validates every key (dtype, shape, index ranges, order, finiteness, JSON types) and raises a
one-line ``ValueError`` naming the key; it does not judge the claims (that is verify's job).

**Target files** (:func:`save_conv_target`, :func:`load_conv_target_file`; what ``--target file.npz`` reads for a
convolutional or residual network): the keys ``architecture``, ``target_<i>_weight``, ``target_<i>_bias`` and
``input_shape`` of the layout above — a folded network (BatchNorm already folded into its convolutions, e.g. by
:func:`construct.conv_target.conv_target`). A ticket file is also a target file (its box is not used: the box is
a property of the run).
"""
from __future__ import annotations

import json
import zipfile
import zlib

import numpy as np

from theory.atomic import atomic_path

__all__ = ["save_conv_ticket", "load_conv_ticket", "conv_ticket_arrays", "is_conv_ticket_file", "CONSTRUCTION",
           "FORMAT_VERSION", "save_conv_target", "load_conv_target_file", "is_conv_target_file", "conv_target_arrays"]

CONSTRUCTION = "2l-conv"
FORMAT_VERSION = 1
_SELECTION = ("units", "a", "bias_units", "beta", "rows", "cols", "v")
_INDEX = ("units", "bias_units", "rows", "cols")
_ATTRS = {"conv2d": ("stride", "padding"), "maxpool2d": ("kernel_size", "stride", "padding"),
          "avgpool2d": ("kernel_size", "stride", "padding")}
_KINDS = ("linear", "relu", "flatten", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool", "add")
_NUMBER_OR_NULL = ("certificate", "eps", "weight_eps", "delta")


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("er-tickets")
    except Exception:  # noqa: BLE001 - not installed: say so
        return "unknown"


def conv_ticket_arrays(ticket) -> dict:
    """The npz arrays of a :class:`construct.conv_ticket.ConvTicket` (module docstring). The certificate is taken
    from ``ticket.meta`` or, when absent, computed (:func:`construct.conv_ticket.conv_certificate`)."""
    target, source = ticket.target, ticket.source
    records = []
    for rec in target.architecture.layers:
        item = {"kind": rec.kind, "name": rec.name, "inputs": list(rec.inputs)}
        item.update({k: [int(u) for u in v] if isinstance(v, (tuple, list)) else v for k, v in rec.attrs.items()})
        records.append(item)
    arrays = {"architecture": np.array(json.dumps({"name": target.name, "layers": records})),
              "input_shape": np.asarray(target.input_shape, dtype=np.int64),
              "box": np.asarray(target.box, dtype=np.float64)}
    layers = []
    for wl, sel, (A, B) in zip(target.weighted, ticket.layers, source.pairs):
        i = wl.index
        arrays[f"target_{i}_weight"] = np.asarray(wl.weight, dtype=np.float64)
        arrays[f"target_{i}_bias"] = np.asarray(wl.bias, dtype=np.float64)
        for key in _SELECTION:
            arrays[f"ticket_{i}_{key}"] = np.asarray(getattr(sel, key), dtype=np.int64 if key in _INDEX else np.float64)
        layers.append([int(A.fan_in), int(B.shape[0]), int(A.k), int(A.g0)])
    arrays["source"] = np.array(json.dumps({"seed": int(source.seed), "dtype": source.dtype,
                                            "densities": [float(d) for d in source.densities], "layers": layers}))
    meta = dict(ticket.meta)
    meta["construction"] = CONSTRUCTION
    meta["format_version"] = FORMAT_VERSION
    if meta.get("certificate") is None:
        from construct.conv_ticket import conv_certificate

        meta["certificate"] = conv_certificate(ticket).certificate
    for key in ("eps", "weight_eps", "delta"):
        meta.setdefault(key, None)
    meta["densities"] = [float(d) for d in source.densities]
    meta["batchnorm_folded"] = meta.get("batchnorm_folded", [[bn, conv] for bn, conv in target.folded])
    meta.setdefault("package_version", _package_version())
    arrays["meta"] = np.array(json.dumps(meta, default=float))
    return arrays


def write_npz(path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` as npz, atomically (a temporary file renamed into place; no pickle)."""
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def save_conv_ticket(path, ticket) -> None:
    """Write the ticket to ``path`` as npz (atomically: a temporary file renamed into place; no pickle)."""
    write_npz(path, conv_ticket_arrays(ticket))


# ----------------------------------------------------------------------------------------------------- loading
def _is_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, float) or abs(value) < 2 ** 1023


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _member(data, key, path):
    if key not in data.files:
        raise ValueError(f"{path}: missing key {key}: not a valid 2l-conv ticket file")
    try:
        return data[key]
    except ValueError:  # object arrays need pickle, which is never allowed
        raise ValueError(f"{path}: {key} is an object array: allowed plain numeric or string arrays (no pickle)") from None


def _json(data, key, path):
    arr = _member(data, key, path)
    if arr.dtype.kind != "U" or arr.ndim != 0:
        raise ValueError(f"{path}: {key} has dtype {arr.dtype} and shape {arr.shape}: allowed a JSON string")
    try:
        value = json.loads(str(arr[()]))
    except (ValueError, RecursionError):
        raise ValueError(f"{path}: {key} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {key} is not a JSON object")
    return value


def _array(data, key, path, dtype, ndim, shape=None):
    arr = _member(data, key, path)
    if arr.dtype != np.dtype(dtype):
        raise ValueError(f"{path}: {key} has dtype {arr.dtype}: allowed {np.dtype(dtype)}")
    if arr.ndim != ndim:
        raise ValueError(f"{path}: {key} has {arr.ndim} dimensions: allowed {ndim}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{path}: {key} has shape {arr.shape}: allowed {tuple(shape)}")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"{path}: {key} contains NaN or inf: allowed finite values")
    return arr


def _pair(value, key, path):
    low = 0 if key == "padding" else 1
    if (not isinstance(value, list) or len(value) != 2 or not all(_is_int(v) for v in value)
            or min(value) < low or max(value) > 2 ** 31):
        raise ValueError(f"{path}: architecture {key}={value!r}: allowed two integers >= {low}")
    return tuple(value)


def _records(data, path):
    from construct.architecture import Layer

    desc = _json(data, "architecture", path)
    layers = desc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: architecture has no 'layers' list: allowed a non-empty list of records")
    name = desc.get("name", "target")
    if not isinstance(name, str):
        raise ValueError(f"{path}: architecture name={name!r}: allowed a string")
    records, w = [], 0
    for j, item in enumerate(layers):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: architecture layers[{j}] is a {type(item).__name__}: allowed an object")
        kind, rname, inputs = item.get("kind"), item.get("name"), item.get("inputs")
        if kind not in _KINDS:
            raise ValueError(f"{path}: architecture layers[{j}] has kind {kind!r}: allowed {', '.join(_KINDS)}")
        if not isinstance(rname, str) or not rname:
            raise ValueError(f"{path}: architecture layers[{j}] has name {rname!r}: allowed a non-empty string")
        if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
            raise ValueError(f"{path}: architecture layers[{j}] has inputs {inputs!r}: allowed a list of names")
        extra = set(item) - {"kind", "name", "inputs", *_ATTRS.get(kind, ())}
        if extra:
            raise ValueError(f"{path}: architecture layers[{j}] ({kind}) has unknown fields {sorted(extra)}")
        attrs = {}
        for key in _ATTRS.get(kind, ()):
            if key not in item:
                raise ValueError(f"{path}: architecture layers[{j}] ({kind}) has no {key}")
            attrs[key] = _pair(item[key], key, path)
        params = {}
        if kind in ("conv2d", "linear"):
            w += 1
            weight = _array(data, f"target_{w}_weight", path, np.float64, 4 if kind == "conv2d" else 2)
            if min(weight.shape) < 1:
                raise ValueError(f"{path}: target_{w}_weight has shape {weight.shape}: allowed positive sizes")
            bias = _array(data, f"target_{w}_bias", path, np.float64, 1, (weight.shape[0],))
            params = {"weight": weight, "bias": bias}
        records.append(Layer(kind, rname, tuple(inputs), params, attrs))
    if f"target_{w + 1}_weight" in data.files:
        raise ValueError(f"{path}: target_{w + 1}_weight has no conv2d or linear record in the architecture: "
                         f"allowed {w} weighted layers")
    return name, records


def _source(data, path, weighted):
    from construct.source import SOURCE_DTYPES

    src = _json(data, "source", path)
    seed, dtype, dens, layers = src.get("seed"), src.get("dtype"), src.get("densities"), src.get("layers")
    if not _is_int(seed) or seed < 0 or seed.bit_length() > 128:
        raise ValueError(f"{path}: source seed={seed!r}: allowed an integer in [0, 2^128)")
    if dtype not in SOURCE_DTYPES:
        raise ValueError(f"{path}: source dtype={dtype!r}: allowed one of {', '.join(SOURCE_DTYPES)}")
    lw = len(weighted)
    if (not isinstance(dens, list) or len(dens) != 2 * lw
            or not all(_is_number(d) and 0.0 < float(d) <= 1.0 for d in dens)):
        raise ValueError(f"{path}: source densities={json.dumps(dens)[:60]}: allowed {2 * lw} densities in (0, 1] "
                         "(p_A, p_B per weighted layer)")
    if not isinstance(layers, list) or len(layers) != lw:
        raise ValueError(f"{path}: source layers={json.dumps(layers)[:60]}: allowed a list of {lw} [fan_in, fan_out, k, "
                         "g0] (one per weighted layer)")
    out = []
    for wl, item in zip(weighted, layers):
        if not isinstance(item, list) or len(item) != 4 or not all(_is_int(v) for v in item):
            raise ValueError(f"{path}: source layers[{wl.index - 1}]={item!r}: allowed [fan_in, fan_out, k, g0]")
        fan_in, fan_out, k, g0 = item
        if (fan_in, fan_out) != (wl.fan_in, wl.fan_out):
            raise ValueError(f"{path}: source layers[{wl.index - 1}] has fan_in, fan_out {fan_in}, {fan_out} but "
                             f"layer {wl.name!r} has {wl.fan_in}, {wl.fan_out}: allowed equal")
        if not (1 <= k < 2 ** 31 and 0 <= g0 < 2 ** 40):
            raise ValueError(f"{path}: source layers[{wl.index - 1}] has k={k}, g0={g0}: allowed k >= 1, g0 >= 0")
        out.append((fan_in, fan_out, k, g0))
    return int(seed), dtype, [float(d) for d in dens], out


def _strictly_increasing(arr) -> bool:
    return bool(arr.size < 2 or np.all(arr[1:] > arr[:-1]))


def _selection(data, path, wl, k, g0):
    from construct.conv_ticket import LayerSelection

    i, ded = wl.index, wl.fan_in * k
    m = ded + g0
    units = _array(data, f"ticket_{i}_units", path, np.int64, 1)
    a = _array(data, f"ticket_{i}_a", path, np.float64, 1, units.shape)
    bias_units = _array(data, f"ticket_{i}_bias_units", path, np.int64, 1)
    beta = _array(data, f"ticket_{i}_beta", path, np.float64, 1, bias_units.shape)
    rows = _array(data, f"ticket_{i}_rows", path, np.int64, 1)
    cols = _array(data, f"ticket_{i}_cols", path, np.int64, 1, rows.shape)
    v = _array(data, f"ticket_{i}_v", path, np.float64, 1, rows.shape)
    if units.size and (units.min() < 0 or units.max() >= ded):
        raise ValueError(f"{path}: ticket_{i}_units has entries outside [0, {ded}): allowed dedicated A channels "
                         f"(fan_in·k = {wl.fan_in}·{k})")
    if not _strictly_increasing(units):
        raise ValueError(f"{path}: ticket_{i}_units is not strictly increasing: allowed sorted unique channels")
    if bias_units.size and (bias_units.min() < ded or bias_units.max() >= m):
        raise ValueError(f"{path}: ticket_{i}_bias_units has entries outside [{ded}, {m}): allowed bias-group channels")
    if not _strictly_increasing(bias_units):
        raise ValueError(f"{path}: ticket_{i}_bias_units is not strictly increasing: allowed sorted unique channels")
    if rows.size and (rows.min() < 0 or rows.max() >= wl.fan_out):
        raise ValueError(f"{path}: ticket_{i}_rows has entries outside [0, {wl.fan_out}): allowed output channels")
    if cols.size and (cols.min() < 0 or cols.max() >= m):
        raise ValueError(f"{path}: ticket_{i}_cols has entries outside [0, {m}): allowed A channels")
    if rows.size > 1:
        r0, r1, c0, c1 = rows[:-1], rows[1:], cols[:-1], cols[1:]
        if not np.all((r1 > r0) | ((r1 == r0) & (c1 > c0))):
            raise ValueError(f"{path}: ticket_{i}_rows/ticket_{i}_cols are not strictly increasing (row-major): "
                             "allowed sorted entries, each at most once")
    kept = np.concatenate([units, bias_units])  # sorted: every bias unit is >= fan_in·k > every unit
    pos = np.minimum(np.searchsorted(kept, cols), max(kept.size - 1, 0))
    if cols.size and (kept.size == 0 or np.any(kept[pos] != cols)):
        raise ValueError(f"{path}: ticket_{i}_cols reads A channels that are not kept (not in ticket_{i}_units or "
                         f"ticket_{i}_bias_units): allowed kept channels only")
    return LayerSelection(wl.name, int(k), int(g0), units, a, bias_units, beta, rows, cols, v)


def _check_meta(meta, path):
    if meta.get("construction") != CONSTRUCTION:
        raise ValueError(f"{path}: meta construction={meta.get('construction')!r}: allowed {CONSTRUCTION!r} "
                         "(other tickets: construct.ticket.load_ticket)")
    for key in _NUMBER_OR_NULL:
        if meta.get(key) is not None and not _is_number(meta[key]):
            raise ValueError(f"{path}: meta {key}={meta[key]!r} has type {type(meta[key]).__name__}: allowed a number "
                             "or null")
    dens = meta.get("densities")
    if dens is not None and (not isinstance(dens, list) or not all(_is_number(d) for d in dens)):
        raise ValueError(f"{path}: meta densities={json.dumps(dens)[:60]}: allowed a list of numbers")
    folded = meta.get("batchnorm_folded", [])
    if not isinstance(folded, list) or not all(isinstance(f, list) and len(f) == 2 and all(isinstance(s, str) for s in f)
                                               for f in folded):
        raise ValueError(f"{path}: meta batchnorm_folded={json.dumps(folded)[:60]}: allowed a list of [batchnorm, conv] "
                         "name pairs")


def _open(path):
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path}: not a valid npz file ({msg})") from None


def stored_target(data, path):
    """The folded :class:`construct.conv_target.ConvTarget` a ticket file stores (``architecture``, the target
    arrays, ``input_shape`` and ``box``), every key validated; one-line ValueErrors naming the key."""
    from construct.architecture import Architecture
    from construct.conv_target import conv_target

    name, records = _records(data, path)
    shape = _array(data, "input_shape", path, np.int64, 1)
    if shape.size not in (1, 3) or shape.min() < 1 or shape.max() > 2 ** 31:
        raise ValueError(f"{path}: input_shape={shape.tolist()}: allowed (channels, H, W) or (features,), "
                         "positive integers")
    box = _array(data, "box", path, np.float64, 1, (2,))
    if not box[0] < box[1]:
        raise ValueError(f"{path}: box={box.tolist()}: allowed a < b")
    try:
        return conv_target(Architecture(tuple(records), name=name), tuple(int(s) for s in shape),
                           box=(float(box[0]), float(box[1])), name=name)
    except ValueError as exc:
        raise ValueError(f"{path}: architecture: {exc}") from None


def is_conv_ticket_file(path) -> bool:
    """True iff ``path`` is an npz whose meta says construction "2l-conv" (nothing else is validated)."""
    try:
        with _open(path) as data:
            return "architecture" in data.files and _json(data, "meta", path).get("construction") == CONSTRUCTION
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error):
        return False


def load_conv_ticket(path):
    """Read and validate a 2L conv ticket npz (module docstring); the source is regenerated lazily from its
    description (nothing is drawn here). Returns a :class:`construct.conv_ticket.ConvTicket` whose ``meta`` is the
    file's meta. A malformed file raises a one-line ``ValueError`` naming the key."""
    from construct.conv_source import sample_conv_source
    from construct.conv_ticket import ConvTicket

    data = _open(path)
    try:
        with data:
            meta = _json(data, "meta", path)
            _check_meta(meta, path)
            target = stored_target(data, path)
            if target.folded:
                raise ValueError(f"{path}: architecture contains BatchNorm: allowed the folded target")
            seed, dtype, dens, layers = _source(data, path, target.weighted)
            sels = tuple(_selection(data, path, wl, k, g0) for wl, (_, _, k, g0) in zip(target.weighted, layers))
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: corrupted npz member ({type(exc).__name__})") from None
    source = sample_conv_source(layers, dens, seed, dtype=dtype)
    return ConvTicket(target, source, sels, meta)


def conv_target_arrays(target) -> dict:
    """The npz arrays of a target file (module docstring) for a :class:`construct.conv_target.ConvTarget` (folded: no
    BatchNorm records)."""
    records = []
    for rec in target.architecture.layers:
        item = {"kind": rec.kind, "name": rec.name, "inputs": list(rec.inputs)}
        item.update({k: [int(u) for u in v] if isinstance(v, (tuple, list)) else v for k, v in rec.attrs.items()})
        records.append(item)
    arrays = {"architecture": np.array(json.dumps({"name": target.name, "layers": records})),
              "input_shape": np.asarray(target.input_shape, dtype=np.int64)}
    for wl in target.weighted:
        arrays[f"target_{wl.index}_weight"] = np.asarray(wl.weight, dtype=np.float64)
        arrays[f"target_{wl.index}_bias"] = np.asarray(wl.bias, dtype=np.float64)
    return arrays


def save_conv_target(path, target) -> None:
    """Write a convolutional target (a :class:`construct.conv_target.ConvTarget`, BatchNorm folded) as an npz target
    file (atomically; no pickle)."""
    write_npz(path, conv_target_arrays(target))


def is_conv_target_file(path) -> bool:
    """True iff ``path`` is an npz with an ``architecture`` key (a conv target or ticket file; nothing validated)."""
    try:
        with _open(path) as data:
            return "architecture" in data.files
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error):
        return False


def load_conv_target_file(path, box=(-1.0, 1.0)):
    """The :class:`construct.conv_target.ConvTarget` of a target (or ticket) file, with the input box ``box``;
    every key validated, one-line ValueErrors naming the key."""
    from construct.architecture import Architecture
    from construct.conv_target import conv_target

    data = _open(path)
    try:
        with data:
            name, records = _records(data, path)
            shape = _array(data, "input_shape", path, np.int64, 1)
            if shape.size not in (1, 3) or shape.min() < 1 or shape.max() > 2 ** 31:
                raise ValueError(f"{path}: input_shape={shape.tolist()}: allowed (channels, H, W) or (features,), "
                                 "positive integers")
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: corrupted npz member ({type(exc).__name__})") from None
    try:
        return conv_target(Architecture(tuple(records), name=name), tuple(int(v) for v in shape), box=box, name=name)
    except ValueError as exc:
        raise ValueError(f"{path}: architecture: {exc}") from None
