"""Sufficient source widths for weak tickets inside an ER source of depth L+1 (docs/math.md §4) [ours],
following Gadhikar et al. 2023.

Construction (§4): a lifting layer of 2·g units per input (groups G_j^±), then r_{t+1} copies of every neuron of
target layer t in source layer t+1 (r_{L+1} = 1). A needed edge set is empty with probability (1 − p_1·p_2)^g at
t = 1 and (1 − p_{t+1})^{r_t} at t ≥ 2; a union bound with budget δ/L per layer gives the widths below.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from theory.er_factor import er_factor
from theory.validation import (check_densities, check_density, check_open_unit, check_positive_int, check_unit_count,
                               check_widths)

__all__ = ["WeakWidths", "weak_widths", "per_layer_densities"]


@dataclass(frozen=True)
class WeakWidths:
    """Widths and sizes of the weak-ticket construction of docs/math.md §4.

    - ``target_widths`` (n_0, …, n_L); ``nonzeros`` (m_1, …, m_L); ``densities`` (p_1, …, p_{L+1}), one per
      source layer; ``delta`` δ.
    - ``lifting_group`` g: units per sign group G_j^± of the lifting layer.
    - ``copies`` (r_2, …, r_L, r_{L+1} = 1): copies of each neuron of target layer t = 1..L held in source layer t+1.
    - ``source_widths`` (n_0, 2·g·n_0, r_2·n_1, …, r_L·n_{L−1}, n_L), length L+2.
    - ``source_params`` Σ_t n_{S,t−1}·n_{S,t} (dense weight count of the source; biases not counted).
    - ``expected_source_kept`` Σ_t p_t·n_{S,t−1}·n_{S,t} (expected weights kept by the ER masks).
    - ``ticket_params`` kept weights of the ticket: 2·g·n_0 for the lifting layer (an upper bound: every lifting
      unit keeps at most its one edge to its own input; only usable units that are picked are really needed),
      plus 2·r_2·m_1 in source layer 2, plus r_{t+1}·m_t in source layer t+1 for t ≥ 2.
    - ``target_params`` Σ_t m_t; ``overparameterization`` = source_params / target_params.
    """

    target_widths: tuple[int, ...]
    nonzeros: tuple[int, ...]
    densities: tuple[float, ...]
    delta: float
    lifting_group: int
    copies: tuple[int, ...]
    source_widths: tuple[int, ...]
    source_params: int
    expected_source_kept: float
    ticket_params: int
    target_params: int
    overparameterization: float

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def per_layer_densities(density, layers: int, name: str = "density") -> tuple[float, ...]:
    """``density`` as a tuple of ``layers`` densities: a single number is repeated; a sequence must have exactly
    ``layers`` entries in (0, 1]."""
    if isinstance(density, numbers.Real) and not isinstance(density, bool):
        return (check_density(density, name),) * layers
    if isinstance(density, (str, bytes, bool)) or density is None:
        raise ValueError(f"{name}={density!r} is not a density: allowed a number in (0, 1] or {layers} of them")
    try:
        values = [float(v) if isinstance(v, numbers.Real) and not isinstance(v, bool) else float("nan") for v in density]
    except TypeError:
        raise ValueError(f"{name}={density!r} is not a density: allowed a number in (0, 1] or {layers} of them") from None
    if len(values) != layers:
        raise ValueError(f"{name} has {len(values)} entries: allowed one density or exactly {layers} (one per source layer)")
    return tuple(float(v) for v in check_densities(values, name))


def _kappa_log_ceil(density: float, log_argument: float, what: str, density_name: str) -> int:
    """max(1, ⌈κ(p)·log(x)⌉) given log(x) (docs/math.md §2); κ(1) = 0 gives 1. A density so small that κ(p)
    overflows (p below ~1e−308, e.g. a product p_1·p_2 that underflows to 0) or a width of 2^63 units or more is
    refused with :class:`theory.validation.WidthOverflowError` naming ``what``."""
    k = math.inf if density == 0.0 else er_factor(density)
    value = k * log_argument
    if value <= 1.0:
        return 1
    shown = f"{density:.3g}" + (" after float underflow" if density == 0.0 else "")
    return max(1, check_unit_count(value, f"{what} = ceil(kappa({density_name})*log(...)) with {density_name}={shown}"))


def weak_widths(target_widths, density, delta, nonzeros=None) -> WeakWidths:
    """Sufficient widths of an ER source of depth L+1 that contains a weak ticket for any target with widths
    (n_0, …, n_L) and m_t nonzero weights in layer t, with probability ≥ 1 − δ (docs/math.md §4.3).

    ``density``: one density for every source layer, or L+1 per-source-layer densities p_1..p_{L+1}.
    ``nonzeros``: m_1..m_L (default dense, m_t = n_t·n_{t−1}); each 1 ≤ m_t ≤ n_t·n_{t−1}.
    Solved backwards from r_{L+1} = 1:
      r_t = max(1, ⌈κ(p_{t+1})·log(r_{t+1}·m_t·L/δ)⌉) for t = L, …, 2,
      g   = max(1, ⌈κ(p_1·p_2)·log(2·r_2·m_1·L/δ)⌉).
    A group size of 2^63 units or more (a density near the float limit, e.g. 1e−320, or p_1·p_2 underflowing to
    0) raises :class:`theory.validation.WidthOverflowError` (a ``ValueError``), as does a source width or weight
    count of 2^63 or more.
    """
    widths = check_widths(target_widths, "target_widths", minimum_length=2)
    L = len(widths) - 1
    dens = per_layer_densities(density, L + 1)
    dl = check_open_unit(delta, "delta")
    dense_counts = [widths[t] * widths[t - 1] for t in range(1, L + 1)]
    if nonzeros is None:
        m = tuple(dense_counts)
    else:
        try:
            items = list(nonzeros)
        except TypeError:
            raise ValueError(f"nonzeros={nonzeros!r} is not a list: allowed {L} positive integers") from None
        if len(items) != L:
            raise ValueError(f"nonzeros has {len(items)} entries: allowed exactly {L} (one per target layer)")
        m = tuple(check_positive_int(v, f"nonzeros[{i}]") for i, v in enumerate(items))
        for t, (mt, full) in enumerate(zip(m, dense_counts), start=1):
            if mt > full:
                raise ValueError(f"nonzeros[{t - 1}]={mt} exceeds n_{t}·n_{t - 1}={full}: allowed 1..{full}")

    # r[t] for t = 2..L+1 (index t); r[L+1] = 1
    r = {L + 1: 1}
    for t in range(L, 1, -1):
        # κ(p_{t+1})·log(r_{t+1}·m_t·L/δ); densities are 0-based: p_{t+1} = dens[t]
        r[t] = _kappa_log_ceil(dens[t], math.log(r[t + 1]) + math.log(m[t - 1]) + math.log(L) - math.log(dl),
                               f"copies r_{t} of target layer {t - 1}", f"p_{t + 1}")
    g = _kappa_log_ceil(dens[0] * dens[1], math.log(2.0 * r[2]) + math.log(m[0]) + math.log(L) - math.log(dl),
                        "lifting group g", "p_1*p_2")
    copies = tuple(r[t] for t in range(2, L + 2))

    source_widths = (widths[0], 2 * g * widths[0]) + tuple(r[t] * widths[t - 1] for t in range(2, L + 1)) + (widths[L],)
    for i, w in enumerate(source_widths):
        check_unit_count(w, f"source width n_S{i}")
    layer_params = [source_widths[t - 1] * source_widths[t] for t in range(1, L + 2)]
    source_params = sum(layer_params)
    expected_kept = float(sum(p * n for p, n in zip(dens, layer_params)))
    ticket = 2 * g * widths[0] + 2 * r[2] * m[0] + sum(r[t + 1] * m[t - 1] for t in range(2, L + 1))
    target_params = sum(m)
    return WeakWidths(
        target_widths=widths,
        nonzeros=m,
        densities=dens,
        delta=dl,
        lifting_group=g,
        copies=copies,
        source_widths=source_widths,
        source_params=source_params,
        expected_source_kept=expected_kept,
        ticket_params=ticket,
        target_params=target_params,
        overparameterization=source_params / target_params,
    )
