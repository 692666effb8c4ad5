"""E5 — constructing tickets: phase diagrams (docs/experiments.md E5, docs/math.md §4 and §6), following Gadhikar et al. 2023.

CPU only, no training. One run (one results line) = one construction ("weak" §4, "2l" or "l+1" §6), one target,
one source density p (all source layers), one tolerance, and a list of width multipliers × seeds. Every
(multiplier, seed) is one *task*: a seeded target (``random_target(widths, seed)``; the digits MLP is trained once
with seed 0) and a seeded source of theory's widths × multiplier (:func:`construct.build_weak_ticket`,
:func:`construct.build_strong_ticket`, source seed = seed); the tasks run on the engine of
:mod:`experiments.infra.engine` (a local process pool by default, Ray tasks when the sweep runs on Ray; one BLAS / numba
thread per task) and are recorded in task order, so the results do not depend on the engine or the number of
workers. A task whose planned source would have more than ``max_source_params`` weights is not
built and is recorded as ``skipped`` (never counted as a success or a failure).

Per task: success, failures (total and per target layer), certificate, sampled error, source / ER-kept / ticket /
target parameter counts, the source's hidden widths, seconds.

Figures (stored results only): (a) success rate over (density, multiplier) per construction and target, the
theoretical width (multiplier 1) drawn as a line; (b) the empirical minimal width for success ≥ 1 − δ vs density on
log axes against κ(p) and 1/p, with the fitted log-log slope between 0.2 and 0.02; (c) certified and sampled error
vs ε; (d) ticket size vs target size.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from construct.strong import build_strong_ticket, plan_strong
from construct.targets import Target, digits_target, random_target
from construct.weak import build_weak_ticket, weak_source_widths
from theory.er_factor import er_factor
from theory.subset_sum import load_nss_table
from theory.validation import check_choice, check_open_unit, check_positive_int

from .infra.engine import EngineSpec, current_task_engine, open_engine
from .infra.figures import new_figure, save_figure
from .infra.registry import ScaledSweep

__all__ = [
    "CONSTRUCTIONS",
    "EXPERIMENT",
    "ConstructionExperiment",
    "WidthCheck",
    "check_theory_widths",
    "loglog_slope",
    "make_e5_target",
    "make_e5_figures",
    "minimal_width",
    "minimal_width_rows",
    "nss_table_fingerprint",
    "planned_source",
    "run_task",
    "run_tasks",
    "source_densities",
    "success_table",
    "summary_markdown",
]

CONSTRUCTIONS = ("weak", "2l", "l+1")
TARGET_KINDS = ("random", "sparse", "digits")


@functools.lru_cache(maxsize=4)
def _digits(hidden: tuple) -> Target:
    return digits_target(0, hidden=hidden)


def make_e5_target(spec: dict, seed: int) -> Target:
    """The target of a task: ``{"kind": "random", "widths": [...]}`` → ``random_target(widths, seed)``;
    "sparse" → the same with target_density 0.5; "digits" → the digits MLP (64-hidden-10, trained with seed 0)."""
    kind = check_choice(spec["kind"], "target", TARGET_KINDS)
    if kind == "digits":
        return _digits(tuple(spec.get("hidden", (16,))))
    density = 0.5 if kind == "sparse" else 1.0
    return random_target(tuple(spec["widths"]), seed, target_density=density)


def planned_source(construction: str, target: Target, density: float, delta: float, multiplier: float,
                   weight_eps=None, eps=None) -> tuple:
    """Source widths theory gives for the construction, times ``multiplier`` (nothing is sampled)."""
    if construction == "weak":
        return tuple(weak_source_widths(target, density, delta, width_multiplier=multiplier)[3])
    return tuple(plan_strong(target, density, delta, eps=eps, weight_eps=weight_eps, construction=construction,
                             width_multiplier=multiplier)[2])


DENSITY_PATTERNS = ("all", "last", "first")


def nss_table_fingerprint() -> str:
    """First 16 hex digits of the SHA-256 of theory's N_SS table (canonical JSON). Part of every config, so that
    ``--resume`` reruns the sweep when the calibration (and with it every strong width) changes."""
    text = json.dumps(load_nss_table(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def source_densities(construction: str, target_depth: int, density: float, pattern: str = "all"):
    """Per-source-layer densities: "all" → p on every layer; "last" → p on the last source layer only (1 elsewhere),
    which isolates the copies layer of the weak construction (one ER edge per candidate, width ∝ κ(p));
    "first" → p on the first source layer only."""
    pattern = check_choice(pattern, "density_pattern", DENSITY_PATTERNS)
    if pattern == "all":
        return float(density)
    depth = 2 * target_depth if construction == "2l" else target_depth + 1
    out = [1.0] * depth
    out[-1 if pattern == "last" else 0] = float(density)
    return tuple(out)


def _params(widths) -> int:
    return int(sum(a * b for a, b in zip(widths[:-1], widths[1:])))


def run_task(task: dict) -> dict:
    """One construction (module docstring); ``task`` = the run's config plus ``multiplier`` and ``seed``."""
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    with threadpool_limits(1):
        target = make_e5_target(task["target"], task["seed"])
        dens = source_densities(task["construction"], target.depth, task["density"],
                                task.get("density_pattern", "all"))
        widths = planned_source(task["construction"], target, dens, task["delta"], task["multiplier"],
                                task.get("weight_eps"), task.get("eps"))
        out = {"multiplier": task["multiplier"], "seed": task["seed"], "hidden_widths": list(widths[1:-1]),
               "source_params": _params(widths), "target_params": int(sum(target.nonzeros))}
        if out["source_params"] > task["max_source_params"]:
            out.update(skipped=True, seconds=round(time.perf_counter() - t0, 4))
            return out
        if task["construction"] == "weak":
            _, rep = build_weak_ticket(target, dens, task["delta"], task["seed"],
                                       width_multiplier=task["multiplier"], samples=task["samples"])
        else:
            _, rep = build_strong_ticket(target, dens, task["delta"], task["seed"],
                                         eps=task.get("eps"), weight_eps=task.get("weight_eps"),
                                         construction=task["construction"], width_multiplier=task["multiplier"],
                                         samples=task["samples"], max_source_params=task["max_source_params"])
    out.update(skipped=False, success=bool(rep.success), failures=int(rep.failures),
               layer_failures=[int(l.failures) for l in rep.layers], certificate=float(rep.certificate),
               sampled_error=float(rep.sampled_error), er_kept_params=int(rep.er_kept_params),
               ticket_params=int(rep.ticket_params), source_params=int(rep.source_params),
               seconds=round(time.perf_counter() - t0, 4))
    return out


def run_tasks(tasks: list[dict], workers: int | None = None, engine: EngineSpec | None = None) -> list[dict]:
    """``run_task`` over ``tasks`` on ``engine`` (default: the sweep's, :func:`experiments.infra.engine.current_task_engine`
    — a local process pool of ``workers`` processes, all available CPUs when None, 1 = in this process); results in
    task order. A task that raises raises here (the sweep records the run as failed)."""
    if workers is not None:
        check_positive_int(workers, "workers")
    spec = engine or current_task_engine(workers)
    if spec.kind == "local" and (len(tasks) <= 1 or spec.workers == 1):
        return [run_task(t) for t in tasks]
    with open_engine(spec) as runner:
        return runner.map(run_task, tasks)


# ---------------------------------------------------------------------------------------------------------------
# analysis of stored records


def _label(config: dict) -> str:
    if config.get("eps") is not None:
        tol = f"eps={config['eps']:g}"
    elif config.get("weight_eps") is not None:
        tol = f"weight_eps={config['weight_eps']:g}"
    else:
        tol = "exact"
    target = config["target"]
    shape = "-".join(map(str, target["widths"])) if "widths" in target else "64-16-10"
    pattern = config.get("density_pattern", "all")
    where = "" if pattern == "all" else f" / p on {pattern} layer only"
    return f"{config['construction']} / {target['kind']} {shape} / {tol}{where}"


def _hidden_index(construction: str, layer: int) -> int:
    """Index (into the source's hidden widths) of the layer whose width target layer ``layer``'s instances draw
    their candidates from: weak / l+1: hidden layer t (lifting for t = 1, copies r_t after); 2l: the intermediate
    layer 2t − 1."""
    return 2 * (layer - 1) if construction == "2l" else layer - 1


def success_table(records: list[dict], series: str = "phase", layer: int | None = None) -> dict:
    """(label, density, multiplier) → (successes, runs, mean width) over the non-skipped tasks of the records of
    ``series``; label = "construction / target / tolerance". ``layer=None``: success of the whole ticket and the
    source's largest hidden width; ``layer=t``: no failure in target layer t, and the width of the source layer
    its candidates come from (see :func:`_hidden_index`)."""
    table: dict = {}
    for r in records:
        c = r["config"]
        if c["series"] != series:
            continue
        for t in r["metrics"]["tasks"]:
            if t["skipped"]:
                continue
            if layer is None:
                ok, width = t["success"], max(t["hidden_widths"])
            else:
                if layer > len(t["layer_failures"]):
                    continue
                ok = t["layer_failures"][layer - 1] == 0
                width = t["hidden_widths"][_hidden_index(c["construction"], layer)]
            key = (_label(c), float(c["density"]), float(t["multiplier"]))
            s, n, w = table.get(key, (0, 0, 0.0))
            table[key] = (s + int(ok), n + 1, w + float(width))
    return {k: (s, n, w / n) for k, (s, n, w) in table.items()}


def minimal_width(table: dict, label: str, density: float, delta: float) -> tuple[float, float]:
    """(smallest multiplier m with success rate ≥ 1 − δ at m and every larger run multiplier, the mean largest
    hidden width of the source there); (nan, nan) when no multiplier qualifies."""
    rows = sorted((m, s, n, w) for (lab, d, m), (s, n, w) in table.items() if lab == label and d == density)
    best = (math.nan, math.nan)
    for m, s, n, w in reversed(rows):
        if s < (1 - delta) * n:
            break
        best = (m, w)
    return best


def loglog_slope(densities, widths, lo: float = 0.02, hi: float = 0.2) -> float:
    """Least-squares slope of log(width) vs log(density) over lo ≤ density ≤ hi (finite widths); nan if < 2 points."""
    pts = [(math.log(d), math.log(w)) for d, w in zip(densities, widths)
           if lo - 1e-12 <= d <= hi + 1e-12 and np.isfinite(w) and w > 0]
    if len(pts) < 2:
        return math.nan
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


@dataclass(frozen=True)
class WidthCheck:
    """At the theoretical width (multiplier 1): ``failures`` of ``runs`` seeds, and the one-sided binomial test
    of H0 "failure probability ≤ δ" (a small ``p_value`` means the width bound is violated)."""

    label: str
    density: float
    failures: int
    runs: int
    delta: float
    p_value: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def check_theory_widths(records: list[dict]) -> list[WidthCheck]:
    """:class:`WidthCheck` for every (construction / target / tolerance, density) that ran multiplier 1."""
    out = []
    deltas = {_label(r["config"]): float(r["config"]["delta"]) for r in records}
    for series in sorted({r["config"]["series"] for r in records}):
        for (label, density, m), (s, n, _) in sorted(success_table(records, series).items()):
            if m != 1.0:
                continue
            delta = deltas[label]
            p = stats.binomtest(n - s, n, delta, alternative="greater").pvalue
            out.append(WidthCheck(f"{label} [{series}]", density, n - s, n, delta, float(p)))
    return out


# ---------------------------------------------------------------------------------------------------------------
# the experiment


_PHASE_MULTIPLIERS = [0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 0.75, 1.0]
_STRONG_MULTIPLIERS = [0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 1.0]
_LAYER_MULTIPLIERS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2, 1.5]
_LOW_MULTIPLIERS = [0.01, 0.02, 0.03, 0.05, 0.08, 0.12, 0.2, 0.3, 0.5, 1.0]


@dataclass(frozen=True)
class ConstructionExperiment(ScaledSweep):
    """Experiment E5 (registered as ``construction``)."""

    name: str = "construction"
    description: str = "weak / strong (L+1, 2L) ticket constructions over density x width multiplier (docs/math.md §4, §6)"
    scale_settings: dict = field(default_factory=lambda: {
        "smoke": {
            "seeds": 2, "delta": 0.1, "weight_eps": 0.01, "samples": 128, "max_source_params": 200_000,
            "phase": [("weak", {"kind": "random", "widths": [2, 3, 2]}, [1.0, 0.2], [0.3, 1.0]),
                      ("2l", {"kind": "random", "widths": [2, 3, 2]}, [0.5], [0.3, 1.0])],
            "eps_series": [("2l", {"kind": "random", "widths": [2, 3, 2]}, [1.0], [0.1, 0.01])],
            "size_series": [("weak", [[2, 3, 2], [3, 5, 2]], [0.5])],
            "layer_phase": [("weak", {"kind": "random", "widths": [2, 3, 2]}, [0.2, 0.05], [0.5, 1.0], "last", 2)],
            "check": [("weak", {"kind": "random", "widths": [2, 3, 2]}, [0.5], 4)],
        },
        "default": {
            "seeds": 10, "delta": 0.1, "weight_eps": 0.01, "samples": 256, "max_source_params": 5_000_000,
            "phase": [("weak", {"kind": "random", "widths": [2, 4, 2]}, [1.0, 0.5, 0.2, 0.1, 0.05, 0.02],
                       _PHASE_MULTIPLIERS),
                      ("weak", {"kind": "sparse", "widths": [2, 4, 2]}, [0.5, 0.2, 0.1, 0.05],
                       _PHASE_MULTIPLIERS),
                      ("weak", {"kind": "digits"}, [1.0, 0.5], _PHASE_MULTIPLIERS),
                      ("2l", {"kind": "random", "widths": [2, 4, 2]}, [1.0, 0.5, 0.2, 0.1, 0.05],
                       _STRONG_MULTIPLIERS),
                      ("l+1", {"kind": "random", "widths": [2, 4, 2]}, [1.0, 0.5], _STRONG_MULTIPLIERS)],
            "eps_series": [("2l", {"kind": "random", "widths": [2, 4, 2]}, [1.0, 0.5], [0.1, 0.03, 0.01]),
                           ("l+1", {"kind": "random", "widths": [2, 4, 2]}, [1.0], [0.1, 0.03, 0.01])],
            "size_series": [("weak", [[2, 4, 2], [4, 8, 2], [8, 16, 4], [16, 32, 8]], [0.5, 0.2]),
                            ("2l", [[2, 4, 2], [4, 8, 2]], [0.5])],
            "layer_phase": [("weak", {"kind": "random", "widths": [4, 16, 4]}, [0.5, 0.2, 0.1, 0.05, 0.02, 0.01],
                             _LAYER_MULTIPLIERS, "last", 40),
                            ("weak", {"kind": "random", "widths": [4, 16, 4]}, [0.5, 0.2, 0.1, 0.05, 0.02, 0.01],
                             _LAYER_MULTIPLIERS, "first", 40),
                            ("2l", {"kind": "random", "widths": [2, 4, 2]}, [0.5, 0.2, 0.1, 0.05, 0.02, 0.01],
                             _LOW_MULTIPLIERS, "last", 20)],
            "check": [("weak", {"kind": "random", "widths": [4, 8, 2]}, [0.5, 0.2, 0.1], 100),
                      ("weak", {"kind": "digits"}, [0.5], 40),
                      ("2l", {"kind": "random", "widths": [2, 4, 2]}, [1.0, 0.5, 0.2], 30),
                      ("l+1", {"kind": "random", "widths": [2, 4, 2]}, [1.0], 20)],
        },
        "paper": {
            "seeds": 64, "delta": 0.1, "weight_eps": 0.01, "samples": 2048, "max_source_params": 200_000_000,
            "phase": [(c, {"kind": k, "widths": [4, 8, 4]}, [1.0, 0.5, 0.2, 0.1, 0.05, 0.02], _PHASE_MULTIPLIERS)
                      for c in CONSTRUCTIONS for k in ("random", "sparse")]
            + [(c, {"kind": "digits"}, [1.0, 0.5, 0.2], _PHASE_MULTIPLIERS) for c in ("weak", "2l")],
            "eps_series": [(c, {"kind": "random", "widths": [4, 8, 4]}, [1.0, 0.5], [0.1, 0.03, 0.01, 0.003])
                           for c in ("2l", "l+1")],
            "size_series": [(c, [[2, 4, 2], [4, 8, 2], [8, 16, 4], [16, 32, 8], [32, 64, 16]], [0.5, 0.2])
                            for c in ("weak", "2l")],
            "layer_phase": [("weak", {"kind": "random", "widths": [8, 32, 8]},
                             [0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005], _LAYER_MULTIPLIERS, pattern, 200)
                            for pattern in ("last", "first")],
            "check": [(c, {"kind": "random", "widths": [4, 8, 4]}, [1.0, 0.5, 0.2, 0.1], 500) for c in CONSTRUCTIONS],
        },
    })
    workers: int | None = None  #: local process-pool size (None: all available CPUs)

    def configs(self, scale: str, seeds: int | None = None) -> list[dict]:
        """One config per (series, construction, target, density[, ε]); each holds its multipliers and seeds."""
        s, n_seeds = self.settings(scale, seeds)
        base = {"delta": s["delta"], "samples": s["samples"], "max_source_params": s["max_source_params"],
                "seeds": list(range(n_seeds)), "scale": scale, "nss_table": nss_table_fingerprint()}
        phase, other = [], []
        for construction, target, densities, mults in s["phase"]:
            tol = {"weight_eps": s["weight_eps"]} if construction != "weak" else {"weight_eps": None}
            for d in densities:
                (phase if construction == "weak" else other).append(
                    {**base, "series": "phase", "construction": construction, "target": target,
                     "density": float(d), "multipliers": list(mults), **tol, "eps": None})
        series = []
        for construction, sizes, densities in s["size_series"]:
            for widths in sizes:
                for d in densities:
                    tol = {"weight_eps": s["weight_eps"]} if construction != "weak" else {"weight_eps": None}
                    series.append({**base, "series": "size", "construction": construction,
                                   "target": {"kind": "random", "widths": widths}, "density": float(d),
                                   "multipliers": [1.0], **tol, "eps": None, "seeds": list(range(min(n_seeds, 4)))})
        for construction, target, densities, epss in s["eps_series"]:
            for d in densities:
                for e in epss:
                    series.append({**base, "series": "eps", "construction": construction, "target": target,
                                   "density": float(d), "multipliers": [1.0], "eps": float(e), "weight_eps": None,
                                   "seeds": list(range(min(n_seeds, 4)))})
        for construction, target, densities, mults, pattern, k in s["layer_phase"]:
            tol = {"weight_eps": s["weight_eps"]} if construction != "weak" else {"weight_eps": None}
            for d in densities:
                series.append({**base, "series": "phase", "construction": construction, "target": target,
                               "density": float(d), "multipliers": list(mults), **tol, "eps": None,
                               "density_pattern": pattern, "seeds": list(range(k if seeds is None else n_seeds))})
        for construction, target, densities, k in s["check"]:
            tol = {"weight_eps": s["weight_eps"]} if construction != "weak" else {"weight_eps": None}
            for d in densities:
                series.append({**base, "series": "check", "construction": construction, "target": target,
                               "density": float(d), "multipliers": [1.0], **tol, "eps": None,
                               "seeds": list(range(k if seeds is None else n_seeds))})
        # cheap weak phase first, then the other series, then the strong phase diagrams (the costly part)
        out = phase + series + other
        return out

    def run(self, config: dict, device=None, on_loss: Callable[[float], None] | None = None) -> dict:
        """All (multiplier, seed) tasks of ``config`` on the engine (CPU; ``device`` is ignored)."""
        check_choice(config["construction"], "construction", CONSTRUCTIONS)
        check_open_unit(config["delta"], "delta")
        tasks = [{**config, "multiplier": float(m), "seed": int(seed)}
                 for m in config["multipliers"] for seed in config["seeds"]]
        results = run_tasks(tasks, self.workers)
        target0 = make_e5_target(config["target"], 0)
        dens = source_densities(config["construction"], target0.depth, config["density"],
                                config.get("density_pattern", "all"))
        return {"tasks": results, "theory_hidden_widths": list(planned_source(
            config["construction"], target0, dens, config["delta"], 1.0, config.get("weight_eps"),
            config.get("eps"))[1:-1])}

    def figures(self, records: list[dict], out_dir) -> list[Path]:
        """Figures (a)–(d) of the module docstring, from stored records only; also ``e5_summary.md``."""
        return make_e5_figures(records, Path(out_dir))


# ---------------------------------------------------------------------------------------------------------------
# figures (stored records only)


def _edges(values):
    v = np.sort(np.asarray(values, dtype=float))
    if v.size == 1:
        return np.array([v[0] / 1.3, v[0] * 1.3])
    mid = np.sqrt(v[1:] * v[:-1])
    return np.concatenate([[v[0] ** 2 / mid[0]], mid, [v[-1] ** 2 / mid[-1]]])


def _wrap(label: str) -> str:
    return label.replace(" / p on", "\np on").replace(" / exact", ", exact").replace(" / weight_eps", ", weight_eps")


def _density_ticks(ax, values, axis: str) -> None:
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(list(values)))
    target.set_major_formatter(FixedFormatter([f"{v:g}" for v in values]))
    target.set_minor_locator(NullLocator())


def _labels(records, series):
    return sorted({_label(r["config"]) for r in records if r["config"]["series"] == series})


def _depth(records, label):
    for r in records:
        if _label(r["config"]) == label:
            for t in r["metrics"]["tasks"]:
                if not t["skipped"]:
                    return len(t["layer_failures"])
    return 0


def _theory_widths(records, label) -> dict:
    """density → hidden widths theory gives (multiplier 1, target of seed 0), as stored in the records."""
    return {float(r["config"]["density"]): r["metrics"]["theory_hidden_widths"] for r in records
            if _label(r["config"]) == label and r["config"]["series"] == "phase"}


def minimal_width_rows(records: list[dict]) -> list[dict]:
    """For every phase label and target layer t: the empirical minimal width (:func:`minimal_width` on the
    layer-t success table) per density, theory's width of that layer, and the log-log slopes (0.02 ≤ p ≤ 0.2) of
    both."""
    rows = []
    deltas = {_label(r["config"]): float(r["config"]["delta"]) for r in records}
    for label in _labels(records, "phase"):
        construction = label.split(" / ")[0]
        theory = _theory_widths(records, label)
        for layer in range(1, _depth(records, label) + 1):
            table = success_table(records, "phase", layer)
            densities = sorted({d for (lab, d, _) in table if lab == label})
            mins = [minimal_width(table, label, d, deltas[label])[1] for d in densities]
            th = [float(theory[d][_hidden_index(construction, layer)]) for d in densities]
            rows.append({"label": label, "layer": layer, "densities": densities, "minimal_width": mins,
                         "theory_width": th, "slope": loglog_slope(densities, mins),
                         "theory_slope": loglog_slope(densities, th)})
    return rows


def _heatmaps(records, out_dir):
    labels = _labels(records, "phase")
    ncols = min(3, len(labels))
    fig, axes = new_figure(ncols=ncols, nrows=int(math.ceil(len(labels) / ncols)), width=6.4 / ncols, height=2.2)
    mesh = None
    for ax, label in zip(axes.ravel(), labels):
        table = success_table(records, "phase")
        dens = sorted({d for (lab, d, _) in table if lab == label})
        mults = sorted({m for (lab, _, m) in table if lab == label})
        grid = np.full((len(mults), len(dens)), np.nan)
        for (lab, d, m), (s, n, _) in table.items():
            if lab == label:
                grid[mults.index(m), dens.index(d)] = s / n
        mesh = ax.pcolormesh(_edges(dens), _edges(mults), np.ma.masked_invalid(grid), cmap="viridis", vmin=0,
                             vmax=1, shading="flat")
        ax.set_facecolor("0.85")
        ax.axhline(1.0, color="w", ls="--", lw=1.2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _density_ticks(ax, dens[::2] if len(dens) > 4 else dens, "x")
        _density_ticks(ax, mults[::2] if len(mults) > 5 else mults, "y")
        ax.set_xlabel("source density p", fontsize=8)
        ax.set_ylabel("width multiplier", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.set_title(_short_label(label), fontsize=8)
    for ax in axes.ravel()[len(labels):]:
        ax.remove()  # unused grid slots
    if mesh is not None:
        fig.colorbar(mesh, ax=[a for a in axes.ravel()[:len(labels)]], label="success rate over seeds", shrink=0.8)
    fig.suptitle("E5 (a): white dashes = theory's width (multiplier 1);\n"
                 "grey = not run (source above the parameter budget)", fontsize=8)
    return save_figure(fig, out_dir / "e5_phase")


def _minimal_widths_figure(rows, out_dir):
    # only the layers whose width depends on the swept density, with at least 3 densities
    rows = [r for r in rows if len(r["densities"]) >= 3 and len(set(r["theory_width"])) > 1] or rows[:1]
    ncols = min(3, max(1, len(rows)))
    fig, axes = new_figure(ncols=ncols, nrows=int(math.ceil(max(1, len(rows)) / 3)), width=7.0 / ncols, height=2.4)
    for ax, row in zip(axes.ravel(), rows):
        d = np.array(row["densities"])
        w = np.array(row["minimal_width"], dtype=float)
        th = np.array(row["theory_width"], dtype=float)
        ax.plot(d, th, "k--", lw=1, label="theory's width")
        ax.plot(d, w, "o-", color="C3", ms=3, label="measured minimal width")
        ok = np.isfinite(w) & (d < 1)
        if ok.any():
            ref_d, ref_w = d[ok][-1], w[ok][-1]  # anchor the reference curves at the densest finite point < 1
            ax.plot(d[d < 1], ref_w * np.array([float(er_factor(x)) for x in d[d < 1]]) / float(er_factor(ref_d)),
                    color="C0", lw=0.8, label=r"$\propto\kappa(p)$")
            ax.plot(d[d < 1], ref_w * ref_d / d[d < 1], color="C2", lw=0.8, ls=":", label=r"$\propto 1/p$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _density_ticks(ax, d[::2] if len(d) > 5 else d, "x")
        ax.set_xlabel("source density p", fontsize=8)
        ax.set_ylabel("minimal width (units)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.set_title(f"{_short_label(row['label'])}\nlayer {row['layer']}: slope {_slope_text(row['slope'])} "
                     f"(theory {_slope_text(row['theory_slope'])})", fontsize=8)
    for ax in axes.ravel()[len(rows):]:
        ax.remove()  # unused grid slots
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    return save_figure(fig, out_dir / "e5_minimal_width")


def _short_label(label: str) -> str:
    """A phase label in at most ~30 characters per line (panel titles at 8 pt in a 2.3 in panel)."""
    return (label.replace("weight_eps=", "w_eps ").replace(" / p on first layer only", " / first-layer p")
            .replace(" / p on last layer only", " / last-layer p").replace(" / exact", "")
            .replace(" / ", ", ").replace("random ", ""))


def _slope_text(slope: float) -> str:
    """A fitted log-log slope, or "n/a" when fewer than two densities in [0.02, 0.2] have a finite width."""
    return f"{slope:.2f}" if np.isfinite(slope) else "n/a"


def _marker_legend(ax, groups, markers, dashed) -> None:
    """A legend below ``ax``: one colour per group (C0, C1, …), one black marker per quantity, the dashed line."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=f"C{k}", marker="s", ls="") for k in range(len(groups))]
    handles += [Line2D([], [], color="k", marker=m, ls="") for m, _ in markers]
    handles += [Line2D([], [], color="k", ls="--", lw=0.8) for _ in dashed]
    labels = list(groups) + [label for _, label in markers] + list(dashed)
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)


def _series_tasks(records, series):
    for r in records:
        if r["config"]["series"] == series:
            for t in r["metrics"]["tasks"]:
                if not t["skipped"]:
                    yield r["config"], t


def _eps_figure(records, out_dir):
    fig, axes = new_figure(height=3.9)
    ax = axes[0, 0]
    groups: dict = {}
    for c, t in _series_tasks(records, "eps"):
        groups.setdefault((c["construction"], c["density"]), []).append((c["eps"], t["certificate"],
                                                                           t["sampled_error"], t["success"]))
    for k, ((construction, density), pts) in enumerate(sorted(groups.items())):
        e, cert, samp, _ = (np.array(v) for v in zip(*pts))
        jitter = 1 + 0.06 * (k - (len(groups) - 1) / 2)
        ax.scatter(e * jitter, cert, marker="o", s=10, color=f"C{k}")
        ax.scatter(e * jitter, np.maximum(samp, 1e-12), marker="x", s=10, color=f"C{k}")
    if groups:
        all_e = sorted({p[0] for pts in groups.values() for p in pts})
        ax.plot(all_e, all_e, "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"requested network error $\epsilon$")
    ax.set_ylabel("sup error")
    ax.set_title("E5 (c): certificate (o), sampled error (x)", fontsize=8)
    _marker_legend(ax, [f"{c}, p={d:g}" for c, d in sorted(groups)],
                   [("o", "certificate"), ("x", "sampled error")], (r"$\epsilon$",))
    return save_figure(fig, out_dir / "e5_error_vs_eps")


def _size_figure(records, out_dir):
    fig, axes = new_figure(height=3.9)
    ax = axes[0, 0]
    groups: dict = {}
    for c, t in _series_tasks(records, "size"):
        groups.setdefault((c["construction"], c["density"]), []).append((t["target_params"], t["ticket_params"],
                                                                           t["source_params"]))
    for k, ((construction, density), pts) in enumerate(sorted(groups.items())):
        tp, kp, sp = (np.array(v, dtype=float) for v in zip(*pts))
        ax.scatter(tp, kp, s=10, color=f"C{k}", marker="o")
        ax.scatter(tp, sp, s=10, color=f"C{k}", marker="^", alpha=0.5)
    if groups:
        lim = [min(p[0] for v in groups.values() for p in v), max(p[0] for v in groups.values() for p in v)]
        ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("target parameters (non-zero weights)")
    ax.set_ylabel("kept weights")
    ax.set_title("E5 (d): kept weights vs target size", fontsize=8)
    _marker_legend(ax, [f"{c}, p={d:g}" for c, d in sorted(groups)],
                   [("o", "ticket"), ("^", "source (dense count)")], ("ticket = target",))
    return save_figure(fig, out_dir / "e5_ticket_size")


def summary_markdown(records: list[dict]) -> str:
    """The width checks at multiplier 1 and the minimal-width slopes, as a Markdown document."""
    lines = ["# E5: constructions — checks at theory's widths and minimal-width slopes", "",
             ("| construction / target / tolerance [series] | density | failures / runs at multiplier 1 | delta "
              "| binomtest p (H0: failure <= delta) |"), "|---|---|---|---|---|"]
    for c in check_theory_widths(records):
        lines.append(f"| {c.label} | {c.density:g} | {c.failures} / {c.runs} | {c.delta:g} | {c.p_value:.3g} |")
    lines += ["", ("| construction / target / tolerance | target layer | log-log slope measured (0.02 <= p <= 0.2) "
                   "| slope of theory's width | minimal widths (density: units) |"), "|---|---|---|---|---|"]
    for row in minimal_width_rows(records):
        pairs = ", ".join(f"{d:g}: {w:.0f}" if np.isfinite(w) else f"{d:g}: n/a"
                          for d, w in zip(row["densities"], row["minimal_width"]))
        lines.append(f"| {row['label']} | {row['layer']} | {row['slope']:.2f} | {row['theory_slope']:.2f} | {pairs} |")
    return "\n".join(lines) + "\n"


def make_e5_figures(records: list[dict], out_dir: Path) -> list[Path]:
    """(a) e5_phase, (b) e5_minimal_width, (c) e5_error_vs_eps, (d) e5_ticket_size (PDF + PNG) and
    e5_summary.md, for the series present in ``records``."""
    from theory.atomic import atomic_write_text

    if not records:
        raise ValueError("no construction records to plot: allowed a results file with finished runs")
    out_dir = Path(out_dir)
    paths = []
    series = {r["config"]["series"] for r in records}
    if "phase" in series:
        paths += _heatmaps(records, out_dir)
        paths += _minimal_widths_figure(minimal_width_rows(records), out_dir)
    if "eps" in series:
        paths += _eps_figure(records, out_dir)
    if "size" in series:
        paths += _size_figure(records, out_dir)
    md = out_dir / "e5_summary.md"
    atomic_write_text(md, summary_markdown(records))
    return paths + [md]


EXPERIMENT = ConstructionExperiment()
