"""Engines for the parallel work of the experiments: the local engine (this process, or a process pool) and Ray.

One abstraction serves every parallel loop of the package — the sweep runner (one task per config), E5's
construction tasks and the N_SS calibration (``scripts/calibrate_nss.py``):

    with open_engine(EngineSpec("ray", address="auto")) as engine:
        for outcome in engine.imap_unordered(fn, items, retries=0):
            ...  # outcome.index, outcome.value or outcome.error, in completion order

``fn`` must be a module-level function (it is sent to other processes by reference) and ``items`` picklable.
Every task runs with ``threads`` BLAS / torch / numba threads (threadpoolctl), so that workers do not oversubscribe
the cores. A task that raises yields an :class:`Outcome` with ``error`` set (``"ExceptionType: message"``); it is
run again only if ``retries`` allows (never silently). Engines:

- ``local``: ``workers=1`` runs the tasks one after the other in this process (the sweep's default: today's
  behaviour, with a live training-loss display); ``workers=N`` uses a process pool of N processes.
- ``ray`` (optional extra ``pip install 'er-tickets[cluster]'``): each task is a Ray task reserving
  ``cpus_per_task`` CPUs and ``gpus_per_task`` (possibly fractional) GPUs. Without an address an embedded local
  Ray instance is started (CPUs bounded by this process's affinity mask or ``workers``, no dashboard) and shut
  down on close; ``address="auto"`` or ``"host:port"`` joins a running cluster (``ray start --head``), whose
  reachability is checked first with a bounded TCP connect. Inside a Ray task, the already-connected runtime is
  reused (nested tasks, e.g. E5's constructions inside a sweep run).
"""
from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from theory.validation import check_choice, check_positive_int

__all__ = [
    "ENGINES",
    "EngineSpec",
    "Engine",
    "LocalEngine",
    "Outcome",
    "RayEngine",
    "RAY_EXTRA_HINT",
    "available_cpus",
    "check_address",
    "current_task_engine",
    "measure_overhead",
    "open_engine",
    "task_engine",
]

ENGINES = ("local", "ray")
RAY_EXTRA_HINT = "pip install 'er-tickets[cluster]'"
CONNECT_TIMEOUT_S = 10.0


def available_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where the platform has none), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class EngineSpec:
    """Which engine runs the tasks, and what each task reserves.

    ``kind``: "local" or "ray". ``workers``: local — number of processes (1 = this process; None = every available
    CPU); ray without address — CPUs of the embedded instance (None = every available CPU). ``address``: ray only;
    None = embedded instance, "auto" or "host:port" = a running cluster. ``cpus_per_task`` (≥ 1, also the number
    of threads a task may use) and ``gpus_per_task`` (≥ 0, fractional allowed; ray only).
    """

    kind: str = "local"
    workers: int | None = 1
    address: str | None = None
    cpus_per_task: int = 1
    gpus_per_task: float = 0.0
    connect_timeout_s: float = CONNECT_TIMEOUT_S

    def __post_init__(self):
        check_choice(self.kind, "engine", ENGINES)
        if self.workers is not None:
            check_positive_int(self.workers, "workers")
        check_positive_int(self.cpus_per_task, "cpus_per_run")
        g = self.gpus_per_task
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not (g >= 0) or g != g or g == float("inf"):
            raise ValueError(f"gpus_per_run={g!r} is invalid: allowed a finite number >= 0 (e.g. 0.25 to share a GPU "
                             f"between four runs)")
        if g > 1 and g != int(g):
            raise ValueError(f"gpus_per_run={g!r} is invalid: allowed a fraction in (0, 1] or a whole number of GPUs")
        if self.kind == "local":
            if self.address is not None:
                raise ValueError(f"address={self.address!r} applies to engine 'ray' only: allowed with --engine ray")
            if g > 0:
                raise ValueError(f"gpus_per_run={g!r} applies to engine 'ray' only: allowed with --engine ray "
                                 f"(the local engine runs on --device)")


@dataclass(frozen=True)
class Outcome:
    """One finished task: its position in ``items``, its return value or error, attempts made, wall seconds."""

    index: int
    value: Any = None
    error: str | None = None
    attempts: int = 1
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


def _limit_threads(threads: int) -> None:
    """Cap torch (if imported), numba and the BLAS pools of this process at ``threads`` threads."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


_PROCESS_THREADS: list[int] = []  # the thread cap already applied in this worker process


def _invoke(fn: Callable, item, threads: int, own_process: bool = True):
    """Run ``fn(item)``; return (value, error, seconds). ``own_process``: this is a worker process (pool or Ray),
    whose torch / numba / BLAS pools are capped at ``threads`` threads (once per process: threadpoolctl's library
    scan costs tens of milliseconds); in the caller's own process nothing is changed."""
    t0 = time.perf_counter()
    if own_process and _PROCESS_THREADS != [threads]:
        from threadpoolctl import threadpool_limits

        _limit_threads(threads)
        threadpool_limits(threads)
        _PROCESS_THREADS[:] = [threads]
    elif own_process and "torch" in sys.modules:  # torch may have been imported by the previous task
        sys.modules["torch"].set_num_threads(threads)
    try:
        value = fn(item)
        return value, None, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - every failure of a task is recorded, never swallowed silently
        return None, _error_text(exc), time.perf_counter() - t0


def _error_text(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    message = lines[0].strip() if lines else ""
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


class Engine:
    """Base class: ``imap_unordered`` plus context-manager closing."""

    spec: EngineSpec
    name: str = "engine"

    def imap_unordered(self, fn: Callable, items: Iterable, *, retries: int = 0) -> Iterator[Outcome]:
        raise NotImplementedError

    def map(self, fn: Callable, items: Iterable) -> list:
        """Every ``fn(item)`` in item order; the first failed task raises ``RuntimeError`` with its error."""
        items = list(items)
        values: list = [None] * len(items)
        for outcome in self.imap_unordered(fn, items):
            if not outcome.ok:
                raise RuntimeError(f"task {outcome.index} failed: {outcome.error}")
            values[outcome.index] = outcome.value
        return values

    def describe(self) -> str:
        return self.name

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_retries(retries: int) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries={retries!r} is invalid: allowed an integer >= 0")
    return retries


class LocalEngine(Engine):
    """Tasks in this process (``workers=1``) or in a process pool of ``workers`` processes."""

    def __init__(self, spec: EngineSpec | None = None):
        self.spec = spec or EngineSpec("local")
        self.workers = available_cpus() if self.spec.workers is None else self.spec.workers
        self.name = "local" if self.workers == 1 else f"local ({self.workers} processes)"

    def imap_unordered(self, fn, items, *, retries=0):
        retries = _check_retries(retries)
        items = list(items)
        threads = self.spec.cpus_per_task
        if self.workers == 1 or len(items) <= 1:
            for index, item in enumerate(items):
                for attempt in range(1, retries + 2):
                    value, error, seconds = _invoke(fn, item, threads, False)
                    if error is None or attempt > retries:
                        break
                yield Outcome(index, value, error, attempt, seconds)
            return
        with ProcessPoolExecutor(max_workers=min(self.workers, len(items))) as pool:
            pending = {pool.submit(_invoke, fn, item, threads): (index, 1) for index, item in enumerate(items)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index, attempt = pending.pop(future)
                    try:
                        value, error, seconds = future.result()
                    except Exception as exc:  # the worker process died (e.g. killed for memory)
                        value, error, seconds = None, _error_text(exc), 0.0
                    if error is not None and attempt <= retries:
                        pending[pool.submit(_invoke, fn, items[index], threads)] = (index, attempt + 1)
                        continue
                    yield Outcome(index, value, error, attempt, seconds)


def check_address(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """A one-line ``ValueError`` unless ``host:port`` accepts a TCP connection within ``timeout_s`` seconds."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address={address!r} is invalid: allowed 'auto' or host:port of a running Ray head "
                         f"(ray start --head prints it)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        reason = "no answer" if isinstance(exc, socket.timeout) else (exc.strerror or type(exc).__name__)
        raise ValueError(f"address={address!r} is unreachable ({reason} within {timeout_s:g} s): allowed 'auto' "
                         f"or host:port of a running Ray head (start one with: ray start --head)") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError(f"engine='ray' needs the optional Ray extra, which is not installed: {RAY_EXTRA_HINT} "
                         f"(or allowed --engine local)") from None
    return ray


def _local_gpus() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is installed with the experiments extra
        return 0
    return torch.cuda.device_count()


class RayEngine(Engine):
    """Each task is a Ray task (module docstring)."""

    def __init__(self, spec: EngineSpec):
        self.spec = spec
        ray = _import_ray()
        self._ray = ray
        self._owns = False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if ray.is_initialized():  # inside a Ray task, or a caller that connected already
            where = "connected"
        elif spec.address is None:
            if spec.gpus_per_task > 0 and _local_gpus() == 0:
                raise ValueError(f"gpus_per_run={spec.gpus_per_task:g} needs a GPU, but this machine has none "
                                 f"(torch sees no CUDA device): allowed 0 here, or --address of a cluster with GPUs")
            cpus = available_cpus() if spec.workers is None else spec.workers
            import logging

            ray.init(address="local", num_cpus=max(cpus, spec.cpus_per_task), include_dashboard=False,
                     log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=True)
            self._owns = True
            where = f"embedded, {max(cpus, spec.cpus_per_task)} CPUs"
        else:
            if spec.address != "auto":
                check_address(spec.address, spec.connect_timeout_s)
            import logging

            try:
                ray.init(address=spec.address, log_to_driver=False, logging_level=logging.WARNING)
            except Exception as exc:  # noqa: BLE001 - ConnectionError, AuthenticationError, ...: one line
                hint = (" (a cluster with token authentication: set RAY_AUTH_MODE=token and the head's token in "
                        "RAY_AUTH_TOKEN or ~/.ray/auth_token)" if "auth" in str(exc).lower() or "auth" in
                        type(exc).__name__.lower() else "")
                raise ValueError(f"address={spec.address!r}: cannot join a Ray cluster ({_error_text(exc)}){hint}: "
                                 f"allowed 'auto' or host:port of a running Ray head (ray start --head)") from None
            self._owns = True  # our connection: disconnect on close (the cluster keeps running)
            where = f"cluster {spec.address}"
        resources = ray.cluster_resources()
        if spec.gpus_per_task > 0 and resources.get("GPU", 0) < spec.gpus_per_task:
            self.close()
            raise ValueError(f"gpus_per_run={spec.gpus_per_task:g} needs a GPU, but the Ray cluster has "
                             f"{resources.get('GPU', 0):g}: allowed 0, or a cluster with GPUs")
        if resources.get("CPU", 0) < spec.cpus_per_task:
            self.close()
            raise ValueError(f"cpus_per_run={spec.cpus_per_task} exceeds the Ray cluster's {resources.get('CPU', 0):g}"
                             f" CPUs: allowed at most that")
        self.name = f"ray ({where}; {resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)"
        self._remote = ray.remote(num_cpus=spec.cpus_per_task, num_gpus=spec.gpus_per_task, max_retries=0,
                                  retry_exceptions=False)(_invoke)

    def imap_unordered(self, fn, items, *, retries=0):
        retries = _check_retries(retries)
        ray = self._ray
        items = list(items)
        threads = self.spec.cpus_per_task
        fn_ref = ray.put(fn)
        pending = {self._remote.remote(fn_ref, item, threads): (index, 1) for index, item in enumerate(items)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    index, attempt = pending.pop(ref)
                    try:
                        value, error, seconds = ray.get(ref)
                    except Exception as exc:  # the task's worker died, or Ray could not run it
                        value, error, seconds = None, _error_text(getattr(exc, "cause", None) or exc), 0.0
                    if error is not None and attempt <= retries:
                        pending[self._remote.remote(fn_ref, items[index], threads)] = (index, attempt + 1)
                        continue
                    yield Outcome(index, value, error, attempt, seconds)
        finally:
            for ref in pending:  # abandoned (the caller stopped early): cancel what has not finished
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort
                    pass

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


def open_engine(spec: EngineSpec | None = None) -> Engine:
    """The engine ``spec`` describes (local by default); close it (or use ``with``) when done."""
    spec = spec or EngineSpec()
    return RayEngine(spec) if spec.kind == "ray" else LocalEngine(spec)


def _noop(item):
    return item


def measure_overhead(spec: EngineSpec, tasks: int = 200) -> dict:
    """Engine cost without work: seconds to open the engine (start or join Ray), and the wall time per no-op task
    over ``tasks`` tasks (submitted at once, results collected in completion order)."""
    t0 = time.perf_counter()
    with open_engine(spec) as engine:
        opened = time.perf_counter() - t0
        t1 = time.perf_counter()
        first = sum(1 for _ in engine.imap_unordered(_noop, range(min(tasks, 4))))  # warm up the workers
        warm = time.perf_counter() - t1
        t2 = time.perf_counter()
        done = sum(1 for _ in engine.imap_unordered(_noop, range(tasks)))
        wall = time.perf_counter() - t2
        name = engine.describe()
    return {"engine": name, "open_seconds": round(opened, 3), "warmup_tasks": first,
            "warmup_seconds": round(warm, 3), "tasks": done, "wall_seconds": round(wall, 3),
            "ms_per_task": round(1000 * wall / max(done, 1), 3)}


# ---------------------------------------------------------------------------------------------------------------
# the engine that nested parallel work (E5's construction tasks) uses


_TASK_ENGINE: list[EngineSpec] = []


@contextmanager
def task_engine(spec: EngineSpec):
    """Within the block, :func:`current_task_engine` returns ``spec`` (the sweep sets it for each run)."""
    _TASK_ENGINE.append(spec)
    try:
        yield spec
    finally:
        _TASK_ENGINE.pop()


def current_task_engine(workers: int | None = None) -> EngineSpec:
    """The engine for work inside one run: the innermost :func:`task_engine`, else a local process pool of
    ``workers`` processes (None = every available CPU)."""
    if _TASK_ENGINE:
        spec = _TASK_ENGINE[-1]
        return replace(spec, workers=workers) if spec.kind == "local" and workers is not None else spec
    return EngineSpec("local", workers=workers)
