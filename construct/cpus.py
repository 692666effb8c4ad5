"""The number of CPUs this process may run on: the default thread count of the subset-sum solver
(:mod:`construct.subset_sum`) and of block-wise source drawing (:mod:`construct.source`)."""
from __future__ import annotations

import os

__all__ = ["available_cpus"]


def available_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where the platform has none), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
