"""Success of strong tickets at ``theory``'s widths on the cases of issue 14 and a grid of deeper targets (docs/math.md §5,
§6): ``python -m construct.strong_grid [--budget fast|full] [--json]``.

Every case (construction, target, density, tolerance, input box) is first planned by :mod:`theory.strong_widths`.
A case theory refuses (a per-instance tolerance that needs more candidates per exact search than the solver
searches, or lies below the weights' resolution) is listed as *refused* with theory's one-line reason — refused up
front, never built. Every other case is built for seeds 1..seeds (target and source drawn from the seed, as
``python -m construct strong --target random:... --seed S`` does) and three claims are tested, as in
``python -m construct check``:
1. success rate ≥ 1 − δ: rejected iff scipy.stats.binomtest(successes, runs, 1 − δ, alternative="less") has
   p-value < :data:`ALPHA`;
2. certificate ≤ ε for every successful ticket built with ``eps``;
3. sampled and box-corner error ≤ certificate (+ 1e−9·(1 + certificate)) for every ticket.
:func:`grid_cases` lists the cases ("fast": a few cheap ones, 3 s quiet to 50 s loaded; "full": the whole grid, about an
hour on 2 cores); :func:`run_grid` runs them; :func:`format_grid` prints the table. ``construct check`` may call
:func:`run_grid` (it returns plain data with ``to_dict``).
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

from scipy.stats import binomtest

__all__ = ["GridCase", "GridResult", "grid_cases", "plan_case", "run_grid_case", "run_grid", "format_grid", "main"]

ALPHA = 1e-3


@dataclass(frozen=True)
class GridCase:
    """One row: ``target`` "random:W0,...,WL", ``eps`` (network sup-error, a-priori split) or ``weight_eps``
    (per-instance tolerance), input box [−box, box]^n0, ``seeds`` runs."""

    construction: str
    target: str
    density: float
    eps: float | None
    box: float
    seeds: int
    weight_eps: float | None = None
    delta: float = 0.1
    origin: str = "grid"


@dataclass(frozen=True)
class GridResult:
    case: GridCase
    refused: str  # theory's one-line reason ("" when built)
    runs: int
    successes: int
    failed_instances: int
    pvalue: float
    source_params: int
    source_dtype: str
    instance_eps: tuple
    caps: tuple
    blocks: tuple
    worst_certificate: float
    worst_observed_error: float
    success_claim: bool
    certificate_claim: bool
    sampled_claim: bool
    seconds: float

    @property
    def passed(self) -> bool:
        """A refused case passes (refused up front with the reason); a built one must meet all three claims."""
        return bool(self.refused) or (self.success_claim and self.certificate_claim and self.sampled_claim)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def _issue_cases(seeds: int) -> list[GridCase]:
    return [GridCase("l+1", "random:8,8,8,8,2", 0.5, 0.01, 1.0, seeds, origin="issue 14 (failed 4/4 seeds)"),
            GridCase("l+1", "random:3,3,2", 0.5, 0.05, 1e6, seeds, origin="issue 14 (failed 8/8 seeds)")]


def grid_cases(budget: str = "fast") -> list[GridCase]:
    """The cases: the two of issue 14, then depth-4 and depth-5 targets × ε ∈ {1e−2, 1e−3, 1e−4} × boxes ±1, ±10,
    ±1e3 × both constructions (refusals are listed, not built), then per-instance tolerances 1e−6 … 1e−10 (2L,
    float64 sources, several blocks). ``fast`` keeps the refusals and the cheap built cases with few seeds."""
    if budget not in ("fast", "full"):
        raise ValueError(f"budget={budget!r} is unknown: allowed 'fast', 'full'")
    full = budget == "full"
    cases = _issue_cases(10 if full else 0)
    for target in ("random:3,3,3,3,2", "random:4,4,4,4,2", "random:3,3,3,3,3,2"):
        for construction in ("2l", "l+1"):
            for eps in (1e-2, 1e-3, 1e-4):
                for box in (1.0, 10.0, 1e3):
                    seeds = (20 if construction == "2l" else 5) if full else (3 if construction == "2l" and
                                                                            target == "random:3,3,3,3,2" and
                                                                            eps == 1e-2 and box == 1.0 else 0)
                    cases.append(GridCase(construction, target, 0.5, eps, box, seeds))
    for weps in (1e-6, 1e-8, 1e-10):
        cases.append(GridCase("2l", "random:3,3,2", 0.5, None, 1.0, 20 if full else (5 if weps == 1e-8 else 0),
                              weight_eps=weps, origin="per-instance tolerance"))
    return cases


def plan_case(case: GridCase, seed: int = 1):
    """(target, StrongWidths) of the case for ``seed``, or raise theory's one-line ValueError (refusal)."""
    from construct.strong import plan_strong
    from construct.targets import load_target

    target = load_target(case.target, seed=seed)
    return target, plan_strong(target, case.density, case.delta, eps=case.eps, weight_eps=case.weight_eps,
                               construction=case.construction, box=(-case.box, case.box))[0]


def run_grid_case(case: GridCase, max_source_params: int = 200_000_000, first_seed: int = 1) -> GridResult:
    """Plan the case; if theory accepts it, build seeds first_seed .. first_seed + case.seeds − 1 and evaluate the
    three claims."""
    from construct.strong import build_strong_ticket

    t0 = time.perf_counter()
    try:
        target, sw = plan_case(case)
    except ValueError as exc:
        return GridResult(case, str(exc), 0, 0, 0, 1.0, 0, "", (), (), (), 0.0, 0.0, True, True, True,
                          time.perf_counter() - t0)
    runs = successes = failed = 0
    cert_ok = sampled_ok = True
    worst_cert = worst_obs = 0.0
    for seed in range(first_seed, first_seed + case.seeds):
        target, sw = plan_case(case, seed)
        ticket, rep = build_strong_ticket(target, case.density, case.delta, seed, eps=case.eps,
                                          weight_eps=case.weight_eps, construction=case.construction,
                                          box=(-case.box, case.box), samples=512,
                                          max_source_params=max_source_params)
        runs += 1
        successes += int(rep.success)
        failed += rep.failures
        observed = max(rep.sampled_error, rep.corner_error or 0.0)
        worst_cert = max(worst_cert, rep.certificate)
        worst_obs = max(worst_obs, observed)
        sampled_ok &= observed <= rep.certificate + 1e-9 * (1.0 + rep.certificate)
        if rep.success and case.eps is not None:
            cert_ok &= rep.certificate <= case.eps
    pvalue = binomtest(successes, runs, 1.0 - case.delta, alternative="less").pvalue if runs else 1.0
    return GridResult(case, "", runs, successes, failed, float(pvalue), int(sw.source_params), sw.source_dtype,
                      tuple(sw.instance_eps), tuple(c["weight"] for c in sw.caps),
                      tuple(b["weight"] for b in sw.blocks), worst_cert, worst_obs, bool(pvalue >= ALPHA),
                      bool(cert_ok), bool(sampled_ok), time.perf_counter() - t0)


def run_grid(budget: str = "fast") -> list[GridResult]:
    """Run every case of :func:`grid_cases` (cases with 0 seeds are planned only)."""
    from tqdm import tqdm

    return [run_grid_case(c) for c in tqdm(grid_cases(budget), desc="strong grid", disable=not sys.stderr.isatty())]


def format_grid(results) -> str:
    """The results as a text table (one line per case; refusals with theory's reason)."""
    head = (f"{'constr':>6} {'target':>18} {'tol':>12} {'box':>7} {'dtype':>7} {'source':>11} {'blocks':>12} "
            f"{'success':>8} {'p':>8} {'certificate':>11} {'verdict':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        c = r.case
        tol = f"eps={c.eps:g}" if c.eps is not None else f"w-eps={c.weight_eps:g}"
        if r.refused:
            lines.append(f"{c.construction:>6} {c.target[7:]:>18} {tol:>12} {c.box:>7.0e}  refused: {r.refused}")
            continue
        runs = f"{r.successes}/{r.runs}" if r.runs else "planned"
        verdict = ("ok" if r.passed else "FAIL") if r.runs else "-"
        lines.append(f"{c.construction:>6} {c.target[7:]:>18} {tol:>12} {c.box:>7.0e} {r.source_dtype:>7} "
                     f"{r.source_params:>11,} {','.join(map(str, r.blocks)):>12} {runs:>8} {r.pvalue:>8.3g} "
                     f"{r.worst_certificate:>11.3e} {verdict:>8}")
    passed = all(r.passed for r in results)
    lines.append(f"claims: success rate >= 1 - delta (binomial test, alpha {ALPHA}), certificate <= eps, sampled/corner "
                 f"error <= certificate; refused cases are refused up front by theory; "
                 f"{'ALL PASS' if passed else 'SOME CLAIM FAILED'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    from theory.cli import ArgumentParser, dumps

    p = ArgumentParser(prog="python -m construct.strong_grid",
                       description="Strong tickets at theory's widths: the cases of issue 14 and a grid of deeper "
                                   "targets; success rate >= 1 - delta by binomial test, or refused up front.")
    p.add_argument("--budget", default="fast", choices=("fast", "full"),
                   help="fast (refusals and a few cheap cases, about a minute) or full (about an hour on 2 cores)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    args = p.parse_args(argv)
    results = run_grid(args.budget)
    print(dumps({"passed": all(r.passed for r in results), "results": [r.to_dict() for r in results]})
          if args.json else format_grid(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    from theory.cli import run_main

    sys.exit(run_main(main))
