"""Running the three command lines as a hostile user would, and the contract every run must keep.

Every run is a real subprocess (``python -m theory|construct|experiments ...``) with an address-space limit
(``resource.setrlimit(RLIMIT_AS)`` in ``preexec_fn``), a timeout, its own temporary directory and, optionally, a
file-size limit (RLIMIT_FSIZE with SIGXFSZ ignored, so a write fails with EFBIG instead of killing the process).

The contract (:func:`check_contract`), from issues 13 and 15:
- the exit status is one the case allows (0, 2, or 1 where documented: ``construct verify`` INVALID, a failing
  ``check``; 141 for a closed stdout, 143 for SIGTERM);
- never a Python traceback, never a "Exception ignored" message;
- status 2: exactly one line on stderr;
- after a refusal (status ≠ 0) the output directory holds no file, and never a temporary file of theory.atomic;
- the pickle canary file never appears (no pickle payload was executed).

Budget: ``CI=true`` (or no setting) runs the fixed small budget; ``ER_TICKETS_FUZZ=full`` runs more generated
examples (for humans; takes longer).
"""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("ER_TICKETS_FUZZ", "").lower() == "full"
#: Address-space limit of every run: room for torch's import (≈0.9 GB virtual) and small real work, far below
#: what an unguarded allocation of the hostile inputs would need.
MEMORY_LIMIT = 3 * 2**30
#: Wall-clock limit of one run (the machine may be loaded; a hang on a FIFO would reach it).
TIMEOUT = 180
#: Concurrent subprocesses when a table is run as a batch.
WORKERS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2))
TEMP_MARKER = ".er-tickets-tmp-"


@dataclass
class Run:
    argv: list
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    out_files: list = field(default_factory=list)
    canary: bool = False


def _limits(memory: int, fsize: int | None):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of killing
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        os.setsid()  # own process group: a timeout kills the whole group

    return apply


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e["OMP_NUM_THREADS"] = "1"
    e["MKL_NUM_THREADS"] = "1"
    e["OPENBLAS_NUM_THREADS"] = "1"
    e["NUMBA_NUM_THREADS"] = "1"
    e.pop("PYTHONWARNINGS", None)
    return e


def start(argv, cwd, *, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, memory=MEMORY_LIMIT, fsize=None):
    """Popen of ``python -m argv...`` with the limits (the caller communicates)."""
    return subprocess.Popen([sys.executable, "-m", *argv], cwd=cwd, stdin=stdin, stdout=stdout,
                            stderr=subprocess.PIPE, env=env(), preexec_fn=_limits(memory, fsize))


def run(argv, cwd, *, out_dir=None, canary=None, timeout=TIMEOUT, memory=MEMORY_LIMIT, fsize=None, stdout=None) -> Run:
    """Run one command line to completion (killing its process group on timeout)."""
    t0 = time.monotonic()
    proc = start(argv, cwd, stdout=subprocess.PIPE if stdout is None else stdout, memory=memory, fsize=fsize)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    files = sorted(str(p.relative_to(out_dir)) for p in Path(out_dir).rglob("*") if p.is_file()) if out_dir else []
    return Run(list(argv), proc.returncode, (out or b"").decode("utf-8", "replace"),
               (err or b"").decode("utf-8", "replace"), time.monotonic() - t0, timed_out, files,
               bool(canary and Path(canary).exists()))


def run_many(jobs) -> list:
    """Run several ``(argv, cwd, kwargs)`` jobs, ``WORKERS`` at a time; results in job order."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = [pool.submit(run, argv, cwd, **kwargs) for argv, cwd, kwargs in jobs]
        return [f.result() for f in futures]


_TRACE = re.compile(r"Traceback \(most recent call last\)|Exception ignored|^\w*(Error|Exception): ", re.M)


def check_contract(r: Run, allowed=(0, 2), *, stderr_contains=()) -> None:
    """Assert the contract of the module docstring for one run (the message names the command line)."""
    cmd = " ".join(map(str, r.argv))
    assert not r.timed_out, f"timed out after {r.seconds:.0f} s: {cmd}"
    assert r.returncode in allowed, f"exit {r.returncode} (allowed {allowed}): {cmd}\nstderr: {r.stderr[-2000:]}"
    assert not _TRACE.search(r.stderr), f"traceback or raw exception: {cmd}\nstderr: {r.stderr[-3000:]}"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    if r.returncode == 2:
        assert len(lines) == 1, f"status 2 needs one stderr line, got {len(lines)}: {cmd}\nstderr: {r.stderr[-2000:]}"
    if r.returncode != 0:
        assert not r.out_files, f"files left in the output directory after a refusal: {r.out_files}: {cmd}"
    assert not [f for f in r.out_files if TEMP_MARKER in f], f"temporary files left: {r.out_files}: {cmd}"
    assert not r.canary, f"the pickle canary file appeared: a payload was executed: {cmd}"
    for text in stderr_contains:
        assert text in r.stderr, f"stderr lacks {text!r}: {cmd}\nstderr: {r.stderr[-2000:]}"
