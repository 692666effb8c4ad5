"""E1 — the failure of 3-layer ER networks at high sparsity (docs/experiments.md E1, docs/math.md §3), following
Gadhikar et al. 2023.

Students d → n → out (ReLU) with ER(p) masks on both layers (or only the first, ``first_layer_only``), density-
aware init, trained with Adam as batched ensembles. One *run* (one results line) trains a group of students
that share task and seed: either every density at one width (``family="grid"``), or every density at a width
scaled with κ(p)/κ(p_ref) (``family="scaled"``). Per student it records train/test loss (accuracy for
classification), the fraction of inputs connected to the output, the mask's exact error floor
Σ_{j disconnected} w_j² Var(x_j) (affine teacher; MSE = mean over samples of (f − y)², out = 1) and n*(p).
Regression targets are centred by their train mean before training (the floor is shift-invariant); losses are
also reported normalized by Var f_T = Σ_j w_j² Var(x_j).

Scales: ``smoke`` (seconds; the tests); ``default`` (affine d ∈ {32, 64} and digits, 3 seeds, widths ≤ 1024;
measured 283 s from scratch on a shared 2-core CPU with one torch thread); ``paper`` (affine
d ∈ {32, 64, 128, 256}, widths ≤ 8192, digits and MNIST-5k, 3 seeds; sized for one GPU).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from theory.er_factor import er_factor
from theory.lower_bound import (
    connected_inputs,
    connection_probability,
    error_floor,
    lower_bound_width,
    lower_bound_width_closed_form,
    uniform_variance,
)
from theory.validation import check_densities, check_open_unit

from .infra.data import Dataset, affine_teacher_task, digits_task, mnist5k_task, relu_teacher_task
from .infra.ensemble import MLPSpec, TrainConfig, evaluate_models, train_ensemble
from .infra.registry import ScaledSweep

__all__ = ["E1", "EXPERIMENT", "DENSITIES", "scaled_width", "load_task", "student_metrics"]

DENSITIES = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005)
TASKS = ("affine", "relu", "digits", "mnist5k")
P_REF = 0.5
#: (rows, inputs) of the bundled classification data sets, for :meth:`E1.run_memory`.
_TASK_SIZES = {"digits": (1797, 64), "mnist5k": (5000, 784)}


def scaled_width(reference_width: int, density: float, reference_density: float = P_REF) -> int:
    """n(p) = round(n_ref · max(1, κ(p)/κ(p_ref))): the width that keeps κ(p)-many candidate edges per input
    comparable to the reference (docs/experiments.md E1 (c)); densities above p_ref keep n_ref."""
    ratio = er_factor(density) / er_factor(reference_density)
    return int(round(reference_width * max(1.0, ratio)))


def load_task(task: str, inputs: int, seed: int, n_train: int, n_test: int) -> Dataset:
    """The data set of a config (teacher tasks regenerated from the seed, real data split by the seed)."""
    if task == "affine":
        return affine_teacher_task(inputs, seed, n_train, n_test)
    if task == "relu":
        return relu_teacher_task(inputs, 16, seed, n_train, n_test)
    if task == "digits":
        return digits_task(seed)
    if task == "mnist5k":
        return mnist5k_task(seed)
    raise ValueError(f"task={task!r} is unknown: allowed {', '.join(map(repr, TASKS))}")


def student_metrics(layers, data: Dataset, density: float, delta: float, first_layer_only: bool) -> dict:
    """Mask-derived quantities of one student: connected fraction, error floor (affine teacher), n*(p)."""
    input_mask = layers[0].mask.numpy()
    output_mask = layers[1].mask.numpy()
    connected = connected_inputs(input_mask, output_mask)
    d = input_mask.shape[1]
    output_density = 1.0 if first_layer_only else density
    out = {
        "connected_fraction": float(connected.mean()),
        "all_connected": bool(connected.all()),
        "n_star": int(lower_bound_width(d, density, delta, output_density)) if density < 1.0 else 1,
        "n_star_first_layer_closed_form": float(lower_bound_width_closed_form(d, density, delta)),
        "connection_probability": float(connection_probability(d, input_mask.shape[0], density, output_density)),
        "error_floor": None,
        "target_variance": None,
    }
    if data.teacher is not None:
        variance = uniform_variance(data.teacher.low, data.teacher.high)
        out["error_floor"] = error_floor(data.teacher.weight, connected, variance)
        out["target_variance"] = error_floor(data.teacher.weight, np.zeros(d, dtype=bool), variance)
        # the same floor measured on the test sample: MSE of the best predictor f_T(x) − Σ_{j disc.} w_j x_j
        centre = 0.5 * (data.teacher.low + data.teacher.high)
        residual = (data.x_test[:, ~connected] - centre) @ data.teacher.weight[~connected]
        out["test_sample_error_floor"] = float(np.mean(residual ** 2))
    elif data.kind == "regression":
        out["target_variance"] = float(np.var(data.y_train))
    return out


@dataclass(frozen=True)
class E1(ScaledSweep):
    """Experiment E1 (registered as ``e1``)."""

    name: str = "e1"
    description: str = "failure of 3-layer ER networks at high sparsity (docs/math.md §3)"
    delta: float = 0.1
    scale_settings: dict = field(default_factory=lambda: {
        "smoke": {
            "teachers": {"affine": [16]}, "widths": [4, 64], "densities": [1.0, 0.1, 0.02], "seeds": 1,
            "classification": ["digits"], "n_train": 2048, "n_test": 2048, "reference_width": 8,
            "train": {"lr": 1e-2, "max_steps": 300, "batch_size": 256, "check_every": 25, "patience": 4,
                      "rel_tol": 1e-3},
            "train_classification": {"lr": 1e-2, "max_steps": 100, "batch_size": 128, "check_every": 25,
                                     "patience": 3, "rel_tol": 1e-3},
        },
        "default": {
            "teachers": {"affine": [32, 64]}, "widths": [4, 8, 16, 32, 64, 128, 256, 512],
            "teacher_widths": {32: [4, 8, 16, 32, 64, 128, 256, 512, 1024]},
            "densities": list(DENSITIES), "seeds": 3, "classification": ["digits"], "n_train": 16384,
            "n_test": 4096, "reference_width": 16,
            "train": {"lr": 1e-2, "max_steps": 1000, "batch_size": 256, "check_every": 50, "patience": 4,
                      "rel_tol": 1e-3},
            "train_classification": {"lr": 3e-3, "max_steps": 600, "batch_size": 128, "check_every": 50,
                                     "patience": 4, "rel_tol": 1e-3},
        },
        "paper": {
            "teachers": {"affine": [32, 64, 128, 256]},
            "widths": [4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192],
            "densities": list(DENSITIES), "seeds": 3, "classification": ["digits", "mnist5k"], "n_train": 65536,
            "n_test": 8192, "reference_width": 64,
            "train": {"lr": 1e-2, "max_steps": 3000, "batch_size": 1024, "check_every": 100, "patience": 5,
                      "rel_tol": 1e-3},
            "train_classification": {"lr": 3e-3, "max_steps": 2000, "batch_size": 256, "check_every": 100,
                                     "patience": 5, "rel_tol": 1e-3},
        },
    })

    def configs(self, scale: str, seeds: int | None = None, first_layer_only: bool = False) -> list[dict]:
        """Configs of a sweep at ``scale``: per task, seed and width a ``grid`` run holding every density; per
        classification task and seed also a ``scaled`` run (width n_ref·κ(p)/κ(p_ref) per density)."""
        s, n_seeds = self.settings(scale, seeds)
        densities = [float(p) for p in check_densities(s["densities"])]
        base = {"delta": self.delta, "first_layer_only": bool(first_layer_only), "scale": scale}
        configs = []
        # order: task by task, seed by seed, so an interrupted sweep leaves whole (task, seed) groups done
        for task, dims in s["teachers"].items():
            for d in dims:
                train = dict(s["train"], loss="mse")
                for seed in range(n_seeds):
                    for width in s.get("teacher_widths", {}).get(d, s["widths"]):
                        configs.append(dict(base, task=task, inputs=d, seed=seed, family="grid",
                                            members=[[p, width] for p in densities], n_train=s["n_train"],
                                            n_test=s["n_test"], train=train))
        for task in s["classification"]:
            train = dict(s["train_classification"], loss="cross_entropy")
            for seed in range(n_seeds):
                common = dict(base, task=task, inputs=0, seed=seed, n_train=0, n_test=0, train=train)
                for width in s["widths"]:
                    configs.append(dict(common, family="grid", members=[[p, width] for p in densities]))
                n_ref = s["reference_width"]
                other = not first_layer_only
                if n_ref not in s["widths"]:
                    configs.append(dict(common, family="grid", members=[[p, n_ref] for p in densities]))
                # fixed width n_ref in the other masking mode, and κ-scaled widths in both modes (figure (c))
                configs.append(dict(common, family="grid", first_layer_only=other,
                                    members=[[p, n_ref] for p in densities]))
                for mode in (bool(first_layer_only), other):
                    configs.append(dict(common, family="scaled", first_layer_only=mode,
                                        members=[[p, scaled_width(n_ref, p)] for p in densities],
                                        reference_width=n_ref, reference_density=P_REF))
        return configs

    def run_memory(self, config: dict) -> int:
        """Bytes one run of ``config`` needs on a CPU (an upper estimate, checked before a sweep starts): the sum of
        :meth:`run_memory_parts`. Measured on CPU (peak RSS increase of one run, 20 steps): smoke's largest run
        8.1 MiB (estimate 73 MiB), default's largest 1.05 GiB (estimate 1.6 GiB)."""
        host, device = self.run_memory_parts(config)
        return host + device

    def run_memory_parts(self, config: dict) -> tuple[int, int]:
        """(host bytes, device bytes) of one run of ``config``: on the host the inputs as float64 numpy, half of
        the targets and 64 MiB of working memory (loading a data set, allocator slack); on the device (the GPU with
        ``--device cuda``, else the host too) the two float32 input tensors and the rest of the targets, per student
        8 float32 per parameter (weights, mask, gradient, Adam's two moments, copies) and the activations of one
        training batch (4 float32 per unit), and the evaluation of the whole train set, one bucket of equal widths at
        a time (3 float32 per unit)."""
        rows, d = _TASK_SIZES.get(config["task"], (config["n_train"] + config["n_test"], config["inputs"]))
        n_train = rows if config["task"] in _TASK_SIZES else config["n_train"]
        outputs = 1 if config["task"] in ("affine", "relu") else 10
        batch = config["train"].get("batch_size") or n_train
        data = rows * d * (8 + 4 + 4) + rows * 16
        train, buckets = 0, {}
        for _, width in config["members"]:
            width = int(width)
            params = d * width + width + width * outputs + outputs
            train += 4 * (8 * params + 4 * min(batch, n_train) * (width + outputs))
            buckets[width] = buckets.get(width, 0) + 1
        evaluation = max(4 * 3 * n_train * (w + outputs) * min(k, 64) for w, k in buckets.items())
        host = rows * d * 8 + rows * 8 + 64 * 2**20
        return int(host), int(data - (host - 64 * 2**20) + train + evaluation)

    def run(self, config: dict, device, on_loss: Callable[[float], None] | None = None) -> dict:
        """Train the config's students as one batched ensemble; return per-student metrics."""
        delta = check_open_unit(config["delta"], "delta")
        data = load_task(config["task"], config["inputs"], config["seed"], config["n_train"], config["n_test"])
        outputs = 1 if data.kind == "regression" else data.n_classes
        d = data.inputs
        first_only = bool(config["first_layer_only"])
        specs = []
        for i, (density, width) in enumerate(config["members"]):
            out_density = 1.0 if first_only else density
            specs.append(MLPSpec((d, int(width), outputs), (float(density), float(out_density)),
                                 seed=1000 * config["seed"] + i))
        train = TrainConfig(**config["train"])
        x_train = data.x_train.reshape(len(data.x_train), -1)
        x_test = data.x_test.reshape(len(data.x_test), -1)
        y_train, y_test = data.y_train, data.y_test
        if data.kind == "regression":  # centre targets by the train mean (MSE floors are shift-invariant)
            shift = float(np.mean(y_train))
            y_train, y_test = y_train - shift, y_test - shift
        callback = None if on_loss is None else (lambda step, loss: on_loss(loss))
        models = train_ensemble(specs, x_train, y_train, train, device=device, data_seed=config["seed"],
                                on_step=callback)
        train_eval = evaluate_models(models, x_train, y_train, train.loss, device=device)
        test_eval = evaluate_models(models, x_test, y_test, train.loss, device=device)
        members = []
        for (density, width), model, tr, te in zip(config["members"], models, train_eval, test_eval):
            record = {"density": float(density), "width": int(width), "steps": model.steps,
                      "train_loss": tr["loss"], "test_loss": te["loss"]}
            if "accuracy" in tr:
                record["train_accuracy"] = tr["accuracy"]
                record["test_accuracy"] = te["accuracy"]
            record.update(student_metrics(model.layers, data, float(density), delta, first_only))
            variance = record["target_variance"]
            if variance:
                record["normalized_train_loss"] = record["train_loss"] / variance
                record["normalized_test_loss"] = record["test_loss"] / variance
                if record["error_floor"] is not None:
                    record["normalized_error_floor"] = record["error_floor"] / variance
                    record["normalized_test_sample_error_floor"] = record["test_sample_error_floor"] / variance
            members.append(record)
        return {"task_name": data.name, "members": members}

    def figures(self, records: list[dict], out_dir) -> list[Path]:
        from .e1_figures import make_figures

        return make_figures(records, Path(out_dir), self.delta)


EXPERIMENT = E1()
