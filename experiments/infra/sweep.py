"""Sweep runner: run every config of an experiment on an engine, one results line per finished run (docs/experiments.md).

The driver (this process) alone writes the results file: each finished run is appended (flush + fsync) as soon as
the engine reports it, in completion order, so Ctrl-C, a crash or a SIGKILL of the driver loses at most the runs in
flight. ``resume=True`` skips every config whose key is already in the results file — whichever engine wrote it
(the key is the config's hash; engine, device and wall time are not part of it). A run that raises is not retried
unless ``retries`` allows it; its error is appended to ``<out>/<experiment>.failed.jsonl`` (one JSON line per
failed run: key, config, error, attempts), the sweep goes on, and a later ``--resume`` runs it again (it is not
finished). Engines: :mod:`experiments.infra.engine` (``local`` = in this process, one run after the other; ``ray`` =
one Ray task per run). Progress: :mod:`experiments.infra.progress`.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Engine, EngineSpec, LocalEngine, task_engine
from .progress import LINE_INTERVAL_S, Progress
from .registry import Experiment
from .results import ResultsStore, config_key, software_versions

__all__ = ["SweepSummary", "failures_path", "results_path", "run_config", "run_sweep"]


@dataclass(frozen=True)
class SweepSummary:
    experiment: str
    results: str
    total: int
    skipped: int
    ran: int
    wall_seconds: float
    failed: int = 0
    failures: str | None = None
    engine: str = "local"
    errors: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def results_path(out_dir, experiment: str) -> Path:
    """Where experiment ``experiment`` keeps its results inside ``out_dir``: ``<out_dir>/<experiment>.jsonl``."""
    return Path(out_dir) / f"{experiment}.jsonl"


def failures_path(out_dir, experiment: str) -> Path:
    """Where the driver records failed runs: ``<out_dir>/<experiment>.failed.jsonl``."""
    return Path(out_dir) / f"{experiment}.failed.jsonl"


def run_config(item: tuple, on_loss=None) -> dict:
    """One run, wherever the engine puts it: ``item`` = (experiment, config, device, threads, inner engine spec).

    ``device`` is a ``torch.device`` or a name ("auto"/"cpu"/"cuda", resolved here, on the worker); ``threads``
    torch CPU threads (None: unchanged). Returns the metrics and the worker's device description."""
    import torch

    from .device import describe_device, resolve_device

    experiment, config, device, threads, inner = item
    if threads is not None:
        torch.set_num_threads(threads)
    device = resolve_device(device) if isinstance(device, str) else device
    t0 = time.perf_counter()
    with task_engine(inner):
        metrics = experiment.run(config, device, on_loss=on_loss)
    return {"metrics": metrics, "device": describe_device(device), "wall_seconds": time.perf_counter() - t0}


def _append_failure(path: Path, record: dict) -> None:
    """Append one failed-run line, flush + fsync (the failures log is written by the driver only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
    with open(path, "ab") as fh:
        fh.write(line.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def run_sweep(experiment: Experiment, configs: list[dict], out_dir, device, *, resume: bool = False,
              progress: str | bool | None = "auto", engine: Engine | None = None, retries: int = 0,
              threads: int | None = None, progress_interval_s: float = LINE_INTERVAL_S) -> SweepSummary:
    """Run ``configs`` of ``experiment`` on ``engine`` (default: in this process), appending one record per
    finished run in completion order and one failure line per failed run (module docstring).

    Without ``resume`` an existing results file with finished runs is refused (nothing is overwritten).
    ``threads``: torch threads per run (default: the engine's CPUs per task; in this process: unchanged). Inside a run, nested parallel work
    (E5) uses the same engine kind: Ray tasks under ``ray``, a local process pool under ``local``.
    """
    engine = engine or LocalEngine()
    store = ResultsStore(results_path(out_dir, experiment.name), experiment.name)
    lock = store.lock()  # noqa: F841 - exclusive writer lock on the results file, held until run_sweep ends
    finished = store.finished_keys()
    if finished and not resume:
        raise ValueError(f"results file {str(store.path)!r} already holds {len(finished)} finished runs: "
                         f"allowed --resume (to continue it) or another --out")
    keys = [config_key(c) for c in configs]
    todo, seen = [], set()
    for key, config in zip(keys, configs):
        if key not in finished and key not in seen:
            todo.append((key, config))
            seen.add(key)
    skipped = len(configs) - len(todo)
    in_process = isinstance(engine, LocalEngine) and engine.workers == 1
    if threads is None and not in_process:
        threads = engine.spec.cpus_per_task
    inner = EngineSpec("ray") if engine.spec.kind == "ray" else EngineSpec("local", workers=None)
    parallel = 1 if in_process else None
    fail_path = failures_path(out_dir, experiment.name)
    start = time.perf_counter()
    ran = failed = 0
    errors = []
    bar = Progress(experiment.name, len(configs), skipped, progress, progress_interval_s, running=parallel)
    fn = functools.partial(run_config, on_loss=bar.on_loss) if in_process else run_config
    items = [(experiment, config, device, threads, inner) for _, config in todo]
    try:
        for outcome in engine.imap_unordered(fn, items, retries=retries):
            key, config = todo[outcome.index]
            if outcome.ok:
                result = outcome.value
                store.append(ResultsStore.make_record(experiment.name, config, result["metrics"], result["device"],
                                                      result["wall_seconds"]))
                ran += 1
                bar.finished(True)
            else:
                failed += 1
                _append_failure(fail_path, {
                    "experiment": experiment.name, "key": key, "config": config, "seed": config.get("seed"),
                    "status": "failed", "error": outcome.error, "attempts": outcome.attempts,
                    "engine": engine.spec.kind, "versions": software_versions(),
                    "finished_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
                errors.append({"key": key, "error": outcome.error, "attempts": outcome.attempts})
                bar.finished(False, f"run {key} failed after {outcome.attempts} attempt(s): {outcome.error}")
    finally:
        bar.close()
    return SweepSummary(experiment.name, str(store.path), len(configs), skipped, ran,
                        round(time.perf_counter() - start, 3), failed, str(fail_path) if failed else None,
                        engine.describe(), errors)
