"""Command-line conventions shared by ``python -m theory``, ``python -m construct`` and ``python -m experiments``.

- Bad input gets one line on stderr naming the parameter, the value and what is allowed, and exit status 2
  (no traceback): argparse errors and any ``ValueError`` raised by library code.
- Results are returned by library functions as data; the CLI prints them in one place, as a table/text or, with
  ``--json``, as one JSON document on stdout.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Callable, Sequence

import numpy as np

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are a single line on stderr and exit status 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _to_jsonable(obj: Any):
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if hasattr(obj, "to_dict"):
        return _to_jsonable(obj.to_dict())
    return obj


def dumps(obj: Any) -> str:
    """JSON text of ``obj`` (numpy arrays and scalars converted; non-finite floats as null/"inf")."""
    return json.dumps(_to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``; turn ``ValueError``/``FileNotFoundError`` into one stderr line and exit status 2."""
    try:
        return int(main(argv) or 0)
    except (ValueError, FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
