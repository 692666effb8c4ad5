"""Write-then-rename file output, so a failed or interrupted write never leaves a partial file behind.

The temporary file lives next to the destination and is named ``.<name>.er-tickets-tmp-<pid>-<random><suffix>``
(``<pid>`` = the writing process), so it cannot be mistaken for anything else. It is removed when the write fails,
on Ctrl-C and — through :func:`theory.cli.run_main`, which turns SIGTERM into the same exception — on SIGTERM.
A SIGKILL (or a power cut) cannot be caught: the next write into the same directory removes the temporary files
of this naming scheme whose process no longer exists (:func:`remove_stale_temporaries`), and only those.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import Iterator

__all__ = ["TEMP_MARKER", "atomic_path", "atomic_write_bytes", "atomic_write_text", "remove_stale_temporaries",
           "temporary_name"]

#: The part of every temporary file name that says it is ours.
TEMP_MARKER = ".er-tickets-tmp-"
_TEMP_RE = re.compile(r"^\..+" + re.escape(TEMP_MARKER) + r"(?P<pid>[0-9]{1,10})-(?P<rand>[0-9a-f]{16})(\.[A-Za-z0-9]{1,8})?$")


def temporary_name(dest_name: str, suffix: str = "") -> str:
    """``.<dest_name>.er-tickets-tmp-<pid>-<16 hex digits><suffix>`` (``suffix`` keeps an extension that writers
    such as ``np.savez`` or matplotlib insist on)."""
    return f".{dest_name}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(8)}{suffix}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # never ours to judge
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_path` in ``directory`` whose writing process is gone (a writer
    killed by SIGKILL leaves them); returns the removed paths. Files of live processes, and every file not named
    by :func:`temporary_name`, are left alone. Errors (a read-only directory, a race with another cleaner) are
    ignored: cleaning is best effort and never fails a write."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_RE.match(entry.name)
        if match is None or int(match.group("pid")) == os.getpid():
            continue
        try:
            if not entry.is_file(follow_symlinks=False) or _pid_alive(int(match.group("pid"))):
                continue
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the destination's directory; on success fsync it and rename it onto ``path``.

    On any exception (Ctrl-C and, under :func:`theory.cli.run_main`, SIGTERM included) the temporary file is
    removed and ``path`` is left untouched; an ``OSError`` without a file name (a write that hit a full disk or a
    file-size limit) is re-raised naming ``path``. Stale temporary files of dead writers in the directory are
    removed first (:func:`remove_stale_temporaries`). ``suffix`` lets writers that insist on an extension
    (``np.savez`` adds ``.npz``, matplotlib infers the format) keep it.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest.parent)
    tmp_path = dest.parent / temporary_name(dest.name, suffix or ".tmp")
    if len(os.fsencode(tmp_path.name)) > 255 and len(os.fsencode(dest.name)) <= 255:
        # a long destination name: shorten the temporary one (it never becomes the final name)
        tmp_path = dest.parent / temporary_name(dest.name[:120], suffix or ".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~umask)
        os.close(fd)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    except OSError as exc:
        if exc.errno is not None and (exc.filename is None or os.fspath(exc.filename) == os.fspath(tmp_path)):
            raise OSError(exc.errno, exc.strerror, str(dest)) from None  # name the file the user asked for
        raise
    finally:
        with contextlib.suppress(OSError):
            if tmp_path.exists():
                tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
