"""Command-line conventions shared by ``python -m theory``, ``python -m construct`` and ``python -m experiments``.

- Bad input gets one line on stderr naming the parameter, the value and what is allowed, and exit status 2
  (no traceback): argparse errors and any ``ValueError`` raised by library code.
- Results are returned by library functions as data; the CLI prints them in one place, as a table/text or, with
  ``--json``, as one JSON document on stdout.
- Exhausted resources and unusable paths (``OSError``: a read-only or missing directory, a parent that is a file,
  a name too long, a full disk, a file-size limit) get one line naming the path and the reason, exit status 2; the
  writers of :mod:`theory.atomic` never leave a partial file behind.
- A closed standard output (``... --json | head -c1``) ends the command quietly with status 141 (128 + SIGPIPE,
  what a shell reports for a writer killed by a closed pipe); a full one (``> /dev/full``) gets one line, status 2.
- SIGTERM is handled like SIGINT (Ctrl-C): the exception unwinds the command, so temporary files are removed;
  status 143 (128 + SIGTERM) and "terminated" on stderr (SIGINT: 130 and "interrupted").
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import sys
import threading
from typing import Any, Callable, Sequence

import numpy as np

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE
EXIT_TERMINATED = 143  # 128 + SIGTERM

_REQUIRED = "the following arguments are required: "


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are a single line on stderr and exit status 2; a missing
    sub-command is reported as ``missing command: allowed a, b, c``."""

    def error(self, message: str):  # noqa: D401 - argparse API
        commands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
        if commands is not None and message.startswith(_REQUIRED):
            missing = message[len(_REQUIRED):].split(", ")
            if commands.dest in missing or commands.metavar in missing:
                message = f"missing command: allowed {', '.join(commands.choices)}"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


class Terminated(KeyboardInterrupt):
    """Raised in the main thread when the process receives SIGTERM, so that it unwinds like Ctrl-C (SIGINT):
    ``finally`` blocks run and :mod:`theory.atomic` removes its temporary file."""


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While active (main thread only, and only if SIGTERM has its default action), SIGTERM raises
    :class:`Terminated`. A forked child that inherited the handler dies of SIGTERM as it would have without it."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # e.g. a worker of a fork-started process pool
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


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


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def os_error_message(exc: OSError) -> str:
    """One line for an ``OSError``: the path(s) it names and the reason (``'out/t.npz': Permission denied``)."""
    reason = exc.strerror or _first_line(exc)
    if exc.filename is None:
        return reason
    names = repr(os.fsdecode(exc.filename)) if isinstance(exc.filename, (str, bytes, os.PathLike)) else repr(exc.filename)
    if exc.filename2 is not None:
        names += f" -> {os.fsdecode(exc.filename2)!r}"
    return f"{names}: {reason}"


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null, so that the interpreter's final flush of a closed or full standard
    output does not print 'Exception ignored ...' after the command has reported (or deliberately not reported)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured by a test)
        pass


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` with the conventions of this module (see its docstring) and return the exit status:
    ``ValueError`` (bad input, :class:`theory.memory.MemoryBudgetError`) and ``OSError`` (paths, disk) → one stderr
    line and 2; closed stdout → 141, quietly; SIGTERM → 143; Ctrl-C → 130."""
    try:
        with sigterm_as_interrupt():
            status = int(main(argv) or 0)
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                raise
            except OSError as exc:
                _silence_stdout()
                print(f"error: standard output: {exc.strerror or _first_line(exc)}", file=sys.stderr)
                return EXIT_USAGE
            return status
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except ValueError as exc:
        print(f"error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        if exc.errno is None:  # raised by this project with its own one-line message
            print(f"error: {_first_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        message = os_error_message(exc)
        if exc.filename is None and exc.errno in (errno.ENOSPC, errno.EIO, errno.EFBIG):
            # the project's file writers (theory.atomic) always name their file, so this is standard output
            _silence_stdout()
            message = f"standard output: {message}"
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
