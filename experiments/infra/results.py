"""JSONL results store: one JSON line per finished run, appended with flush + fsync (docs/experiments.md).

Each record holds ``experiment``, ``key`` (a hash of the canonical JSON of the config), ``config``, ``seed``,
``metrics``, ``versions``, ``device``, ``wall_seconds`` and ``finished_utc``. A corrupt *last* line (a run
killed mid-write) is detected, ignored with a :class:`ResultsWarning` and cut off before the next append; a
corrupt line elsewhere, or a record of a different experiment, is refused with a one-line ``ValueError``.

Every record read is validated (:func:`validate_record`): a JSON object of this experiment whose ``key`` is the
hash of its ``config``, with a non-empty ``metrics`` object, no NaN/Infinity anywhere, and no run twice in one
file; anything else is refused with a one-line ``ValueError`` naming the file and the line number. An append
that fails (full disk, file-size limit) cuts the file back to its previous length, so no partial line is left.
A sweep holds an exclusive lock on its results file (:meth:`ResultsStore.lock`), so a second writer is refused.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import platform
import re
import warnings
from pathlib import Path

from theory.memory import check_memory, format_bytes

__all__ = ["LOAD_BYTES_PER_FILE_BYTE", "ResultsLock", "ResultsWarning", "ResultsStore", "config_key",
           "software_versions", "validate_record"]

#: Memory the loading of a results file needs per byte of the file: the bytes read, their lines and the parsed
#: records. Measured 5.9 for E1 smoke records (tracemalloc peak / file size); 8 leaves a margin.
LOAD_BYTES_PER_FILE_BYTE = 8

_KEY = re.compile(r"[0-9a-f]{16}")


class ResultsWarning(UserWarning):
    """A results file had a corrupt (partial) last line, which was ignored."""


def config_key(config: dict) -> str:
    """Stable identifier of a run: SHA-256 (first 16 hex digits) of the config's canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def software_versions() -> dict:
    """Versions of Python, numpy, torch and this package (recorded with every run)."""
    import numpy
    import torch

    try:
        from importlib.metadata import version
        package = version("er-tickets")
    except Exception:  # pragma: no cover - not installed
        package = "unknown"
    return {"python": platform.python_version(), "numpy": numpy.__version__, "torch": torch.__version__,
            "er_tickets": package}


class _NonFinite(ValueError):
    """A results line holds NaN or ±Infinity (which :meth:`ResultsStore.append` never writes)."""


_UNREADABLE = object()


def _refuse_constant(name: str):
    raise _NonFinite(f"holds {name}: allowed only finite numbers (an edited or foreign record)")


def _parse_line(line: bytes):
    """The JSON value of one line; NaN/Infinity are refused (``append`` never writes them)."""
    return json.loads(line.decode("utf-8"), parse_constant=_refuse_constant)


def validate_record(record, experiment: str) -> str:
    """Check one parsed results line of ``experiment``; return its key, or raise a ``ValueError`` saying what
    is wrong (without the file and line, which the caller adds).

    A valid record is a JSON object with ``experiment`` equal to ``experiment``, a ``config`` object, a ``key``
    of 16 hex digits equal to :func:`config_key` of that config, and a non-empty ``metrics`` object.
    """
    if not isinstance(record, dict):
        raise ValueError(f"is a JSON {type(record).__name__}: allowed a JSON object (one record per line)")
    if record.get("experiment") != experiment:
        raise ValueError(f"holds a run of experiment {str(record.get('experiment'))[:40]!r}: allowed only "
                         f"{experiment!r}")
    for field, kind, allowed in (("key", str, "a string"), ("config", dict, "an object"),
                                 ("metrics", dict, "an object")):
        if field not in record:
            raise ValueError(f"has no {field!r}: allowed records written by a sweep (with {field!r})")
        if not isinstance(record[field], kind):
            raise ValueError(f"has a {field!r} that is a JSON {type(record[field]).__name__}: allowed {allowed}")
    key = record["key"]
    if not _KEY.fullmatch(key):
        raise ValueError(f"has key {key[:40]!r}: allowed 16 hexadecimal digits")
    if config_key(record["config"]) != key:
        raise ValueError(f"has key {key!r}, which is not the hash of its config (edited record?)")
    if not record["metrics"]:
        raise ValueError("has empty 'metrics': allowed the metrics of a finished run")
    return key


class ResultsLock:
    """An exclusive, non-blocking ``fcntl.flock`` on a results file, held until :meth:`release` (or ``with``).

    A second holder (another process, or another lock in this one) is refused with a one-line ``ValueError``.
    A results file the lock had to create and that is still empty at release is removed again, with the
    directories created for it (if empty), so a sweep refused before its first run leaves nothing behind.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"results path {str(self.path)!r} is a directory: allowed a .jsonl file")
        # directories this lock creates (outermost first) are removed again with an unused results file
        self._made_dirs = [d for d in reversed(self.path.parents) if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._created = not self.path.exists()
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the path may have been removed (by a previous holder's cleanup) between open and flock
            if os.fstat(self._fd).st_ino != os.stat(self.path).st_ino:
                raise BlockingIOError(errno.EWOULDBLOCK, "replaced")
        except (BlockingIOError, FileNotFoundError):
            os.close(self._fd)
            self._fd = None
            raise ValueError(f"results file {str(self.path)!r} is in use by another sweep (locked): allowed one "
                             f"writer at a time; wait for it to finish or use another --out") from None

    def release(self) -> None:
        """Remove the file if this lock created it and nothing was written, then unlock."""
        if self._fd is None:
            return
        try:
            if self._created and os.fstat(self._fd).st_size == 0:
                self.path.unlink(missing_ok=True)
                for directory in reversed(self._made_dirs):
                    try:
                        directory.rmdir()  # only if still empty
                    except OSError:
                        break
        finally:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "ResultsLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


class ResultsStore:
    """The results file ``path`` of experiment ``experiment`` (created on the first append)."""

    def __init__(self, path: str | os.PathLike, experiment: str):
        self.path = Path(path)
        self.experiment = experiment
        self._good_bytes: int | None = None  # length of the valid prefix, once loaded

    def lock(self) -> ResultsLock:
        """Take the exclusive writer lock on this results file (see :class:`ResultsLock`); keep the returned
        object alive (or use ``with``) for as long as the sweep writes."""
        return ResultsLock(self.path)

    def load(self, max_memory: int | None = None) -> list[dict]:
        """All complete records, each validated (:func:`validate_record`, no key twice); warns about (and
        ignores) a corrupt last line; refuses anything else naming the file and the line.

        Before reading, the memory the file needs (:data:`LOAD_BYTES_PER_FILE_BYTE` per byte) is checked
        against ``max_memory`` (default: :func:`theory.memory.default_memory_budget`).
        """
        if not self.path.exists():
            self._good_bytes = 0
            return []
        if self.path.is_dir():
            raise IsADirectoryError(f"results path {str(self.path)!r} is a directory: allowed a .jsonl file")
        if not self.path.is_file():
            raise ValueError(f"results path {str(self.path)!r} is not a regular file: allowed a .jsonl file")
        size = self.path.stat().st_size
        check_memory(LOAD_BYTES_PER_FILE_BYTE * size,
                     f"reading results file {str(self.path)!r} ({format_bytes(size)})", max_memory)
        raw = self.path.read_bytes()
        records, offset, seen = [], 0, {}
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, start=1):
            is_last = number == len(lines) or (number == len(lines) - 1 and lines[-1] == b"")
            complete = number < len(lines)  # followed by a newline
            if line.strip() == b"":
                offset += len(line) + (1 if complete else 0)
                continue
            record = _UNREADABLE
            if complete:
                try:
                    record = _parse_line(line)
                except _NonFinite as exc:
                    raise ValueError(f"results file {str(self.path)!r} line {number} {exc}") from None
                except (ValueError, UnicodeDecodeError, RecursionError):
                    pass
            if record is _UNREADABLE:
                if is_last:
                    warnings.warn(f"{self.path}: ignoring a corrupt last line {number} (an interrupted write)",
                                  ResultsWarning, stacklevel=2)
                    break
                raise ValueError(f"results file {str(self.path)!r} has a corrupt line {number} that is not the "
                                 f"last: allowed only complete JSON records")
            try:
                key = validate_record(record, self.experiment)
            except ValueError as exc:
                if isinstance(record, dict) and "experiment" in record and record["experiment"] != self.experiment:
                    raise ValueError(f"results file {str(self.path)!r} holds runs of experiment "
                                     f"{str(record.get('experiment'))[:40]!r} (line {number}): allowed only "
                                     f"{self.experiment!r}") from None
                raise ValueError(f"results file {str(self.path)!r} line {number} {exc}") from None
            if key in seen:
                raise ValueError(f"results file {str(self.path)!r} line {number} repeats the run of line "
                                 f"{seen[key]} (key {key}): allowed each run once")
            seen[key] = number
            records.append(record)
            offset += len(line) + 1
        self._good_bytes = offset
        return records

    def finished_keys(self, max_memory: int | None = None) -> set[str]:
        return {r["key"] for r in self.load(max_memory)}

    def append(self, record: dict) -> None:
        """Append one record as one line, then flush and fsync (cutting off a corrupt tail first). If the write
        fails (full disk, file-size limit), the file is cut back to its previous length and the error raised."""
        if record.get("experiment") != self.experiment:
            raise ValueError(f"record of experiment {record.get('experiment')!r}: allowed only {self.experiment!r}")
        validate_record(record, self.experiment)
        line = json.dumps(record, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
        if self._good_bytes is None:
            self.load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            if os.fstat(fd).st_size != self._good_bytes:
                os.ftruncate(fd, self._good_bytes)
            data = memoryview(line.encode("utf-8"))
            position = self._good_bytes
            try:
                while data:
                    written = os.pwrite(fd, data, position)
                    data, position = data[written:], position + written
                os.fsync(fd)
            except BaseException as exc:
                os.ftruncate(fd, self._good_bytes)  # never leave a partial line
                if isinstance(exc, OSError) and exc.filename is None:  # name the file in the CLI's one line
                    raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
                raise
            self._good_bytes = position
        finally:
            os.close(fd)

    @staticmethod
    def make_record(experiment: str, config: dict, metrics: dict, device: str, wall_seconds: float) -> dict:
        return {
            "experiment": experiment,
            "key": config_key(config),
            "config": config,
            "seed": config.get("seed"),
            "metrics": metrics,
            "versions": software_versions(),
            "device": device,
            "wall_seconds": round(float(wall_seconds), 3),
            "finished_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
