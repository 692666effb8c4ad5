"""E6 — subset sum with masked candidates (docs/experiments.md E6, docs/math.md §5), following Gadhikar et al. 2023.

One run = one candidate law ("uniform": X ~ U[−1, 1]; "product": X = U·V), one tolerance ε, one density p and one
seed, with ``trials`` independent draws. A draw is n_max candidates X_1..X_{n_max} with ER masks M_i ~ Bernoulli(p)
and the targets z on a fixed grid of [−1, 1]. For n ≤ n_max the available candidates are the kept ones among the
first n, and the draw *succeeds* at (n, z) when some subset S of them has |z − Σ_{i∈S} X_i| ≤ ε.

How it is measured exactly: the kept candidates, in order, are i.i.d. from the law (masks are independent of values,
docs/math.md §5 [ours-1]); for each z the exact solver (:func:`construct.subset_sum.smallest_sufficient_prefix`,
meet-in-the-middle) gives m_needed(z) = the fewest leading survivors that reach z within ε; failure is monotone in
the prefix, so the draw succeeds at (n, z) iff m_needed(z) ≤ K(n) = Σ_{i≤n} M_i. Survivors beyond the first
``survivor_cap`` are not searched: a draw with m_needed > cap is counted as a failure at every n (conservative)
and reported as ``censored``. The test suite checks this against :func:`construct.subset_sum.solve_subset_sums`
run on the full masked rows.

Stored per run: the n grid, failure counts per (n, z), the number of censored draws. Figures (from stored results
only) show the success probability at the worst grid point z vs n, per density, with the exact binomial mixture
Σ_k Bin(k; n, p)·(1 − P_fail(k, ε)) from the calibrated table and the widths [ours-1] (thinning) and [ours-2]
(blocks) of :mod:`theory.subset_sum` as vertical lines.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from construct.subset_sum import smallest_sufficient_prefix
from theory.subset_sum import (
    LAWS,
    block_width,
    load_nss_table,
    mixture_success_probability,
    thinning_width,
)
from theory.validation import (
    check_choice,
    check_density,
    check_open_unit,
    check_positive_int,
)

from .infra.figures import new_figure, save_figure
from .infra.registry import ScaledSweep

__all__ = [
    "EXPERIMENT",
    "BoundCheck",
    "SubsetSumCell",
    "SubsetSumExperiment",
    "aggregate",
    "check_bounds",
    "draw_candidates",
    "failures_from_draws",
    "masked_subset_sum_failures",
    "n_grid",
]

Z_GRID = tuple(round(-1.0 + 0.1 * i, 10) for i in range(21))  #: targets z ∈ {−1, −0.9, …, 1}
DEFAULT_DELTA = 0.01  #: δ of the widths drawn on the figure and checked
SURVIVOR_CAP = 44  #: largest prefix of survivors searched exactly (the calibration's k_max)


def draw_candidates(rng: np.random.Generator, trials: int, count: int, law: str) -> np.ndarray:
    """``trials × count`` i.i.d. candidates of ``law``: U[−1, 1] ("uniform") or U·V with U, V ~ U[−1, 1] ("product")."""
    law = check_choice(law, "law", LAWS)
    values = rng.uniform(-1.0, 1.0, size=(trials, count))
    if law == "product":
        values = values * rng.uniform(-1.0, 1.0, size=(trials, count))
    return values


def n_grid(n_max: int) -> list[int]:
    """Numbers of candidates n at which success is recorded: every n ≤ 60, then 80 log-spaced points up to n_max."""
    n_max = check_positive_int(n_max, "n_max")
    grid = set(range(1, min(n_max, 60) + 1)) | {int(round(x)) for x in np.geomspace(1, n_max, 81)}
    return sorted(grid)


def masked_subset_sum_failures(seed: int, law: str, eps: float, density: float, trials: int, n_max: int,
                               z_grid=Z_GRID, survivor_cap: int = SURVIVOR_CAP):
    """Failure counts of masked subset sum (module docstring): returns (grid, failures (len(grid), len(z)) int,
    censored). ``failures[a, b]`` = number of draws in which no subset of the kept candidates among the first
    grid[a] is within ε of z_grid[b]. Seeded: ``numpy.random.default_rng([seed, law, ε, p])``."""
    law = check_choice(law, "law", LAWS)
    eps = check_open_unit(eps, "eps")
    density = check_density(density)
    trials = check_positive_int(trials, "trials")
    seed = check_positive_int(seed, "seed", 0)
    grid = np.asarray(n_grid(n_max))
    tag = [seed, LAWS.index(law), int(round(-math.log10(eps) * 1000)), int(round(density * 1_000_000))]
    rng = np.random.default_rng(np.random.SeedSequence(tag))
    values = draw_candidates(rng, trials, survivor_cap, law)  # the kept candidates, in order
    kept = rng.random((trials, int(grid[-1]))) < density  # ER masks of the n_max positions
    failures, censored = failures_from_draws(values, kept, grid, z_grid, eps)
    return grid.tolist(), failures, censored


def failures_from_draws(survivor_values: np.ndarray, kept: np.ndarray, grid, z_grid, eps: float):
    """Failure counts (len(grid), len(z)) and the number of censored draws, for given draws: row r of
    ``survivor_values`` (trials, cap) holds the values of draw r's kept candidates in order (entries beyond its
    number of kept candidates are never used), ``kept`` (trials, ≥ max(grid)) its ER mask; draw r fails at
    (n, z) iff m_needed(z) > K(n) (module docstring)."""
    grid = np.asarray(grid)
    trials, cap = survivor_values.shape
    survivors = np.cumsum(kept, axis=1)[:, grid - 1]  # K(n) for n in the grid: (trials, len(grid))
    z = np.asarray(z_grid, dtype=np.float64)
    needed = smallest_sufficient_prefix(survivor_values, np.tile(z, (trials, 1)), eps)  # cap + 1 = miss
    censored = int(np.sum(np.any(needed > cap, axis=1) & (survivors[:, -1] > cap)))
    fail = needed[:, None, :] > np.minimum(survivors, cap)[:, :, None]
    return fail.sum(axis=0).astype(np.int64), censored


@dataclass(frozen=True)
class SubsetSumCell:
    """Aggregated runs of one (law, ε, density): ``trials`` draws, failure counts per (n, z)."""

    law: str
    eps: float
    density: float
    grid: tuple
    failures: np.ndarray  # (len(grid), len(z))
    trials: int
    censored: int

    def worst_failure_rate(self) -> np.ndarray:
        """max over z of the failure rate at each n of the grid."""
        return self.failures.max(axis=1) / self.trials

    def failure_at(self, n: int) -> int:
        """Failures at the worst z with n candidates (n beyond the grid: the last grid value, which only
        over-counts failures because success is monotone in n)."""
        i = int(np.searchsorted(self.grid, n, side="right")) - 1
        if i < 0:
            return self.trials
        return int(self.failures[i].max())


def aggregate(records: list[dict]) -> dict:
    """(law, ε, density) → :class:`SubsetSumCell`, summing failure counts over seeds with equal grids."""
    cells: dict = {}
    for r in records:
        c, m = r["config"], r["metrics"]
        key = (c["law"], float(c["eps"]), float(c["density"]))
        fails = np.asarray(m["failures"], dtype=np.int64)
        if key in cells:
            old = cells[key]
            if tuple(m["grid"]) != old.grid:
                raise ValueError(f"records of {key} have different n grids: allowed one n_max per cell")
            cells[key] = SubsetSumCell(*key, old.grid, old.failures + fails, old.trials + int(m["trials"]),
                                       old.censored + int(m["censored"]))
        else:
            cells[key] = SubsetSumCell(*key, tuple(m["grid"]), fails, int(m["trials"]), int(m["censored"]))
    return cells


@dataclass(frozen=True)
class BoundCheck:
    """Measured failures (worst z) at a theoretical width n, and the one-sided binomial test of
    H0: failure probability ≤ δ (``p_value`` small ⇒ the bound is violated)."""

    law: str
    eps: float
    density: float
    bound: str
    width: int
    failures: int
    trials: int
    delta: float
    p_value: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def check_bounds(cells: dict, delta: float = DEFAULT_DELTA) -> list[BoundCheck]:
    """For every cell, the measured failures at the widths [ours-1] ``thinning_width`` and [ours-2]
    ``block_width(...).total`` (δ = ``delta``), with ``scipy.stats.binomtest(..., alternative="greater")``."""
    out = []
    for (law, eps, density), cell in sorted(cells.items()):
        for bound, width in (("thinning", thinning_width(eps, delta, density, law)),
                             ("blocks", block_width(eps, delta, density, law).total)):
            fails = cell.failure_at(width)
            p_value = stats.binomtest(fails, cell.trials, delta, alternative="greater").pvalue
            out.append(BoundCheck(law, eps, density, bound, int(width), fails, cell.trials, delta, float(p_value)))
    return out


@dataclass(frozen=True)
class SubsetSumExperiment(ScaledSweep):
    """Experiment E6 (registered as ``subset-sum``)."""

    name: str = "subset-sum"
    description: str = "exact subset sum with ER-masked candidates vs n, per density/law/eps (docs/math.md §5)"
    scale_settings: dict = field(default_factory=lambda: {
        "smoke": {"seeds": 1, "trials": 100, "laws": ["uniform"], "eps": [1e-2], "densities": [1.0, 0.2]},
        "default": {"seeds": 4, "trials": 500, "laws": ["uniform", "product"], "eps": [1e-2, 1e-3, 1e-4],
                    "densities": [1.0, 0.5, 0.2, 0.1, 0.05]},
        "paper": {"seeds": 20, "trials": 1000, "laws": ["uniform", "product"], "eps": [1e-2, 1e-3, 1e-4],
                  "densities": [1.0, 0.5, 0.2, 0.1, 0.05, 0.02]},
    })

    def configs(self, scale: str, seeds: int | None = None) -> list[dict]:
        """One config per law, ε, density and seed; n_max covers both theoretical widths at δ = 0.01."""
        s, n_seeds = self.settings(scale, seeds)
        out = []
        for law in s["laws"]:
            for eps in s["eps"]:
                for density in s["densities"]:
                    n_max = max(thinning_width(eps, DEFAULT_DELTA, density, law),
                                block_width(eps, DEFAULT_DELTA, density, law).total)
                    for seed in range(n_seeds):
                        out.append({"law": law, "eps": float(eps), "density": float(density), "trials": s["trials"],
                                    "n_max": int(n_max), "z_grid": list(Z_GRID), "survivor_cap": SURVIVOR_CAP,
                                    "seed": seed})
        return out

    def run(self, config: dict, device=None, on_loss: Callable[[float], None] | None = None) -> dict:
        """Failure counts of one config (CPU; ``device`` is ignored: the solver is numpy)."""
        grid, failures, censored = masked_subset_sum_failures(
            config["seed"], config["law"], config["eps"], config["density"], config["trials"], config["n_max"],
            tuple(config["z_grid"]), config["survivor_cap"])
        return {"grid": grid, "failures": failures.tolist(), "trials": int(config["trials"]), "censored": censored}

    def figures(self, records: list[dict], out_dir) -> list[Path]:
        """One panel per (law, ε): worst-z success probability vs n per density (log n axis), the binomial
        mixture of the calibrated table (dashed), [ours-1] (dotted vertical) and [ours-2] (dash-dot vertical)."""
        cells = aggregate(records)
        if not cells:
            raise ValueError("no subset-sum records to plot: allowed a results file with finished runs")
        panels = sorted({(law, eps) for law, eps, _ in cells}, key=lambda k: (LAWS.index(k[0]), -k[1]))
        ncols = min(3, len(panels))
        nrows = int(math.ceil(len(panels) / ncols))
        fig, axes = new_figure(ncols=ncols, nrows=nrows, width=7.0 / ncols, height=2.1)
        calibrated = {float(r["eps"]) for law in LAWS for r in load_nss_table()["laws"][law]["rows"]}
        for ax, (law, eps) in zip(axes.ravel(), panels):
            densities = sorted((d for (l, e, d) in cells if (l, e) == (law, eps)), reverse=True)
            for k, density in enumerate(densities):
                cell = cells[(law, eps, density)]
                color = f"C{k}"
                ax.plot(cell.grid, 1 - cell.worst_failure_rate(), color=color, lw=1.2,
                        label=f"p={density:g} ({cell.trials} draws)")
                if eps in calibrated:
                    mix = [mixture_success_probability(n, density, eps, law) for n in cell.grid]
                    ax.plot(cell.grid, mix, color=color, lw=0.8, ls="--")
                ax.axvline(thinning_width(eps, DEFAULT_DELTA, density, law), color=color, lw=0.7, ls=":")
                ax.axvline(block_width(eps, DEFAULT_DELTA, density, law).total, color=color, lw=0.7, ls="-.")
            ax.axhline(1 - DEFAULT_DELTA, color="0.5", lw=0.6)
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("candidates n", fontsize=8)
            ax.set_ylabel("success (worst z)", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.set_title(f"{law} law, $\\epsilon$={eps:g}", fontsize=8)
        for ax in axes.ravel()[len(panels):]:
            ax.remove()  # unused grid slots
        from matplotlib.lines import Line2D

        first = sorted((d for (l, e, d) in cells if (l, e) == panels[0]), reverse=True)
        handles = [Line2D([], [], color=f"C{k}", lw=1.2) for k in range(len(first))]
        labels = [f"p={d:g} ({cells[(*panels[0], d)].trials} draws)" for d in first]
        handles += [Line2D([], [], color="k", lw=1.2), Line2D([], [], color="k", lw=0.8, ls="--"),
                    Line2D([], [], color="k", lw=0.7, ls=":"), Line2D([], [], color="k", lw=0.7, ls="-.")]
        labels += ["measured (exact solver)", "mixture of the N_SS table", f"[ours-1] width ($\\delta$={DEFAULT_DELTA:g})",
                   f"[ours-2] width ($\\delta$={DEFAULT_DELTA:g})"]
        fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)
        return save_figure(fig, Path(out_dir) / "e6_subset_sum")


EXPERIMENT = SubsetSumExperiment()
