"""Files of weak tickets of CNNs and ResNets, and their verification trusting nothing in the file (docs/math.md §9,
§4). Pure numpy; one npz written atomically, read with ``allow_pickle=False``.

Keys (L = number of weighted target layers; source layer ℓ = 1 is the lifting, ℓ = t + 1 carries weighted layer t):

- the target keys of :mod:`construct.conv_io` (``architecture``, ``target_<t>_weight``, ``target_<t>_bias``,
  ``input_shape``: the folded target) and ``box`` (float64 [a, b]);
- per source layer ℓ = 1..L+1: ``ticket_<ℓ>_rows``, ``ticket_<ℓ>_cols`` (int64; (row, col) strictly increasing
  row-major) and ``ticket_<ℓ>_weight`` (float64): the kept entries in the layer's (rows, in_channels·block) layout
  (the lifting: (channel, virtual input), weight ±1); ``ticket_<ℓ>_active`` (int64, strictly increasing): the
  output channels the ticket computes;
- ``source``: JSON ``{"seed", "densities": [p_1, …, p_{L+1}], "lifting_group": g, "copies": [r out per weighted
  layer], "input_copies": [null, r in per weighted layer t ≥ 2]}`` — the source is regenerated from it, never stored;
- ``meta``: JSON: ``construction`` "weak-conv", ``format_version``, ``certificate``, ``delta``, ``densities``,
  ``batchnorm_folded``, ``package_version`` and what the builder stored.

:func:`verify_weak_conv_ticket` checks: every kept entry inside the regenerated ER masks (a lifting entry on its
channel's dedicated, usable kernel entry); every weight the weak construction's (±1 in the lifting; ±W_1[i, v] from
the two lifting groups of v in source layer 2; W_t[i, v] from a copy of v's channel later), at most one per needed
edge; every channel a computed channel reads is computed (both inputs of an addition compute the same channels);
the certificate recomputed from the entries alone (missing needed edges · B_v, propagated through the kept weights
and additions) finite and equal to the stored one; the sampled error of the stored network (its
:class:`construct.architecture.Architecture`, evaluated by :func:`construct.architecture.architecture_forward`) ≤ the
certificate. VALID iff all hold.
"""
from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from construct.conv_io import (_array, _is_int, _is_number, _json, _open, _package_version, conv_target_arrays,
                               stored_target, write_npz)

__all__ = ["CONSTRUCTION", "FORMAT_VERSION", "weak_conv_ticket_arrays", "save_weak_conv_ticket",
           "is_weak_conv_ticket_file", "load_weak_conv_ticket", "WeakVerifyResult", "verify_weak_conv_ticket"]

CONSTRUCTION = "weak-conv"
FORMAT_VERSION = 1
_SAMPLE_TAG = 0x3EA4  # the stream of construct.conv_weak.conv_weak_sampled_error


def _seed(ticket) -> int:
    return int(ticket.source.seed if hasattr(ticket, "source") else ticket.lifting.seed)


def weak_conv_ticket_arrays(ticket) -> dict:
    """The npz arrays (module docstring) of a weak ticket of a CNN (:class:`construct.conv_weak.ConvWeakTicket`) or
    ResNet (:class:`construct.conv_weak_residual.ResidualWeakTicket`)."""
    target = ticket.target
    arrays = conv_target_arrays(target)
    arrays["box"] = np.asarray(target.box, dtype=np.float64)
    for ell, layer in enumerate(ticket.layers, start=1):
        order = np.lexsort((layer.cols, layer.rows))
        arrays[f"ticket_{ell}_rows"] = np.asarray(layer.rows[order], dtype=np.int64)
        arrays[f"ticket_{ell}_cols"] = np.asarray(layer.cols[order], dtype=np.int64)
        arrays[f"ticket_{ell}_weight"] = np.asarray(layer.weight[order], dtype=np.float64)
        arrays[f"ticket_{ell}_active"] = np.asarray(layer.active, dtype=np.int64)
    w = target.weighted
    lift = ticket.layers[0]
    g = lift.copies // 2
    source = {"seed": _seed(ticket), "densities": [float(p) for p in ticket.meta["densities"]],
              "lifting_group": int(g), "copies": [int(layer.copies) for layer in ticket.layers[1:]],
              "input_copies": [None] + [int(layer.n_cols // w[t].fan_in) for t, layer in
                                        enumerate(ticket.layers[1:]) if t >= 1]}
    arrays["source"] = np.array(json.dumps(source))
    meta = dict(ticket.meta)
    meta["construction"] = CONSTRUCTION
    meta["format_version"] = FORMAT_VERSION
    meta["certificate"] = float(ticket.certificate)
    meta.setdefault("package_version", _package_version())
    arrays["meta"] = np.array(json.dumps(meta, default=float))
    return arrays


def save_weak_conv_ticket(path, ticket) -> None:
    """Write the weak ticket to ``path`` as npz (atomically; no pickle)."""
    write_npz(path, weak_conv_ticket_arrays(ticket))


def is_weak_conv_ticket_file(path) -> bool:
    """True iff ``path`` is an npz whose meta says construction "weak-conv" (nothing else is validated)."""
    try:
        with _open(path) as data:
            return "architecture" in data.files and _json(data, "meta", path).get("construction") == CONSTRUCTION
    except (ValueError, OSError, zipfile.BadZipFile, zlib.error):
        return False


@dataclass(frozen=True)
class WeakTicketFile:
    """A loaded, validated weak conv ticket file: the folded target, per source layer (rows, cols, weight, active),
    the source description and the meta."""

    target: object
    entries: tuple
    seed: int
    densities: tuple
    lifting_group: int
    copies: tuple
    input_copies: tuple
    meta: dict


def _sorted_pairs(rows, cols) -> bool:
    if rows.size < 2:
        return True
    r0, r1, c0, c1 = rows[:-1], rows[1:], cols[:-1], cols[1:]
    return bool(np.all((r1 > r0) | ((r1 == r0) & (c1 > c0))))


def _source_desc(data, path, L):
    src = _json(data, "source", path)
    seed, dens, g = src.get("seed"), src.get("densities"), src.get("lifting_group")
    copies, inp = src.get("copies"), src.get("input_copies")
    if not _is_int(seed) or seed < 0 or seed.bit_length() > 128:
        raise ValueError(f"{path}: source seed={seed!r}: allowed an integer in [0, 2^128)")
    if (not isinstance(dens, list) or len(dens) != L + 1
            or not all(_is_number(d) and 0.0 < float(d) <= 1.0 for d in dens)):
        raise ValueError(f"{path}: source densities={json.dumps(dens)[:60]}: allowed {L + 1} densities in (0, 1]")
    if not _is_int(g) or not 1 <= g < 2 ** 40:
        raise ValueError(f"{path}: source lifting_group={g!r}: allowed an integer >= 1")
    if not isinstance(copies, list) or len(copies) != L or not all(_is_int(c) and 1 <= c < 2 ** 40 for c in copies):
        raise ValueError(f"{path}: source copies={json.dumps(copies)[:60]}: allowed {L} integers >= 1")
    if (not isinstance(inp, list) or len(inp) != L or inp[0] is not None
            or not all(_is_int(c) and 1 <= c < 2 ** 40 for c in inp[1:])):
        raise ValueError(f"{path}: source input_copies={json.dumps(inp)[:60]}: allowed null then {L - 1} integers >= 1")
    return int(seed), tuple(float(d) for d in dens), int(g), tuple(copies), tuple(inp)


def load_weak_conv_ticket(path) -> WeakTicketFile:
    """Read and validate a weak conv ticket file (module docstring): every key's dtype, shape, index range and
    order, finite values, JSON types; a malformed file raises a one-line ``ValueError`` naming the key. The claims
    are not judged here (:func:`verify_weak_conv_ticket`)."""
    from construct.conv_weak import _input_blocks

    data = _open(path)
    try:
        with data:
            meta = _json(data, "meta", path)
            if meta.get("construction") != CONSTRUCTION:
                raise ValueError(f"{path}: meta construction={meta.get('construction')!r}: allowed {CONSTRUCTION!r}")
            for key in ("certificate", "delta"):
                if meta.get(key) is not None and not _is_number(meta[key]):
                    raise ValueError(f"{path}: meta {key}={meta[key]!r} has type {type(meta[key]).__name__}: allowed a "
                                     "number or null")
            target = stored_target(data, path)
            w = target.weighted
            L = len(w)
            seed, dens, g, copies, inp = _source_desc(data, path, L)
            blocks = _input_blocks(target)
            shapes = [(2 * g * w[0].fan_in, w[0].fan_in)]  # (rows, cols) of every source layer
            shapes.append((copies[0] * w[0].fan_out, 2 * g * w[0].fan_in))
            for t in range(1, L):
                shapes.append((copies[t] * w[t].fan_out, inp[t] * w[t].fan_in))
            entries = []
            for ell, (n_rows, n_cols) in enumerate(shapes, start=1):
                rows = _array(data, f"ticket_{ell}_rows", path, np.int64, 1)
                cols = _array(data, f"ticket_{ell}_cols", path, np.int64, 1, rows.shape)
                weight = _array(data, f"ticket_{ell}_weight", path, np.float64, 1, rows.shape)
                active = _array(data, f"ticket_{ell}_active", path, np.int64, 1)
                if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
                    raise ValueError(f"{path}: ticket_{ell}_rows has entries outside [0, {n_rows}): allowed the source "
                                     "layer's channels")
                if cols.size and (cols.min() < 0 or cols.max() >= n_cols):
                    raise ValueError(f"{path}: ticket_{ell}_cols has entries outside [0, {n_cols}): allowed the source "
                                     "layer's columns")
                if not _sorted_pairs(rows, cols):
                    raise ValueError(f"{path}: ticket_{ell}_rows/ticket_{ell}_cols are not strictly increasing "
                                     "(row-major): allowed sorted entries, each at most once")
                if active.size and (active.min() < 0 or active.max() >= n_rows
                                    or np.any(active[1:] <= active[:-1])):
                    raise ValueError(f"{path}: ticket_{ell}_active is not a strictly increasing list of channels in "
                                     f"[0, {n_rows}): allowed sorted unique channels")
                block = 1 if ell <= 2 else blocks[w[ell - 2].name]
                entries.append((rows, cols, weight, active, n_rows, n_cols, block))
            if f"ticket_{L + 2}_rows" in data.files:
                raise ValueError(f"{path}: ticket_{L + 2}_rows has no source layer: allowed {L + 1} source layers")
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: corrupted npz member ({type(exc).__name__})") from None
    return WeakTicketFile(target, tuple(entries), seed, dens, g, copies, inp, meta)


# ------------------------------------------------------------------------------------------------------- verify
@dataclass(frozen=True)
class WeakVerifyResult:
    """Verdict on a weak conv ticket file: ``valid`` iff ``reasons`` is empty."""

    path: str
    construction: str
    kept_params: int
    submask: bool                 # every kept entry has mask 1 (lifting: dedicated, usable)
    weights_match: bool           # every kept weight is the construction's, at most one per needed edge
    channels_consistent: bool     # every channel read by a computed channel is computed
    certificate: float
    stored_certificate: float | None
    certificate_matches: bool
    missing_edges: int            # needed edges of computed channels without a kept entry
    sampled_error: float
    samples: int
    sampled_within_certificate: bool
    reasons: tuple
    valid: bool

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["reasons"] = list(self.reasons)
        return d


def _classes_of(target):
    """Per weighted layer (in order) the layer whose output channels its input channels are (plain chain: the one
    before; residual: any writer of its input class), and the writers of every class (residual only)."""
    from construct.conv_weak_residual import copy_classes, has_residual

    L = len(target.weighted)
    if not has_residual(target):
        return [None] + [[t - 1] for t in range(1, L)], None
    cc = copy_classes(target)
    writers = [[s for s in range(L) if cc.writes[s] == cc.reads[t]] for t in range(1, L)]
    return [None] + writers, cc


def verify_weak_conv_ticket(path, samples: int = 256) -> WeakVerifyResult:
    """Verify a weak conv ticket file (module docstring) trusting nothing in it."""
    from construct.architecture import architecture_forward
    from construct.conv_source import IntermediateLayer
    from construct.conv_ticket import channel_bounds
    from construct.conv_weak import _virtual_bounds
    from construct.source import SourceLayer

    f = load_weak_conv_ticket(path)
    target, E, g = f.target, f.entries, f.lifting_group
    w = target.weighted
    L = len(w)
    reasons = []
    # 1. inside the ER masks (regenerated from the seed; only the blocks holding kept entries are drawn)
    rows, cols, weight, active, n_rows, n_cols, _ = E[0]
    lift = IntermediateLayer(w[0].fan_in, 2 * g, 0, f.densities[0], seed=f.seed, index=1)
    usable = lift.diagonal()[1]
    sub = bool(np.all(cols == rows // (2 * g)) and np.all(usable[rows]))
    ok_w = bool(np.all(weight == np.where(rows % (2 * g) < g, 1.0, -1.0)))
    for ell in range(2, L + 2):
        rows, cols, weight, active, n_rows, n_cols, _ = E[ell - 1]
        if rows.size:
            layer = SourceLayer(n_rows, n_cols, f.densities[ell - 1], seed=f.seed, index=ell)
            sub &= bool(np.all(layer.gather(rows, cols)[1]))
    if not sub:
        reasons.append("a kept entry is not in the regenerated ER masks (or a lifting entry is not its channel's "
                       "dedicated, usable entry)")
    # 2. the construction's weights, one per needed edge; computed channels read computed channels only
    readers, cc = _classes_of(target)
    consistent = bool(np.array_equal(E[0][3], np.unique(E[0][0])))  # lifting: computed = used channels
    Bv = _virtual_bounds(target, channel_bounds(target))
    errors_by_layer = [np.zeros(E[0][4])]
    missing_total = 0
    for t in range(L):
        rows, cols, weight, active, n_rows, n_cols, K = E[t + 1]
        W = w[t].dense
        r_out = f.copies[t]
        i = rows // r_out
        if t == 0:
            v = cols // (2 * g)
            side = (cols % (2 * g) >= g).astype(np.int64)
            ok_w &= bool(np.all(weight == np.where(side == 0, 1.0, -1.0) * W[i, v]))
            key = (rows * W.shape[1] + v) * 2 + side
            in_ok = np.isin(cols, E[0][3]).all()
        else:
            r_in = f.input_copies[t]
            ch = cols // K
            v = (ch // r_in) * K + cols % K
            ok_w &= bool(np.all(weight == W[i, v]))
            key = rows * W.shape[1] + v
            in_ok = all(np.isin(np.unique(ch), E[s + 1][3]).all() for s in readers[t])
        ok_w &= bool(np.unique(key).size == key.size and np.all(W[i, v] != 0))
        consistent &= bool(in_ok and np.isin(rows, active).all())
        # 3. errors of the computed channels: missing needed edges · B_v, plus the kept weights times input errors
        sides = 2 if t == 0 else 1
        need = (W[active // r_out] != 0)                                    # (|active|, V)
        have = np.zeros((active.size, W.shape[1], sides), dtype=bool)
        inside = np.isin(rows, active)
        pos = np.searchsorted(active, rows[inside])
        have[pos, v[inside], side[inside] if t == 0 else 0] = True
        miss = need[:, :, None] & ~have
        missing_total += int(miss.sum())
        err = np.zeros(n_rows)
        err[active] = (miss.sum(axis=2) * np.abs(W[active // r_out])) @ Bv[w[t].name]
        if t >= 1:
            e_in = _input_errors(target, f, t, errors_by_layer, cc)
            err += np.bincount(rows, weights=np.abs(weight) * e_in[cols // K], minlength=n_rows)
        errors_by_layer.append(err)
    if L >= 1 and not np.array_equal(E[L][3], np.arange(E[L][4])):
        consistent = False  # the output layer computes every output
    if cc is not None:  # both inputs of an addition compute the same channels
        for c in set(cc.writes):
            acts = [E[s + 1][3] for s in range(L) if cc.writes[s] == c]
            consistent &= all(np.array_equal(acts[0], a) for a in acts[1:])
    if not ok_w:
        reasons.append("a kept weight is not the weak construction's (±1 lifting, ±W_1[i, v], W_t[i, v] on a copy of "
                       "v's channel; one entry per needed edge; no entry for a zero target weight)")
    if not consistent:
        reasons.append("a computed channel reads a channel that is not computed (or the two inputs of an addition "
                       "compute different channels, or an output is not computed)")
    certificate = float(errors_by_layer[-1][E[L][3]].max(initial=0.0))
    stored = f.meta.get("certificate")
    matches = (stored is not None and math.isfinite(certificate) and math.isfinite(float(stored))
               and abs(float(stored) - certificate) <= 1e-9 * max(1.0, abs(certificate)))
    if not matches:
        reasons.append(f"certificate {certificate:.6g} recomputed from the entries differs from the stored "
                       f"{stored!r} (or one is not finite)")
    # 4. the stored network on sampled inputs (only when it is a well-formed network)
    sampled = float("nan")
    within = False
    if consistent:
        arch = _network(target, f, readers)
        a, b = target.box
        rng = np.random.default_rng(np.random.SeedSequence([int(f.seed), _SAMPLE_TAG]))
        sampled = 0.0
        for s0 in range(0, samples, 32):
            x = rng.uniform(a, b, size=(min(32, samples - s0),) + tuple(target.input_shape))
            sampled = max(sampled, float(np.max(np.abs(architecture_forward(arch, x) - target.forward(x)),
                                                initial=0.0)))
        within = sampled <= certificate + 1e-9 * (1.0 + certificate)
        if not within:
            reasons.append(f"sampled error {sampled:.3e} exceeds the certificate {certificate:.3e}")
    kept = int(sum(e[0].size for e in E))
    return WeakVerifyResult(str(path), CONSTRUCTION, kept, bool(sub), bool(ok_w), bool(consistent), certificate,
                            None if stored is None else float(stored), bool(matches), int(missing_total), sampled,
                            int(samples), bool(within), tuple(reasons), not reasons)


def _network(target, f, readers):
    """The stored ticket as an Architecture: the target's records, weighted layer 1 replaced by lifting → ReLU → its
    1×1 layer, later weighted layers by their source layers, all over the computed channels."""
    from construct.architecture import Architecture, Layer

    w = target.weighted
    E = f.entries
    by_name = {wl.name: t for t, wl in enumerate(w)}
    n_in = w[0].in_channels if w[0].kind == "conv2d" else w[0].fan_in
    records = []
    for rec in target.architecture.layers:
        if rec.name not in by_name:
            records.append(rec)
            continue
        t = by_name[rec.name]
        src = rec.inputs[0]
        if t == 0:
            records.append(_dense_record(f"{rec.name}:lifting", (src,), E[0], np.arange(n_in), np.zeros(E[0][4]),
                                         w[0], "lifting"))
            records.append(Layer("relu", f"{rec.name}:lifting_relu", (f"{rec.name}:lifting",)))
            src, in_act = f"{rec.name}:lifting_relu", E[0][3]
        else:
            in_act = E[readers[t][0] + 1][3]
        bias = w[t].bias[np.arange(E[t + 1][4]) // f.copies[t]]
        records.append(_dense_record(rec.name, (src,) + tuple(rec.inputs[1:]), E[t + 1], in_act, bias, w[t],
                                     "first" if t == 0 else "later"))
    return Architecture(tuple(records), name="weak ticket")


def _input_errors(target, f, t, errors_by_layer, cc):
    """Errors of the input channels of weighted layer t ≥ 1 (0-based): the previous layer's (chain), or the sum over
    the class's values along the graph (residual: an addition adds its inputs' errors)."""
    if cc is None:
        return errors_by_layer[t]
    errs = {}
    weighted = {wl.name: s for s, wl in enumerate(target.weighted)}
    for rec in target.architecture.layers:
        if rec.name in weighted:
            s = weighted[rec.name]
            if s + 1 < len(errors_by_layer):
                errs[rec.name] = errors_by_layer[s + 1]
            if s == t:
                return errs[rec.inputs[0]]
        elif cc.of.get(rec.name) is None:
            continue
        elif rec.kind == "add":
            errs[rec.name] = errs[rec.inputs[0]] + errs[rec.inputs[1]]
        else:
            errs[rec.name] = errs[rec.inputs[0]]
    raise ValueError(f"weighted layer {t + 1} was not reached")


def _dense_record(name, inputs, entry, in_active, bias, wl, role):
    """A conv2d/linear record holding the kept entries of one source layer over its computed channels (``role``:
    "lifting" — the target layer's kernel over the image; "first" — the 1×1 layer of weighted layer 1; "later")."""
    from construct.architecture import Layer

    rows, cols, weight, active, n_rows, n_cols, K = entry
    block = wl.kernel_entries if role == "lifting" else K
    ro = np.searchsorted(active, rows)
    ci = np.searchsorted(in_active, cols // block)
    dense = np.zeros((active.size, in_active.size * block))
    dense[ro, ci * block + cols % block] = weight
    attrs = {}
    if wl.kind == "conv2d":
        first = role == "first"
        kernel = (1, 1) if first else tuple(wl.weight.shape[2:])
        dense = dense.reshape(active.size, in_active.size, *kernel)
        attrs = {"stride": (1, 1) if first else tuple(wl.stride), "padding": (0, 0) if first else tuple(wl.padding)}
    return Layer(wl.kind, name, tuple(inputs), {"weight": dense, "bias": np.asarray(bias, dtype=np.float64)[active]},
                 attrs)
