"""Calibrate the subset-sum table N_SS(ε, δ', law) of docs/math.md §5 by seeded Monte Carlo with the exact solver.

Following Gadhikar et al. 2023 (docs/math.md §5): N_SS(ε, δ', law) is the smallest number of unmasked i.i.d.
candidates such that, for every z on a grid of [−1, 1], the exact best subset misses z by more than ε with
probability ≤ δ'. For every trial (one draw of k_max candidates) and every grid point z, the exact solver finds
m_needed = the smallest prefix of the draw that reaches z within ε (failure is monotone in the prefix length for
nested prefixes), so one pass gives the failure count at every n = 0..k_max. N_SS(ε, δ') is the smallest n at which
the one-sided Clopper–Pearson upper bound (at the stated confidence) of every grid point's failure probability is
≤ δ'. The same draws are used for every ε of a law (common random numbers), so the table is monotone in ε and δ'.

The batches of trials are independent tasks run on the engine of :mod:`experiments.infra.engine` (a local process pool
by default, ``--engine ray`` for Ray, one BLAS / numba thread per task); the candidates are drawn in this process
and the counts are assembled in batch order, so the table does not depend on the engine or the number of workers.

Usage:  python scripts/calibrate_nss.py --out theory/data/nss_table.json [--trials 20000] [--seed 0]
            [--engine local|ray] [--workers N] [--address auto|HOST:PORT]
"""
from __future__ import annotations

import datetime
import json
import platform
import re
import shlex
import sys
import time

import numpy as np
from scipy import stats

from construct.subset_sum import smallest_sufficient_prefix
from theory.atomic import atomic_write_text
from theory.cli import ArgumentParser, dumps, run_main
from theory.validation import check_open_unit, check_positive_int

LAWS = ("uniform", "product")
EPS_GRID = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
DELTA_GRID = (1e-1, 1e-2, 1e-3)


def draw_candidates(law: str, trials: int, k_max: int, rng: np.random.Generator) -> np.ndarray:
    """(trials, k_max) i.i.d. candidates: "uniform" X ~ U[−1, 1]; "product" X = U·V, U, V ~ U[−1, 1] independent."""
    values = rng.uniform(-1.0, 1.0, (trials, k_max))
    if law == "product":
        values = values * rng.uniform(-1.0, 1.0, (trials, k_max))
    elif law != "uniform":
        raise ValueError(f"law={law!r} is unknown: allowed 'uniform', 'product'")
    return values


def failure_counts(needed: np.ndarray, k_max: int) -> np.ndarray:
    """counts[z, k] = #trials whose m_needed for grid point z exceeds k (k = 0..k_max): failures with k candidates."""
    ks = np.arange(k_max + 1)
    return (needed[:, :, None] > ks[None, None, :]).sum(axis=0)


def clopper_pearson_upper(failures: np.ndarray, trials: int, confidence: float) -> np.ndarray:
    """One-sided Clopper–Pearson upper bound on a Bernoulli probability from ``failures`` out of ``trials``."""
    failures = np.asarray(failures)
    upper = stats.beta.ppf(confidence, failures + 1, np.maximum(trials - failures, 1))
    return np.where(failures >= trials, 1.0, upper)


def nss_from_upper(upper_max: np.ndarray, delta: float):
    """Smallest n with max_z CP-upper(n) ≤ δ', or None if no n ≤ k_max qualifies."""
    ok = np.flatnonzero(upper_max <= delta)
    return int(ok[0]) if ok.size else None


def needed_batch(task: tuple) -> np.ndarray:
    """One engine task: m_needed of a batch of trials, ``task`` = (candidates (rows, k_max), grid, eps)."""
    candidates, grid, eps = task
    return smallest_sufficient_prefix(candidates, np.tile(grid, (candidates.shape[0], 1)), eps)


def calibrate(trials: int, seed: int, confidence: float, grid_points: int, k_max: int,
              laws=LAWS, eps_grid=EPS_GRID, delta_grid=DELTA_GRID, batch: int = 1000, engine=None) -> dict:
    """Run the Monte Carlo and return the table as a JSON-ready dict (see the module docstring); the batches run
    on ``engine`` (:class:`experiments.infra.engine.EngineSpec`; default: in this process)."""
    from tqdm import tqdm

    from experiments.infra.engine import EngineSpec, open_engine

    grid = np.linspace(-1.0, 1.0, grid_points)
    draws = [draw_candidates(law, trials, k_max, np.random.default_rng([seed, law_index]))
             for law_index, law in enumerate(laws)]
    starts = list(range(0, trials, batch))
    tasks, where = [], []
    for law_index in range(len(laws)):
        for eps_index, eps in enumerate(eps_grid):
            for start in starts:
                tasks.append((draws[law_index][start:start + batch], grid, eps))
                where.append((law_index, eps_index, start))
    needed_all = {}
    bar = tqdm(total=len(tasks), desc="calibrating N_SS", disable=not sys.stderr.isatty())
    with open_engine(engine or EngineSpec("local", workers=1)) as runner:
        for outcome in runner.imap_unordered(needed_batch, tasks):
            if not outcome.ok:
                raise RuntimeError(f"calibration batch {where[outcome.index]} failed: {outcome.error}")
            needed_all[where[outcome.index]] = outcome.value
            bar.update(1)
    out_laws = {}
    for law_index, law in enumerate(laws):
        rows = []
        for eps_index, eps in enumerate(eps_grid):
            needed = np.concatenate([needed_all[(law_index, eps_index, start)] for start in starts])
            counts = failure_counts(needed, k_max)  # (grid, k_max + 1)
            upper = clopper_pearson_upper(counts, trials, confidence)
            upper_max = upper.max(axis=0)
            rows.append({
                "eps": eps,
                "n_ss": [nss_from_upper(upper_max, d) for d in delta_grid],
                "p_fail": (counts.max(axis=0) / trials).tolist(),
                "p_fail_upper": upper_max.tolist(),
                "fail_counts": counts.tolist(),
                "max_needed": int(needed.max()),
            })
        out_laws[law] = {"rows": rows}
    bar.close()
    return {
        "z_grid": grid.tolist(),
        "eps_grid": list(eps_grid),
        "delta_grid": list(delta_grid),
        "k_max": k_max,
        "laws": out_laws,
    }


_NUMBER_LIST = re.compile(r"\[\s*([-+0-9.eE,\snul]*?)\s*\]")


def compact_json(document: dict) -> str:
    """JSON text with every innermost list of numbers on one line (readable and ~5x smaller than indent=2)."""
    text = dumps(document)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",") if x.strip()) + "]",
                            text)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python scripts/calibrate_nss.py",
        description="Calibrate the subset-sum table N_SS(eps, delta', law) of docs/math.md §5 by seeded Monte Carlo "
                    "with the exact solver and one-sided Clopper-Pearson bounds; writes JSON atomically.")
    parser.add_argument("--out", required=True, help="output JSON path (e.g. theory/data/nss_table.json)")
    parser.add_argument("--trials", type=int, default=20000,
                        help="Monte Carlo trials per law (one draw of k_max candidates each; default 20000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of numpy's default_rng (default 0)")
    parser.add_argument("--confidence", type=float, default=0.99,
                        help="one-sided Clopper-Pearson confidence per grid point, in (0, 1) (default 0.99)")
    parser.add_argument("--grid-points", type=int, default=41,
                        help="number of equally spaced targets z in [-1, 1], incl. both ends (odd: includes 0; default 41)")
    parser.add_argument("--k-max", type=int, default=44,
                        help="candidates per trial = largest n tabulated (default 44)")
    parser.add_argument("--engine", default="local", choices=("local", "ray"),
                        help="local = a process pool (default); ray = Ray tasks (pip install 'er-tickets[cluster]')")
    parser.add_argument("--workers", type=int, default=None,
                        help="local: processes (default: every available CPU; 1 = this process); ray without "
                             "--address: CPUs of the embedded instance")
    parser.add_argument("--address", default=None,
                        help="ray: 'auto' or HOST:PORT of a running cluster's head (default: an embedded instance)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    trials = check_positive_int(args.trials, "trials")
    confidence = check_open_unit(args.confidence, "confidence")
    grid_points = check_positive_int(args.grid_points, "grid_points", minimum=3)
    k_max = check_positive_int(args.k_max, "k_max", minimum=2)
    if args.seed < 0:
        raise ValueError(f"seed={args.seed} is out of range: allowed integers >= 0")
    from experiments.infra.engine import EngineSpec

    engine = EngineSpec(args.engine, workers=args.workers, address=args.address)
    started = time.time()
    table = calibrate(trials, args.seed, confidence, grid_points, k_max, engine=engine)
    wall = time.time() - started
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    document = {
        "description": (
            "N_SS(eps, delta', law) of docs/math.md §5: smallest number of unmasked i.i.d. candidates such that at every "
            "grid point z the exact best subset has error > eps with probability <= delta' (one-sided "
            "Clopper-Pearson upper bound at the stated confidence, per grid point). n_ss[j] belongs to "
            "delta_grid[j]; null = not certified with k_max candidates. p_fail[k] = max over grid z of the observed "
            "failure rate with k candidates (k = 0..k_max); p_fail_upper[k] its CP upper bound; "
            "fail_counts[z][k] raw counts."),
        "provenance": {
            "seed": args.seed,
            "trials": trials,
            "confidence": confidence,
            "confidence_kind": "one-sided Clopper-Pearson upper bound, per grid point",
            "grid_points": grid_points,
            "k_max": k_max,
            "rng": "numpy.random.default_rng([seed, law_index]); the same draws for every eps of a law",
            "solver": "construct.subset_sum.smallest_sufficient_prefix (exact meet-in-the-middle)",
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": f"python scripts/calibrate_nss.py {argv_text}".strip(),
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "wall_seconds": round(wall, 1),
            "engine": args.engine,
        },
        "extrapolation": {
            "delta_a": 1e-3,
            "delta_b": 1e-2,
            "delta_rule": "N(eps, d) = ceil(N(eps, d_a) + (N(eps, d_a) - N(eps, d_b)) / log(d_b/d_a) * log(d_a/d)) "
                          "for d < d_a, never below N(eps, d_a)",
            "eps_rule": "eps between grid points: next smaller calibrated eps; eps below the grid: every delta "
                        "column linear in log2(1/eps) from the smallest calibrated eps with the slope through the two "
                        "smallest, but at least one candidate per halving of eps; then raised to the value at any "
                        "larger calibrated eps (monotone envelope)",
        },
        **table,
    }
    text = compact_json(document)
    if json.loads(text) != json.loads(dumps(document)):
        raise ValueError("compact JSON differs from the document: allowed only a faithful re-formatting")
    atomic_write_text(args.out, text + "\n")
    print(f"wrote {args.out} in {wall:.0f} s ({trials} trials per law, confidence {confidence})")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
