"""E4 — strong tickets by edge-popup inside an ER source (docs/experiments.md E4, docs/math.md §8), following
Gadhikar et al. 2023.

Frozen random weights N(0, 2/fan_in) (biases 0, non-affine BatchNorm), learned scores, forward mask
M_ER ⊙ top-k(|scores| among ER-kept entries) with k = final density × N_l (:mod:`experiments.edge_popup`).
Sources: ER(uniform) at density 0.5 / 0.3 and the dense source (density 1); final densities 0.2 … 0.01.
One run = one source density, one final density, one seed. With ``scale_fan`` the frozen weights of a layer
are multiplied by 1/√(p_final,l) (edge-popup's ``scale_fan`` option), which keeps the output scale of the
sparse subnetwork independent of the final density; it is used at the small scales (the MLP has no BatchNorm
before its logits) and off at paper scale. Paper scale: CIFAR-10 ResNet-18, scores trained with SGD lr 0.1,
momentum 0.9, weight decay 5e-4, batch 128 (docs/experiments.md); the number of epochs (100, cosine) is our
choice where docs/experiments.md is silent.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from theory.densities import SCHEMES, layer_densities
from theory.validation import check_choice, check_densities

from .e2_layerwise import check_data_dir, seed_mean
from .edge_popup import POPUP_LAYERS, check_final_density, popup_layers, prepare_edge_popup_, score_parameters
from .infra.figures import new_figure, save_figure
from .models import build_model, weight_shapes
from .infra.registry import ScaledSweep
from .sparse_training import TrainSettings, evaluate, load_classification, majority_rate, prepare_inputs, train_model

__all__ = ["EdgePopupExperiment", "EXPERIMENT", "final_layer_densities"]


def final_layer_densities(shapes, final_density: float, scheme: str) -> list[float]:
    """Per-layer final densities p_final,l: ``scheme`` (docs/math.md §7) at the global ``final_density``."""
    return list(layer_densities(shapes, final_density, scheme).densities)


@dataclass(frozen=True)
class EdgePopupExperiment(ScaledSweep):
    """Experiment E4 (registered as ``edgepopup``)."""

    name: str = "edgepopup"
    description: str = "edge-popup strong tickets inside an ER source vs a dense source (docs/math.md §8)"
    scale_settings: dict = field(default_factory=lambda: {
        "smoke": {
            "task": "digits", "seeds": 1, "sources": [1.0, 0.5], "finals": [0.2, 0.05], "scheme": "uniform",
            "model": "mlp", "architecture": {"hidden": [64]}, "scale_fan": True,
            "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 5,
                      "batch_size": 64, "schedule": "cosine", "augment": False},
        },
        "default": {
            "task": "mnist5k", "seeds": 3, "sources": [1.0, 0.5, 0.3], "finals": [0.2, 0.1, 0.05, 0.02, 0.01],
            "scheme": "uniform", "model": "mlp", "architecture": {"hidden": [300, 100]}, "scale_fan": True,
            "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 10,
                      "batch_size": 128, "schedule": "cosine", "augment": False},
        },
        "paper": {
            "task": "cifar10", "seeds": 3, "sources": [1.0, 0.5], "finals": [0.2, 0.1, 0.05, 0.01],
            "scheme": "uniform", "model": "resnet18", "architecture": {"width": 64}, "scale_fan": False,
            "train": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 100,
                      "batch_size": 128, "schedule": "cosine", "augment": True},
        },
    })

    def configs(self, scale: str, seeds: int | None = None, data_dir=None) -> list[dict]:
        """One config per source density, final density ≤ source and seed."""
        s, n_seeds = self.settings(scale, seeds)
        sources = [float(p) for p in check_densities(s["sources"], "sources")]
        finals = [float(p) for p in check_densities(s["finals"], "finals")]
        check_choice(s["scheme"], "scheme", SCHEMES)
        directory = check_data_dir(scale, s["task"], data_dir)
        TrainSettings.from_dict(s["train"])
        configs = []
        for seed in range(n_seeds):
            for source in sources:
                for final in finals:
                    if final >= source:
                        continue
                    config = {"scale": scale, "task": s["task"], "model": s["model"], "architecture": s["architecture"],
                              "seed": seed, "source_density": source, "final_density": final, "scheme": s["scheme"],
                              "scale_fan": s["scale_fan"], "train": dict(s["train"])}
                    if directory is not None:
                        config["data_dir"] = directory
                    configs.append(config)
        return configs

    def run(self, config: dict, device, on_loss: Callable[[float], None] | None = None) -> dict:
        """Train the scores of one edge-popup model; report test accuracy and the popup masks' densities."""
        final = check_final_density(config["final_density"], config["source_density"])
        data = load_classification(config["task"], config["seed"], config.get("data_dir"))
        x_train, y_train, x_test, y_test, shape = prepare_inputs(data, config["model"])
        arch = {k: tuple(v) if isinstance(v, list) else v for k, v in config["architecture"].items()}
        source = config["source_density"]
        built = build_model(config["model"], shape, data.n_classes, density=source,
                            scheme="dense" if source == 1.0 else config["scheme"], seed=config["seed"],
                            density_aware_init=False, batchnorm_affine=False, layer_classes=POPUP_LAYERS,
                            device=device, **arch)
        model = built.module
        finals = final_layer_densities(weight_shapes(model), final, config["scheme"])
        generator = torch.Generator().manual_seed(10_000 + int(config["seed"]))
        ks = prepare_edge_popup_(model, finals, generator)
        if config["scale_fan"]:
            with torch.no_grad():
                for layer, p in zip(popup_layers(model), finals):
                    layer.weight.mul_(1.0 / math.sqrt(p))
        outcome = train_model(model, x_train, y_train, TrainSettings.from_dict(config["train"]),
                              seed=config["seed"], device=device, params=score_parameters(model), on_loss=on_loss)
        test = evaluate(model, x_test, y_test, device=device)
        numels = [layer.weight.numel() for layer in popup_layers(model)]
        return {"task_name": data.name, "test_accuracy": test["accuracy"], "test_loss": test["loss"],
                "train_loss": outcome.final_loss, "steps": outcome.steps,
                "majority_rate": majority_rate(y_test.numpy()),
                "source_realized_density": built.table.realized_global_density,
                "final_realized_density": sum(ks) / sum(numels), "k": ks}

    def figures(self, records: list[dict], out_dir) -> list[Path]:
        """Test accuracy vs final density, one curve per source density (dense source included)."""
        if not records:
            raise ValueError("no edgepopup records to plot: allowed a results file with finished runs")
        acc = seed_mean(records, lambda r: (r["config"]["source_density"], r["config"]["final_density"]),
                        lambda r: r["metrics"]["test_accuracy"])
        fig, axes = new_figure(height=3.4)
        ax = axes[0][0]
        for i, source in enumerate(sorted({k[0] for k in acc}, reverse=True)):
            xs = sorted(f for (s, f) in acc if s == source)
            label = "dense source" if source == 1.0 else f"ER source {source:g}"
            ax.errorbar(xs, [acc[(source, f)][0] for f in xs], yerr=[acc[(source, f)][1] for f in xs], marker="o",
                        ms=3, capsize=2, color=f"C{i}", label=label)
        ax.axhline(records[0]["metrics"]["majority_rate"], color="0.6", ls=":", lw=1, label="majority class")
        ax.set_xscale("log")
        ax.set_xlabel("final density")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"edge-popup, {records[0]['config']['model']} on {records[0]['metrics']['task_name']}")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, fontsize=8)
        return save_figure(fig, Path(out_dir) / "e4_edgepopup")


EXPERIMENT = EdgePopupExperiment()
