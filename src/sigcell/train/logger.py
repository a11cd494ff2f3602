"""Metric records: one JSON line per logged step, TensorBoard scalars, and a terminal progress bar."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """Writes ``<out_dir>/metrics.jsonl`` (+ ``<out_dir>/tensorboard/``) and draws a progress bar.

    Only the main rank gets an enabled logger; the others get ``enabled=False`` and do nothing.
    Records are appended, so a resumed run continues the same file; records of steps after
    ``start_step`` (logged after the checkpoint a resumed run starts from, then lost) are dropped first,
    so no step appears twice.
    """

    def __init__(self, out_dir: str | Path, total_steps: int, enabled: bool = True, tensorboard: bool = True,
                 progress: bool = True, start_step: int = 0) -> None:
        self.enabled = enabled
        self._file = None
        self._tb = None
        self._progress = None
        if not enabled:
            return
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        _drop_records_after(out / "metrics.jsonl", start_step)
        self._file = open(out / "metrics.jsonl", "a")  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out / "tensorboard"))
        if progress and sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn(), TextColumn("{task.description}"))
            self._task = self._progress.add_task("", total=total_steps, completed=start_step)
            self._progress.start()

    def log(self, step: int, metrics: dict[str, Any], kind: str = "train") -> None:
        """Record ``metrics`` of ``step`` (``kind`` prefixes the TensorBoard tags: train/..., val/...)."""
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, "kind": kind, **clean}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def advance(self, step: int, loss: float, lr: float, val_loss: float | None = None) -> None:
        """Move the progress bar to ``step`` and show the latest numbers."""
        if self._progress is None:
            return
        text = f"loss {loss:.4f}  lr {lr:.2e}" + (f"  val {val_loss:.4f}" if val_loss is not None else "")
        self._progress.update(self._task, completed=step, description=text)

    def message(self, text: str) -> None:
        """A line for the user (printed above the progress bar)."""
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._tb is not None:
            self._tb.close()
        if self._file is not None:
            self._file.close()
        self._file = self._tb = self._progress = None


def _drop_records_after(path: Path, step: int) -> None:
    """Rewrite ``path`` (atomically) without the records of steps after ``step``; unparsable lines stay."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)

    def keep(line: str) -> bool:
        try:
            record = json.loads(line)
        except ValueError:
            return True
        later = isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step
        return not later

    kept = [line for line in lines if keep(line)]
    if len(kept) == len(lines):
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)
