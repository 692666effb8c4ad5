"""How much memory a construct build needs, estimated before anything is allocated (the memory guard of
``construct strong``, ``weak`` and ``bench``; :func:`theory.memory.check_memory`).

Model (per construction c, source widths n_{S,0..L_S}, W = Σ_l n_{S,l}·n_{S,l−1} source weights, U = Σ_{l≥1} n_{S,l}
source units, weights of b bytes each, T drawing threads):

    bytes ≈ PER_WEIGHT[c] · W + MATERIALIZED[c] · b · W + PER_UNIT[c] · U + T · BLOCK_BYTES[c] + BASE_BYTES[c]
            (+ (b + 1 + SAVE_SUBMASK[c]) · W + (17 + SAVE_SUBMASK[c] · (b + 1)) · U when the ticket is saved: the
            file holds the source's weights and mask, and 2L builds the dense sub-masks, roles and biases for it)

- weak and L+1 materialize the source (its weights: b bytes, and its mask: 1 byte per weight), the kept sub-mask
  (1 byte), and weak tickets their dense float64 weights (8 bytes) — ``MATERIALIZED`` = 1 counts the weights' own
  bytes, so a float64 source (b = 8) is estimated at its real size;
- 2L never materializes the source (:mod:`construct.source` streams the entries it reads) and holds no array per
  source weight or unit: its sub-masks and roles are sparse (:class:`construct.ticket.SparseMask`,
  :class:`construct.ticket.SparseRoles`), the certificate works on the used units (:func:`construct.active.used_layers`);
  what grows with the source are the usable intermediate units (a fraction p of the units: index, |a|, sign,
  candidate positions — ``PER_UNIT``) and the candidate columns read per solver call (``PER_WEIGHT``);
- every drawing thread holds one block of 2^22 entries (weak, L+1: the block's weights and mask) or, streaming
  (2L), one chunk of 2^18 entries and the offsets it reads in a block (``BLOCK_BYTES``);
- ``BASE_BYTES``: the compiled solver's runtime (≈ 110 MB resident for the strong constructions), its batches of
  ≤ 2^20 candidates, the sampled error's activations (≤ 2^22 float64 per array) and what the allocator keeps.

The constants were chosen from what ``python -m construct bench --memory`` measured (peak RSS above the RSS before
the build, each configuration in a fresh process; table in construct/README.md) so that the estimate covers every
measured configuration (est/peak ≥ 1 on every row, see the table); rerun that command after changing a
construction and adjust them.

The weights' size b is an input (:func:`source_weight_bytes`: the itemsize of ``construct.source.WEIGHT_DTYPE``
where that module defines it, float32 otherwise), so a source stored in float64 is estimated at 8 bytes per weight
for the constructions that hold it (weak, L+1) and when a ticket is saved.
"""
from __future__ import annotations

import math

from theory.memory import check_memory

__all__ = ["PER_WEIGHT", "MATERIALIZED", "PER_UNIT", "BLOCK_BYTES", "BASE_BYTES", "SAVE_SUBMASK", "MEASURED_BY",
           "source_size",
           "estimate_build_bytes", "check_build_memory", "source_weight_bytes"]

#: bytes per source weight besides the weights themselves (weak: mask 1, kept 1, the ticket's float64 weights 8, and
#: temporaries; L+1: mask 1, kept 1, temporaries; 2L: none held — the candidate columns read per solver call)
PER_WEIGHT = {"weak": 12.0, "l+1": 6.0, "2l": 0.5}
#: 1 where the build holds the source's weights (b bytes each) in memory, 0 where it draws them block by block
MATERIALIZED = {"weak": 1, "l+1": 1, "2l": 0}
#: bytes per source unit (weak, L+1: roles 17, biases, the effective layers' biases; 2L: the usable intermediate
#: units' index, |a| and sign, their candidate positions and the solver's copies of them)
PER_UNIT = {"weak": 64.0, "l+1": 64.0, "2l": 6.0}
#: bytes one drawing thread holds at a time: a block of 2^22 entries (weak, L+1: float32 weights, bool mask, chunks
#: of float64 uniforms); 2L streams chunks of 2^18 entries and holds the offsets and values it reads in one block
BLOCK_BYTES = {"weak": 64 * 2**20, "l+1": 64 * 2**20, "2l": 32 * 2**20}
#: fixed cost of a build above the imported modules (module docstring)
BASE_BYTES = {"weak": 300 * 2**20, "l+1": 300 * 2**20, "2l": 280 * 2**20}
#: 1 where saving builds the dense sub-masks (1 byte per weight), bias masks and biases (b + 1 bytes per unit) that
#: the build did not hold
SAVE_SUBMASK = {"weak": 0, "l+1": 0, "2l": 1}
MEASURED_BY = "python -m construct bench --memory"

_MAX_UNITS = 2**63


def source_weight_bytes() -> int:
    """Bytes per source weight as the source stores them (float32 today). Where sources become float64, this
    returns 8 and every estimate follows."""
    import numpy as np

    from construct import source as _source

    return int(np.dtype(getattr(_source, "WEIGHT_DTYPE", np.float32)).itemsize)


def source_size(widths) -> tuple[int, int]:
    """(W, U) = (Σ n_l·n_{l−1}, Σ_{l≥1} n_l) as exact Python integers. Raises a one-line ValueError when a width or
    the number of weights reaches 2^63 (such a source "needs more than 2^63 units")."""
    widths = [int(w) for w in widths]
    if any(w >= _MAX_UNITS for w in widths):
        raise ValueError(f"the source needs more than 2^63 units (widths {_short(widths)}): allowed a source whose "
                         "widths and weight count are below 2^63; use a smaller --width-multiplier, a higher density "
                         "or a smaller target")
    weights = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if weights >= _MAX_UNITS:
        raise ValueError(f"the source needs more than 2^63 weights (widths {_short(widths)}): allowed fewer; use a "
                         "smaller --width-multiplier, a higher density or a smaller target")
    return weights, sum(widths[1:])


def estimate_build_bytes(construction: str, widths, *, weight_bytes: int = 4, threads: int = 1,
                         save: bool = False) -> float:
    """Estimated peak bytes of building (and, with ``save``, writing) a ``construction`` ticket ("weak", "l+1",
    "2l") in a source of these widths whose weights take ``weight_bytes`` each (module docstring)."""
    if construction not in PER_WEIGHT:
        raise ValueError(f"construction={construction!r} is not allowed: allowed one of {', '.join(PER_WEIGHT)}")
    if not (isinstance(weight_bytes, int) and weight_bytes > 0):
        raise ValueError(f"weight_bytes={weight_bytes!r} is not allowed: allowed a positive integer")
    W, U = source_size(widths)
    est = (PER_WEIGHT[construction] + MATERIALIZED[construction] * weight_bytes) * W + PER_UNIT[construction] * U
    if save:
        extra = SAVE_SUBMASK[construction]
        est += (weight_bytes + 1 + extra) * W + (17 + extra * (weight_bytes + 1)) * U
    est += max(1, int(threads)) * BLOCK_BYTES[construction] + BASE_BYTES[construction]
    return float(est) if est < 2.0**1000 else math.inf


def check_build_memory(construction: str, widths, budget=None, *, weight_bytes: int | None = None, threads=None,
                       save: bool = False, flag: str = "--max-memory") -> float:
    """Refuse (one-line :class:`theory.memory.MemoryBudgetError`) a build whose :func:`estimate_build_bytes` exceeds
    ``budget`` (bytes; None: the default fraction of the available memory). Returns the estimate."""
    from construct.cpus import available_cpus

    weight_bytes = source_weight_bytes() if weight_bytes is None else weight_bytes
    threads = available_cpus() if threads is None else threads
    W, U = source_size(widths)
    est = estimate_build_bytes(construction, widths, weight_bytes=weight_bytes, threads=threads, save=save)
    name = {"weak": "weak", "l+1": "strong L+1", "2l": "strong 2L"}[construction]
    what = (f"the {name} ticket in a source of {W:.3g} weights and {U:.3g} units (widths {_short(widths)}"
            f"{', saved with --out' if save else ''})")
    return check_memory(est, what, budget, flag)


def _short(widths) -> str:
    text = "[" + ", ".join(str(w) for w in widths) + "]"
    return text if len(text) <= 80 else text[:77] + "...]"
