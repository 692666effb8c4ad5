"""Seeded ER sources of the 2L construction for convolutional and residual targets (docs/math.md §1, §9).

Weighted target layer ℓ (a conv2d or linear record, 1-based in execution order) becomes two source layers:

- **A_ℓ** (index 2ℓ−1), intermediate: a convolution with the target's kernel, stride and padding from c_in to
  m_ℓ = fan_in·k_ℓ + g0_ℓ channels (a linear layer for a linear target layer), seen as an (m_ℓ, fan_in) matrix over
  virtual inputs v = (j, r, s). Channel u < fan_in·k_ℓ is *dedicated* to virtual input v = u // k_ℓ: its only entry
  that a ticket may keep is (u, v) — kernel entry (r, s) of input channel j. The last g0_ℓ channels are the bias group.
- **B_ℓ** (index 2ℓ), a 1×1 convolution (a linear layer) from m_ℓ to c_out channels: an (c_out, m_ℓ) matrix.

Every entry is i.i.d.: weights U[−1, 1] (float32, or float64 refined as in :mod:`construct.source`), masks
Bernoulli(p) per kernel entry, biases U[−1, 1].

**Drawing scheme** (same seed → same numbers; :class:`construct.source.SourceLayer` for B_ℓ and for every bias):
B_ℓ is a :class:`~construct.source.SourceLayer` (blocks of 2^22 entries). A_ℓ's *dedicated* entries (u, u // k_ℓ),
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

__all__ = ["IntermediateLayer", "ConvSource", "sample_conv_source"]

_DIAGONAL_TAG = 0xD1A6
_RUN = 1 << 22


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
    (A_ℓ: :class:`IntermediateLayer`, B_ℓ: :class:`construct.source.SourceLayer`)."""

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
        b = SourceLayer(fan_out, a.shape[0], pb, seed=seed, index=2 * l, dtype=dtype)
        pairs.append((a, b))
    return ConvSource(tuple(pairs), int(seed), dtype)
