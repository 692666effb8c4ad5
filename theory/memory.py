"""The memory guard shared by the three packages: estimate before allocating, refuse beyond a budget.

Every command that allocates in proportion to its input (sources, sampled inputs, sweeps, benches, files it
reads) computes an estimate of the bytes it will need *before* allocating, and calls :func:`check_memory`.
Beyond the budget it raises :class:`MemoryBudgetError` (a ``ValueError``), which the command lines turn into
one line on stderr and exit status 2 (see :mod:`theory.cli`), naming the estimate and the flag to change.

The budget is ``--max-memory`` where a command has it (bytes, or a size such as ``8G``, ``512M``), and by
default :data:`DEFAULT_FRACTION` of the memory the machine has available when the command starts.
"""
from __future__ import annotations

import math
import os
import re

__all__ = [
    "DEFAULT_FRACTION",
    "MemoryBudgetError",
    "available_memory_bytes",
    "check_memory",
    "default_memory_budget",
    "format_bytes",
    "parse_memory",
]

#: Fraction of the available memory a command may plan to use when no ``--max-memory`` is given.
DEFAULT_FRACTION = 0.8

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}


class MemoryBudgetError(ValueError):
    """A command would need more memory than its budget; the message names the estimate and the flag."""


def available_memory_bytes() -> int:
    """Bytes of memory available to new allocations now: ``MemAvailable`` of ``/proc/meminfo`` (on systems
    without it, the physical memory from ``os.sysconf``), lowered to what this process's address-space limit
    (``RLIMIT_AS``, e.g. ``ulimit -v``) leaves above its current virtual size, where such a limit is set."""
    return min(_system_available_bytes(), _address_space_left())


def _system_available_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _address_space_left() -> int:
    """RLIMIT_AS (soft) minus the current virtual size (VmSize), or a huge number without a limit."""
    unlimited = 2**62
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return unlimited
    if soft == resource.RLIM_INFINITY or soft < 0:
        return unlimited
    used = 0
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmSize:"):
                    used = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    return max(0, int(soft) - used)


def default_memory_budget() -> int:
    """The default budget: :data:`DEFAULT_FRACTION` of :func:`available_memory_bytes`."""
    return int(DEFAULT_FRACTION * available_memory_bytes())


def format_bytes(n: float) -> str:
    """``1.5e9`` → ``'1.4 GiB'``; infinite or huge values are written as such."""
    if not math.isfinite(n):
        return "an unbounded amount"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def parse_memory(text, name: str = "max_memory") -> int:
    """Parse a memory size: bytes (``"2e9"``, ``2000000000``) or with a binary unit (``"8G"``, ``"512MiB"``).

    Raises a one-line ``ValueError`` naming ``name`` for anything that is not a finite size > 0.
    """
    if isinstance(text, bool):
        raise ValueError(f"{name}={text!r} is malformed: allowed a size > 0 such as 8G, 512M or 2e9 (bytes)")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9.eE+\-]+)\s*([A-Za-z]*)\s*", str(text))
        if not match or match.group(2).upper() not in _UNITS:
            raise ValueError(f"{name}={text!r} is malformed: allowed a size > 0 such as 8G, 512M or 2e9 (bytes)")
        try:
            value = float(match.group(1))
        except ValueError:
            raise ValueError(f"{name}={text!r} is malformed: allowed a size > 0 such as 8G, 512M or 2e9 (bytes)") from None
        unit = match.group(2).upper()
    total = value * _UNITS[unit]
    if not math.isfinite(total) or total <= 0 or total >= 2.0**63:
        raise ValueError(f"{name}={text!r} is out of range: allowed a finite size > 0 and below 2^63 bytes")
    return int(total)


def check_memory(estimate_bytes: float, what: str, budget: int | None = None, flag: str = "--max-memory") -> float:
    """Refuse (raise :class:`MemoryBudgetError`) when ``estimate_bytes`` exceeds ``budget``.

    ``what`` says what would be allocated ("a source of 2.2e9 weights at 1.0 byte per weight"); ``budget``
    defaults to :func:`default_memory_budget`; ``flag`` is the option the user can change. A non-finite or
    negative estimate is refused too (it means the size itself overflowed). Returns the estimate.
    """
    limit = default_memory_budget() if budget is None else int(budget)
    est = float(estimate_bytes)
    if math.isnan(est) or est < 0 or est > limit:
        origin = "" if budget is not None else f" ({DEFAULT_FRACTION:.0%} of the available memory)"
        raise MemoryBudgetError(
            f"{what} needs about {format_bytes(est)} of memory, over the budget of {format_bytes(limit)}{origin}: "
            f"reduce the size or raise {flag}")
    return est
