"""Benchmark of the batched exact subset-sum solver against two baselines (docs/math.md §6 "Subset-sum solving").

On the same seeded instances (n candidates per instance drawn as the L+1 construction sees them — "uniform"
X ~ U[−1, 1] or "product" X = U·V — optionally thinned by an ER(density) availability mask; targets z ~ U[−1, 1])
it measures instances per second and success rate (error ≤ ε) of
  (a) :func:`construct.subset_sum.solve_subset_sums` on all instances (exact; its default numba backend, compiled
      before timing);
  (b) an exhaustive search over subsets of size 1..10 with early stop at the first subset within ε, written with
      itertools.combinations as in public strong-ticket construction code (re-implemented here), on a subsample;
  (c) scipy.optimize.milp (:func:`construct.subset_sum.best_subset_milp` in feasibility mode: any subset within ε,
      ``milp_time_limit_s`` per solve) on a smaller subsample,
and reports the speed ratios. Success rates of the baselines are compared with ours on the *same* subsample.
Timings depend on the machine and its load; run the three methods in one call so the ratios are side by side.
"""
from __future__ import annotations

import itertools
import sys
import time
from typing import Sequence

import numpy as np

from construct.subset_sum import best_subset_milp, solve_subset_sums
from theory.validation import check_choice, check_density, check_open_unit, check_positive_int, check_positive_real

LAWS = ("uniform", "product")


def draw_instances(law: str, instances: int, n_candidates: int, density: float, rng: np.random.Generator):
    """(candidates (I, n), targets (I,), available (I, n) bool) for one benchmark setting."""
    cand = rng.uniform(-1.0, 1.0, (instances, n_candidates))
    if law == "product":
        cand = cand * rng.uniform(-1.0, 1.0, (instances, n_candidates))
    targets = rng.uniform(-1.0, 1.0, instances)
    available = rng.random((instances, n_candidates)) < density if density < 1.0 else np.ones(cand.shape, bool)
    return cand, targets, available


def exhaustive_small_subsets(candidates, target: float, eps: float, available=None, max_size: int = 10):
    """Baseline (b): try all subsets of size 1..max_size in itertools.combinations order; stop at the first one
    within ε. Returns (mask, error, found). Not exact: subsets larger than ``max_size`` are never tried."""
    c = np.asarray(candidates, dtype=float)
    idx = np.flatnonzero(np.ones(c.size, bool) if available is None else np.asarray(available, bool))
    values = c[idx].tolist()
    best_err, best = abs(target), ()
    if best_err <= eps:
        return np.zeros(c.size, bool), best_err, True
    for size in range(1, min(max_size, len(values)) + 1):
        for combo in itertools.combinations(range(len(values)), size):
            err = abs(sum(values[i] for i in combo) - target)
            if err < best_err:
                best_err, best = err, combo
                if err <= eps:
                    mask = np.zeros(c.size, bool)
                    mask[idx[list(combo)]] = True
                    return mask, err, True
    mask = np.zeros(c.size, bool)
    mask[idx[list(best)]] = True
    return mask, best_err, False


def _time_subsample(fn, count: int, budget_s: float):
    """Run fn(i) for i = 0, 1, … until ``count`` calls or ``budget_s`` seconds; returns (results, seconds)."""
    results = []
    start = time.perf_counter()
    for i in range(count):
        results.append(fn(i))
        if time.perf_counter() - start > budget_s:
            break
    return results, time.perf_counter() - start


def run_solver_bench(
    seed: int = 0,
    instances: int = 100_000,
    eps_values: Sequence[float] = (1e-2, 1e-3, 1e-4),
    laws: Sequence[str] = ("uniform", "product"),
    n_candidates: int = 32,
    density: float = 1.0,
    exhaustive_instances: int = 300,
    milp_instances: int = 30,
    baseline_budget_s: float = 20.0,
    milp_time_limit_s: float = 10.0,
) -> list[dict]:
    """Measure (a) the batched solver, (b) the exhaustive size-≤10 search, (c) MILP on the same seeded instances.

    One dict per (law, ε): instance counts, seconds, instances/s and success rate of each method, our success
    rate on the baselines' subsamples, and the ratios ``speedup_vs_exhaustive`` / ``speedup_vs_milp`` (instances/s
    over instances/s). Baselines run on the first ``exhaustive_instances`` / ``milp_instances`` instances or until
    ``baseline_budget_s`` seconds, whichever comes first (the dict says how many ran).

    Before any timing the solver is called once on a tiny instance, so that compiling its numba kernel (≈ 8 s in a
    fresh environment) or loading it from numba's on-disk cache is not inside the timed region.
    """
    seed = check_positive_int(seed, "seed", minimum=0)
    instances = check_positive_int(instances, "instances")
    n_candidates = check_positive_int(n_candidates, "n_candidates")
    density = check_density(density)
    exhaustive_instances = check_positive_int(exhaustive_instances, "exhaustive_instances", minimum=0)
    milp_instances = check_positive_int(milp_instances, "milp_instances", minimum=0)
    baseline_budget_s = check_positive_real(baseline_budget_s, "baseline_budget_s")
    milp_time_limit_s = check_positive_real(milp_time_limit_s, "milp_time_limit_s")
    eps_values = [check_open_unit(e, "eps") for e in eps_values]
    laws = [check_choice(law, "law", LAWS) for law in laws]
    from tqdm import tqdm

    solve_subset_sums(np.zeros((1, 2)), np.zeros(1), 0.5, np.ones((1, 2), dtype=bool))  # warm-up (JIT), not timed
    rows = []
    settings = [(law_index, law, eps) for law_index, law in enumerate(laws) for eps in eps_values]
    for law_index, law, eps in tqdm(settings, desc="solver bench", disable=not sys.stderr.isatty()):
        rng = np.random.default_rng([seed, LAWS.index(law)])
        cand, z, avail = draw_instances(law, instances, n_candidates, density, rng)

        start = time.perf_counter()
        mask, err = solve_subset_sums(cand, z, eps, avail)
        ours_s = time.perf_counter() - start
        ours_ok = err <= eps

        exh, exh_s = _time_subsample(
            lambda i: exhaustive_small_subsets(cand[i], z[i], eps, avail[i])[2],
            min(exhaustive_instances, instances), baseline_budget_s)
        mil, mil_s = _time_subsample(
            lambda i: best_subset_milp(cand[i], z[i], avail[i], eps=eps, time_limit=milp_time_limit_s)[1] <= eps,
            min(milp_instances, instances), baseline_budget_s)

        ours_rate = instances / ours_s
        row = {
            "law": law,
            "eps": eps,
            "n_candidates": n_candidates,
            "density": density,
            "ours_instances": instances,
            "ours_seconds": ours_s,
            "ours_per_s": ours_rate,
            "ours_success": float(ours_ok.mean()),
            "exhaustive_instances": len(exh),
            "exhaustive_seconds": exh_s,
            "exhaustive_per_s": len(exh) / exh_s if exh else float("nan"),
            "exhaustive_success": float(np.mean(exh)) if exh else float("nan"),
            "ours_success_on_exhaustive_subsample": float(ours_ok[:len(exh)].mean()) if exh else float("nan"),
            "milp_instances": len(mil),
            "milp_seconds": mil_s,
            "milp_per_s": len(mil) / mil_s if mil else float("nan"),
            "milp_success": float(np.mean(mil)) if mil else float("nan"),
            "ours_success_on_milp_subsample": float(ours_ok[:len(mil)].mean()) if mil else float("nan"),
        }
        row["speedup_vs_exhaustive"] = ours_rate / row["exhaustive_per_s"] if exh else float("nan")
        row["speedup_vs_milp"] = ours_rate / row["milp_per_s"] if mil else float("nan")
        rows.append(row)
    return rows


def format_solver_bench(rows: Sequence[dict]) -> str:
    """A plain-text table of :func:`run_solver_bench` rows (one line per law and ε)."""
    header = (f"{'law':8s} {'eps':>7s} {'ours/s':>10s} {'ok':>6s} | {'exh/s':>8s} {'ok':>6s} {'(ours)':>6s} "
              f"{'x exh':>8s} | {'milp/s':>7s} {'ok':>6s} {'(ours)':>6s} {'x milp':>8s}")
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['law']:8s} {r['eps']:7.0e} {r['ours_per_s']:10.0f} {r['ours_success']:6.4f} | "
            f"{r['exhaustive_per_s']:8.1f} {r['exhaustive_success']:6.3f} {r['ours_success_on_exhaustive_subsample']:6.3f} "
            f"{r['speedup_vs_exhaustive']:8.0f} | {r['milp_per_s']:7.1f} {r['milp_success']:6.3f} "
            f"{r['ours_success_on_milp_subsample']:6.3f} {r['speedup_vs_milp']:8.0f}")
    lines.append("ok = success rate (error <= eps); (ours) = our success rate on the baseline's subsample; "
                 "x = instances/s ratio")
    return "\n".join(lines)
