"""``python -m construct bench --memory``: peak memory per source weight of every construction (weak, L+1, 2L)
across target shapes and densities — the measurements behind the constants of :mod:`construct.footprint`.

Each configuration runs in a fresh Python process (so one build's peak is not another's): it imports the package,
reads its resident memory (``/proc/self/statm``), builds the ticket (source drawing, construction, certificate,
sampled error; nothing saved) and reports the peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``)
minus the resident memory before the build. The table shows that peak per source weight, the estimate of
:func:`construct.footprint.estimate_build_bytes` for the same source and the ratio estimate / measured (≥ 1: the
guard's estimate covers the measurement).

The strong constructions load the compiled subset-sum solver (numba's runtime, ≈ 0.1 GB resident) on their first
instance, a fixed cost of the process that does not grow with the source. The child loads it before the build (one
tiny instance) and reports that cost as ``runtime``; ``peak`` still counts it (it is what the guard must cover), and
"build B/weight" = (peak − runtime) / weights is what the build itself holds per source weight.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

__all__ = ["MEMORY_CONFIGS", "MemoryRow", "run_memory_bench", "format_memory_bench", "measure_in_process"]

#: (construction, target, density, eps, weight_eps, width multiplier): wide and narrow targets, high and low
#: densities; sources of 10^7–2·10^8 weights so that per-weight and per-unit costs show beside the fixed ones.
MEMORY_CONFIGS = (
    ("weak", "random:64,32,10", 0.5, None, None, 4.0),
    ("weak", "random:784,300,100,10", 0.5, None, None, 0.15),
    ("weak", "random:4,3,2", 0.1, None, None, 4.0),
    ("weak", "random:8,8,8,2", 0.2, None, None, 5.0),
    ("l+1", "random:8,8,2", 0.5, 0.01, None, 1.0),
    ("l+1", "random:64,32,10", 0.5, 0.05, None, 0.15),
    ("l+1", "random:4,3,2", 0.1, 0.05, None, 0.2),
    ("l+1", "random:8,8,8,2", 0.5, 0.05, None, 0.8),
    ("2l", "random:784,300,100,10", 0.5, None, 0.01, 0.02),
    ("2l", "random:784,300,100,10", 0.5, None, 0.01, 0.1),
    ("2l", "random:64,32,10", 0.5, 0.05, None, 4.0),
    ("2l", "random:8,8,8,2", 0.5, 0.05, None, 40.0),
    ("2l", "random:4,3,2", 0.01, 0.05, None, 0.25),
    ("2l", "random:4,3,2", 0.01, 0.05, None, 1.0),
    ("2l", "random:8,8,8,2", 0.5, 0.05, None, 300.0),
)


@dataclass(frozen=True)
class MemoryRow:
    construction: str
    target: str
    density: float
    width_multiplier: float
    source_weights: int
    source_units: int
    peak_bytes: int
    seconds: float
    estimate_bytes: float
    threads: int
    weight_bytes: int
    runtime_bytes: int = 0  # resident memory of the loaded solver runtime (strong constructions), within peak_bytes

    @property
    def bytes_per_weight(self) -> float:
        return self.peak_bytes / max(1, self.source_weights)

    @property
    def build_bytes_per_weight(self) -> float:
        """(peak − runtime) / source weights: what the build holds beyond the fixed solver runtime."""
        return max(0, self.peak_bytes - self.runtime_bytes) / max(1, self.source_weights)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["bytes_per_weight"] = self.bytes_per_weight
        d["build_bytes_per_weight"] = self.build_bytes_per_weight
        return d


def _rss_now() -> int:
    import os

    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


def measure_in_process(config) -> dict:
    """Build one configuration in this process and return its sizes, time and peak memory above the start (run it
    in a fresh process: ``ru_maxrss`` is the peak of the whole process)."""
    import resource
    import time

    import construct.strong  # noqa: F401  (imports counted in the baseline, as in the CLI)
    import construct.weak  # noqa: F401
    from construct.cpus import available_cpus
    from construct.footprint import estimate_build_bytes, source_size, source_weight_bytes
    from construct.targets import load_target

    construction, spec, density, eps, weight_eps, mult = config
    target = load_target(spec, seed=0)
    before = _rss_now()
    runtime = 0
    if construction != "weak":  # load the compiled solver (a fixed cost of the process): module docstring
        import numpy as np

        from construct.instances import solve_instances

        solve_instances(np.full((1, 4), 0.25), np.ones((1, 4), dtype=bool), np.full(1, 0.5), 1e-3, None)
        runtime = max(0, _rss_now() - before)
    t0 = time.perf_counter()
    if construction == "weak":
        from construct.weak import build_weak_ticket

        _, rep = build_weak_ticket(target, density, 0.1, 0, width_multiplier=mult, samples=256, max_memory=2**62)
    else:
        from construct.strong import build_strong_ticket

        _, rep = build_strong_ticket(target, density, 0.1, 0, eps=eps, weight_eps=weight_eps,
                                     construction=construction, width_multiplier=mult, samples=256,
                                     max_source_params=None, max_memory=2**62)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    widths = rep.widths["source_widths"]
    W, U = source_size(widths)
    est = estimate_build_bytes(construction, widths, weight_bytes=source_weight_bytes(), threads=available_cpus())
    return {"construction": construction, "target": spec, "density": density, "width_multiplier": mult,
            "source_weights": W, "source_units": U, "peak_bytes": max(0, peak - before), "seconds": seconds,
            "estimate_bytes": est, "threads": available_cpus(), "weight_bytes": source_weight_bytes(),
            "runtime_bytes": runtime}


def _child() -> None:  # entry point of the fresh process
    config = json.loads(sys.stdin.read())
    print(json.dumps(measure_in_process(tuple(config))))


def run_memory_bench(configs=MEMORY_CONFIGS, max_memory=None, timeout_s: float = 3600.0) -> list:
    """One fresh process per configuration (refused beforehand, like the CLI, when its estimate exceeds
    ``max_memory``: None = the default budget). Returns [MemoryRow]."""
    from construct.footprint import check_build_memory
    from construct.strong import plan_strong
    from construct.targets import load_target
    from construct.weak import weak_source_widths

    rows = []
    for config in configs:
        construction, spec, density, eps, weight_eps, mult = config
        target = load_target(spec, seed=0)
        if construction == "weak":
            widths = weak_source_widths(target, density, 0.1, width_multiplier=mult)[3]
        else:
            widths = plan_strong(target, density, 0.1, eps=eps, weight_eps=weight_eps, construction=construction,
                                 width_multiplier=mult)[2]
        check_build_memory(construction, widths, max_memory)
        proc = subprocess.run([sys.executable, "-c", "from construct.bench_memory import _child; _child()"],
                              input=json.dumps(list(config)), capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"memory bench configuration {config} failed: {tail}")
        rows.append(MemoryRow(**json.loads(proc.stdout.strip().splitlines()[-1])))
    return rows


def format_memory_bench(rows) -> str:
    lines = [f"{'construction':<12} {'target':<22} {'density':>7} {'mult':>5} {'weights':>11} {'units':>10} "
             f"{'peak MB':>8} {'B/weight':>8} {'runtime':>7} {'build B/w':>9} {'est MB':>8} {'est/peak':>8} {'s':>6}",
             "-" * 136]
    for r in rows:
        lines.append(f"{r.construction:<12} {r.target:<22} {r.density:>7g} {r.width_multiplier:>5g} "
                     f"{r.source_weights:>11.3e} {r.source_units:>10.3e} {r.peak_bytes / 2**20:>8.0f} "
                     f"{r.bytes_per_weight:>8.2f} {r.runtime_bytes / 2**20:>7.0f} {r.build_bytes_per_weight:>9.2f} "
                     f"{r.estimate_bytes / 2**20:>8.0f} {r.estimate_bytes / max(1, r.peak_bytes):>8.2f} "
                     f"{r.seconds:>6.1f}")
    if rows:
        lines.append(f"peak = peak RSS above the RSS before the build (fresh process each; {rows[0].threads} drawing "
                     f"threads, {rows[0].weight_bytes}-byte source weights); runtime = MB of the loaded solver "
                     "runtime within peak; build B/w = (peak - runtime) / weights; est = construct.footprint estimate")
    return "\n".join(lines)
