"""Progress display for long stages: a rich bar on a terminal, plain log lines otherwise.

Plain lines keep logs readable on machines without a terminal (the GPU box, CI) and need no
``rich`` (the train stage must run with torch and numpy alone).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

__all__ = ["Progress", "progress"]


class Progress:
    """A counter of ``total`` work units with a description; see :func:`progress`."""

    def __init__(self, total: float, label: str, enabled: bool = True) -> None:
        self.total, self.label, self.enabled = total, label, enabled
        self.done = 0.0
        self._bar = None
        self._start = time.perf_counter()
        self._last_print = 0.0
        if enabled and sys.stderr.isatty():
            try:
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )
                from rich.progress import Progress as RichProgress
            except ImportError:  # rich is optional: fall back to lines
                return
            self._bar = RichProgress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.description}"))
            self._task = self._bar.add_task("", total=total)
            self._bar.start()

    def advance(self, n: float = 1, note: str = "") -> None:
        """Count ``n`` more units done; ``note`` says what is running now."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, description=note)
            return
        now = time.perf_counter()
        if now - self._last_print >= 5.0 or self.done >= self.total:  # a line every 5 s at most
            self._last_print = now
            pct = 100.0 * self.done / max(self.total, 1e-9)
            print(f"[{self.label}] {self.done:.0f}/{self.total:.0f} ({pct:.0f}%) "
                  f"{now - self._start:.0f}s {note}", file=sys.stderr, flush=True)

    def log(self, text: str) -> None:
        """A message line printed above the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


@contextmanager
def progress(total: float, label: str, enabled: bool = True):
    """Context manager yielding a :class:`Progress` that is closed on exit."""
    bar = Progress(total, label, enabled)
    try:
        yield bar
    finally:
        bar.close()
