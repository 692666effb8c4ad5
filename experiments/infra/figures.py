"""Reproducible figure output: matplotlib Agg with mathtext (no LaTeX), PDF + PNG byte-identical across reruns.

Fixed metadata (no creation date, fixed producer/software), fixed svg hash salt, written atomically with
:func:`theory.atomic.atomic_path`.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from theory.atomic import atomic_path  # noqa: E402

__all__ = ["STYLE", "new_figure", "save_figure"]

STYLE = {
    "text.usetex": False,
    "svg.hashsalt": "er-tickets",
    "pdf.fonttype": 42,
    "font.size": 9,
    "axes.titlesize": 9,
    "legend.fontsize": 7,
    "figure.dpi": 100,
    "savefig.dpi": 150,
}

_PDF_METADATA = {"CreationDate": None, "ModDate": None, "Producer": "er-tickets (matplotlib)", "Creator": None}
_PNG_METADATA = {"Software": None}


def new_figure(ncols: int = 1, nrows: int = 1, width: float = 3.4, height: float = 2.8, **kwargs):
    """A figure with ``nrows × ncols`` axes of the given per-panel size (inches), in :data:`STYLE`."""
    with matplotlib.rc_context(STYLE):
        return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False,
                            constrained_layout=True, **kwargs)


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write ``stem``.pdf and ``stem``.png atomically with fixed metadata; close the figure; return the paths."""
    stem = Path(stem)
    paths = []
    with matplotlib.rc_context(STYLE):
        for suffix, metadata in ((".pdf", _PDF_METADATA), (".png", _PNG_METADATA)):
            path = stem.with_suffix(suffix)
            with atomic_path(path, suffix=suffix) as tmp:
                fig.savefig(tmp, format=suffix[1:], metadata=metadata)
            paths.append(path)
    plt.close(fig)
    return paths
