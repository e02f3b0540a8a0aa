"""Training logs: metrics as JSON lines and CSV (per step and per epoch), TensorBoard, progress.

Files in the run folder (written by rank 0 only):

* ``metrics.jsonl`` — one JSON object per line, ``{"kind": "step", ...}`` every
  ``log_every`` optimizer steps and ``{"kind": "epoch", ...}`` at every epoch end;
* ``steps.csv`` and ``epochs.csv`` — the same rows as CSV tables;
* ``tensorboard/`` — event files when the ``tensorboard`` package is installed.

On ``--resume`` rows written after the checkpoint (work that is redone) are dropped,
so the logs read like those of an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..fileio import append_text, atomic_write_text

JSONL = "metrics.jsonl"
STEPS_CSV = "steps.csv"
EPOCHS_CSV = "epochs.csv"
TB_DIR = "tensorboard"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class _CsvTable:
    """A CSV file whose header grows when a row brings a new column (the file is then rewritten)."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] = []
        self.rows: list[dict[str, Any]] = []

    def reset(self, rows: list[dict[str, Any]]) -> None:
        self.rows = []
        self.columns = []
        for row in rows:
            for k in row:
                if k not in self.columns:
                    self.columns.append(k)
        self.rows = list(rows)
        self._rewrite()

    def _rewrite(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore")
        w.writeheader()
        for row in self.rows:
            w.writerow(row)
        atomic_write_text(self.path, buf.getvalue())

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new or not self.path.exists():
            self.columns += new
            self._rewrite()
            return
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore").writerow(row)
        append_text(self.path, buf.getvalue())


class MetricsLogger:
    """JSONL + CSV + optional TensorBoard; a no-op on ranks other than 0."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.tb = None
        self._tb_wanted = tensorboard
        if not enabled:
            return
        self.steps = _CsvTable(self.run_dir / STEPS_CSV)
        self.epochs = _CsvTable(self.run_dir / EPOCHS_CSV)

    def start(self, resume_step: int | None = None, resume_epoch: int | None = None) -> None:
        """Open the logs: fresh, or (resuming) keep the rows up to the checkpoint."""
        if not self.enabled:
            return
        path = self.run_dir / JSONL
        rows: list[dict[str, Any]] = []
        if resume_step is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut by the kill
                    continue
                if row.get("kind") == "step" and row.get("step", 0) <= resume_step:
                    rows.append(row)
                elif row.get("kind") == "epoch" and row.get("epoch", 0) <= (resume_epoch or 0):
                    rows.append(row)
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        self.steps.reset([_flat(r) for r in rows if r["kind"] == "step"])
        self.epochs.reset([_flat(r) for r in rows if r["kind"] == "epoch"])
        if self._tb_wanted:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except Exception:  # tensorboard not installed: optional
                self.tb = None
            else:
                self.tb = SummaryWriter(str(self.run_dir / TB_DIR),
                                        purge_step=(resume_step + 1) if resume_step is not None else None)

    def _write(self, row: dict[str, Any]) -> None:
        append_text(self.run_dir / JSONL, json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")

    def log_step(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"kind": "step", **row}
        self._write(row)
        self.steps.append(_flat(row))
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch", "kind"):
                    self.tb.add_scalar(f"train_step/{k}", v, row["step"])

    def log_epoch(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"kind": "epoch", **row}
        self._write(row)
        self.epochs.append(_flat(row))
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch", "kind"):
                    self.tb.add_scalar(f"epoch/{k}", v, row["epoch"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _flat(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "kind"}


def read_metrics(run_dir: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.jsonl`` (optionally only ``"step"`` or ``"epoch"`` rows)."""
    rows = [json.loads(line) for line in (Path(run_dir) / JSONL).read_text().splitlines() if line.strip()]
    return [r for r in rows if kind is None or r.get("kind") == kind]


# ----------------------------------------------------------------------- console
SHOWN = ("total", "rec", "mouth", "vel", "lip_closure", "adv", "club", "speaker_id")


class TrainProgress:
    """A rich progress bar over the epoch's steps with the running loss breakdown (terminal only)."""

    def __init__(self, console: Console, enabled: bool = True):
        self.console = console
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=console,
            disable=not self.enabled,
            transient=False,
        )
        self.task = None

    def __enter__(self) -> "TrainProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int = 0, stage: int = 2) -> None:
        self.start(f"epoch {epoch + 1}/{epochs}" + (" (stage 1)" if stage == 1 else ""), total, done)

    def start(self, desc: str, total: int, done: int = 0) -> None:
        """A new bar (replacing the previous one) of ``total`` steps."""
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(desc, total=total, completed=done, losses="")

    def update(self, losses: Mapping[str, float], advance: int = 1) -> None:
        if self.task is None:
            return
        text = " ".join(f"{k} {losses[k]:.4g}" for k in SHOWN if k in losses)
        self.progress.update(self.task, advance=advance, losses=text)

    def print(self, message: str) -> None:
        self.console.print(message, highlight=False, soft_wrap=True)


def epoch_line(row: Mapping[str, Any], epochs: int, best_value: float | None, best_epoch: int | None) -> str:
    """The one line printed at the end of an epoch: progress, losses, validation, the best so far."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"step {row['step']}"]
    if row.get("stage") == 1:
        parts.append("stage 1")
    for k in ("train_total", "train_rec", "val_objective", "val_lve"):
        if k in row:
            parts.append(f"{k} {row[k]:.4g}")
    if best_epoch is not None and best_value is not None:
        parts.append(f"best {best_value:.4g} @ {best_epoch}")
    return "  ".join(parts)
