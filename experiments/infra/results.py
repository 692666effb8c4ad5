"""JSONL results store: one JSON line per finished run, appended with flush + fsync (EXPERIMENTS.md).

Each record holds ``experiment``, ``key`` (a hash of the canonical JSON of the config), ``config``, ``seed``,
``metrics``, ``versions``, ``device``, ``wall_seconds`` and ``finished_utc``. A corrupt *last* line (a run
killed mid-write) is detected, ignored with a :class:`ResultsWarning` and cut off before the next append; a
corrupt line elsewhere, or a record of a different experiment, is refused with a one-line ``ValueError``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import warnings
from pathlib import Path

__all__ = ["ResultsWarning", "ResultsStore", "config_key", "software_versions"]


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


class ResultsStore:
    """The results file ``path`` of experiment ``experiment`` (created on the first append)."""

    def __init__(self, path: str | os.PathLike, experiment: str):
        self.path = Path(path)
        self.experiment = experiment
        self._good_bytes: int | None = None  # length of the valid prefix, once loaded

    def load(self) -> list[dict]:
        """All complete records; warns about (and ignores) a corrupt last line; refuses foreign records."""
        if not self.path.exists():
            self._good_bytes = 0
            return []
        if self.path.is_dir():
            raise IsADirectoryError(f"results path {str(self.path)!r} is a directory: allowed a .jsonl file")
        raw = self.path.read_bytes()
        records, offset = [], 0
        lines = raw.split(b"\n")
        for number, line in enumerate(lines, start=1):
            is_last = number == len(lines) or (number == len(lines) - 1 and lines[-1] == b"")
            complete = number < len(lines)  # followed by a newline
            if line.strip() == b"":
                offset += len(line) + (1 if complete else 0)
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict) or not complete:
                    raise ValueError("incomplete record")
            except (ValueError, UnicodeDecodeError):
                if is_last:
                    warnings.warn(f"{self.path}: ignoring a corrupt last line {number} (an interrupted write)",
                                  ResultsWarning, stacklevel=2)
                    break
                raise ValueError(f"results file {str(self.path)!r} has a corrupt line {number} that is not the last: "
                                 f"allowed only complete JSON records") from None
            if record.get("experiment") != self.experiment:
                raise ValueError(f"results file {str(self.path)!r} holds runs of experiment "
                                 f"{record.get('experiment')!r}: allowed only {self.experiment!r}")
            records.append(record)
            offset += len(line) + 1
        self._good_bytes = offset
        return records

    def finished_keys(self) -> set[str]:
        return {r["key"] for r in self.load()}

    def append(self, record: dict) -> None:
        """Append one record as one line, then flush and fsync (cutting off a corrupt tail first)."""
        if record.get("experiment") != self.experiment:
            raise ValueError(f"record of experiment {record.get('experiment')!r}: allowed only {self.experiment!r}")
        line = json.dumps(record, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
        if self._good_bytes is None:
            self.load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            if fh.tell() != self._good_bytes:
                fh.truncate(self._good_bytes)
                fh.seek(self._good_bytes)
            fh.write(line.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
            self._good_bytes = fh.tell()

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
