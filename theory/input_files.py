"""Files a user names as input: refused in one line unless they are regular files, and sized before reading.

Every command of the three packages that reads a user's file goes through :func:`check_input_file` first: a FIFO
would block the reader forever and a device such as ``/dev/zero`` never ends, so anything but a regular file (or a
symbolic link to one) is refused *before* it is opened. :func:`npz_headers` reads the ``.npy`` header of every
member of an ``.npz`` archive — shape and dtype, a few hundred bytes each — without reading the arrays, so a
command can estimate what loading will allocate (:func:`theory.memory.check_memory`) before it loads anything;
:func:`read_json_file` does the same for JSON (file size × the worst-case bytes per character of the parsed
Python objects) and turns a nesting too deep for the parser into a one-line ``ValueError``.
"""
from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from theory.memory import check_memory

__all__ = ["check_input_file", "NpyHeader", "npz_headers", "npz_bytes", "read_json_file", "JSON_BYTES_PER_CHAR"]

#: Worst case of the Python objects json.loads builds per character of input: "[[[[…]]]]" makes one empty list
#: (56 bytes) plus its pointer in the parent (8 bytes) per character.
JSON_BYTES_PER_CHAR = 64

_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def check_input_file(path, name: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it names a regular file (symbolic links followed).

    Raises ``FileNotFoundError`` when nothing is there and ``ValueError`` for a FIFO, a device, a socket, a
    directory or a path that cannot be examined — each with one line naming ``name`` and the path. Nothing is
    opened: ``os.stat`` never blocks on a FIFO.
    """
    p = Path(os.fspath(path))
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{name}={str(p)!r}: no such file: allowed an existing regular file") from None
    except OSError as exc:
        raise ValueError(f"{name}={str(p)!r} cannot be examined ({exc.strerror or type(exc).__name__}): "
                         "allowed a readable regular file") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((label for test, label in _KINDS if test(st.st_mode)), "not a regular file")
        raise ValueError(f"{name}={str(p)!r} is {kind}: allowed a regular file")
    return p


@dataclass(frozen=True)
class NpyHeader:
    """Header of one ``.npy`` member: shape, dtype, and ``nbytes`` = entries × itemsize (what loading allocates)."""

    shape: tuple
    dtype: np.dtype
    fortran_order: bool

    @property
    def entries(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.entries * max(1, self.dtype.itemsize)


def _read_header(fp, where: str) -> NpyHeader:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        elif version == (3, 0) and hasattr(fmt, "_read_array_header"):
            shape, fortran, dtype = fmt._read_array_header(fp, version)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, zipfile.BadZipFile, RecursionError,
            MemoryError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{where}: not a valid .npy header ({text[:200]})") from None
    return NpyHeader(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran))


def npz_headers(path, name: str = "file") -> dict[str, NpyHeader]:
    """{member name without ``.npy``: :class:`NpyHeader`} of an ``.npz`` archive, read from the headers alone.

    ``path`` must be a regular file (:func:`check_input_file`). Raises a one-line ``ValueError`` when it is not a
    zip archive or a member's header is malformed; members that are not ``.npy`` files are listed with no header
    (they are refused by ``np.load`` later, or ignored by the caller).
    """
    p = check_input_file(path, name)
    out: dict[str, NpyHeader] = {}
    try:
        with zipfile.ZipFile(p) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[: -len(".npy")]
                with archive.open(info) as fp:
                    out[key] = _read_header(fp, f"{p}: member {info.filename}")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{name}={str(p)!r} is not a valid npz file ({text[:200]})") from None
    return out


def npz_bytes(headers: dict[str, NpyHeader], keys=None) -> int:
    """Bytes that loading the members ``keys`` (default all) allocates, from their headers."""
    chosen = headers if keys is None else {k: headers[k] for k in keys if k in headers}
    return int(sum(h.nbytes for h in chosen.values()))


def read_json_file(path, name: str, *, budget: int | None = None, flag: str = "--max-memory"):
    """Parse the JSON file ``path`` after checking that it is a regular file and that its parsed objects fit the
    memory budget (size × :data:`JSON_BYTES_PER_CHAR`, :func:`theory.memory.check_memory`).

    One-line ``ValueError`` for text that is not UTF-8 JSON or is nested too deeply for the parser.
    """
    p = check_input_file(path, name)
    size = p.stat().st_size
    check_memory(size * JSON_BYTES_PER_CHAR, f"reading {name}={str(p)!r} ({size} bytes of JSON)", budget, flag)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}={str(p)!r} cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"{name}={str(p)!r} is nested too deeply for the JSON parser") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers beyond Python's digit limit
        raise ValueError(f"{name}={str(p)!r} is not valid JSON ({str(exc).splitlines()[0]})") from None
