"""E2 — layer-wise density schemes (docs/experiments.md E2, docs/math.md §7), following Gadhikar et al. 2023.

Static sparse training inside a fixed ER mask whose per-layer densities come from uniform / ERK / balanced /
pyramidal at global densities 0.5 … 0.01, against the dense model, ≥ 3 seeds. One run = one model, one scheme,
one density, one seed; it records test accuracy, the label density, the realized global density and every
layer's target and realized density. Scales: ``smoke`` (digits, tiny MLP/CNN, seconds), ``default`` (MNIST-5k,
MLP 784-300-100-10 and a small CNN, CPU minutes; a small-scale counterpart of the paper's CIFAR experiment) and
``paper`` (CIFAR-10 ResNet-18 with the released hyper-parameters, a GPU and ``data_dir``).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from theory.atomic import atomic_write_text
from theory.densities import SCHEMES, layer_densities
from theory.validation import check_densities

from .infra.figures import new_figure, save_figure
from .models import build_model
from .infra.registry import ScaledSweep
from .sparse_training import TrainSettings, evaluate, load_classification, majority_rate, prepare_inputs, train_model

__all__ = ["LayerwiseExperiment", "EXPERIMENT", "check_data_dir", "seed_mean"]

PAPER_TRAIN = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 160,
               "batch_size": 256, "schedule": "cosine", "augment": True}


def check_data_dir(scale: str, task: str, data_dir) -> str | None:
    """``data_dir`` as a string when the task reads files (CIFAR); refuses a missing one at configuration time
    (one line), so a sweep never starts on a directory without the expected batch files."""
    if not task.startswith("cifar"):
        return None
    if data_dir is None:
        raise ValueError(f"scale={scale!r} trains on {task}: allowed only with --data-dir DIR holding the CIFAR "
                         f"batch files")
    directory = Path(data_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"CIFAR directory {str(directory)!r} does not exist")
    names = (["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
             if task == "cifar10" else ["train", "test"])
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{task} directory {str(directory)!r} lacks batch file(s): {', '.join(missing)}")
    return str(directory.resolve())


def seed_mean(records, key: Callable[[dict], tuple], value: Callable[[dict], float]) -> dict:
    """{key: (mean, std, count)} of ``value`` over the records sharing ``key`` (seeds), keys sorted."""
    groups = defaultdict(list)
    for r in records:
        groups[key(r)].append(value(r))
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in sorted(groups.items())}


@dataclass(frozen=True)
class LayerwiseExperiment(ScaledSweep):
    """Experiment E2 (registered as ``layerwise``)."""

    name: str = "layerwise"
    description: str = "layer-wise density schemes uniform/ERK/balanced/pyramidal vs dense (docs/math.md §7)"
    scale_settings: dict = field(default_factory=lambda: {
        "smoke": {
            "task": "digits", "seeds": 1, "densities": [0.5, 0.05], "schemes": list(SCHEMES), "compat": False,
            "models": {"mlp": {"hidden": [32]}, "cnn": {"channels": [4, 8], "hidden": [16]}},
            "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 4,
                      "batch_size": 64, "schedule": "cosine", "augment": False},
            "density_aware_init": True,
        },
        "default": {
            "task": "mnist5k", "seeds": 3, "densities": [0.5, 0.2, 0.1, 0.05, 0.02, 0.01],
            "schemes": list(SCHEMES), "compat": False,
            "models": {"mlp": {"hidden": [300, 100]}, "cnn": {"channels": [8, 16], "hidden": [64]}},
            "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "epochs": 8,
                      "batch_size": 128, "schedule": "cosine", "augment": False},
            "train_by_model": {"cnn": {"epochs": 3}},
            "density_aware_init": True,
        },
        "paper": {
            "task": "cifar10", "seeds": 3, "densities": [0.5, 0.2, 0.1, 0.05, 0.02, 0.01],
            "schemes": list(SCHEMES), "compat": False, "models": {"resnet18": {"width": 64}},
            "train": dict(PAPER_TRAIN), "density_aware_init": False,
        },
    })

    def configs(self, scale: str, seeds: int | None = None, data_dir=None, compat: bool | None = None) -> list[dict]:
        """One config per model, scheme (plus ``dense`` at density 1), density and seed at ``scale``."""
        s, n_seeds = self.settings(scale, seeds)
        densities = [float(p) for p in check_densities(s["densities"])]
        compat = s["compat"] if compat is None else compat
        if not isinstance(compat, bool):
            raise ValueError(f"compat={compat!r} is not a bool: allowed true or false")
        directory = check_data_dir(scale, s["task"], data_dir)
        configs = []
        for seed in range(n_seeds):
            for model, arch in s["models"].items():
                train = dict(s["train"], **s.get("train_by_model", {}).get(model, {}))
                TrainSettings.from_dict(train)
                base = {"scale": scale, "task": s["task"], "model": model, "architecture": arch, "seed": seed,
                        "train": train, "density_aware_init": s["density_aware_init"]}
                if directory is not None:
                    base["data_dir"] = directory
                configs.append(dict(base, scheme="dense", density=1.0, compat=False))
                for scheme in s["schemes"]:
                    for density in densities:
                        configs.append(dict(base, scheme=scheme, density=density, compat=compat))
        return configs

    def run(self, config: dict, device, on_loss: Callable[[float], None] | None = None) -> dict:
        """Build the config's sparse model, train it inside its masks, return accuracy and the density table."""
        data = load_classification(config["task"], config["seed"], config.get("data_dir"))
        x_train, y_train, x_test, y_test, shape = prepare_inputs(data, config["model"])
        arch = {k: tuple(v) if isinstance(v, list) else v for k, v in config["architecture"].items()}
        built = build_model(config["model"], shape, data.n_classes, density=config["density"],
                            scheme=config["scheme"], compat=config["compat"], seed=config["seed"],
                            density_aware_init=config["density_aware_init"], device=device, **arch)
        settings = TrainSettings.from_dict(config["train"])
        outcome = train_model(built.module, x_train, y_train, settings, seed=config["seed"], device=device,
                              on_loss=on_loss)
        test = evaluate(built.module, x_test, y_test, device=device)
        table = built.table.to_dict()
        return {
            "task_name": data.name,
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "train_loss": outcome.final_loss,
            "steps": outcome.steps,
            "train_macs": outcome.train_macs,
            "majority_rate": majority_rate(y_test.numpy()),
            "label_density": table["label_density"],
            "target_global_density": table["target_global_density"],
            "realized_global_density": table["realized_global_density"],
            "layers": table["rows"],
        }

    def figures(self, records: list[dict], out_dir) -> list[Path]:
        """Test accuracy vs density per scheme (dense as a horizontal line), one panel per model; and
        ``realized_densities.md``, the mean realized global density per model, scheme and label."""
        out_dir = Path(out_dir)
        models = sorted({r["config"]["model"] for r in records})
        if not models:
            raise ValueError("no layerwise records to plot: allowed a results file with finished runs")
        fig, axes = new_figure(ncols=len(models), width=min(3.4, 7.0 / len(models)), height=3.0)
        colors = {"uniform": "C0", "erk": "C1", "balanced": "C2", "pyramidal": "C3"}
        table = ["| model | scheme | label density | target Σ p_l N_l / N | realized global density (mean over seeds) "
                 "| released-code (compat) global density | runs |",
                 "|---|---|---|---|---|---|---|"]
        for ax, model in zip(axes[0], models):
            rows = [r for r in records if r["config"]["model"] == model]
            task = rows[0]["metrics"]["task_name"]
            acc = seed_mean(rows, lambda r: (r["config"]["scheme"], r["config"]["density"]),
                            lambda r: r["metrics"]["test_accuracy"])
            realized = seed_mean(rows, lambda r: (r["config"]["scheme"], r["config"]["density"]),
                                 lambda r: r["metrics"]["realized_global_density"])
            for scheme in [s for s in SCHEMES if any(k[0] == s for k in acc)]:
                xs = sorted(d for (sc, d) in acc if sc == scheme)
                ys = np.array([acc[(scheme, d)][0] for d in xs])
                es = np.array([acc[(scheme, d)][1] for d in xs])
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, color=colors[scheme], label=scheme)
            if ("dense", 1.0) in acc:
                ax.axhline(acc[("dense", 1.0)][0], color="k", ls="--", lw=1, label="dense")
            ax.axhline(rows[0]["metrics"]["majority_rate"], color="0.6", ls=":", lw=1, label="majority class")
            ax.set_xscale("log")
            ax.set_xlabel("global density (label)")
            ax.set_ylabel("test accuracy")
            ax.set_title(f"{model} on {task}")
            target = seed_mean(rows, lambda r: (r["config"]["scheme"], r["config"]["density"]),
                               lambda r: r["metrics"]["target_global_density"])
            shapes = [row["shape"] for row in rows[0]["metrics"]["layers"]]
            for (scheme, density), (mean, _, count) in realized.items():
                compat = 1.0 if scheme == "dense" else layer_densities(shapes, density, scheme, compat=True).global_density
                table.append(f"| {model} | {scheme} | {density:g} | {target[(scheme, density)][0]:.4f} | {mean:.4f} "
                             f"| {compat:.4f} | {count} |")
        handles, labels = axes[0][0].get_legend_handles_labels()  # the same entries in every panel
        fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=8)
        paths = save_figure(fig, out_dir / "e2_layerwise")
        md = out_dir / "realized_densities.md"
        atomic_write_text(md, "# E2: realized global densities per scheme and label\n\n" + "\n".join(table) + "\n")
        return paths + [md]


EXPERIMENT = LayerwiseExperiment()
