"""Metric logs: CSV files, TensorBoard, a console progress bar and kept progress lines, by rank 0 only.

One CSV per phase (`train.csv` one row per optimiser step, `epoch.csv` one row per epoch or
validation) inside the run folder. Rows are appended and flushed as they come, so a crash loses
at most the row being written. On resume, rows beyond the resumed step are dropped first: they
belong to steps that will be trained again, and keeping them would duplicate steps in the log.
A metric that appears later than the first row widens the header (the file is rewritten).

TensorBoard is optional: without the `tensorboard` package only the CSV files are written.

On the console, the bar of an epoch is transient and shown only on a terminal, so every epoch also
leaves one kept line on stderr (`epoch_line`, printed by `callbacks.EpochLine`) that stays in logs.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from samadapt.engine.atomic import atomic_write_text, ensure_writable_dir

STEP_COLUMN = "step"


class CsvLog:
    """Append-only CSV with a header that grows when new metric names appear."""

    def __init__(self, path: Path, resume_after_step: int | None = None):
        self.path = path
        self.columns: list[str] = []
        rows = self._read_existing() if resume_after_step is not None else []
        if resume_after_step is not None:
            rows = [row for row in rows if _as_int(row.get(STEP_COLUMN)) <= resume_after_step]
        if rows:
            for row in rows:
                self._extend_columns(row)
            self._rewrite(rows)
        elif self.path.exists():
            self.path.unlink()

    def _read_existing(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            # A row cut short by a crash has fewer fields than the header: drop it.
            return [row for row in reader if None not in row.values() and len(row) == len(header)]

    def _extend_columns(self, row: Mapping) -> bool:
        new = [key for key in row if key not in self.columns]
        self.columns.extend(new)
        return bool(new)

    def _rewrite(self, rows: list[Mapping]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buffer.getvalue())

    def append(self, row: Mapping) -> None:
        if self._extend_columns(row) and self.path.exists():
            self._rewrite([*self._read_existing(), row])
            return
        is_new = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns, restval="")
            if is_new:
                writer.writeheader()
            writer.writerow(row)

    def rows(self) -> list[dict]:
        return self._read_existing()


class MetricLogger:
    """Per-step and per-epoch metrics to CSV (+ TensorBoard). Does nothing when `enabled` is False.

    `resume_after_step`: the optimiser step of the checkpoint a run resumes from (None for a new run).
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 resume_after_step: int | None = None):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self._csv: dict[str, CsvLog] = {}
        self._resume_after_step = resume_after_step
        self._writer = None
        if not enabled:
            return
        ensure_writable_dir(self.run_dir)
        for phase in ("train", "epoch"):
            self._csv[phase] = CsvLog(self.run_dir / f"{phase}.csv", resume_after_step)
        if tensorboard:
            self._writer = _tensorboard_writer(self.run_dir / "tensorboard", resume_after_step)

    def log(self, phase: str, step: int, metrics: Mapping[str, float], **columns) -> None:
        """One row in `<phase>.csv` (`step`, extra `columns` such as epoch, then the metrics)."""
        if not self.enabled:
            return
        if phase not in self._csv:
            self._csv[phase] = CsvLog(self.run_dir / f"{phase}.csv", self._resume_after_step)
        row = {STEP_COLUMN: int(step), **columns, **{k: _format(v) for k, v in metrics.items()}}
        self._csv[phase].append(row)
        if self._writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(float(value)):
                    self._writer.add_scalar(f"{phase}/{key}", float(value), int(step))

    def add_image(self, tag: str, image, step: int) -> None:
        """A CHW float image in [0, 1] to TensorBoard (e.g. MAE reconstructions); no-op without it."""
        if self.enabled and self._writer is not None:
            self._writer.add_image(tag, image, int(step))

    def add_figure(self, tag: str, figure, step: int) -> None:
        if self.enabled and self._writer is not None:
            self._writer.add_figure(tag, figure, int(step))

    def rows(self, phase: str) -> list[dict]:
        return self._csv[phase].rows() if phase in self._csv else []

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class ProgressBar:
    """A tqdm bar over one epoch showing loss and images/s; silent when disabled or not main."""

    def __init__(self, total: int | None, description: str, enabled: bool = True):
        self._bar = None
        self._start = time.perf_counter()
        self._images = 0
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, leave=False, file=sys.stderr,
                             dynamic_ncols=True, disable=None)  # None: off when stderr is no terminal

    def update(self, loss: float, images: int) -> float:
        """Advance one step; returns the images/s since the bar started."""
        self._images += images
        rate = self._images / max(1e-9, time.perf_counter() - self._start)
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4g}", img_s=f"{rate:.1f}", refresh=False)
            self._bar.update(1)
        return rate

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class ItemProgress:
    """Progress of a long per-item loop outside training (encoding a feature cache): a transient bar
    on a terminal; in a log, where a bar would leave nothing, a kept line every `every_s` seconds."""

    def __init__(self, total: int, description: str, enabled: bool = True, every_s: float = 30.0):
        self.total, self.description, self.every_s = total, description, every_s
        self.done = 0
        self._bar = None
        self._last_line = time.perf_counter()
        self._enabled = enabled
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=description, leave=False, file=sys.stderr, dynamic_ncols=True)

    def update(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)
        elif self._enabled and time.perf_counter() - self._last_line >= self.every_s:
            self._last_line = time.perf_counter()
            note(f"{self.description}: {self.done}/{self.total}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def note(message: str) -> None:
    """A kept progress line on stderr (stdout is the command's result)."""
    print(message, file=sys.stderr, flush=True)


def metric_label(name: str) -> str:
    """`val_dice` -> `val Dice`: metric keys as a reader writes them."""
    return " ".join("Dice" if word == "dice" else word for word in name.split("_"))


def epoch_line(epoch: int, epochs: int, loss: float | None, validation: Mapping[str, float],
               monitor: str | None, seconds: float) -> str:
    """`epoch 3/10  loss 0.4123  val Dice 0.6512  (12.3 s)`: the line kept per epoch in every log."""
    parts = [f"epoch {epoch}/{epochs}"]
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    if monitor is not None and monitor in validation:
        parts.append(f"{metric_label(monitor)} {validation[monitor]:.4f}")
    return "  ".join(parts) + f"  ({seconds:.1f} s)"


def _tensorboard_writer(folder: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard not installed: CSV logs only
        return None
    # purge_step hides events past the resumed step, matching what the CSV files do.
    return SummaryWriter(log_dir=str(folder), purge_step=None if purge_step is None else purge_step + 1)


def _format(value) -> str | int | float:
    if isinstance(value, float):
        return repr(value)  # full precision, so a resumed run's log compares equal
    return value


def _as_int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 << 62  # unparsable step: treat as "after" so it is dropped
