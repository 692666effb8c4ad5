"""The fitted subset-sum constant C of n = C·log2(1/ε) (docs/math.md §5), from stored E6 results, following Gadhikar et
al. 2023 (whose constant, after Lueker 1998, is not explicit).

From the unmasked runs (density 1) of ``python -m experiments run subset-sum``: for every law and ε, the smallest
number of candidates n at which the exact best subset reaches every grid target z within ε with probability
≥ 1 − δ, as a point estimate and an interval:

- ``n_point``: smallest n with observed failure rate ≤ δ at every z (and at every larger n of the grid);
- ``n_low``: smallest n at which no z has a one-sided Clopper–Pearson *lower* bound > δ (below it, some z fails
  significantly more often than δ, so the true minimal n is ≥ n_low);
- ``n_high``: smallest n with the one-sided Clopper–Pearson *upper* bound ≤ δ at every z (certified).

C = max over ε of n / log2(1/ε) for each of the three, so n = ⌈C·log2(1/ε)⌉ covers every measured ε.

    python -m experiments.fit_constant --results figures/e6/subset-sum.jsonl [--delta 0.01] [--confidence 0.95] [--json]
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
from scipy import stats

from theory.cli import ArgumentParser, dumps, run_main
from theory.subset_sum import LAWS
from theory.validation import check_choice, check_open_unit

from .e6_subset_sum import aggregate

__all__ = ["ConstantFit", "EpsFit", "fit_constant", "fit_constants", "main"]


@dataclass(frozen=True)
class EpsFit:
    """Minimal numbers of unmasked candidates at one ε (module docstring); None = not reached on the grid."""

    eps: float
    trials: int
    n_point: int | None
    n_low: int | None
    n_high: int | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ConstantFit:
    """C = max_ε n/log2(1/ε) for n_point, n_low and n_high; ``per_eps`` the underlying minimal n."""

    law: str
    delta: float
    confidence: float
    constant: float
    constant_low: float
    constant_high: float
    per_eps: tuple

    def to_dict(self) -> dict:
        return {"law": self.law, "delta": self.delta, "confidence": self.confidence, "constant": self.constant,
                "constant_low": self.constant_low, "constant_high": self.constant_high,
                "per_eps": [e.to_dict() for e in self.per_eps]}


def _first(grid, ok) -> int | None:
    """Smallest grid n such that ``ok`` holds there and at every larger grid n."""
    ok = np.asarray(ok, dtype=bool)
    if not ok[-1]:
        return None
    bad = np.flatnonzero(~ok)
    return int(grid[0 if bad.size == 0 else bad[-1] + 1])


def _cp_bounds(failures: np.ndarray, trials: int, confidence: float):
    """One-sided Clopper–Pearson lower and upper bounds of every failure probability."""
    a = 1.0 - confidence
    lower = np.where(failures > 0, stats.beta.ppf(a, failures, trials - failures + 1), 0.0)
    upper = np.where(failures < trials, stats.beta.ppf(1 - a, failures + 1, trials - failures), 1.0)
    return lower, upper


def fit_constant(records: list[dict], law: str, delta: float = 0.01, confidence: float = 0.95) -> ConstantFit:
    """:class:`ConstantFit` for ``law`` from the density-1 E6 records (ValueError when there are none)."""
    law = check_choice(law, "law", LAWS)
    delta = check_open_unit(delta, "delta")
    confidence = check_open_unit(confidence, "confidence")
    cells = {k: v for k, v in aggregate(records).items() if k[0] == law and k[2] == 1.0}
    if not cells:
        raise ValueError(f"law={law!r}: no unmasked (density 1) subset-sum records: allowed results of "
                         "'python -m experiments run subset-sum' that include density 1")
    per_eps = []
    for (_, eps, _), cell in sorted(cells.items(), key=lambda kv: -kv[0][1]):
        grid = np.asarray(cell.grid)
        rate = cell.failures / cell.trials
        lower, upper = _cp_bounds(cell.failures, cell.trials, confidence)
        per_eps.append(EpsFit(eps, cell.trials, _first(grid, (rate <= delta).all(axis=1)),
                              _first(grid, (lower <= delta).all(axis=1)), _first(grid, (upper <= delta).all(axis=1))))

    def constant(attr):
        values = [getattr(e, attr) for e in per_eps]
        if any(v is None for v in values):
            return math.inf
        return max(v / math.log2(1 / e.eps) for v, e in zip(values, per_eps))

    return ConstantFit(law, delta, confidence, constant("n_point"), constant("n_low"), constant("n_high"),
                       tuple(per_eps))


def fit_constants(records: list[dict], delta: float = 0.01, confidence: float = 0.95) -> list[ConstantFit]:
    """:func:`fit_constant` for every law with unmasked records."""
    laws = sorted({r["config"]["law"] for r in records if float(r["config"]["density"]) == 1.0}, key=LAWS.index)
    return [fit_constant(records, law, delta, confidence) for law in laws]


def _parser() -> ArgumentParser:
    parser = ArgumentParser(prog="python -m experiments.fit_constant",
                            description="Fit C in n = C*log2(1/eps) (unmasked subset sum reaching every grid target "
                                        "within eps w.p. >= 1 - delta) from stored E6 results (docs/math.md §5).")
    parser.add_argument("--results", required=True, help="E6 results file (subset-sum.jsonl)")
    parser.add_argument("--delta", type=float, default=0.01, help="failure probability delta (default 0.01)")
    parser.add_argument("--confidence", type=float, default=0.95,
                        help="confidence of the one-sided Clopper-Pearson bounds of the interval (default 0.95)")
    parser.add_argument("--json", action="store_true", help="print the fits as JSON")
    parser.add_argument("--max-memory", default=None,
                        help="memory budget, e.g. 8G or 512M: reading the results file is estimated first and refused "
                             "beyond it (default 80%% of the available memory)")
    return parser


def main(argv=None) -> int:
    from pathlib import Path

    from theory.memory import parse_memory

    from .infra.results import ResultsStore

    args = _parser().parse_args(argv)
    path = Path(args.results)
    if not path.is_file():
        raise FileNotFoundError(f"results file {str(path)!r} does not exist")
    max_memory = None if args.max_memory is None else parse_memory(args.max_memory, "max_memory")
    fits = fit_constants(ResultsStore(path, "subset-sum").load(max_memory), args.delta, args.confidence)
    if not fits:
        raise ValueError(f"results file {str(path)!r} has no unmasked (density 1) runs: allowed E6 results with density 1")
    if args.json:
        print(dumps([f.to_dict() for f in fits]))
        return 0
    for f in fits:
        print(f"{f.law}: C = {f.constant:.3f} (interval [{f.constant_low:.3f}, {f.constant_high:.3f}], "
              f"delta {f.delta:g}, one-sided Clopper-Pearson {f.confidence:g})")
        for e in f.per_eps:
            print(f"  eps {e.eps:g}: n = {e.n_point} (interval [{e.n_low}, {e.n_high}]), {e.trials} draws")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
