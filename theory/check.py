"""Property-test the bounds of the `theory` package against seeded Monte Carlo (the `python -m theory check`
command), following Gadhikar et al. 2023 and docs/math.md §1–§5, §7.

Each claim yields one :class:`CheckRow`; nothing is printed here. Monte Carlo rows are judged at a fixed
significance level ``ALPHA`` with a fixed seed, so the verdicts are deterministic:

- "exact" rows: the two-sided Clopper–Pearson interval (confidence 1 − ALPHA) of the observed rate must contain
  the exactly computed probability;
- "at least" rows: the one-sided binomial test of "true rate ≥ bound" must not reject at ALPHA (the observed rate
  is not significantly below the bound);
- "all" rows: a deterministic property must hold at every grid point.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
from scipy import stats

from theory.densities import SCHEMES, layer_densities
from theory.er_factor import er_factor
from theory.lower_bound import connection_probability, lower_bound_width
from theory.validation import check_choice, check_positive_int
from theory.weak_widths import weak_widths

__all__ = ["ALPHA", "BUDGETS", "CheckRow", "CheckReport", "run_checks", "simulate_weak_success", "simulate_all_connected"]

ALPHA = 1e-3
BUDGETS = ("fast", "full")


@dataclass(frozen=True)
class CheckRow:
    """One claim: ``successes`` out of ``trials``, ``observed`` rate with its Clopper–Pearson interval
    [``ci_low``, ``ci_high``] (confidence 1 − ALPHA; None for deterministic rows), the ``bound`` it is compared with,
    the ``kind`` of comparison ("exact", "at least" or "all") and the verdict ``holds``."""

    claim: str
    parameters: str
    trials: int
    successes: int
    observed: float
    ci_low: float | None
    ci_high: float | None
    bound: float | None
    kind: str
    holds: bool
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CheckReport:
    """All rows of one run; ``all_hold`` is the exit criterion of `python -m theory check`."""

    budget: str
    seed: int
    alpha: float
    rows: tuple[CheckRow, ...]
    all_hold: bool
    seconds: float

    def to_dict(self) -> dict:
        return {
            "budget": self.budget,
            "seed": self.seed,
            "alpha": self.alpha,
            "all_hold": self.all_hold,
            "seconds": self.seconds,
            "rows": [r.to_dict() for r in self.rows],
        }


def _cp_interval(successes: int, trials: int) -> tuple[float, float]:
    ci = stats.binomtest(successes, trials).proportion_ci(confidence_level=1 - ALPHA, method="exact")
    return float(ci.low), float(ci.high)


def _mc_row(claim: str, parameters: str, successes: int, trials: int, bound: float, kind: str, note: str = "") -> CheckRow:
    lo, hi = _cp_interval(successes, trials)
    if kind == "exact":
        holds = lo <= bound <= hi
    else:  # "at least": H0 rate ≥ bound, rejected if the observed count is significantly low
        holds = stats.binomtest(successes, trials, min(bound, 1.0), alternative="less").pvalue >= ALPHA
    return CheckRow(claim, parameters, trials, successes, successes / trials, lo, hi, bound, kind, bool(holds), note)


# ---------------------------------------------------------------------------------------------- simulations

def simulate_all_connected(rng: np.random.Generator, inputs: int, width: int, input_density: float,
                           output_density: float, trials: int, chunk_elements: int = 4_000_000) -> int:
    """Number of trials in which every input of d → n → 1 is connected (docs/math.md §3), drawing the full masks
    M_1 ~ ER(p_1) (n×d) and M_2 ~ ER(p_2) (1×n) from ``rng`` and evaluating them with
    :func:`theory.lower_bound.connected_inputs`' rule (batched)."""
    per = max(1, chunk_elements // max(1, width * inputs))
    hits, done = 0, 0
    while done < trials:
        b = min(per, trials - done)
        m1 = rng.random((b, width, inputs)) < input_density
        m2 = rng.random((b, width)) < output_density
        hits += int((m1 & m2[:, :, None]).any(axis=1).all(axis=1).sum())
        done += b
    return hits


def simulate_weak_success(rng: np.random.Generator, widths, trials: int) -> int:
    """Number of trials in which every edge-existence event of the weak construction (docs/math.md §4.3) holds for a
    dense target, given :class:`theory.weak_widths.WeakWidths` ``widths``:

    - t = 1: for every copy s of every target neuron i (r_2 copies) and every input j and sign ±, some unit u of
      G_j^± has M_1[u, j] = 1 and M_2[s, u] = 1 (only the entry M_1[u, j] of a lifting unit matters, and only the
      columns of M_2 at usable units, so only those entries are drawn);
    - t ≥ 2: for every copy s in source layer t+1 and every neuron j of target layer t−1, some copy u of j has
      M_{t+1}[s, u] = 1.
    Unit (i, c) — copy c of neuron i — has index i·r + c; G_j^± are consecutive blocks of g units.
    """
    n_t = widths.target_widths
    L = len(n_t) - 1
    g, r = widths.lifting_group, (None, None) + tuple(widths.copies)  # r[t], t = 2..L+1
    p = widths.densities
    ok_total = 0
    for _ in range(trials):
        usable = rng.random(2 * g * n_t[0]) < p[0]  # M_1[u, j(u)]
        counts = usable.reshape(2 * n_t[0], g).sum(axis=1)  # usable units per group G_j^±
        ok = bool((counts > 0).all())
        if ok:
            # only the columns of M_2 at usable units can matter; columns stay grouped (j, ±) in order
            m2 = rng.random((r[2] * n_t[1], int(counts.sum()))) < p[1]
            starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
            ok = bool(np.logical_or.reduceat(m2, starts, axis=1).all())
        for t in range(2, L + 1):
            if not ok:
                break
            m = rng.random((r[t + 1] * n_t[t], r[t] * n_t[t - 1])) < p[t]
            ok = bool(m.reshape(-1, n_t[t - 1], r[t]).any(axis=2).all())
        ok_total += ok
    return ok_total


# ---------------------------------------------------------------------------------------------- claims

def _kappa_rows(budget: str) -> list[CheckRow]:
    size = 2_000 if budget == "fast" else 200_000
    grid = np.unique(np.concatenate([np.logspace(-300, 0, size), np.linspace(1e-6, 1.0, size)]))
    k = er_factor(grid)
    lower = (1 - grid) / grid * (1 - 1e-12) <= k
    upper = k <= (1 / grid) * (1 + 1e-12)
    both = lower & upper
    small = grid[grid <= 1e-3]
    series_err = np.abs(er_factor(small) - (1 / small - 0.5 - small / 12))
    series_ok = series_err <= 1e-15 / small + small**2 / 10 + 1e-12  # float rounding of 1/p, plus the O(p²) term
    extremes = int(er_factor(1.0) == 0.0) + int(abs(er_factor(1e-17) / 1e17 - 1) < 1e-12)
    return [
        CheckRow("kappa: (1-p)/p <= kappa(p) <= 1/p", f"{grid.size} densities in [1e-300, 1]", int(grid.size),
                 int(both.sum()), float(both.mean()), None, None, 1.0, "all", bool(both.all())),
        CheckRow("kappa: series 1/p - 1/2 - p/12 + O(p^2)", f"{small.size} densities <= 1e-3", int(small.size),
                 int(series_ok.sum()), float(series_ok.mean()), None, None, 1.0, "all", bool(series_ok.all()),
                 f"max relative error {float((series_err * small).max()):.2g}"),
        CheckRow("kappa: kappa(1) = 0, kappa(1e-17) = 1e17", "2 values", 2, extremes, extremes / 2, None, None, 1.0,
                 "all", extremes == 2),
    ]


def _lower_bound_rows(rng: np.random.Generator, budget: str) -> list[CheckRow]:
    trials = 4_000 if budget == "fast" else 40_000
    settings = [(20, 0.1, 1.0), (30, 0.05, 0.5), (10, 0.02, 0.3)]
    if budget == "full":
        settings += [(100, 0.01, 1.0), (5, 0.2, 0.1)]
    rows = []
    delta = 0.1
    for d, p1, p2 in settings:
        n_star = lower_bound_width(d, p1, delta, p2)
        for n in (n_star, max(1, n_star // 2)):
            exact = connection_probability(d, n, p1, p2)
            hits = simulate_all_connected(rng, d, n, p1, p2, trials)
            rows.append(_mc_row("lower bound: P(all inputs connected) = E_K[(1-(1-p1)^K)^d]",
                                f"d={d} n={n} p1={p1} p2={p2}" + (" (n*)" if n == n_star else " (n*/2)"),
                                hits, trials, exact, "exact"))
        rows.append(_mc_row("lower bound: n* gives P(connected) >= 1 - delta",
                            f"d={d} n*={n_star} p1={p1} p2={p2} delta={delta}",
                            rows[-2].successes, trials, 1 - delta, "at least"))
    return rows


def _weak_rows(rng: np.random.Generator, budget: str) -> list[CheckRow]:
    trials = 1_000 if budget == "fast" else 10_000
    settings = [((4, 3, 2), 0.3, 0.2), ((5, 4, 3, 2), (0.5, 0.4, 0.3, 0.2), 0.1)]
    if budget == "full":
        settings += [((6, 5, 4), 0.1, 0.05)]
    rows = []
    for target, dens, delta in settings:
        w = weak_widths(target, dens, delta)
        hits = simulate_weak_success(rng, w, trials)
        rows.append(_mc_row("weak widths: every needed edge set non-empty w.p. >= 1 - delta",
                            f"target={','.join(map(str, target))} density={dens} delta={delta} g={w.lifting_group} "
                            f"r={','.join(map(str, w.copies))}", hits, trials, 1 - delta, "at least"))
    return rows


def _resnet18_cifar_shapes() -> list[list[int]]:
    shapes = [[64, 3, 3, 3]] + [[64, 64, 3, 3]] * 4
    for cin, c in ((64, 128), (128, 256), (256, 512)):
        shapes += [[c, cin, 3, 3]] + [[c, c, 3, 3]] * 3 + [[c, cin, 1, 1]]
    return shapes + [[10, 512, 1, 1]]


def _density_rows(rng: np.random.Generator, budget: str) -> list[CheckRow]:
    cases = [("resnet18-cifar", _resnet18_cifar_shapes()), ("mlp 784-300-100-10", [[300, 784], [100, 300], [10, 100]])]
    n_random = 20 if budget == "fast" else 500
    for i in range(n_random):
        L = int(rng.integers(1, 10))
        shapes = [[int(v) for v in rng.integers(1, 300, size=int(rng.choice([2, 4])))] for _ in range(L)]
        cases.append((f"random#{i}", shapes))
    densities = (1.0, 0.5, 0.1, 0.01, 1e-3)
    rows = []
    for scheme in SCHEMES:
        total, good = 0, 0
        for _, shapes in cases:
            for p in densities:
                r = layer_densities(shapes, p, scheme)
                budget_ok = abs(sum(r.kept) - p * r.total) <= 1e-9 * p * r.total
                range_ok = all(0.0 < x <= 1.0 for x in r.densities)
                total += 1
                good += bool(budget_ok and range_ok)
        rows.append(CheckRow(f"densities: {scheme} keeps sum p_l N_l = p N, p_l in (0, 1]",
                             f"{len(cases)} shape lists x {len(densities)} densities", total, good, good / total,
                             None, None, 1.0, "all", good == total))
    shapes = _resnet18_cifar_shapes()
    expected = {(0.5, "balanced"): 0.266, (0.5, "erk"): 0.389, (0.1, "balanced"): 0.079, (0.1, "erk"): 0.092}
    hits = sum(abs(layer_densities(shapes, p, s, compat=True).global_density - v) <= 5e-4 for (p, s), v in expected.items())
    rows.append(CheckRow("densities: compat mode reproduces the released code (ResNet-18/CIFAR)",
                         "labels 0.5, 0.1 -> balanced 0.266, 0.079; ERK 0.389, 0.092 (+-5e-4)", len(expected), hits,
                         hits / len(expected), None, None, 1.0, "all", hits == len(expected)))
    return rows


def _subset_sum_rows(rng: np.random.Generator, budget: str) -> list[CheckRow]:
    """[ours-1] of docs/math.md §5: at n = thinning_width, K ~ Bin(n, p) survivors reach N_SS(ε, δ/2) w.p. ≥ 1 − δ/2."""
    from theory.subset_sum import nss, thinning_width

    claim = "subset sum [ours-1]: P(K >= N_SS) >= 1 - delta/2 at the thinning width"
    trials = 20_000 if budget == "fast" else 200_000
    rows = []
    settings = [(1e-2, 0.1, 0.5, "uniform"), (1e-2, 0.05, 0.1, "uniform"), (1e-3, 0.1, 0.02, "uniform")]
    if budget == "full":
        settings += [(1e-2, 0.1, 0.3, "product"), (1e-3, 0.01, 0.05, "product")]
    for eps, delta, density, law in settings:
        n_ss = int(nss(eps, delta / 2, law))
        n = int(thinning_width(eps, delta, density, law))
        k = rng.binomial(n, density, size=trials)
        hits = int((k >= n_ss).sum())
        rows.append(_mc_row(claim, f"eps={eps} delta={delta} density={density} law={law} N_SS={n_ss} n={n}", hits, trials,
                            1 - delta / 2, "at least"))
    return rows


def run_checks(budget: str = "fast", seed: int = 0, progress: bool = False) -> CheckReport:
    """Run every claim with ``budget`` ("fast": under a minute on 2 cores; "full": more settings and trials),
    all random draws from ``numpy.random.default_rng(seed)`` (one child generator per claim)."""
    budget = check_choice(budget, "budget", BUDGETS)
    seed = check_positive_int(seed, "seed", minimum=0)
    children = np.random.default_rng(seed).spawn(5)
    claims: list[Callable[[], Iterable[CheckRow]]] = [
        lambda: _kappa_rows(budget),
        lambda: _lower_bound_rows(children[0], budget),
        lambda: _weak_rows(children[1], budget),
        lambda: _density_rows(children[2], budget),
        lambda: _subset_sum_rows(children[3], budget),
    ]
    start = time.perf_counter()
    rows: list[CheckRow] = []
    try:
        from tqdm import tqdm

        iterator = tqdm(claims, desc="theory check", unit="claim", disable=not progress)
    except ImportError:  # pragma: no cover - tqdm is a dependency
        iterator = claims
    for claim in iterator:
        rows.extend(claim())
    return CheckReport(budget, seed, ALPHA, tuple(rows), all(r.holds for r in rows), time.perf_counter() - start)
