"""Seeded ER source networks f_S (docs/math.md §1), drawn block by block so that huge sources need not be held in memory.

Source layer t has weights W_t (n_{S,t} × n_{S,t−1}), biases b_t and an ER mask M_t ~ ER(p_t): i.i.d.
Bernoulli(p_t) entries. Weights and biases are float32 by default (U[−1, 1], or a scaled normal N(0, 1/n_{S,t−1}));
every computation casts them to float64, so a strong ticket's weights are the source's bit for bit. Masks compare
float64 uniforms with p_t (exact Bernoulli(p_t) up to 2^-53).

**Precision** (``dtype``): float32 U[−1, 1) weights are multiples of 2^−23, so subset sums of them lie on a lattice
and per-instance tolerances below ≈ 40·2^−22 cannot be promised with the continuous N_SS calibration (docs/math.md §5;
:func:`theory.subset_sum.effective_tolerance`). ``dtype="float64"`` (uniform law only) refines every float32 weight
x̃ with 29 more random bits: x = x̃ + 2^−23·u, u ~ U[0, 1) float64 drawn from a third child of the block's seed
sequence (biases: a child of the bias seed sequence). The float32 numbers a seed draws are unchanged — they are the
leading bits of the float64 ones — and x is U[−1, 1) up to float64 rounding. Cost: 8 instead of 4 bytes per
materialized weight (:data:`BYTES_PER_WEIGHT`), plus a second uniform draw per weight (about 1.5× drawing time).

**Drawing scheme** (what "same seed, same numbers" means): the rows of layer t are cut into blocks of
R_t = max(1, 2^22 // n_{S,t−1}) rows; block b has its own generator, ``SeedSequence([seed, 0x5EED, t, b])``, whose two
spawned children draw the block's weights and its mask; the biases of layer t come from
``SeedSequence([seed, 0xB1A5, t])``. A block is therefore reproducible on its own: :class:`SourceLayer` can return any
rows or any entries (:meth:`SourceLayer.take_rows`, :meth:`SourceLayer.gather`) by drawing only the blocks that hold
them, in parallel threads, without ever materializing the layer — which is how the 2L construction works inside a
source of 2·10^9 weights in a few GB. Materializing (:attr:`SourceLayer.weights`) gives the same numbers.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from construct.cpus import available_cpus as _threads  # module attribute: tests set it
from theory.validation import check_choice, check_densities, check_positive_int, check_widths

__all__ = ["Source", "SourceLayer", "sample_source", "WEIGHT_LAWS", "SOURCE_DTYPES", "BYTES_PER_WEIGHT",
           "strong_source_dtype"]

WEIGHT_LAWS = ("uniform", "normal")
SOURCE_DTYPES = ("float32", "float64")
#: bytes of one materialized source weight (or bias) per dtype; the mask adds one byte (bool) per weight
BYTES_PER_WEIGHT = {"float32": 4, "float64": 8}
_REFINE = 2.0 ** -23  # spacing of float32 U[-1, 1) draws: the refinement adds u·2^-23, u ~ U[0, 1)


def strong_source_dtype(widths) -> str:
    """The source dtype a strong ticket with these :class:`theory.strong_widths.StrongWidths` is drawn in
    ("float32" or "float64", chosen by theory from the per-instance tolerances); ``BYTES_PER_WEIGHT[...]`` gives its
    bytes per materialized weight."""
    return str(widths.source_dtype)
_BLOCK_ENTRIES = 1 << 22  # entries per block; fixed so that the numbers depend only on (seed, shapes, densities)
_WEIGHT_TAG, _BIAS_TAG = 0x5EED, 0xB1A5
_UNIFORM_CHUNK = 1 << 18  # float64 uniforms of a mask (or biases) drawn at a time: the block's bool mask is built
# chunk by chunk from the same stream, so a block costs its weights and mask, not 8 more bytes per entry


class SourceLayer:
    """One source layer: W (n_out × n_in) and b (n_out,) of ``dtype`` (float32, or float64: module docstring),
    M (n_out × n_in) bool.

    Either *drawn* (from ``seed`` and the layer ``index`` t, block by block, see the module docstring) or *given*
    (arrays, e.g. read from a ticket file). ``weights``/``mask`` materialize a drawn layer once and keep it;
    ``take_rows``/``gather``/``kept_count`` never do.
    """

    def __init__(self, n_out: int, n_in: int, density: float, law: str = "uniform", *, seed: int | None = None,
                 index: int | None = None, arrays=None, dtype: str = "float32"):
        self.shape = (int(n_out), int(n_in))
        if arrays is not None:  # a given layer keeps the precision of its arrays
            dtype = "float64" if np.asarray(arrays[0]).dtype == np.float64 else "float32"
        self.dtype = check_choice(dtype, "source_dtype", SOURCE_DTYPES)
        if self.dtype == "float64" and law != "uniform":
            raise ValueError(f"source_dtype='float64' with weight_law={law!r}: allowed only weight_law 'uniform'")
        self.density = float(density)
        self.law = law
        self.seed = seed
        self.index = index
        self.rows_per_block = max(1, _BLOCK_ENTRIES // max(self.shape[1], 1))
        self._weights = self._mask = self._bias = None
        self._mask_counts: dict[int, int] = {}
        if arrays is not None:
            self._weights, self._bias, self._mask = arrays
        elif seed is None or index is None:
            raise ValueError("SourceLayer needs either arrays or (seed, index)")

    # ------------------------------------------------------------------------------------------------ drawing
    @property
    def n_blocks(self) -> int:
        return -(-self.shape[0] // self.rows_per_block)

    def _children(self, b: int):
        return np.random.SeedSequence([self.seed, _WEIGHT_TAG, self.index, int(b)]).spawn(3)

    def _block_rows(self, b: int) -> tuple[int, int]:
        r0 = int(b) * self.rows_per_block
        return r0, min(self.shape[0], r0 + self.rows_per_block)

    def _draw_mask(self, b: int, child) -> np.ndarray:
        r0, r1 = self._block_rows(b)
        if self.density >= 1.0:
            m = np.ones((r1 - r0, self.shape[1]), dtype=bool)
        else:  # the uniforms in chunks (the same stream as one draw of the block's shape, in C order)
            m = np.empty((r1 - r0, self.shape[1]), dtype=bool)
            rng, flat = np.random.default_rng(child), m.reshape(-1)
            for s in range(0, flat.size, _UNIFORM_CHUNK):
                flat[s:s + _UNIFORM_CHUNK] = rng.random(min(_UNIFORM_CHUNK, flat.size - s)) < self.density
        self._mask_counts[int(b)] = int(np.count_nonzero(m))
        return m

    def _count_mask(self, b: int) -> None:
        """|M| on block b from the mask's stream, chunk by chunk (the count :meth:`_draw_mask` records; no block
        mask is held)."""
        r0, r1 = self._block_rows(b)
        size = (r1 - r0) * self.shape[1]
        if self.density >= 1.0:
            count = size
        else:
            rng = np.random.default_rng(self._children(b)[1])
            count = sum(int(np.count_nonzero(rng.random(min(_UNIFORM_CHUNK, size - s)) < self.density))
                        for s in range(0, size, _UNIFORM_CHUNK))
        self._mask_counts[int(b)] = count

    def block(self, b: int, with_mask: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(W rows, M rows) of block b (rows b·R .. (b+1)·R − 1); M is None (not drawn) unless ``with_mask``."""
        r0, r1 = self._block_rows(b)
        if self._weights is not None:
            return self._weights[r0:r1], self._mask[r0:r1]
        cw, cm, cr = self._children(b)
        rng = np.random.default_rng(cw)
        if self.law == "uniform" and self.dtype == "float64":
            # the float32 draw's leading bits, refined (module docstring); in chunks of the same two streams, so
            # that the block never holds its float32 draw and its refinement uniforms at once
            w = np.empty((r1 - r0, self.shape[1]), dtype=np.float64)
            ref, flat = np.random.default_rng(cr), w.reshape(-1)
            for s in range(0, flat.size, _UNIFORM_CHUNK):
                c = min(_UNIFORM_CHUNK, flat.size - s)
                x = rng.random(c, dtype=np.float32)
                x *= 2.0
                x -= 1.0
                flat[s:s + c] = x.astype(np.float64) + ref.random(c) * _REFINE
        elif self.law == "uniform":
            w = rng.random((r1 - r0, self.shape[1]), dtype=np.float32)
            w *= 2.0
            w -= 1.0
        else:
            w = rng.standard_normal((r1 - r0, self.shape[1]), dtype=np.float32)
            w *= np.float32(1.0 / np.sqrt(self.shape[1]))
        return w, (self._draw_mask(b, cm) if with_mask else None)

    def _chunks(self, b: int, with_mask: bool = True):
        """Yield (start, W entries, M entries or None) for consecutive chunks of block b's entries in C order
        (``start``: flat offset in the block): the numbers of :meth:`block`, drawn from the same streams chunk by
        chunk, so a reader holds one chunk, not the block."""
        r0, r1 = self._block_rows(b)
        size = (r1 - r0) * self.shape[1]
        cw, cm, cr = self._children(b)
        rng, rm = np.random.default_rng(cw), np.random.default_rng(cm)
        ref = np.random.default_rng(cr) if self.law == "uniform" and self.dtype == "float64" else None
        for s in range(0, size, _UNIFORM_CHUNK):
            c = min(_UNIFORM_CHUNK, size - s)
            if self.law == "uniform":
                w = rng.random(c, dtype=np.float32)
                w *= 2.0
                w -= 1.0
                if ref is not None:
                    w = w.astype(np.float64) + ref.random(c) * _REFINE
            else:
                w = rng.standard_normal(c, dtype=np.float32)
                w *= np.float32(1.0 / np.sqrt(self.shape[1]))
            m = None
            if with_mask:
                m = np.ones(c, dtype=bool) if self.density >= 1.0 else rm.random(c) < self.density
            yield s, w, m

    def block_entries(self, b: int, flat, with_mask: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(W, M) of block b at the flat offsets ``flat`` (sorted, within the block's rows in C order), equal to
        ``block(b)[0].reshape(-1)[flat]``; a drawn block is streamed chunk by chunk (:meth:`_chunks`), never held.
        ``flat`` may be any integer dtype that holds the offsets (int32 saves the reader half of its index memory)."""
        flat = np.asarray(flat)
        if not np.issubdtype(flat.dtype, np.integer):
            flat = flat.astype(np.int64)
        if self._weights is not None:
            bw, bm = self.block(b)
            return bw.reshape(-1)[flat], (bm.reshape(-1)[flat] if with_mask else None)
        w = np.empty(flat.size, dtype=self.dtype)
        m = np.empty(flat.size, dtype=bool) if with_mask else None
        if flat.size == 0:
            return w, m
        last = int(flat[-1])
        for s, cw, cm in self._chunks(b, with_mask):
            lo, hi = np.searchsorted(flat, [s, s + cw.size])
            if hi > lo:
                w[lo:hi] = cw[flat[lo:hi] - s]
                if with_mask:
                    m[lo:hi] = cm[flat[lo:hi] - s]
            if s + cw.size > last:
                break
        return w, m

    def _map_blocks(self, fn, blocks):
        blocks = [int(b) for b in blocks]
        if len(blocks) <= 1 or _threads() == 1:
            return [fn(b) for b in blocks]
        with ThreadPoolExecutor(max_workers=min(_threads(), len(blocks))) as pool:  # numpy drawing releases the GIL
            return list(pool.map(fn, blocks))

    def map_blocks(self, fn, blocks) -> list:
        """[fn(b) for b in blocks], in parallel drawing threads (``fn`` typically reads :meth:`block`)."""
        return self._map_blocks(fn, blocks)

    # ------------------------------------------------------------------------------------------------ access
    @property
    def bias(self) -> np.ndarray:
        if self._bias is None:
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, _BIAS_TAG, self.index]))
            n_out, n_in = self.shape
            if self.law == "uniform":
                b = rng.random(n_out, dtype=np.float32) * np.float32(2.0) - np.float32(1.0)
            else:
                b = rng.standard_normal(n_out, dtype=np.float32) * np.float32(1.0 / np.sqrt(n_in))
            b = b.astype(np.float32)
            if self.dtype == "float64":
                child = np.random.SeedSequence([self.seed, _BIAS_TAG, self.index]).spawn(1)[0]
                b = b.astype(np.float64) + np.random.default_rng(child).random(n_out) * _REFINE
            self._bias = b
        return self._bias

    def bias_at(self, units) -> np.ndarray:
        """b[units] for integer unit indices, equal to ``bias[units]``; a drawn layer whose biases are not held
        draws them in chunks up to the largest index and keeps only the requested values (nothing is cached)."""
        units = np.asarray(units, dtype=np.int64)
        if self._bias is not None or units.size == 0:
            return self.bias[units] if units.size else np.empty(0, dtype=self.dtype)
        n = int(units.max()) + 1
        seq = np.random.SeedSequence([self.seed, _BIAS_TAG, self.index])
        rng = np.random.default_rng(seq)
        ref = np.random.default_rng(seq.spawn(1)[0]) if self.dtype == "float64" else None
        out = np.empty(units.size, dtype=self.dtype)
        order = np.argsort(units, kind="stable")
        su = units[order]
        for s in range(0, n, _UNIFORM_CHUNK):  # elementwise the formulas of ``bias``, on the same streams
            c = min(_UNIFORM_CHUNK, n - s)
            if self.law == "uniform":
                b = rng.random(c, dtype=np.float32) * np.float32(2.0) - np.float32(1.0)
            else:
                b = rng.standard_normal(c, dtype=np.float32) * np.float32(1.0 / np.sqrt(self.shape[1]))
            b = b.astype(np.float32)
            if ref is not None:
                b = b.astype(np.float64) + ref.random(c) * _REFINE
            lo, hi = np.searchsorted(su, [s, s + c])
            out[order[lo:hi]] = b[su[lo:hi] - s]
        return out

    def _materialize(self) -> None:
        w = np.empty(self.shape, dtype=self.dtype)
        m = np.empty(self.shape, dtype=bool)

        def fill(b):
            r0, r1 = self._block_rows(b)
            w[r0:r1], m[r0:r1] = self.block(b)

        self._map_blocks(fill, range(self.n_blocks))
        self._weights, self._mask = w, m

    @property
    def weights(self) -> np.ndarray:
        """W as one array of ``dtype`` (a drawn layer is materialized once and kept)."""
        if self._weights is None:
            self._materialize()
        return self._weights

    @property
    def mask(self) -> np.ndarray:
        """M as one bool array (a drawn layer is materialized once and kept)."""
        if self._mask is None:
            self._materialize()
        return self._mask

    @property
    def materialized(self) -> bool:
        return self._weights is not None

    def take_rows(self, rows, cols=None) -> tuple[np.ndarray, np.ndarray]:
        """(W[rows], M[rows]) for integer row indices, drawing only the blocks that hold them; with ``cols``
        (integer column indices) only those columns, (W[rows][:, cols], M[rows][:, cols]), without holding the
        whole rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._weights is not None:
            if cols is None:
                return self._weights[rows], self._mask[rows]
            return self._weights[rows][:, cols], self._mask[rows][:, cols]
        width = self.shape[1] if cols is None else len(cols)
        w = np.empty((rows.size, width), dtype=self.dtype)
        m = np.empty((rows.size, width), dtype=bool)
        blk = rows // self.rows_per_block

        if cols is not None:  # streamed: only the requested entries of each block are kept
            cols = np.asarray(cols, dtype=np.int64)
            corder = np.argsort(cols, kind="stable")
            scols = cols[corder]

        def fill(b):
            where = np.nonzero(blk == b)[0]
            local = rows[where] - b * self.rows_per_block
            if cols is None:
                bw, bm = self.block(b)
                w[where], m[where] = bw[local], bm[local]
                return
            urows, inv = np.unique(local, return_inverse=True)
            dest = [where[inv == i] for i in range(urows.size)]  # output rows of each distinct block row
            n = self.shape[1]
            for s, cw, cm in self._chunks(b):  # each chunk: the requested columns of the rows it covers
                e = s + cw.size
                i0, i1 = np.searchsorted(urows, [s // n, (e - 1) // n + 1])
                for i in range(i0, i1):
                    base = int(urows[i]) * n
                    lo, hi = np.searchsorted(scols, [s - base, e - base])
                    if hi > lo:
                        at = np.ix_(dest[i], corder[lo:hi])
                        w[at], m[at] = cw[scols[lo:hi] + base - s], cm[scols[lo:hi] + base - s]
                if e >= (int(urows[-1]) + 1) * n:
                    break

        self._map_blocks(fill, np.unique(blk))
        return w, m

    def gather(self, rows, cols, with_mask: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """(W[rows, cols], M[rows, cols]) for equal-length index arrays, drawing only the blocks that hold them
        (M is None, and no mask is drawn, unless ``with_mask``)."""
        rows = np.asarray(rows, dtype=np.int64).ravel()
        cols = np.asarray(cols, dtype=np.int64).ravel()
        if self._weights is not None:
            return self._weights[rows, cols], (self._mask[rows, cols] if with_mask else None)
        w = np.empty(rows.size, dtype=self.dtype)
        m = np.empty(rows.size, dtype=bool) if with_mask else None
        blk = rows // self.rows_per_block
        order = np.argsort(blk, kind="stable")
        uniq, starts = np.unique(blk[order], return_index=True)
        ends = np.append(starts[1:], order.size)
        spans = {int(b): (s, e) for b, s, e in zip(uniq, starts, ends)}

        def fill(b):  # streamed: the block's chunks are drawn up to the last requested entry, none held
            s, e = spans[b]
            where = order[s:e]
            flat = (rows[where] - b * self.rows_per_block) * self.shape[1] + cols[where]
            fo = np.argsort(flat, kind="stable")
            bw, bm = self.block_entries(b, flat[fo], with_mask)
            w[where[fo]] = bw
            if with_mask:
                m[where[fo]] = bm

        self._map_blocks(fill, uniq)
        return w, m

    def kept_count(self) -> int:
        """|M| (number of kept weights); for a drawn layer only the masks of blocks not drawn yet are drawn."""
        if self._mask is not None:
            return int(np.count_nonzero(self._mask))
        missing = [b for b in range(self.n_blocks) if b not in self._mask_counts]
        self._map_blocks(self._count_mask, missing)
        return int(sum(self._mask_counts[b] for b in range(self.n_blocks)))

    @property
    def params(self) -> int:
        return self.shape[0] * self.shape[1]


class Source:
    """An ER source: ``layers[t-1]`` (:class:`SourceLayer`), t = 1..L_S; ``weights``/``biases``/``masks`` are the
    per-layer arrays (materializing drawn layers)."""

    def __init__(self, layers, seed: int, law: str = "uniform"):
        self.layers = tuple(layers)
        self.seed = int(seed)
        self.law = law

    @property
    def dtype(self) -> str:
        """"float64" if any layer holds float64 weights, else "float32" (see the module docstring)."""
        return "float64" if any(layer.dtype == "float64" for layer in self.layers) else "float32"

    @classmethod
    def from_arrays(cls, weights, biases, masks, densities, seed: int, law: str = "uniform") -> "Source":
        layers = [SourceLayer(w.shape[0], w.shape[1], d, law, arrays=(w, b, m))
                  for w, b, m, d in zip(weights, biases, masks, densities)]
        return cls(layers, seed, law)

    @property
    def weights(self) -> tuple:
        return tuple(layer.weights for layer in self.layers)

    @property
    def biases(self) -> tuple:
        return tuple(layer.bias for layer in self.layers)

    @property
    def masks(self) -> tuple:
        return tuple(layer.mask for layer in self.layers)

    @property
    def densities(self) -> tuple:
        return tuple(layer.density for layer in self.layers)

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.layers[0].shape[1],) + tuple(layer.shape[0] for layer in self.layers)

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def params(self) -> int:
        """Number of weights of the dense source (Σ n_{S,t}·n_{S,t−1})."""
        return int(sum(layer.params for layer in self.layers))

    @property
    def kept_params(self) -> int:
        """Number of weights kept by the ER masks."""
        return int(sum(layer.kept_count() for layer in self.layers))

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "densities": list(self.densities), "seed": self.seed, "law": self.law,
                "dtype": self.dtype,
                "params": self.params, "er_kept_params": self.kept_params}


def sample_source(widths, densities, seed: int, *, law: str = "uniform", dtype: str = "float32") -> Source:
    """The source with widths (n_{S,0}, …, n_{S,L_S}) and per-layer densities p_1..p_{L_S} (one value or one per
    layer) drawn from ``seed`` (drawing scheme: module docstring) in ``dtype`` ("float32" or "float64": the float32
    numbers refined, uniform law only). Nothing is drawn until it is used; same arguments → bit-identical arrays."""
    widths = check_widths(widths, "source_widths")
    depth = len(widths) - 1
    dens = np.atleast_1d(check_densities(densities, "densities"))
    if dens.size == 1:
        dens = np.repeat(dens, depth)
    if dens.size != depth:
        raise ValueError(f"densities has {dens.size} entries: allowed 1 or {depth} (one per source layer)")
    law = check_choice(law, "weight_law", WEIGHT_LAWS)
    seed = check_positive_int(seed, "seed", 0)
    dtype = check_choice(dtype, "source_dtype", SOURCE_DTYPES)
    layers = [SourceLayer(widths[t + 1], widths[t], float(dens[t]), law, seed=seed, index=t + 1, dtype=dtype)
              for t in range(depth)]
    return Source(layers, seed, law)
