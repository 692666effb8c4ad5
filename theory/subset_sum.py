"""Subset sum with masked candidates: the calibrated table N_SS and the width bounds of docs/math.md §5.

Following Gadhikar et al. 2023 (docs/math.md §5). The subset-sum constant of Lueker (1998) is not explicit, so the
project calibrates N_SS(ε, δ', law) — the smallest number of *unmasked* i.i.d. candidates (law "uniform":
X ~ U[−1, 1]; "product": X = U·V) such that for every z on a grid of [−1, 1] the exact best subset misses z by
more than ε with probability ≤ δ' — by seeded Monte Carlo with an exact solver and one-sided Clopper–Pearson
bounds (``scripts/calibrate_nss.py``; data in ``theory/data/nss_table.json`` with its provenance). On top of it:

- [ours-1] binomial thinning: :func:`thinning_width` n = ⌈(2·N_SS(ε, δ/2) + 8·log(2/δ)) / p⌉;
- [ours-2] blocks: :func:`block_width` N_SS(ε, δ/2) blocks of k = ⌈κ(p)·log(2·N_SS/δ)⌉ candidates;
- the exact binomial mixture :func:`mixture_success_probability` Σ_k Bin(k; n, p)·(1 − P_fail(k, ε));
- the paper's literal form :func:`paper_literal_width` C·κ(p)·log(1/min(ε, δ)), which fails as p → 1.

numpy/scipy only; this module does not import :mod:`construct`.
"""
from __future__ import annotations

import functools
import importlib.resources
import json
import math
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

from theory.er_factor import er_factor
from theory.validation import check_choice, check_density, check_open_unit, check_positive_int, check_positive_real

__all__ = [
    "LAWS",
    "NssLookup",
    "BlockWidth",
    "load_nss_table",
    "nss",
    "nss_lookup",
    "thinning_width",
    "block_width",
    "mixture_success_probability",
    "failure_curve",
    "paper_literal_width",
    "FITTED_CONSTANT",
    "fitted_width",
    "SOLVER_MAX_CANDIDATES",
    "WEIGHT_RESOLUTION",
    "SOURCE_DTYPES",
    "candidate_resolution",
    "effective_tolerance",
    "SearchPlan",
    "search_plan",
]

LAWS = ("uniform", "product")
_REL = 1e-9  # relative tolerance for "ε (or δ') is a calibrated grid value"

#: Largest number of candidates the exact subset-sum solver searches in one meet-in-the-middle run (2 · 2^20
#: half-sums). ``theory`` provisions at most this many candidates per exact search (:func:`search_plan`);
#: ``construct.subset_sum`` imports it as its prefix cap, so theory's widths and the solver's search agree.
SOLVER_MAX_CANDIDATES = 40

#: Below the calibrated ε grid N_SS grows by at least this many candidates per halving of ε (see :func:`nss_lookup`).
EPS_EXTRAPOLATION_MIN_SLOPE = 1.0

#: Spacing of the source weights U[−1, 1) as drawn (construct.source): float32 weights are multiples of 2^−23,
#: float64 weights multiples of 2^−52 (up to one rounding). A drawn weight x̃ is the quantization of a continuous
#: U[−1, 1) variable x with |x − x̃| ≤ resolution (the float32 draw keeps the leading bits of the float64 one).
WEIGHT_RESOLUTION = {"float32": 2.0 ** -23, "float64": 2.0 ** -52}
SOURCE_DTYPES = tuple(WEIGHT_RESOLUTION)


@functools.lru_cache(maxsize=1)
def load_nss_table() -> dict:
    """The stored calibration (``theory/data/nss_table.json``), read with importlib.resources (cached)."""
    text = importlib.resources.files("theory").joinpath("data/nss_table.json").read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class NssLookup:
    """Result of :func:`nss_lookup`.

    ``value`` = N_SS(ε, δ', law). ``calibrated``: ε and δ' are grid values and the value is the Monte Carlo
    entry itself. ``interpolated``: ε or δ' lies between (or above) grid values and the next harder grid value
    was used (conservative). ``extrapolated``: ε or δ' lies below the grid and a stated extrapolation rule was
    used. ``eps_used`` / ``delta_used``: the grid points the value was computed from. ``envelope``: the value was
    raised to the largest value at a larger calibrated ε (keeps N_SS non-increasing in ε).
    """

    value: int
    eps: float
    delta: float
    law: str
    calibrated: bool
    interpolated: bool
    extrapolated: bool
    eps_used: tuple
    delta_used: tuple
    envelope: bool
    rule: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BlockWidth:
    """[ours-2] of docs/math.md §5: ``blocks`` = N_SS(ε, δ/2) blocks of ``block_size`` k = ⌈κ(p)·log(2·N_SS/δ)⌉ (at
    least 1) candidates each; ``total`` = blocks·k. Every block keeps ≥ 1 candidate w.p. ≥ 1 − δ/2, and one survivor
    per block gives N_SS i.i.d. candidates, which fail w.p. ≤ δ/2."""

    total: int
    blocks: int
    block_size: int
    er_factor: float
    nss: NssLookup

    def to_dict(self) -> dict:
        return {"total": self.total, "blocks": self.blocks, "block_size": self.block_size,
                "er_factor": self.er_factor, "nss": self.nss.to_dict()}


def _law_rows(law: str, table: dict):
    rows = sorted(table["laws"][law]["rows"], key=lambda r: -r["eps"])  # ε descending: 1e-1 … 1e-5
    return rows


def _on_grid(value: float, grid) -> Optional[int]:
    for i, g in enumerate(grid):
        if abs(value - g) <= _REL * g:
            return i
    return None


def _calibrated(row: dict, j: int, law: str, table: dict) -> float:
    value = row["n_ss"][j]
    if value is None:
        raise ValueError(
            f"N_SS(eps={row['eps']!r}, delta={table['delta_grid'][j]!r}, law={law!r}) is not certified by the stored "
            f"table (k_max={table['k_max']}): allowed only certified entries; rerun scripts/calibrate_nss.py with more "
            f"trials or a larger --k-max")
    return float(value)


def _delta_resolved(values_by_delta, delta: float, delta_grid):
    """N at one ε from the calibrated column values (one per δ' grid value) — docs/math.md §5 extrapolation rule.

    Returns (value (float), delta_used, interpolated, extrapolated)."""
    grid = list(delta_grid)  # descending: 1e-1, 1e-2, 1e-3
    j = _on_grid(delta, grid)
    if j is not None:
        return values_by_delta[j], (grid[j],), False, False
    smallest = grid[-1]
    if delta > smallest:
        # next smaller calibrated δ' (harder): conservative; δ' above the grid uses the largest grid value
        j = min(i for i, g in enumerate(grid) if g < delta)
        return values_by_delta[j], (grid[j],), True, False
    # δ' below the grid: linear in log(1/δ') through δ_a = grid[-1], δ_b = grid[-2], never below N(δ_a)
    d_a, d_b = grid[-1], grid[-2]
    n_a, n_b = values_by_delta[-1], values_by_delta[-2]
    slope = max(0.0, n_a - n_b) / math.log(d_b / d_a)
    return n_a + slope * math.log(d_a / delta), (d_a, d_b), False, True


def nss_lookup(eps: float, delta: float, law: str = "uniform") -> NssLookup:
    """N_SS(ε, δ', law) from the calibrated table (docs/math.md §5), with flags saying how it was obtained.

    Rules (all conservative or explicitly flagged):
    - ε and δ' on the grid (ε ∈ {1e−1, …, 1e−5}, δ' ∈ {1e−1, 1e−2, 1e−3}): the Monte Carlo entry.
    - δ' between grid values (or above 1e−1): the next smaller calibrated δ' — ``interpolated``.
    - δ' < 1e−3: N(ε, δ') = ⌈N(ε, δ_a) + (N(ε, δ_a) − N(ε, δ_b)) / log(δ_b/δ_a) · log(δ_a/δ')⌉ with δ_a = 1e−3,
      δ_b = 1e−2 (linear in log(1/δ'), never below N(ε, δ_a)) — ``extrapolated``.
    - ε between grid values (or above 1e−1): the next smaller calibrated ε — ``interpolated``.
    - ε < 1e−5: every calibrated δ' column is extrapolated linearly in log2(1/ε) from ε = 1e−5 with the slope
      through ε = 1e−4 and 1e−5, but at least :data:`EPS_EXTRAPOLATION_MIN_SLOPE` = 1 candidate per halving of ε,
      then the δ' rule above is applied — ``extrapolated``. (The calibrated slopes are 0.6–0.9 per halving: at
      ε ≥ 1e−5 the binding event is reaching z near ±1, not resolution. Below, 2^k subset sums must resolve ε, and
      the exact best error of k i.i.d. candidates shrinks by about 2 per added candidate; measured with float64
      candidates (400 draws, z ∈ {0.05, 0.5, 1}, ``construct/README.md``), the old slopes under-provisioned, e.g.
      N = 30 at ε = 1e−8, δ' = 0.1 while 30 uniform candidates miss 1e−8 in > 10 % of draws at z = 1.)
    - Envelope: the result is raised to the largest value at any larger calibrated ε (so N_SS is non-increasing in ε
      even where the δ' extrapolation of different ε columns disagrees) — ``envelope`` says when this happened.
    """
    eps = check_open_unit(eps, "eps")
    delta = check_open_unit(delta, "delta")
    law = check_choice(law, "law", LAWS)
    table = load_nss_table()
    rows = _law_rows(law, table)
    eps_grid = [r["eps"] for r in rows]
    delta_grid = list(table["delta_grid"])
    n_delta = len(delta_grid)

    def resolved_at(i):
        vals = [_calibrated(rows[i], j, law, table) for j in range(n_delta)]
        return _delta_resolved(vals, delta, delta_grid)

    i = _on_grid(eps, eps_grid)
    interpolated = False
    extrapolated = False
    if i is None and eps > eps_grid[-1]:
        i = min(k for k, g in enumerate(eps_grid) if g < eps)
        interpolated = True
    if i is not None:
        value, d_used, d_int, d_ext = resolved_at(i)
        eps_used = (eps_grid[i],)
        easier = range(0, i + 1)
        rule = "calibrated entry"
    else:
        # ε below the grid: extrapolate every δ' column in log2(1/ε), then resolve δ'
        extrapolated = True
        last, prev = len(eps_grid) - 1, len(eps_grid) - 2
        x = math.log2(eps_grid[last] / eps)
        step = math.log2(eps_grid[prev] / eps_grid[last])
        cols = []
        for j in range(n_delta):
            n_last = _calibrated(rows[last], j, law, table)
            n_prev = _calibrated(rows[prev], j, law, table)
            slope = max(EPS_EXTRAPOLATION_MIN_SLOPE, (n_last - n_prev) / step)
            cols.append(n_last + slope * x)
        value, d_used, d_int, d_ext = _delta_resolved(cols, delta, delta_grid)
        eps_used = (eps_grid[prev], eps_grid[last])
        easier = range(0, len(eps_grid))
        rule = "eps extrapolated linearly in log2(1/eps), at least one candidate per halving of eps"
    envelope_value = max(resolved_at(k)[0] for k in easier)
    envelope = envelope_value > value + 1e-12
    value = max(value, envelope_value)
    interpolated = interpolated or d_int
    extrapolated = extrapolated or d_ext
    if d_ext:
        rule += "; delta extrapolated linearly in log(1/delta) through 1e-3 and 1e-2"
    if interpolated:
        rule += "; next harder calibrated grid value used"
    if envelope:
        rule += "; raised to the value at a larger calibrated eps (monotone envelope)"
    return NssLookup(
        value=int(math.ceil(value - 1e-9)),
        eps=eps,
        delta=delta,
        law=law,
        calibrated=not (interpolated or extrapolated or envelope),
        interpolated=interpolated,
        extrapolated=extrapolated,
        eps_used=tuple(eps_used),
        delta_used=tuple(d_used),
        envelope=envelope,
        rule=rule,
    )


def nss(eps: float, delta: float, law: str = "uniform") -> int:
    """N_SS(ε, δ', law): the calibrated number of unmasked candidates (see :func:`nss_lookup` for the rules)."""
    return nss_lookup(eps, delta, law).value


def thinning_width(eps: float, delta: float, density: float, law: str = "uniform") -> int:
    """[ours-1] of docs/math.md §5: n = ⌈(2·N_SS(ε, δ/2) + 8·log(2/δ)) / p⌉ masked candidates.

    The survivors are K ~ Bin(n, p) i.i.d. candidates; E K ≥ 2·N_SS + 8·log(2/δ) gives P(K < N_SS) ≤ δ/2
    (Chernoff), and N_SS(ε, δ/2) survivors fail w.p. ≤ δ/2, so the instance succeeds w.p. ≥ 1 − δ. Overhead 1/p.
    """
    density = check_density(density)
    delta = check_open_unit(delta, "delta")
    n_ss = nss(eps, delta / 2, law)
    return int(math.ceil((2 * n_ss + 8 * math.log(2 / delta)) / density - 1e-12))


def candidate_resolution(dtype: str, law: str = "uniform") -> float:
    """Largest distance between a subset-sum candidate built from drawn source weights and its continuous coupling
    (docs/math.md §5 calibrates continuous U[−1, 1] weights): r for a weight ("uniform"), 2·r for a product v·|w| of two
    weights (|v·w − ṽ·w̃| ≤ |v − ṽ|·|w| + |ṽ|·|w − w̃| ≤ 2r), with r = :data:`WEIGHT_RESOLUTION` [dtype]."""
    dtype = check_choice(dtype, "source_dtype", SOURCE_DTYPES)
    law = check_choice(law, "law", LAWS)
    return WEIGHT_RESOLUTION[dtype] * (2.0 if law == "product" else 1.0)


def effective_tolerance(eps: float, dtype: str, law: str = "uniform", max_chosen: int = SOLVER_MAX_CANDIDATES) -> float:
    """ε_eff = ε − C·ρ: the tolerance the calibrated (continuous) N_SS must meet so that drawn weights of spacing
    ρ = :func:`candidate_resolution` meet ε (docs/math.md §5, [ours]): couple every drawn candidate c̃ with a continuous
    c, |c − c̃| ≤ ρ; a subset S of at most C = ``max_chosen`` continuous candidates with |Σ_S c − z| ≤ ε_eff gives
    |Σ_S c̃ − z| ≤ ε_eff + |S|·ρ ≤ ε. Returns a value ≤ 0 when ε is below the weights' resolution."""
    eps = check_positive_real(eps, "eps")
    return float(eps) - int(max_chosen) * candidate_resolution(dtype, law)


@dataclass(frozen=True)
class SearchPlan:
    """How many candidates one subset-sum instance needs and how the solver searches them (docs/math.md §5, [ours]).

    ``blocks`` disjoint blocks of ``block`` i.i.d. candidates each (``total`` = blocks·block), every block searched
    exactly on its own (``block`` ≤ :data:`SOLVER_MAX_CANDIDATES`), the best block taken. A block fails with
    probability ≤ ``block_delta`` = δ^{1/blocks} (``block`` = N_SS(ε, block_delta, law)); the instance fails only if
    every block fails, which by independence has probability ≤ block_delta^blocks = δ. ``nss`` is the lookup of
    the block size."""

    total: int
    block: int
    blocks: int
    block_delta: float
    eps: float
    delta: float
    law: str
    nss: NssLookup

    def to_dict(self) -> dict:
        return asdict(self)


def search_plan(eps: float, delta: float, law: str = "uniform", max_block: int = SOLVER_MAX_CANDIDATES) -> SearchPlan:
    """The fewest candidates a·k, with k = N_SS(ε, δ^{1/a}, law) ≤ ``max_block``, that fail with probability ≤ δ when
    searched as a independent blocks of k (see :class:`SearchPlan`); a = 1 (one exact search of N_SS(ε, δ) ≤
    ``max_block`` candidates) whenever possible. Raises a one-line ValueError naming ε, the N_SS it needs and the
    cap when no block size within the cap exists (N_SS(ε, 0.1, law) > ``max_block``: ε is too small for the exact
    solver)."""
    eps = check_open_unit(eps, "eps")
    delta = check_open_unit(delta, "delta")
    law = check_choice(law, "law", LAWS)
    max_block = check_positive_int(max_block, "max_block")
    largest_delta = max(load_nss_table()["delta_grid"])
    best = None
    a = 1
    while True:
        block_delta = delta ** (1.0 / a)
        lookup = nss_lookup(eps, block_delta, law)
        if lookup.value <= max_block and (best is None or a * lookup.value < best.total):
            best = SearchPlan(total=a * lookup.value, block=lookup.value, blocks=a, block_delta=block_delta, eps=eps,
                              delta=delta, law=law, nss=lookup)
        if block_delta >= largest_delta or (best is not None and a * 1 >= best.total):
            break
        a += 1
    if best is None:
        need = nss(eps, delta, law)
        raise ValueError(
            f"per-instance tolerance eps={eps:.3g} ({law} candidates, failure {delta:.3g}) needs N_SS={need} candidates "
            f"(N_SS={nss(eps, largest_delta, law)} per block even at block failure {largest_delta}), but the exact "
            f"solver searches at most {max_block}: allowed larger tolerances (a larger eps, a shallower or narrower "
            f"target, a smaller input box)")
    return best


def block_width(eps: float, delta: float, density: float, law: str = "uniform") -> BlockWidth:
    """[ours-2] of docs/math.md §5: N_SS = N_SS(ε, δ/2) blocks of k = ⌈κ(p)·log(2·N_SS/δ)⌉ (≥ 1) candidates.

    Total n = N_SS·k — the κ(p) form with an extra log factor; equals N_SS at p = 1 (κ(1) = 0, k = 1).
    """
    density = check_density(density)
    delta = check_open_unit(delta, "delta")
    lookup = nss_lookup(eps, delta / 2, law)
    kappa = float(er_factor(density))
    k = max(1, int(math.ceil(kappa * math.log(2 * lookup.value / delta) - 1e-12)))
    return BlockWidth(total=lookup.value * k, blocks=lookup.value, block_size=k, er_factor=kappa, nss=lookup)


def failure_curve(eps: float, law: str = "uniform") -> np.ndarray:
    """P_fail(k, ε) for k = 0..k_max: max over the z grid of the observed failure rate with k unmasked candidates.

    ``eps`` must be a calibrated grid value (ValueError otherwise)."""
    eps = check_open_unit(eps, "eps")
    law = check_choice(law, "law", LAWS)
    table = load_nss_table()
    rows = _law_rows(law, table)
    grid = [r["eps"] for r in rows]
    i = _on_grid(eps, grid)
    if i is None:
        raise ValueError(f"eps={eps!r} is not calibrated: allowed one of {', '.join(map(repr, grid))}")
    return np.asarray(rows[i]["p_fail"], dtype=float)


def mixture_success_probability(n: int, density: float, eps: float, law: str = "uniform") -> float:
    """Σ_k Bin(k; n, p)·(1 − P_fail(k, ε)) (docs/math.md §5): the success probability of n masked candidates.

    P_fail(k) for k > k_max is replaced by P_fail(k_max) (an upper bound: failure is non-increasing in k).
    ``eps`` must be a calibrated grid value.
    """
    n = check_positive_int(n, "n", minimum=0)
    density = check_density(density)
    curve = failure_curve(eps, law)
    k = np.arange(n + 1)
    fail = curve[np.minimum(k, curve.size - 1)]
    from scipy import stats  # imported here: scipy.stats costs about a second at start-up

    weights = stats.binom.pmf(k, n, density)
    return float(np.clip(np.sum(weights * (1.0 - fail)), 0.0, 1.0))


#: Fitted constant C of n = ⌈C·log2(1/ε)⌉ unmasked candidates that reach success ≥ 1 − δ with δ = 0.01, for
#: ε ∈ {1e−2, 1e−3, 1e−4}: the upper ends of one-sided 95 % Clopper–Pearson intervals measured by experiment E6
#: (``python -m experiments.fit_constant --results figures/e6/subset-sum.jsonl``: uniform C = 2.408 [2.258, 2.559],
#: product C = 3.612 [3.462, 3.763]). This is the project's fit — the paper's constant is not known — and it is
#: dominated by ε = 1e−2, because the measured n grows more slowly than log2(1/ε).
FITTED_CONSTANT = {"uniform": 2.56, "product": 3.76}


def fitted_width(eps: float, law: str = "uniform") -> int:
    """⌈C·log2(1/ε)⌉ with the fitted C of :data:`FITTED_CONSTANT` (unmasked candidates, δ = 0.01; docs/math.md §5)."""
    eps = check_open_unit(eps, "eps")
    law = check_choice(law, "law", tuple(FITTED_CONSTANT))
    return int(math.ceil(FITTED_CONSTANT[law] * math.log2(1.0 / eps) - 1e-12))


def paper_literal_width(eps: float, delta: float, density: float, constant: float | None = None,
                        law: str = "uniform") -> int:
    """⌈C·κ(p)·log(1/min(ε, δ))⌉: the paper's shape of the masked subset-sum width, read literally (docs/math.md §5).

    ``constant=None`` uses the fitted constant of :data:`FITTED_CONSTANT` for ``law``, converted from log2 to the
    natural log (C / ln 2). With a fixed C this FAILS as p → 1: κ(p) → 0 (the width is 0 at p = 1), while 2^n
    subset sums cannot ε-cover [−1, 1] when 2^n < 1/ε. Shown next to the calibrated bounds for comparison only;
    never rely on it near p = 1.
    """
    eps = check_open_unit(eps, "eps")
    delta = check_open_unit(delta, "delta")
    density = check_density(density)
    if constant is None:
        constant = FITTED_CONSTANT[check_choice(law, "law", tuple(FITTED_CONSTANT))] / math.log(2.0)
    constant = check_positive_real(constant, "constant")
    return int(math.ceil(constant * float(er_factor(density)) * math.log(1.0 / min(eps, delta)) - 1e-12))
