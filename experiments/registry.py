"""Experiment registry: name → experiment object (EXPERIMENTS.md E1–E6).

An experiment object has ``name``, ``description``, ``scales`` and three methods:

- ``configs(scale, seeds) -> list[dict]`` — the JSON-able configs of a sweep (``seeds=None``: the scale's default);
- ``run(config, device, on_loss=None) -> dict`` — train/evaluate one config, return its metrics (JSON-able);
- ``figures(records, out_dir) -> list[Path]`` — make the figures from stored records only.

Adding an experiment is one line in ``_EXPERIMENTS`` ("name": "module:attribute"); modules load lazily.
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol

__all__ = ["Experiment", "SCALES", "experiment_names", "get_experiment"]

SCALES = ("smoke", "default", "paper")

_EXPERIMENTS = {
    "e1": "experiments.e1_three_layer:EXPERIMENT",
    "layerwise": "experiments.e2_layerwise:EXPERIMENT",
    "imp": "experiments.e3_imp:EXPERIMENT",
    "edgepopup": "experiments.e4_edgepopup:EXPERIMENT",
    "construction": "experiments.e5_construction:EXPERIMENT",
    "subset-sum": "experiments.e6_subset_sum:EXPERIMENT",
}


class Experiment(Protocol):
    name: str
    description: str

    def configs(self, scale: str, seeds: int | None) -> list[dict]: ...

    def run(self, config: dict, device, on_loss: Callable[[float], None] | None = None) -> dict: ...

    def figures(self, records: list[dict], out_dir) -> list: ...


def experiment_names() -> tuple[str, ...]:
    """Registered experiment names, in registration order."""
    return tuple(_EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name``; one-line ValueError for an unknown name."""
    if name not in _EXPERIMENTS:
        raise ValueError(f"experiment={name!r} is unknown: allowed {', '.join(map(repr, _EXPERIMENTS))}")
    module, attribute = _EXPERIMENTS[name].split(":")
    return getattr(importlib.import_module(module), attribute)
