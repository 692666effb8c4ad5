"""Strong tickets, 2L construction (docs/math.md §6, after Pensia et al. 2020 with ER thinning), following Gadhikar et
al. 2023. Pruning only: the ticket keeps a sub-mask of the source's ER mask and the source's own weights.

Source layout (group sizes from :func:`theory.strong_widths.strong_widths`, construction "2l"): target layer t
becomes source layers 2t−1 and 2t.
- Source layer 2t−1 (intermediate): unit j·k_t + m (m < k_t) belongs to input j of target layer t (the input x_j
  for t = 1, target neuron j of layer t−1, held by source layer 2t−2, for t ≥ 2); it is usable iff its edge to j is
  kept (M[u, j] = 1); it keeps only that edge, weight a_u, bias pruned: x_u = ReLU(a_u·x̂_j). Units
  n_{t−1}·k_t + m form the bias group (g0_t units, every input edge pruned, bias β_u kept, usable iff β_u > 0).
- Source layer 2t: the n_t target neurons (bias pruned).
Instances: W_t[o, j] ≈ Σ v_ou·|a_u| over chosen usable units u of j with a_u > 0 (the coefficient of ReLU(x_j)), and
−W_t[o, j] ≈ the same over a_u < 0 (the coefficient of ReLU(−x_j)); law: product of two uniforms. For t ≥ 2 only the
positive side is solved: hidden target values are ≥ 0, so ReLU(−x̂_j) = 0 and negative units contribute nothing.
Bias (our decision): b_t[o] ≈ Σ v_ou·β_u over chosen bias-group units (product law) — the same bias group as the
L+1 lifting layer; zero-bias targets get no bias group. Weights |W| ≤ P are split into P parts.

Memory (issue 15 item 6): nothing of the size of the source is held. The intermediate layers' diagonal entries are
streamed block by block and only the usable units kept (index, |a_u|, sign); the solver reads the candidate columns
of a few rows of the target layers per call (≤ 2^20 candidates); the ticket's sub-masks, bias masks and roles are
sparse (:class:`construct.ticket.SparseMask`, :class:`construct.ticket.SparseRoles`) and equal, entry for entry, the
dense arrays the construction defines (the file is the same).
"""
from __future__ import annotations

import numpy as np

from construct.source import Source
from construct.strong_common import compact_groups, layer_input_norms, layer_tolerance, scaled_group, solve_grouped
from construct.targets import Target
from construct.ticket import CONST, LIFT, NEURON, UNUSED, SparseMask, SparseRoles, Ticket

__all__ = ["twol_groups", "twol_source_widths", "build_2l"]

_DIAGONAL_CHUNK = 1 << 21  # intermediate units gathered per call


def twol_source_widths(target: Target, groups: dict) -> tuple[int, ...]:
    """(n_0, k_1·n_0 + g0_1, n_1, k_2·n_1 + g0_2, n_2, …, n_L)."""
    n = target.widths
    out = [n[0]]
    for t in range(1, target.depth + 1):
        out += [groups["k"][t - 1] * n[t - 1] + groups["g0"][t - 1], n[t]]
    return tuple(out)


def twol_groups(widths, multiplier: float = 1.0) -> dict:
    """Group sizes of a StrongWidths ("2l") times ``multiplier`` (multiples of the part count P)."""
    P = widths.parts
    return {"k": tuple(scaled_group(k, multiplier, P) for k in widths.groups["k"]),
            "g0": tuple(scaled_group(g, multiplier, P) for g in widths.groups["g0"]), "P": P}


def _padded_parts(ids: np.ndarray, select: np.ndarray, P: int) -> np.ndarray:
    parts = [compact_groups(ids[None, q::P], select[None, q::P])[0] for q in range(P)]
    width = max(p.size for p in parts)
    return np.stack([np.pad(p, (0, width - p.size), constant_values=-1) for p in parts])


def _diagonal(layer, nin: int, k: int):
    """(a_u float32, M[u, j] bool) for the intermediate units u = j·k + m < nin·k of a 2L intermediate source layer
    (column j = u // k), gathered in block-aligned chunks of about 2^21 units so that the index arrays stay small."""
    n = nin * k
    a = None  # in the source's weight dtype (float32 today)
    usable = np.empty(n, dtype=bool)
    chunk = layer.rows_per_block * max(1, _DIAGONAL_CHUNK // layer.rows_per_block)
    for u0 in range(0, n, chunk):
        u = np.arange(u0, min(n, u0 + chunk), dtype=np.int64)
        w, usable[u0:u0 + u.size] = layer.gather(u, u // k)
        if a is None:
            a = np.empty(n, dtype=w.dtype)
        a[u0:u0 + u.size] = w
    return (np.empty(0, dtype=np.float32) if a is None else a), usable


def _sign_groups(a32, usable, nin: int, k: int, sign: float, q: int, P: int) -> np.ndarray:
    """Candidate groups of part q for one sign: row j lists the usable units u = j·k + m (m ≡ q mod P) with
    sign(a_u) = sign, in increasing order, padded with −1 (the layout of :func:`compact_groups`, without its
    (n_in, k) temporaries)."""
    rows = []
    for j in range(nin):
        aj = a32[j * k + q:(j + 1) * k:P]
        sel = usable[j * k + q:(j + 1) * k:P] & ((aj > 0) if sign > 0 else (aj < 0))
        rows.append(j * k + q + P * np.flatnonzero(sel))
    width = max((r.size for r in rows), default=0)
    out = np.full((nin, width), -1, dtype=np.int64)
    for j, r in enumerate(rows):
        out[j, :r.size] = r
    return out


def _index_dtype(n: int):
    """int32 for indices below 2^31, else int64 (the 2L build's per-candidate index arrays)."""
    return np.int32 if n < 2**31 else np.int64


def _usable_units(layer, nin: int, k: int):
    """(ids, scale, sign): the usable intermediate units u < nin·k of a 2L intermediate source layer
    (M[u, u // k] = 1) in increasing order (int32 when they fit), |a_u| (the source's dtype) and sign(a_u) (int8)
    of their weights a_u = W[u, u // k]. Read block by block in the drawing threads, each block streamed
    (:meth:`construct.source.SourceLayer.block_entries`); only the usable units are kept (a fraction p of the layer)."""
    n = nin * k
    R = layer.rows_per_block
    idt = _index_dtype(n)

    def one(b):
        r0, r1 = b * R, min(n, (b + 1) * R)
        fdt = _index_dtype(r1 * layer.shape[1])  # block offsets (and row indices) in 4 bytes when they fit
        flat = np.arange(r1 - r0, dtype=fdt)
        flat *= layer.shape[1]
        col = np.arange(r0, r1, dtype=fdt)
        col //= k
        flat += col  # offset of row r0 + i's diagonal entry (r0 + i, (r0 + i) // k) in the block
        del col
        w, m = layer.block_entries(b, flat)
        del flat
        sel = np.flatnonzero(m)
        w = w[sel]
        return (r0 + sel).astype(idt), np.abs(w), np.sign(w).astype(np.int8)

    parts = layer.map_blocks(one, range(-(-n // R))) if n else []
    out = []
    for i, dt in enumerate((idt, layer.dtype, np.int8)):
        out.append(np.concatenate([p[i] for p in parts]) if parts else np.empty(0, dt))
        parts = [tuple(None if j == i else x for j, x in enumerate(p)) for p in parts]  # free what was joined
    return tuple(out)


def _candidate_groups(ids: np.ndarray, sgn: np.ndarray, nin: int, k: int, sign: float, q: int, P: int) -> np.ndarray:
    """Candidate groups of part q for one sign as positions into ``ids`` (int32 when they fit): row j lists the
    usable units u = j·k + m (m ≡ q mod P) with sign(a_u) = sign, in increasing order, padded with −1 — the groups
    of :func:`_sign_groups` with every unit u replaced by its position in ``ids``."""
    bounds = np.searchsorted(ids, np.arange(nin + 1, dtype=np.int64) * k)
    rows = []
    for j in range(nin):
        pos = np.arange(bounds[j], bounds[j + 1], dtype=np.int64)
        m = ids[pos].astype(np.int64) - j * k
        sel = (m % P == q) & ((sgn[pos] > 0) if sign > 0 else (sgn[pos] < 0))
        rows.append(pos[sel])
    width = max((r.size for r in rows), default=0)
    out = np.full((nin, width), -1, dtype=_index_dtype(ids.size))
    for j, r in enumerate(rows):
        out[j, :r.size] = r
    return out


def _signed(scale: np.ndarray, sgn: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """a_u = sign(a_u)·|a_u| (exact) at the positions ``pos``, as float64."""
    return sgn[pos].astype(np.float64) * scale[pos].astype(np.float64)


class _Selection:
    """The kept entries, kept biases and roles of the 2L ticket as index arrays (the 2L layout uses a few units of
    each source layer): per source layer l (0-based) lists of (rows, cols) entries, of bias units and of role
    entries (units, kind, layer, index, scale)."""

    def __init__(self, depth: int):
        self.entries = [[] for _ in range(depth)]
        self.biases = [[] for _ in range(depth)]
        self.roles = [[] for _ in range(depth)]

    @staticmethod
    def _cat(parts, dtype):
        return np.concatenate([np.asarray(p, dtype=dtype) for p in parts]) if parts else np.empty(0, dtype)

    def coords(self, l: int):
        return (self._cat([e[0] for e in self.entries[l]], np.int64),
                self._cat([e[1] for e in self.entries[l]], np.int64))

    def role_arrays(self, l: int):
        return tuple(self._cat([r[i] for r in self.roles[l]], dt)
                     for i, dt in enumerate((np.int64, np.int8, np.int32, np.int32, np.float64)))

    def prune(self, first: int, last: int) -> None:
        """:func:`construct.strong_common.prune_unused` on the index arrays: units of source layers first..last
        (1-based) with no kept outgoing edge lose their incoming edges, their bias and their kind (set to UNUSED;
        layer, index and scale stay, as in the dense arrays). Top down, so chains are pruned."""
        for l in range(last, first - 1, -1):
            used = np.unique(self.coords(l)[1])  # units of source layer l with a kept outgoing edge
            rows, cols = self.coords(l - 1)
            keep = np.isin(rows, used)
            self.entries[l - 1] = [(rows[keep], cols[keep])]
            bias = self._cat(self.biases[l - 1], np.int64)
            self.biases[l - 1] = [bias[np.isin(bias, used)]]
            units, kind, layer, index, scale = self.role_arrays(l - 1)
            kind[~np.isin(units, used)] = UNUSED
            self.roles[l - 1] = [(units, kind, layer, index, scale)]

    def ticket_arrays(self, shapes):
        """(kept, bias_kept, roles): :class:`SparseMask` sub-masks and bias masks, :class:`SparseRoles`."""
        kept, bias_kept, roles = [], [], []
        for l, shape in enumerate(shapes):
            kept.append(SparseMask.from_coords(shape, *self.coords(l)))
            bias_kept.append(SparseMask((shape[0],), self._cat(self.biases[l], np.int64)))
            roles.append(SparseRoles(shape[0], *self.role_arrays(l)))
        return kept, bias_kept, roles


def build_2l(target: Target, source: Source, groups: dict, instance_eps, caps, *, eps=None, box=(-1.0, 1.0),
             progress=None):
    """Build the 2L strong ticket inside ``source`` (widths must be :func:`twol_source_widths`).

    Same conventions as :func:`construct.strong_lplus1.build_lplus1` (``progress``: a
    :class:`construct.progress.Progress`, one step per target layer). Returns (Ticket, per-layer dicts).

    The ticket's sub-masks and bias masks are :class:`construct.ticket.SparseMask` and its roles
    :class:`construct.ticket.SparseRoles` (the entries are those of the dense arrays; the file is the same): the
    build holds the usable intermediate units and the kept entries, not an array per source weight or unit."""
    widths = twol_source_widths(target, groups)
    if source.widths != tuple(widths):
        raise ValueError(f"source widths {source.widths} do not match the 2L layout {tuple(widths)}")
    n = target.widths
    L = target.depth
    P = groups["P"]
    sel = _Selection(source.depth)
    norms = layer_input_norms(target, box)
    caps = caps or [{"weight": None, "bias": None}] * L
    reports = [None] * L
    downstream = 1.0
    for t in range(L, 0, -1):
        eps_t = layer_tolerance(t, instance_eps, eps, target, norms, downstream)
        k, g0 = groups["k"][t - 1], groups["g0"][t - 1]
        inter_layer = source.layers[2 * t - 2]  # intermediate layer 2t-1: only its "diagonal" entries are read
        out_layer = source.layers[2 * t - 1]  # target layer 2t: read a few rows (candidate columns) at a time
        nin = n[t - 1]
        rows = np.arange(n[t])
        sel.roles[2 * t - 1].append((rows, np.full(n[t], NEURON), np.full(n[t], t), rows, np.zeros(n[t])))
        # the usable units u = j·k + m (M[u, j] = 1) and their a_u: the layer's "diagonal" entries
        # (|a_u| in the source's dtype: exact, cast to float64 by the solver's gather)
        ids, scale, sgn = _usable_units(inter_layer, nin, k)
        grp, tj, ts = [], [], []
        for sign in ((1.0, -1.0) if t == 1 else (1.0,)):
            for q in range(P):
                grp.append(_candidate_groups(ids, sgn, nin, k, sign, q, P))
                tj.append(np.arange(nin))
                ts.append(np.full(nin, sign))
        width = max(x.shape[1] for x in grp)
        grp = np.concatenate([np.pad(x, ((0, 0), (0, width - x.shape[1])), constant_values=-1) for x in grp])
        targets = target.weights[t - 1][:, np.concatenate(tj)] * np.concatenate(ts)[None, :] / P
        errs = []
        chosen_l1 = np.zeros(n[t])
        chosen = []
        e = solve_grouped(out_layer, rows, grp, scale, targets, eps_t / P, caps[t - 1]["weight"], chosen, chosen_l1,
                          unit_ids=ids)
        del grp
        errs.append(e)
        bt = target.biases[t - 1]
        b0 = nin * k + np.arange(g0)
        beta = inter_layer.bias_at(b0)
        if g0 and bt.any():
            bias_ids = _padded_parts(np.arange(g0), beta.astype(np.float64) > 0, P)  # positions into b0
            e = solve_grouped(out_layer, rows, bias_ids, np.maximum(beta, 0), np.repeat(bt[:, None] / P, P, axis=1),
                              eps_t / P, caps[t - 1]["bias"], chosen, unit_ids=b0)
            errs.append(e)
        sel.entries[2 * t - 1].extend(chosen)
        used = np.unique(np.concatenate([c for _, c in chosen])) if chosen else np.empty(0, np.int64)
        inter = used[used < nin * k]
        j_of = inter // k
        sel.entries[2 * t - 2].append((inter, j_of))
        sel.roles[2 * t - 2].append((inter, np.full(inter.size, LIFT), np.full(inter.size, t - 1), j_of,
                                     _signed(scale, sgn, np.searchsorted(ids, inter))))
        bused = used[used >= nin * k]
        sel.biases[2 * t - 2].append(bused)
        sel.roles[2 * t - 2].append((bused, np.full(bused.size, CONST), np.zeros(bused.size), np.zeros(bused.size),
                                     beta[bused - nin * k].astype(np.float64)))
        del ids, scale, sgn
        amp = 0.0
        if t >= 2:
            amp = float(np.max(chosen_l1, initial=0.0))  # max_o Σ_{kept u < n·k} |v_ou|·|a_u|
            downstream *= max(amp, 1e-300)
        tol = eps_t / P
        reports[t - 1] = {"layer": t, "instances": int(sum(x.size for x in errs)),
                          "failures": int(sum(int(np.sum(x > tol)) for x in errs)),
                          "max_instance_error": float(max(x.max(initial=0.0) for x in errs)),
                          "instance_eps": eps_t, "amplification": amp}
        if progress is not None:
            progress.step(f"target layer {t}: {reports[t - 1]['instances']:,} subset sums, "
                          f"{reports[t - 1]['failures']} failed")
    sel.prune(1, source.depth - 1)
    kept, bias_kept, roles = sel.ticket_arrays([layer.shape for layer in source.layers])
    ticket = Ticket(target, source, tuple(kept), tuple(bias_kept), tuple(roles), None, None, {})
    return ticket, reports
