"""The memory a sweep will need, estimated before anything is allocated (the guard of ``python -m experiments run``).

Three parts, summed and checked against ``--max-memory`` with :func:`theory.memory.check_memory`:

- the list of configs: the bytes of the configs of one and of two seeds are measured (``tracemalloc``) and
  extrapolated linearly to the requested number of seeds, plus :data:`SWEEP_BYTES_PER_CONFIG` of bookkeeping
  (key, to-do entry) per config — checked *before* the full list is built;
- reading the results file (:data:`experiments.infra.results.LOAD_BYTES_PER_FILE_BYTE` per byte of it);
- the largest single run (runs are sequential): the experiment's own ``run_memory(config)`` where it defines one
  (E1 does), plus reading CIFAR where a config names a data directory (:func:`experiments.infra.data.cifar_memory_estimate`).

Once the sweep fits, every CIFAR directory it names is read and checked
(:func:`experiments.infra.data.check_cifar_dir`), so bad data is a one-line refusal before the first run.
"""
from __future__ import annotations

import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from theory.memory import check_memory, format_bytes

from .registry import check_seeds

__all__ = ["SWEEP_BYTES_PER_CONFIG", "SweepPlan", "plan_sweep"]

#: Bookkeeping per config while a sweep runs: its 16-digit key string, the (key, config) to-do tuple, list slots.
SWEEP_BYTES_PER_CONFIG = 512

_CIFAR_TASKS = {"cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class SweepPlan:
    """The configs of a sweep and the memory estimate (bytes) it was admitted with."""

    configs: list
    estimate_bytes: float


def _configs_bytes(experiment, scale: str, seeds: int, options: dict) -> tuple[int, int]:
    """(number of configs, bytes they hold) for ``seeds`` seeds, measured with ``tracemalloc``."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        configs = experiment.configs(scale, seeds, **options)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        if started:
            tracemalloc.stop()
    return len(configs), max(0, used)


def _run_bytes(experiment, config: dict, cifar: dict) -> int:
    """Memory of one run of ``config``: the experiment's ``run_memory`` (if any) plus reading CIFAR (estimates
    cached in ``cifar`` by directory and classes)."""
    total = int(experiment.run_memory(config)) if hasattr(experiment, "run_memory") else 0
    classes = _CIFAR_TASKS.get(config.get("task"))
    if classes is not None and config.get("data_dir") is not None:
        from .data import cifar_memory_estimate

        where = (str(config["data_dir"]), classes)
        if where not in cifar:
            cifar[where] = cifar_memory_estimate(config["data_dir"], classes)
        total += cifar[where]
    return total


def plan_sweep(experiment, scale: str, seeds: int | None, options: dict, results_file: str | Path | None = None,
               max_memory: int | None = None) -> SweepPlan:
    """The configs of ``experiment`` at ``scale`` with ``seeds`` seeds (``None``: the scale's own) and
    ``options``, after checking that the sweep fits in ``max_memory`` (default: a fraction of the available
    memory); a :class:`theory.memory.MemoryBudgetError` (one line: the estimate and ``--max-memory``) otherwise.
    """
    if seeds is not None:
        seeds = check_seeds(seeds)
    experiment.configs(scale, 1, **options)  # warm caches (tables some experiments read once) out of the measurement
    n1, b1 = _configs_bytes(experiment, scale, 1, options)
    n2, b2 = _configs_bytes(experiment, scale, 2, options)
    n_seeds = seeds if seeds is not None else experiment.settings(scale, None)[1]
    n_configs = n1 + (n_seeds - 1) * max(0, n2 - n1)
    list_bytes = b1 + (n_seeds - 1) * max(0, b2 - b1) + SWEEP_BYTES_PER_CONFIG * n_configs
    name = getattr(experiment, "name", "experiment")
    check_memory(list_bytes, f"the sweep of {name} ({n_configs} configs of {n_seeds} seed(s))", max_memory)
    configs = experiment.configs(scale, seeds, **options)
    file_bytes = 0
    if results_file is not None and Path(results_file).is_file():
        from .results import LOAD_BYTES_PER_FILE_BYTE

        file_bytes = LOAD_BYTES_PER_FILE_BYTE * Path(results_file).stat().st_size
    cifar: dict = {}
    run_bytes = max((_run_bytes(experiment, c, cifar) for c in configs), default=0)
    total = list_bytes + file_bytes + run_bytes
    check_memory(total, f"the sweep of {name} ({len(configs)} configs: {format_bytes(list_bytes)} for the list, "
                        f"{format_bytes(file_bytes)} to read its results file, {format_bytes(run_bytes)} for its "
                        f"largest run)", max_memory)
    if cifar:
        from .data import check_cifar_dir

        for directory, classes in cifar:  # bad data is a refusal here, not a failure of every run
            check_cifar_dir(directory, classes)
    return SweepPlan(configs, total)
