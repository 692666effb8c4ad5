"""Materialized, seeded ER source networks f_S (MATH.md §1).

Source layer t has weights W_t (n_{S,t} × n_{S,t−1}), biases b_t and an ER mask M_t ~ ER(p_t): i.i.d.
Bernoulli(p_t) entries, drawn once from a seed. Weights and biases are stored as float32 (U[−1, 1] by default,
or a scaled normal N(0, 1/n_{S,t−1})); every computation casts them to float64, so a strong ticket's weights are
the source's bit for bit. Masks are compared against float64 uniforms (exact Bernoulli(p) up to 2^-53).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from theory.validation import check_choice, check_densities, check_positive_int, check_widths

__all__ = ["Source", "sample_source", "WEIGHT_LAWS"]

WEIGHT_LAWS = ("uniform", "normal")
_CHUNK = 1 << 22  # entries drawn per call; fixed so that the numbers depend only on (seed, shapes, densities)


@dataclass(frozen=True)
class Source:
    """A materialized ER source: ``weights[t-1]``, ``biases[t-1]`` (float32), ``masks[t-1]`` (bool), t = 1..L_S."""

    weights: tuple
    biases: tuple
    masks: tuple
    densities: tuple
    seed: int
    law: str = "uniform"

    @property
    def widths(self) -> tuple[int, ...]:
        return (int(self.weights[0].shape[1]),) + tuple(int(w.shape[0]) for w in self.weights)

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def params(self) -> int:
        """Number of weights of the dense source (Σ n_{S,t}·n_{S,t−1})."""
        return int(sum(w.size for w in self.weights))

    @property
    def kept_params(self) -> int:
        """Number of weights kept by the ER masks."""
        return int(sum(int(np.count_nonzero(m)) for m in self.masks))

    def to_dict(self) -> dict:
        return {"widths": list(self.widths), "densities": list(self.densities), "seed": self.seed, "law": self.law,
                "params": self.params, "er_kept_params": self.kept_params}


def _layer(rng: np.random.Generator, n_out: int, n_in: int, density: float, law: str):
    rows = max(1, _CHUNK // max(n_in, 1))
    w = np.empty((n_out, n_in), dtype=np.float32)
    m = np.empty((n_out, n_in), dtype=bool)
    for r0 in range(0, n_out, rows):
        r1 = min(n_out, r0 + rows)
        if law == "uniform":
            block = rng.random((r1 - r0, n_in), dtype=np.float32)
            block *= 2.0
            block -= 1.0
        else:
            block = rng.standard_normal((r1 - r0, n_in), dtype=np.float32)
            block *= np.float32(1.0 / np.sqrt(n_in))
        w[r0:r1] = block
        if density >= 1.0:
            m[r0:r1] = True
        else:
            m[r0:r1] = rng.random((r1 - r0, n_in)) < density
    if law == "uniform":
        b = (rng.random(n_out, dtype=np.float32) * 2.0 - 1.0).astype(np.float32)
    else:
        b = (rng.standard_normal(n_out, dtype=np.float32) * np.float32(1.0 / np.sqrt(n_in))).astype(np.float32)
    return w, b, m


def sample_source(widths, densities, seed: int, *, law: str = "uniform") -> Source:
    """Draw a source with widths (n_{S,0}, …, n_{S,L_S}) and per-layer densities p_1..p_{L_S} (one value or one
    per layer) from ``seed``. Same arguments → bit-identical arrays (one SeedSequence child per layer)."""
    widths = check_widths(widths, "source_widths")
    depth = len(widths) - 1
    dens = np.atleast_1d(check_densities(densities, "densities"))
    if dens.size == 1:
        dens = np.repeat(dens, depth)
    if dens.size != depth:
        raise ValueError(f"densities has {dens.size} entries: allowed 1 or {depth} (one per source layer)")
    law = check_choice(law, "weight_law", WEIGHT_LAWS)
    seed = check_positive_int(seed, "seed", 0)
    children = np.random.SeedSequence([seed, 0x5EED]).spawn(depth)
    ws, bs, ms = [], [], []
    for t in range(depth):
        w, b, m = _layer(np.random.default_rng(children[t]), widths[t + 1], widths[t], float(dens[t]), law)
        ws.append(w)
        bs.append(b)
        ms.append(m)
    return Source(tuple(ws), tuple(bs), tuple(ms), tuple(float(d) for d in dens), seed, law)
