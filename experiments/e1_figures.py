"""Figures of E1 (docs/experiments.md E1), made from stored results only, following Gadhikar et al. 2023.

(a) heat map of the normalized test loss (test MSE / Var f_T) over (density, width) with n*(p) of docs/math.md §3;
(b) trained test loss vs the mask's exact error floor (both normalized by Var f_T);
(c) test accuracy vs density at a fixed width and at a width scaled with κ(p)/κ(p_ref).
"""
from __future__ import annotations

import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm

from theory.atomic import atomic_write_text
from theory.lower_bound import lower_bound_width, lower_bound_width_closed_form

from .infra.figures import new_figure, save_figure

__all__ = ["flatten", "make_figures", "heatmap_table"]


def flatten(records: list[dict]) -> list[dict]:
    """One row per trained student: its config fields (task, inputs, seed, family, masking mode) + metrics."""
    rows = []
    for record in records:
        config = record["config"]
        for member in record["metrics"]["members"]:
            rows.append(dict(member, task=config["task"], inputs=config["inputs"], seed=config["seed"],
                             family=config["family"], first_layer_only=bool(config["first_layer_only"]),
                             task_name=record["metrics"].get("task_name", config["task"])))
    return rows


def _edges(values: np.ndarray) -> np.ndarray:
    """Cell edges on a log axis: geometric midpoints, outermost cells mirrored."""
    logs = np.log(values)
    if len(values) == 1:
        return np.exp(np.array([logs[0] - 0.5, logs[0] + 0.5]))
    mids = (logs[1:] + logs[:-1]) / 2
    return np.exp(np.concatenate([[2 * logs[0] - mids[0]], mids, [2 * logs[-1] - mids[-1]]]))


def heatmap_table(rows: list[dict], inputs: int, first_layer_only: bool):
    """(densities ↑, widths ↑, mean normalized test loss [width, density], seed count) of the affine grid."""
    cells = defaultdict(list)
    for r in rows:
        if (r["task"] == "affine" and r["family"] == "grid" and r["inputs"] == inputs
                and r["first_layer_only"] == first_layer_only and r.get("normalized_test_loss") is not None):
            cells[(r["density"], r["width"])].append(r["normalized_test_loss"])
    densities = np.array(sorted({k[0] for k in cells}))
    widths = np.array(sorted({k[1] for k in cells}))
    table = np.full((len(widths), len(densities)), np.nan)
    counts = np.zeros_like(table, dtype=int)
    for (p, n), values in cells.items():
        i, j = int(np.searchsorted(widths, n)), int(np.searchsorted(densities, p))
        table[i, j] = float(np.mean(values))
        counts[i, j] = len(values)
    return densities, widths, table, counts


def _n_star_curve(inputs: int, densities: np.ndarray, delta: float, first_layer_only: bool):
    return _n_star_curve_cached(int(inputs), float(densities.min()), float(densities.max()), float(delta),
                                bool(first_layer_only))


@lru_cache(maxsize=64)
def _n_star_curve_cached(inputs: int, low: float, high: float, delta: float, first_layer_only: bool):
    grid = np.geomspace(low, min(high, 0.9), 40)
    both = np.array([lower_bound_width(inputs, p, delta, 1.0 if first_layer_only else p) for p in grid], float)
    first = np.array([lower_bound_width_closed_form(inputs, p, delta) for p in grid])
    return grid, both, first


def _panels(rows):
    return sorted({(r["inputs"], r["first_layer_only"]) for r in rows if r["task"] == "affine" and r["family"] == "grid"})


def _mode_label(first_layer_only: bool) -> str:
    return "first layer masked" if first_layer_only else "both layers masked"


def figure_heatmap(rows, out_dir: Path, delta: float) -> list[Path]:
    panels = _panels(rows)
    fig, axes = new_figure(ncols=len(panels), width=7.0 / max(2, len(panels)), height=3.0)
    for ax, (inputs, flo) in zip(axes[0], panels):
        densities, widths, table, _ = heatmap_table(rows, inputs, flo)
        mesh = ax.pcolormesh(_edges(densities), _edges(widths), np.clip(table, 1e-4, None), cmap="viridis",
                             norm=LogNorm(vmin=1e-3, vmax=1.0), shading="flat")
        grid, n_star, n_first = _n_star_curve(inputs, densities, delta, flo)
        label = r"$n^*(p)$, $\delta=%g$" % delta
        ax.plot(grid, n_star, color="white", lw=1.6, label=label)
        if not flo:
            ax.plot(grid, n_first, color="white", lw=1.0, ls="--",
                    label=r"$\kappa(p)\log(1/(1-(1-\delta)^{1/d}))$")
        ax.set_xscale("log")
        ax.set_yscale("log", base=2)
        ax.set_xlim(_edges(densities)[0], _edges(densities)[-1])
        ax.set_ylim(_edges(widths)[0], _edges(widths)[-1])
        ax.set_xlabel(r"density $p$")
        ax.set_ylabel(r"hidden width $n$")
        ax.set_title(f"d={inputs}, {_mode_label(flo)}", fontsize=8)
        fig.colorbar(mesh, ax=ax, label=r"test MSE / Var $f_T$ (seed mean)")
    # one legend for both panels, below them (a legend inside would sit on the heatmap)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8, facecolor="0.75", frameon=True)
    return save_figure(fig, out_dir / "e1_a_heatmap")


def figure_floor(rows, out_dir: Path) -> list[Path]:
    panels = _panels(rows)
    fig, axes = new_figure(ncols=len(panels), width=min(3.4, 7.0 / max(1, len(panels))), height=3.0)
    for ax, (inputs, flo) in zip(axes[0], panels):
        sel = [r for r in rows if r["task"] == "affine" and r["family"] == "grid" and r["inputs"] == inputs
               and r["first_layer_only"] == flo and r.get("normalized_error_floor") is not None]
        floor = np.array([r["normalized_error_floor"] for r in sel])
        loss = np.array([r["normalized_test_loss"] for r in sel])
        width = np.array([r["width"] for r in sel], float)
        points = ax.scatter(floor, loss, c=np.log2(width), s=9, cmap="plasma", alpha=0.8, linewidths=0)
        ax.plot([0, 1.1], [0, 1.1], color="black", lw=0.8, label="loss = floor")
        ax.set_xscale("symlog", linthresh=1e-2)
        ax.set_yscale("symlog", linthresh=1e-2)
        ax.set_xlim(-1e-3, 1.2)
        ax.set_ylim(-1e-3, 1.5)
        ax.set_xlabel(r"error floor $\sum_{j\ \mathrm{disc.}} w_j^2\,\mathrm{Var}(x_j)$ / Var $f_T$")
        ax.set_ylabel(r"trained test MSE / Var $f_T$")
        ax.set_title(f"d={inputs}, {_mode_label(flo)}")
        ax.legend(loc="upper left", fontsize=8)
        fig.colorbar(points, ax=ax, label=r"$\log_2 n$")
    return save_figure(fig, out_dir / "e1_b_floor")


def figure_accuracy(rows, out_dir: Path) -> list[Path]:
    tasks = sorted({r["task"] for r in rows if "test_accuracy" in r})
    fig, axes = new_figure(ncols=len(tasks), width=min(3.4, 7.0 / max(1, len(tasks))), height=4.0)
    for ax, task in zip(axes[0], tasks):
        scaled = [r for r in rows if r["task"] == task and r["family"] == "scaled"]
        ref_widths = {r["width"] for r in scaled if r["density"] >= 0.5}
        n_ref = min(ref_widths) if ref_widths else None
        for flo, color in ((False, "tab:blue"), (True, "tab:orange")):
            for family, style in (("grid", "-"), ("scaled", "--")):
                sel = [r for r in rows if r["task"] == task and r["family"] == family
                       and r["first_layer_only"] == flo and (family == "scaled" or r["width"] == n_ref)]
                if not sel:
                    continue
                by_density = defaultdict(list)
                for r in sel:
                    by_density[r["density"]].append(r["test_accuracy"])
                ps = np.array(sorted(by_density))
                mean = np.array([np.mean(by_density[p]) for p in ps])
                std = np.array([np.std(by_density[p]) for p in ps])
                what = f"fixed $n={n_ref}$" if family == "grid" else r"$n\propto\kappa(p)/\kappa(0.5)$"
                ax.errorbar(ps, mean, yerr=std, color=color, ls=style, marker="o", ms=3, capsize=2,
                            label=f"{what}, {_mode_label(flo)}")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_xlabel(r"density $p$")
        ax.set_ylabel("test accuracy (mean ± sd over seeds)")
        ax.set_title(f"{task} (small-scale counterpart)")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=1)
    return save_figure(fig, out_dir / "e1_c_accuracy")


def summary(rows: list[dict], delta: float, threshold: float = 0.01) -> list[dict]:
    """Numbers behind figures (a) and (b), per affine panel (d, masking mode).

    Per density: n*(p) (docs/math.md §3) and the smallest grid width whose seed-mean normalized test loss is
    ≤ ``threshold``; over all students: how far the trained test loss sits above the exact error floor.
    """
    out = []
    for inputs, flo in _panels(rows):
        densities, widths, table, counts = heatmap_table(rows, inputs, flo)
        per_density = []
        for j, p in enumerate(densities):
            ok = [int(widths[i]) for i in range(len(widths)) if table[i, j] <= threshold]
            per_density.append({
                "density": float(p),
                "n_star": int(lower_bound_width(inputs, float(p), delta, 1.0 if flo else float(p))) if p < 1 else 1,
                "smallest_width_below_threshold": min(ok) if ok else None,
                "mean_normalized_test_loss_by_width": {str(int(widths[i])): (None if np.isnan(table[i, j]) else
                                                                               round(float(table[i, j]), 5))
                                                       for i in range(len(widths))},
            })
        sel = [r for r in rows if r["task"] == "affine" and r["family"] == "grid" and r["inputs"] == inputs
               and r["first_layer_only"] == flo and r.get("normalized_error_floor") is not None]
        gap = np.array([r["normalized_test_loss"] - r["normalized_error_floor"] for r in sel])
        positive = np.array([r["normalized_error_floor"] > 0.01 for r in sel])
        ratio = np.array([r["normalized_test_loss"] / r["normalized_error_floor"] for r in sel
                          if r["normalized_error_floor"] > 0.01])
        out.append({
            "inputs": int(inputs), "first_layer_only": bool(flo), "threshold": threshold,
            "seeds": int(counts.max()) if counts.size else 0, "students": len(sel), "densities": per_density,
            "loss_minus_floor": {"min": round(float(gap.min()), 5), "median": round(float(np.median(gap)), 5),
                                 "max": round(float(gap.max()), 5)},
            "loss_over_floor_where_floor_above_0.01": (
                {"count": int(positive.sum()), "min": round(float(ratio.min()), 4),
                 "median": round(float(np.median(ratio)), 4), "max": round(float(ratio.max()), 4)}
                if len(ratio) else None),
        })
    return out


def make_figures(records: list[dict], out_dir: Path, delta: float) -> list[Path]:
    """All E1 figures for which ``records`` hold data, plus ``e1_summary.json`` (see :func:`summary`)."""
    rows = flatten(records)
    paths: list[Path] = []
    if _panels(rows):
        paths += figure_heatmap(rows, out_dir, delta)
        paths += figure_floor(rows, out_dir)
        path = out_dir / "e1_summary.json"
        atomic_write_text(path, json.dumps(summary(rows, delta), indent=1) + "\n")
        paths.append(path)
    if any("test_accuracy" in r for r in rows) and any(r["family"] == "scaled" for r in rows):
        paths += figure_accuracy(rows, out_dir)
    return paths
