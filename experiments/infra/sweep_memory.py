"""The memory a sweep will need, estimated before anything is allocated (the guard of ``python -m experiments run``).

Three parts, summed and checked against ``--max-memory`` with :func:`theory.memory.check_memory`:

- the list of configs: the bytes of the configs of one and of two seeds are measured (``tracemalloc``) and
  extrapolated linearly to the requested number of seeds, plus :data:`SWEEP_BYTES_PER_CONFIG` of bookkeeping
  (key, to-do entry) per config — checked *before* the full list is built;
- reading the results file (:data:`experiments.infra.results.LOAD_BYTES_PER_FILE_BYTE` per byte of it);
- the largest single run (runs are sequential): the experiment's own ``run_memory(config)`` where it defines one
  (E1 does), plus reading CIFAR where a config names a data directory (:func:`experiments.infra.data.cifar_memory_estimate`).
  With a CUDA device, an experiment that splits its run (``run_memory_parts(config)`` → (host, device) bytes) has
  the host part checked here and the device part against the GPU's free memory (``torch.cuda.mem_get_info``): a
  sweep whose largest run does not fit on the card is refused in one line before anything runs.

Once the sweep fits, every CIFAR directory it names is read and checked
(:func:`experiments.infra.data.check_cifar_dir`), so bad data is a one-line refusal before the first run.
"""
from __future__ import annotations

import tracemalloc
from dataclasses import dataclass
from pathlib import Path

from theory.memory import MemoryBudgetError, check_memory, format_bytes

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


def _run_bytes(experiment, config: dict, cifar: dict, on_gpu: bool = False) -> tuple[int, int]:
    """(host bytes, GPU bytes) of one run of ``config``: the experiment's ``run_memory`` (if any; split by
    ``run_memory_parts`` when ``on_gpu``) plus reading CIFAR on the host (estimates cached in ``cifar`` by directory
    and classes)."""
    gpu = 0
    if on_gpu and hasattr(experiment, "run_memory_parts"):
        total, gpu = (int(v) for v in experiment.run_memory_parts(config))
    else:
        total = int(experiment.run_memory(config)) if hasattr(experiment, "run_memory") else 0
    classes = _CIFAR_TASKS.get(config.get("task"))
    if classes is not None and config.get("data_dir") is not None:
        from .data import cifar_memory_estimate

        where = (str(config["data_dir"]), classes)
        if where not in cifar:
            cifar[where] = cifar_memory_estimate(config["data_dir"], classes)
        total += cifar[where]
    return total, gpu


def _gpu_free(device) -> tuple[int, str]:
    """(free bytes, card name) of a CUDA ``device``."""
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    return int(free), torch.cuda.get_device_name(device)


def plan_sweep(experiment, scale: str, seeds: int | None, options: dict, results_file: str | Path | None = None,
               max_memory: int | None = None, device=None) -> SweepPlan:
    """The configs of ``experiment`` at ``scale`` with ``seeds`` seeds (``None``: the scale's own) and
    ``options``, after checking that the sweep fits in ``max_memory`` (default: a fraction of the available
    memory); a :class:`theory.memory.MemoryBudgetError` (one line: the estimate and ``--max-memory``) otherwise.
    ``device``: the ``torch.device`` the runs will use on this machine (None: not known here, e.g. a cluster's
    workers); with a CUDA device the GPU part of the largest run must fit in the card's free memory.
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
    on_gpu = getattr(device, "type", None) == "cuda"
    parts = [_run_bytes(experiment, c, cifar, on_gpu) for c in configs]
    run_bytes = max((host for host, _ in parts), default=0)
    gpu_bytes = max((gpu for _, gpu in parts), default=0)
    if gpu_bytes:
        free, card = _gpu_free(device)
        if gpu_bytes > free:
            raise MemoryBudgetError(
                f"the largest run of the sweep of {name} needs about {format_bytes(gpu_bytes)} of GPU memory, over "
                f"the {format_bytes(free)} free on {card}: reduce the size (--scale, --where, --limit) or free the GPU")
    total = list_bytes + file_bytes + run_bytes
    check_memory(total, f"the sweep of {name} ({len(configs)} configs: {format_bytes(list_bytes)} for the list, "
                        f"{format_bytes(file_bytes)} to read its results file, {format_bytes(run_bytes)} for its "
                        f"largest run)", max_memory)
    if cifar:
        from .data import check_cifar_dir

        for directory, classes in cifar:  # bad data is a refusal here, not a failure of every run
            check_cifar_dir(directory, classes)
    return SweepPlan(configs, total)
