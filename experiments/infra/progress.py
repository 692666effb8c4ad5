"""Progress of a sweep on stderr: a bar on a terminal, plain lines elsewhere (logs, ``nohup``, notebooks).

``--progress auto|bar|lines|none``: ``auto`` = ``bar`` when stderr is a terminal, else ``lines``. In ``lines``
mode a line is written when the sweep starts, whenever a run fails, at least every ``interval_s`` seconds while
runs are in progress (a heartbeat thread, so a single long run still shows signs of life) and when it ends:

    e1: 3/8 runs done (0 failed, 2 running), 41 s elapsed, ~68 s left, last loss 0.0123
"""
from __future__ import annotations

import sys
import threading
import time

from theory.validation import check_choice

__all__ = ["PROGRESS_MODES", "Progress", "resolve_progress"]

PROGRESS_MODES = ("auto", "bar", "lines", "none")
LINE_INTERVAL_S = 30.0


def resolve_progress(mode: str | bool | None, stream=None) -> str:
    """``auto``/None → ``bar`` on a terminal else ``lines``; True → ``bar``; False → ``none``."""
    if mode is True:
        return "bar"
    if mode is False:
        return "none"
    mode = "auto" if mode is None else check_choice(mode, "progress", PROGRESS_MODES)
    if mode == "auto":
        stream = sys.stderr if stream is None else stream
        return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"
    return mode


class Progress:
    """Counts finished / failed runs of a sweep of ``total`` runs (``done`` of them finished before)."""

    def __init__(self, name: str, total: int, done: int, mode: str | bool | None = "auto",
                 interval_s: float = LINE_INTERVAL_S, stream=None, running: int | None = 1):
        self.name, self.total, self.initial = name, total, done
        self.stream = sys.stderr if stream is None else stream
        self.mode = resolve_progress(mode, self.stream)
        self.interval_s = float(interval_s)
        self.done, self.failed, self.running_cap = done, 0, running
        self.loss: float | None = None
        self.start = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=done, desc=name, unit="run", dynamic_ncols=True, file=self.stream)
        elif self.mode == "lines":
            self._line(f"{total} runs, {done} already finished")
            self._thread = threading.Thread(target=self._heartbeat, name="sweep-progress", daemon=True)
            self._thread.start()

    # -- events ---------------------------------------------------------------------------------------------
    def on_loss(self, loss: float) -> None:
        self.loss = float(loss)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.3g}", refresh=True)

    def finished(self, ok: bool = True, message: str | None = None) -> None:
        with self._lock:
            self.done += 1
            self.failed += 0 if ok else 1
        if self._bar is not None:
            self._bar.update(1)
            if not ok and message:
                self._bar.write(f"{self.name}: {message}", file=self.stream)
        elif self.mode == "lines" and not ok and message:
            self._line(message)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._line(self.status())
        if self._bar is not None:
            self._bar.close()

    # -- text -----------------------------------------------------------------------------------------------
    def status(self) -> str:
        elapsed = time.monotonic() - self.start
        ran = self.done - self.initial
        remaining = self.total - self.done
        text = f"{self.done}/{self.total} runs done ({self.failed} failed"
        if remaining and self.running_cap:
            text += f", {min(remaining, self.running_cap)} running"
        text += f"), {elapsed:.0f} s elapsed"
        if ran and remaining:
            text += f", ~{elapsed / ran * remaining:.0f} s left"
        if self.loss is not None:
            text += f", last loss {self.loss:.3g}"
        return text

    def _line(self, text: str) -> None:
        with self._lock:
            print(f"{self.name}: {text}", file=self.stream, flush=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._line(self.status())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
