"""Sweep runner: run every config of an experiment, one results line per finished run (EXPERIMENTS.md).

Finished runs are appended (flush + fsync) as soon as they end, so Ctrl-C or a crash loses at most the run in
progress; ``resume=True`` skips every config whose key is already in the results file. A progress bar shows
runs done / total and the latest training loss (hidden when stderr is not a terminal).
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .device import describe_device
from .registry import Experiment
from .results import ResultsStore, config_key

__all__ = ["SweepSummary", "results_path", "run_sweep"]


@dataclass(frozen=True)
class SweepSummary:
    experiment: str
    results: str
    total: int
    skipped: int
    ran: int
    wall_seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def results_path(out_dir, experiment: str) -> Path:
    """Where experiment ``experiment`` keeps its results inside ``out_dir``: ``<out_dir>/<experiment>.jsonl``."""
    return Path(out_dir) / f"{experiment}.jsonl"


def run_sweep(experiment: Experiment, configs: list[dict], out_dir, device, *, resume: bool = False,
              progress: bool | None = None) -> SweepSummary:
    """Run ``configs`` of ``experiment`` on ``device``, appending one record per finished run.

    Without ``resume`` an existing results file with finished runs is refused (nothing is overwritten).
    """
    store = ResultsStore(results_path(out_dir, experiment.name), experiment.name)
    lock = store.lock()  # noqa: F841 - exclusive writer lock on the results file, held until run_sweep ends
    finished = store.finished_keys()
    if finished and not resume:
        raise ValueError(f"results file {str(store.path)!r} already holds {len(finished)} finished runs: "
                         f"allowed --resume (to continue it) or another --out")
    keys = [config_key(c) for c in configs]
    todo = [(k, c) for k, c in zip(keys, configs) if k not in finished]
    skipped = len(configs) - len(todo)
    show = sys.stderr.isatty() if progress is None else progress
    device_name = describe_device(device)
    start = time.perf_counter()
    bar = tqdm(total=len(configs), initial=skipped, disable=not show, desc=experiment.name, unit="run",
               dynamic_ncols=True)

    def on_loss(loss: float) -> None:
        bar.set_postfix(loss=f"{loss:.3g}", refresh=True)

    ran = 0
    try:
        for key, config in todo:
            t0 = time.perf_counter()
            metrics = experiment.run(config, device, on_loss=on_loss)
            store.append(ResultsStore.make_record(experiment.name, config, metrics, device_name,
                                                  time.perf_counter() - t0))
            ran += 1
            bar.update(1)
    finally:
        bar.close()
    return SweepSummary(experiment.name, str(store.path), len(configs), skipped, ran,
                        round(time.perf_counter() - start, 3))
