"""Experiment registry: name → experiment object (docs/experiments.md E1–E6).

An experiment object has ``name``, ``description``, ``scales`` and three methods:

- ``configs(scale, seeds) -> list[dict]`` — the JSON-able configs of a sweep (``seeds=None``: the scale's default);
- ``run(config, device, on_loss=None) -> dict`` — train/evaluate one config, return its metrics (JSON-able);
- ``figures(records, out_dir) -> list[Path]`` — make the figures from stored records only.

Adding an experiment is one line in ``_EXPERIMENTS`` ("name": "module:attribute"); modules load lazily.
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol

from theory.validation import check_choice, check_positive_int

__all__ = ["Experiment", "MAX_SEEDS", "ScaledSweep", "SCALES", "check_seeds", "experiment_names", "get_experiment"]

SCALES = ("smoke", "default", "paper")

#: Upper bound on the number of seeds of one sweep (the paper uses 3; more than this is a typo, not a plan).
MAX_SEEDS = 1000


def check_seeds(seeds) -> int:
    """``seeds`` as an int in 1..:data:`MAX_SEEDS` (one-line ValueError otherwise)."""
    seeds = check_positive_int(seeds, "seeds")
    if seeds > MAX_SEEDS:
        raise ValueError(f"seeds={seeds} is out of range: allowed 1..{MAX_SEEDS} seeds per sweep")
    return seeds

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


class ScaledSweep:
    """Mixin for experiments described by a ``scale_settings`` mapping (scale name → settings with "seeds")."""

    @property
    def scales(self) -> tuple[str, ...]:
        return tuple(self.scale_settings)

    def settings(self, scale: str, seeds: int | None) -> tuple[dict, int]:
        """The settings of ``scale`` and the number of seeds (the scale's own unless ``seeds`` is given)."""
        check_choice(scale, "scale", self.scales)
        s = self.scale_settings[scale]
        return s, (s["seeds"] if seeds is None else check_seeds(seeds))


def experiment_names() -> tuple[str, ...]:
    """Registered experiment names, in registration order."""
    return tuple(_EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name``; one-line ValueError for an unknown name."""
    if name not in _EXPERIMENTS:
        raise ValueError(f"experiment={name!r} is unknown: allowed {', '.join(map(repr, _EXPERIMENTS))}")
    module, attribute = _EXPERIMENTS[name].split(":")
    return getattr(importlib.import_module(module), attribute)
