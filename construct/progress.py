"""Progress of long construct builds on stderr (never on stdout): one step per stage (drawing the source, each
target layer's subset sums or edge picks, the certificate, the sampled error).

Modes (``--progress``): ``bar`` (a tqdm bar), ``lines`` (one plain line per finished step, with the elapsed time),
``none``; ``auto`` is ``bar`` when stderr is a terminal and ``lines`` otherwise. Library functions take an optional
reporter (``progress=None`` reports nothing) and call :meth:`Progress.step` after each stage.
"""
from __future__ import annotations

import sys
import time

__all__ = ["PROGRESS_MODES", "Progress", "make_progress"]

PROGRESS_MODES = ("auto", "bar", "lines", "none")


class Progress:
    """Counts steps of one build and shows them on ``stream`` (stderr) as a tqdm bar or as plain lines."""

    def __init__(self, mode: str, desc: str, stream=None):
        if mode not in ("bar", "lines", "none"):
            raise ValueError(f"progress={mode!r} is not allowed: allowed one of bar, lines, none")
        self.mode = mode
        self.desc = desc
        self.stream = sys.stderr if stream is None else stream
        self.total = 0
        self.done = 0
        self._t0 = time.perf_counter()
        self._bar = None

    def start(self, total: int) -> None:
        """Announce ``total`` steps (may be called again when the total becomes known)."""
        self.total = int(total)
        if self.mode == "bar":
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(total=self.total, desc=self.desc, file=self.stream, unit="step", leave=False)
            else:
                self._bar.total = self.total
                self._bar.refresh()

    def step(self, label: str) -> None:
        """One step finished; ``label`` says which (e.g. "layer 2 of 3: 1,234 subset sums")."""
        self.done += 1
        if self.mode == "bar" and self._bar is not None:
            self._bar.set_postfix_str(label, refresh=False)
            self._bar.update(1)
        elif self.mode == "lines":
            total = f"/{self.total}" if self.total else ""
            print(f"{self.desc}: [{self.done}{total}] {label} ({time.perf_counter() - self._t0:.1f} s)",
                  file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def make_progress(mode: str, desc: str, stream=None) -> Progress:
    """The reporter for a ``--progress`` value (``auto``: ``bar`` on a terminal, else ``lines``)."""
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress={mode!r} is not allowed: allowed one of {', '.join(PROGRESS_MODES)}")
    stream = sys.stderr if stream is None else stream
    if mode == "auto":
        isatty = getattr(stream, "isatty", None)
        mode = "bar" if isatty is not None and isatty() else "lines"
    return Progress(mode, desc, stream)
