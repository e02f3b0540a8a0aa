"""Helpers shared by the corpus converters (BIWI, VOCASET)."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import soundfile as sf

from ..fileio import atomic_path

#: Where the shipped region files live (copies of the upstream files + LICENSE/PROVENANCE).
REGIONS_PACKAGE_DIR = Path(__file__).resolve().parent / "regions"


def shipped_region(dataset: str, filename: str) -> Path:
    return REGIONS_PACKAGE_DIR / dataset / filename


@dataclass
class SubjectSummary:
    subject: str
    written: int = 0
    skipped: int = 0
    failed: int = 0
    frames: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class PrepareSummary:
    """What a converter did, per subject; ``table()`` renders it with rich."""

    dataset: str
    out_dir: Path
    subjects: dict[str, SubjectSummary] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)

    def subject(self, name: str) -> SubjectSummary:
        return self.subjects.setdefault(name, SubjectSummary(name))

    @property
    def written(self) -> int:
        return sum(s.written for s in self.subjects.values())

    @property
    def skipped(self) -> int:
        return sum(s.skipped for s in self.subjects.values())

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.subjects.values())

    def table(self):
        from rich.table import Table

        t = Table(title=f"{self.dataset} -> {self.out_dir}")
        t.add_column("subject")
        t.add_column("written", justify="right")
        t.add_column("skipped (done)", justify="right")
        t.add_column("failed", justify="right")
        t.add_column("frames written", justify="right")
        t.add_column("notes")
        for s in self.subjects.values():
            t.add_row(s.subject, str(s.written), str(s.skipped), str(s.failed), str(s.frames), "; ".join(s.notes))
        t.add_row("[b]total[/b]", str(self.written), str(self.skipped), str(self.failed),
                  str(sum(s.frames for s in self.subjects.values())), "")
        return t




@contextlib.contextmanager
def progress_bar(progress, total: int, description: str) -> Iterator[Callable[[str], None]]:
    """Yield ``advance(label)``. ``progress``: False, True (rich bar on stderr) or a callback
    ``f(label, done, total)``."""
    done = [0]
    if callable(progress):
        def advance(label: str) -> None:
            done[0] += 1
            progress(label, done[0], total)

        yield advance
        return
    if not progress:
        yield lambda label: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[label]}"), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,  # no bar frames in logs
    ) as bar:
        task = bar.add_task(description, total=total, label="")

        def advance(label: str) -> None:
            bar.update(task, advance=1, label=label)

        yield advance


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array, dtype=np.float32))


def save_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wave, int(sample_rate), subtype="PCM_16", format="WAV")


def copy_file(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
