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


def _write_error(exc: Exception, path: Path) -> Exception:
    """The OSError (full disk, file-size limit) behind a failed ``savefig``, naming ``path``: matplotlib's PDF
    writer, cleaning up after a failed write, raises an unrelated error (``AttributeError: 'Stream' object has no
    attribute 'pos'``) whose context holds the OSError. Any other error is returned unchanged."""
    seen = exc
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    if seen is None:
        return exc
    return OSError(seen.errno, seen.strerror, str(path)) if seen.errno is not None else seen


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Write ``stem``.pdf and ``stem``.png atomically with fixed metadata; close the figure; return the paths."""
    stem = Path(stem)
    paths = []
    with matplotlib.rc_context(STYLE):
        for suffix, metadata in ((".pdf", _PDF_METADATA), (".png", _PNG_METADATA)):
            path = stem.with_suffix(suffix)
            with atomic_path(path, suffix=suffix) as tmp:
                try:
                    fig.savefig(tmp, format=suffix[1:], metadata=metadata)
                except Exception as exc:
                    error = _write_error(exc, path)
                    if error is exc:
                        raise
                    raise error from exc
            paths.append(path)
    plt.close(fig)
    return paths
