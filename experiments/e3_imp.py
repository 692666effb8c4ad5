"""E3 — sparse-to-sparse IMP from a random ER start (docs/experiments.md E3, docs/math.md §8), following Gadhikar et al. 2023.

IMP with rewinding to initialisation (:mod:`experiments.imp`) from a dense start and from a fixed ER(balanced)
start at density 0.5 and 0.3, pruning 20 % of the remaining weights per level down to ≈ 0.01. One run = one
start and one seed, all levels; per level it records the kept weights, density, test accuracy and the
cumulative training multiply-adds performed in masked layers. Scales as in E2 (``default`` = MNIST-5k MLP, a
small-scale counterpart of the paper's CIFAR experiment; ``paper`` = CIFAR-10 ResNet-18, 150 epochs per level).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from theory.validation import check_density, check_open_unit

from .e2_layerwise import PAPER_TRAIN, check_data_dir, seed_mean
from .infra.figures import new_figure, save_figure
from .imp import levels_to_reach, run_imp
from .models import build_model
from .infra.registry import ScaledSweep
from .sparse_training import TrainSettings, load_classification, majority_rate, prepare_inputs

__all__ = ["IMPExperiment", "EXPERIMENT", "start_label"]


def start_label(start_density: float) -> str:
    """``dense`` for a start density of 1, else ``ER(balanced) <density>``."""
    return "dense" if start_density == 1.0 else f"ER(balanced) {start_density:g}"


@dataclass(frozen=True)
class IMPExperiment(ScaledSweep):
    """Experiment E3 (registered as ``imp``)."""

    name: str = "imp"
    description: str = "IMP with rewinding from a dense start vs inside a fixed ER(balanced) mask (docs/math.md §8)"
    scale_settings: dict = field(default_factory=lambda: {
        "smoke": {
            "task": "digits", "seeds": 1, "starts": [1.0, 0.5], "final_density": 0.2, "prune_fraction": 0.2,
            "model": "mlp", "architecture": {"hidden": [32]}, "scheme": "balanced",
            "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 3,
                      "batch_size": 64, "schedule": "cosine", "augment": False},
            "density_aware_init": True,
        },
        "default": {
            "task": "mnist5k", "seeds": 3, "starts": [1.0, 0.5, 0.3], "final_density": 0.01,
            "prune_fraction": 0.2, "model": "mlp", "architecture": {"hidden": [300, 100]}, "scheme": "balanced",
            "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 6,
                      "batch_size": 128, "schedule": "cosine", "augment": False},
            "density_aware_init": True,
        },
        "paper": {
            "task": "cifar10", "seeds": 3, "starts": [1.0, 0.5, 0.3], "final_density": 0.0106,
            "prune_fraction": 0.2, "model": "resnet18", "architecture": {"width": 64}, "scheme": "balanced",
            "train": dict(PAPER_TRAIN, epochs=150), "density_aware_init": False,
            # parity with the released code (issue 12): its last level trains 160 epochs, and rewinding restores
            # the weights but keeps the BatchNorm running statistics
            "final_epochs": 160, "rewind_bn_stats": False,
        },
    })

    def configs(self, scale: str, seeds: int | None = None, data_dir=None) -> list[dict]:
        """One config per start density and seed; ``levels`` = round(log(final/start)/log(0.8))."""
        s, n_seeds = self.settings(scale, seeds)
        fraction = check_open_unit(s["prune_fraction"], "prune_fraction")
        final = check_density(s["final_density"], "final_density")
        directory = check_data_dir(scale, s["task"], data_dir)
        TrainSettings.from_dict(s["train"])
        configs = []
        for seed in range(n_seeds):
            for start in s["starts"]:
                start = check_density(start, "start_density")
                config = {"scale": scale, "task": s["task"], "model": s["model"], "architecture": s["architecture"],
                          "seed": seed, "start_density": start, "scheme": "dense" if start == 1.0 else s["scheme"],
                          "prune_fraction": fraction, "levels": levels_to_reach(start, final, fraction),
                          "train": dict(s["train"]), "density_aware_init": s["density_aware_init"]}
                for key in ("final_epochs", "rewind_bn_stats"):  # paper scale only: smoke/default keys unchanged
                    if key in s:
                        config[key] = s[key]
                if directory is not None:
                    config["data_dir"] = directory
                configs.append(config)
        return configs

    def run(self, config: dict, device, on_loss: Callable[[float], None] | None = None) -> dict:
        """IMP over all levels of one start and seed; per-level accuracy, density and cost."""
        data = load_classification(config["task"], config["seed"], config.get("data_dir"))
        x_train, y_train, x_test, y_test, shape = prepare_inputs(data, config["model"])
        arch = {k: tuple(v) if isinstance(v, list) else v for k, v in config["architecture"].items()}
        built = build_model(config["model"], shape, data.n_classes, density=config["start_density"],
                            scheme=config["scheme"], seed=config["seed"],
                            density_aware_init=config["density_aware_init"], device=device, **arch)
        final = (TrainSettings.from_dict(dict(config["train"], epochs=config["final_epochs"]))
                 if "final_epochs" in config else None)
        levels = run_imp(built.module, x_train, y_train, x_test, y_test, TrainSettings.from_dict(config["train"]),
                         levels=config["levels"], prune_fraction=config["prune_fraction"], seed=config["seed"],
                         device=device, on_loss=on_loss, final_settings=final,
                         rewind_buffers=config.get("rewind_bn_stats", True))
        return {"task_name": data.name, "majority_rate": majority_rate(y_test.numpy()),
                "start_realized_density": built.table.realized_global_density,
                "levels": [lv.to_dict() for lv in levels]}

    def figures(self, records: list[dict], out_dir) -> list[Path]:
        """(a) test accuracy vs density per start; (b) cumulative training multiply-adds vs density per start."""
        if not records:
            raise ValueError("no imp records to plot: allowed a results file with finished runs")
        flat = [{"start": r["config"]["start_density"], "level": lv["level"], "density": lv["density"],
                 "accuracy": lv["test_accuracy"], "macs": lv["cumulative_macs"]}
                for r in records for lv in r["metrics"]["levels"]]
        fig, axes = new_figure(ncols=2, width=3.4, height=2.9)
        for i, start in enumerate(sorted({f["start"] for f in flat}, reverse=True)):
            rows = [f for f in flat if f["start"] == start]
            density = seed_mean(rows, lambda f: (f["level"],), lambda f: f["density"])
            acc = seed_mean(rows, lambda f: (f["level"],), lambda f: f["accuracy"])
            macs = seed_mean(rows, lambda f: (f["level"],), lambda f: f["macs"])
            xs = np.array([density[k][0] for k in density])
            color = f"C{i}"
            axes[0][0].errorbar(xs, [acc[k][0] for k in density], yerr=[acc[k][1] for k in density], marker="o",
                                ms=2.5, capsize=2, color=color, label=start_label(start))
            axes[0][1].plot(xs, [macs[k][0] for k in density], marker="o", ms=2.5, color=color,
                            label=start_label(start))
        axes[0][0].axhline(records[0]["metrics"]["majority_rate"], color="0.6", ls=":", lw=1, label="majority class")
        task = records[0]["metrics"]["task_name"]
        model = records[0]["config"]["model"]
        for ax in axes[0]:
            ax.set_xscale("log")
            ax.set_xlabel("density after pruning level")
            ax.invert_xaxis()
        handles, labels = axes[0][0].get_legend_handles_labels()  # starts + majority class, shared by both panels
        fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
        axes[0][0].set_ylabel("test accuracy")
        axes[0][0].set_title(f"IMP (rewind to init),\n{model} on {task}")
        axes[0][1].set_yscale("log")
        axes[0][1].set_ylabel("cumulative training mult-adds")
        axes[0][1].set_title("training cost\nin masked layers")
        return save_figure(fig, Path(out_dir) / "e3_imp")


EXPERIMENT = IMPExperiment()
