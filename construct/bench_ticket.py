"""``python -m construct bench``: the solver benchmark (:mod:`construct.bench_solver`), then the time and peak
memory of the whole 2L strong ticket (docs/math.md §6) of a random 784-300-100-10 target at density 0.5 with a
per-instance tolerance of 0.01 (``--weight-eps 0.01``), source sampling and certificate included.

theory's widths for this case (δ = 0.1, δ' = δ/#instances ≈ 1e−7, thinning margin [ours-1]) give a source of
2.2e9 weights (784-1763556-300-675524-100-225924-10). It is never held in memory: the source is drawn block by block
(:mod:`construct.source`), the 2L construction reads only the intermediate layers' "diagonal" entries and a few
rows of the other layers at a time, and the ticket keeps one bool per source weight (≈ 2.2 GB here).
"""
from __future__ import annotations

import resource
import time
import tracemalloc
from dataclasses import dataclass

__all__ = ["TicketBench", "run_ticket_bench", "run_bench", "format_bench"]


@dataclass(frozen=True)
class TicketBench:
    target_widths: tuple
    density: float
    weight_eps: float
    theory_source_params: int
    width_multiplier: float
    source_params: int
    source_widths: tuple
    success: bool
    failures: int
    instances: int
    certificate: float
    sampled_error: float
    ticket_params: int
    seconds: float
    peak_traced_gb: float
    peak_rss_gb: float
    interval: dict | None = None  # [attacked error, best certified bound] (construct.error_interval), not timed

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _params(widths) -> int:
    return int(sum(a * b for a, b in zip(widths[:-1], widths[1:])))


def run_ticket_bench(width_multiplier: float = 1.0, *, widths=(784, 300, 100, 10), density: float = 0.5,
                     weight_eps: float = 0.01, delta: float = 0.1, seed: int = 0,
                     max_source_params: int = 4_000_000_000, bound_seconds: float | None = 10.0,
                     max_memory=None) -> TicketBench:
    """Time :func:`construct.strong.build_strong_ticket` (2L, ``weight_eps``) including sampling the source, at
    theory's widths times ``width_multiplier`` (default 1: theory's widths). Refused beforehand (one-line
    ValueError) when the build's memory estimate exceeds ``max_memory`` (None: the default budget)."""
    from construct.strong import build_strong_ticket, plan_strong
    from construct.targets import random_target

    target = random_target(widths, seed)
    theory = _params(plan_strong(target, density, delta, weight_eps=weight_eps, construction="2l")[2])
    tracemalloc.start()
    t0 = time.perf_counter()
    ticket, rep = build_strong_ticket(target, density, delta, seed, weight_eps=weight_eps, construction="2l",
                                      width_multiplier=width_multiplier, samples=256,
                                      max_source_params=max_source_params, max_memory=max_memory)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    interval = None
    if bound_seconds is not None:  # after the timing: the error interval of the ticket (MILP budget bound_seconds)
        from construct.error_interval import error_interval

        interval = error_interval(ticket, (-1.0, 1.0), rep.certificate, seed=seed, seconds=bound_seconds).to_dict()
    return TicketBench(tuple(widths), density, weight_eps, theory, width_multiplier, rep.source_params,
                       tuple(rep.widths["source_widths"]), rep.success, rep.failures,
                       sum(l.instances for l in rep.layers), rep.certificate, rep.sampled_error, rep.ticket_params,
                       seconds, peak / 1e9, rss / 1e9, interval)


def run_bench(width_multiplier: float = 1.0, solver: bool = True, ticket: bool = True, max_memory=None) -> dict:
    """Ticket timing first (so its peak RSS is its own), then the solver benchmark rows."""
    ticket = run_ticket_bench(width_multiplier, max_memory=max_memory).to_dict() if ticket else None
    rows = None
    if solver:
        from construct.bench_solver import run_solver_bench

        rows = run_solver_bench()
    return {"solver": rows, "ticket": ticket}


def format_bench(result: dict) -> str:
    lines = []
    if result.get("solver") is not None:
        from construct.bench_solver import format_solver_bench

        lines.append(format_solver_bench(result["solver"]))
        lines.append("")
    t = result.get("ticket")
    if t is None:
        return "\n".join(lines)
    lines.append(f"2L strong ticket of random {'-'.join(map(str, t['target_widths']))}, density {t['density']}, "
                 f"--weight-eps {t['weight_eps']}:")
    lines.append(f"  theory's widths give a source of {t['theory_source_params']:.3g} weights; built at width multiplier "
                 f"{t['width_multiplier']}: {t['source_params']:,} weights, widths {list(t['source_widths'])}")
    lines.append(f"  {t['instances']:,} subset-sum instances, {t['failures']} failed (success {t['success']}); "
                 f"ticket keeps {t['ticket_params']:,} weights")
    lines.append(f"  a-posteriori certificate {t['certificate']:.3g}, sampled error {t['sampled_error']:.3g}")
    lines.append(f"  {t['seconds']:.1f} s (source sampling, construction, certificate, sampled error); peak traced "
                 f"memory {t['peak_traced_gb']:.2f} GB, peak RSS {t['peak_rss_gb']:.2f} GB")
    if t.get("interval") is not None:
        from construct.report import interval_text

        lines.append(f"  {interval_text(t['interval'])}; {t['interval']['seconds']:.1f} s")
    return "\n".join(lines)
