"""Seeded ER sources of the 2L construction for convolutional and residual targets (docs/math.md §1, §9).

Weighted target layer ℓ (a conv2d or linear record, 1-based in execution order) becomes two source layers:

- **A_ℓ** (index 2ℓ−1), intermediate: a convolution with the target's kernel, stride and padding from c_in to
  m_ℓ = fan_in·k_ℓ + g0_ℓ channels (a linear layer for a linear target layer), seen as an (m_ℓ, fan_in) matrix over
  virtual inputs v = (j, r, s). Channel u < fan_in·k_ℓ is *dedicated* to virtual input v = u // k_ℓ: its only entry
  that a ticket may keep is (u, v) — kernel entry (r, s) of input channel j. The last g0_ℓ channels are the bias group.
- **B_ℓ** (index 2ℓ), a 1×1 convolution (a linear layer) from m_ℓ to c_out channels: an (c_out, m_ℓ) matrix.

Every entry is i.i.d.: weights U[−1, 1] (float32, or float64 refined as in :mod:`construct.source`), masks
Bernoulli(p) per kernel entry, biases U[−1, 1].

**Drawing scheme** (same seed → same numbers). Biases as :class:`construct.source.SourceLayer` draws them
(``SeedSequence([seed, 0xB1A5, t])``). B_ℓ is a :class:`CounterLayer`: entry (i, u) is a function of its position
alone — SplitMix64 (Steele, Lea, Flood 2014; the finalizer of ``java.util.SplittableRandom``) applied to
key + (i·m_ℓ + u)·γ, γ = 0x9E3779B97F4A7C15, with a weight key and a mask key from
``SeedSequence([seed, 0xC0DE, t])``; the top 24 bits give the float32 weight 2^−23·w − 1 ∈ [−1, 1) (the next 29
bits refine it for float64 sources), 53 bits of the mask hash give a uniform u and the entry is kept iff u < p.
Only the entries a construction reads are ever computed: for each instance the candidates in order until the
first a·k kept ones, instead of the whole row (about 15 times fewer entries for the ResNet-18).
A_ℓ's *dedicated* entries (u, u // k_ℓ),
u = 0 … fan_in·k_ℓ − 1, are drawn in runs of 2^22 consecutive u: run c from ``SeedSequence([seed, 0xD1A6, 2ℓ−1, c])``,
whose three spawned children draw the weights, the mask and the float64 refinement. A_ℓ's other entries are pruned
in every ticket and never read; they are defined by the block scheme of a :class:`~construct.source.SourceLayer`
of the same index (only the diagonal is overridden). This is what makes a source of ~10^11 weights affordable: the
ResNet-18 intermediate layers are never drawn, only their fan_in·k_ℓ dedicated entries.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from construct.source import _REFINE, SourceLayer

__all__ = ["IntermediateLayer", "CounterLayer", "ConvSource", "sample_conv_source"]

_DIAGONAL_TAG = 0xD1A6
_COUNTER_TAG = 0xC0DE
_RUN = 1 << 22
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_CHUNK = 1 << 20  # entries hashed per thread task


def splitmix_reference(key: np.uint64, counters: np.ndarray) -> np.ndarray:
    """SplitMix64 output for the given 64-bit counters under ``key`` in plain numpy (uint64 arithmetic wraps modulo
    2^64): the reference the compiled kernels of :mod:`construct.counter_kernel` are tested against."""
    z = counters.astype(np.uint64, copy=True)
    z *= _GAMMA
    z += key
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


class CounterLayer:
    """A source layer whose entries are functions of their position (module docstring): W (n_out × n_in) of
    ``dtype``, M bool, biases as :class:`construct.source.SourceLayer`. Same interface as SourceLayer for what the
    conv construction and ``verify`` use: ``gather``, ``take_rows``, ``mask_at``, ``bias``, ``weights``/``mask``
    (materialized: small layers only), ``shape``, ``density``, ``dtype``, ``params``."""

    def __init__(self, n_out: int, n_in: int, density: float, *, seed: int, index: int, dtype: str = "float32"):
        self.shape = (int(n_out), int(n_in))
        self.density = float(density)
        self.seed, self.index, self.dtype = int(seed), int(index), dtype
        keys = np.random.SeedSequence([self.seed, _COUNTER_TAG, self.index]).generate_state(2, dtype=np.uint64)
        self._key_w, self._key_m = np.uint64(keys[0]), np.uint64(keys[1])
        self._bias_layer = SourceLayer(self.shape[0], self.shape[1], density, seed=seed, index=index, dtype=dtype)
        self._weights = self._mask = None

    @property
    def params(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def bias(self) -> np.ndarray:
        return self._bias_layer.bias

    def _counters(self, rows, cols) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.uint64)
        cols = np.asarray(cols, dtype=np.uint64)
        return rows * np.uint64(self.shape[1]) + cols

    def _threaded(self, kernel, counters: np.ndarray, dtype, *args) -> np.ndarray:
        """kernel(key-bound args…, counters chunk, out chunk) over chunks of ``counters``, in threads."""
        from construct.source import _threads

        flat = np.ascontiguousarray(counters.reshape(-1))
        out = np.empty(flat.size, dtype=dtype)

        def run(i0):
            kernel(*args[:1], flat[i0:i0 + _CHUNK], *args[1:], out[i0:i0 + _CHUNK])

        starts = range(0, flat.size, _CHUNK)
        if flat.size <= _CHUNK or _threads() == 1:
            for i0 in starts:
                run(i0)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=_threads()) as pool:  # the kernels release the GIL
                list(pool.map(run, starts))
        return out.reshape(counters.shape)

    def _mask_of(self, counters: np.ndarray) -> np.ndarray:
        if self.density >= 1.0:
            return np.ones(counters.shape, dtype=bool)
        from construct.counter_kernel import mask_from_counters

        return self._threaded(mask_from_counters, counters, bool, self._key_m, self.density)

    def _weight_of(self, counters: np.ndarray) -> np.ndarray:
        from construct.counter_kernel import weight32_from_counters, weight64_from_counters

        kernel = weight64_from_counters if self.dtype == "float64" else weight32_from_counters
        return self._threaded(kernel, counters, np.dtype(self.dtype), self._key_w)

    def mask_at(self, rows, cols) -> np.ndarray:
        """M[rows, cols] for broadcastable integer index arrays."""
        rows, cols = np.broadcast_arrays(np.asarray(rows), np.asarray(cols))
        return self._mask_of(self._counters(rows, cols))

    def weight_at(self, rows, cols) -> np.ndarray:
        """W[rows, cols] (``dtype``) for broadcastable integer index arrays."""
        rows, cols = np.broadcast_arrays(np.asarray(rows), np.asarray(cols))
        return self._weight_of(self._counters(rows, cols))

    def gather(self, rows, cols, with_mask: bool = True):
        """(W[rows, cols], M[rows, cols] or None) for equal-length index arrays (as SourceLayer.gather)."""
        w = self.weight_at(rows, cols)
        return w, (self.mask_at(rows, cols) if with_mask else None)

    def take_rows(self, rows):
        """(W[rows], M[rows]) for integer row indices (rows × n_in entries computed)."""
        rows = np.asarray(rows, dtype=np.int64)[:, None]
        cols = np.arange(self.shape[1], dtype=np.int64)[None, :]
        return self.weight_at(rows, cols), self.mask_at(rows, cols)

    @property
    def weights(self) -> np.ndarray:
        if self._weights is None:
            self._weights, self._mask = self.take_rows(np.arange(self.shape[0]))
        return self._weights

    @property
    def mask(self) -> np.ndarray:
        if self._mask is None:
            self._weights, self._mask = self.take_rows(np.arange(self.shape[0]))
        return self._mask


class IntermediateLayer:
    """Source layer A_ℓ: shape (m, fan_in) with m = fan_in·k + g0; see the module docstring for the drawing scheme."""

    def __init__(self, fan_in: int, k: int, g0: int, density: float, *, seed: int, index: int, dtype: str = "float32"):
        self.fan_in, self.k, self.g0 = int(fan_in), int(k), int(g0)
        self.shape = (self.fan_in * self.k + self.g0, self.fan_in)
        self.density = float(density)
        self.seed, self.index, self.dtype = int(seed), int(index), dtype
        self._bias_layer = SourceLayer(self.shape[0], self.shape[1], density, seed=seed, index=index, dtype=dtype)
        self._diag = None

    @property
    def dedicated(self) -> int:
        """fan_in·k: channels u < fan_in·k are dedicated to virtual input u // k."""
        return self.fan_in * self.k

    def diagonal(self) -> tuple[np.ndarray, np.ndarray]:
        """(a_u, M[u, u // k]) for the dedicated channels u < fan_in·k: weights in ``dtype``, the mask as bool."""
        if self._diag is None:
            n = self.dedicated
            a = np.empty(n, dtype=self.dtype)
            usable = np.empty(n, dtype=bool)
            for c, u0 in enumerate(range(0, n, _RUN)):
                u1 = min(n, u0 + _RUN)
                cw, cm, cr = np.random.SeedSequence([self.seed, _DIAGONAL_TAG, self.index, c]).spawn(3)
                w = np.random.default_rng(cw).random(u1 - u0, dtype=np.float32) * np.float32(2.0) - np.float32(1.0)
                if self.dtype == "float64":
                    w = w.astype(np.float64) + np.random.default_rng(cr).random(u1 - u0) * _REFINE
                a[u0:u1] = w
                usable[u0:u1] = (np.random.default_rng(cm).random(u1 - u0) < self.density) if self.density < 1.0 else True
            self._diag = (a, usable)
        return self._diag

    @property
    def bias(self) -> np.ndarray:
        return self._bias_layer.bias

    @property
    def params(self) -> int:
        return self.shape[0] * self.shape[1]


@dataclass
class ConvSource:
    """The 2L source of a :class:`construct.conv_target.ConvTarget`: per weighted layer ℓ the pair
    (A_ℓ: :class:`IntermediateLayer`, B_ℓ: :class:`CounterLayer`)."""

    pairs: tuple
    seed: int
    dtype: str

    @property
    def params(self) -> int:
        """Weights of the dense source (Σ over source layers of rows × columns; kernel entries for convolutions)."""
        return int(sum(a.params + b.params for a, b in self.pairs))

    @property
    def densities(self) -> tuple:
        return tuple(d for a, b in self.pairs for d in (a.density, b.density))

    def expected_kept(self) -> float:
        """E|M| = Σ p·(weights) (the ER mask of A_ℓ is never drawn whole, so its count is its expectation)."""
        return float(sum(a.density * a.params + b.density * b.params for a, b in self.pairs))

    def to_dict(self) -> dict:
        return {"seed": self.seed, "dtype": self.dtype, "params": self.params, "densities": list(self.densities),
                "layers": [{"A": list(a.shape), "B": list(b.shape), "k": a.k, "g0": a.g0} for a, b in self.pairs]}


def sample_conv_source(layers, densities, seed: int, dtype: str = "float32") -> ConvSource:
    """The source for weighted layers given as (fan_in, fan_out, k, g0) tuples, with densities (p_A1, p_B1, p_A2,
    …) (2 per weighted layer) from ``seed``. Nothing is drawn until it is used."""
    pairs = []
    for l, (fan_in, fan_out, k, g0) in enumerate(layers, start=1):
        pa, pb = float(densities[2 * l - 2]), float(densities[2 * l - 1])
        a = IntermediateLayer(fan_in, k, g0, pa, seed=seed, index=2 * l - 1, dtype=dtype)
        b = CounterLayer(fan_out, a.shape[0], pb, seed=seed, index=2 * l, dtype=dtype)
        pairs.append((a, b))
    return ConvSource(tuple(pairs), int(seed), dtype)
