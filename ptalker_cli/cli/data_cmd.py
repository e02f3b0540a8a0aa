"""``ptalker data ...``: prepare BIWI / VOCASET, check a dataset folder.

Thin wrappers over :mod:`ptalker_cli.data`; mounted by the main app with
``app.add_typer(data_app, name="data")``. Errors are raised as ``PtalkerError``
(one line) for the main app to print.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .. import interrupts
from .common import GuardedTyper

data_app = GuardedTyper(help="Prepare and check talking-head datasets (BIWI, VOCASET, your own).",
                       no_args_is_help=True)
prepare_app = GuardedTyper(help="Convert a raw corpus to the standard dataset layout.", no_args_is_help=True)
data_app.add_typer(prepare_app, name="prepare")

_console = Console()
#: what an interrupted (or failed) preparation leaves: finished files are complete and skipped next time
_RESUMABLE = "the files finished so far are kept; run the same command again to go on"


def _regions_arg(lip: Optional[Path], upper: Optional[Path], no_regions: bool, default="default"):
    if no_regions:
        return None
    if lip is None and upper is None:
        return default
    return {k: v for k, v in (("lip", lip), ("upper_face", upper)) if v is not None}


@prepare_app.command("biwi")
def prepare_biwi_cmd(
    raw_dir: Path = typer.Argument(..., help="Extracted BIWI corpus: faces/, rigid_scans/, audio/ (or videos/)."),
    out_dir: Path = typer.Argument(..., help="Output dataset folder."),
    subject: Optional[list[str]] = typer.Option(None, "--subject", "-s", help="Only this subject (repeatable)."),
    lip_region: Optional[Path] = typer.Option(None, help="Own lip region file (default: shipped CodeTalker lve.txt)."),
    upper_face_region: Optional[Path] = typer.Option(None, help="Own upper-face region file "
                                                     "(default: shipped fdd.txt)."),
    no_regions: bool = typer.Option(False, "--no-regions", help="Write no region files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo files that already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """BIWI (.vl frames + rigid_scans + audio) -> vertices_npy at 25 fps, wav at 16 kHz."""
    from ..data.biwi import prepare_biwi

    interrupts.set_note(_RESUMABLE)
    summary = prepare_biwi(
        raw_dir, out_dir, subjects=subject or None,
        regions=_regions_arg(lip_region, upper_face_region, no_regions),
        overwrite=overwrite, progress=not quiet,
    )
    _print_summary(summary)


@prepare_app.command("vocaset")
def prepare_vocaset_cmd(
    raw_dir: Path = typer.Argument(..., help="VOCASET release: data_verts.npy, raw_audio_fixed.pkl, templates.pkl, "
                                   "subj_seq_to_idx.pkl."),
    out_dir: Path = typer.Argument(..., help="Output dataset folder."),
    faces: Optional[Path] = typer.Option(None, "--faces", help="FLAME template mesh for the faces "
                                         "(FLAME_sample.ply; default RAW_DIR/FLAME_sample.ply)."),
    fps: int = typer.Option(30, "--fps", help="Output frame rate: 30 keeps every 2nd frame of the 60 fps capture; "
                            "60 keeps all."),
    subject: Optional[list[str]] = typer.Option(None, "--subject", "-s", help="Only this subject (repeatable)."),
    lip_region: str = typer.Option("mouth_map", help="Lip region: mouth_map (FLAME lips), lve, lip, sorted_unique, "
                                   "a file path, or none."),
    upper_face_region: Optional[Path] = typer.Option(None, help="Upper-face (FDD) region file; none ships for FLAME."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo files that already exist."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """VOCASET -> vertices_npy at 30 fps (metres), wav at 16 kHz."""
    from ..data.vocaset import prepare_vocaset

    interrupts.set_note(_RESUMABLE)
    summary = prepare_vocaset(
        raw_dir, out_dir, faces, fps=fps, subjects=subject or None,
        lip_region=None if lip_region.lower() == "none" else lip_region,
        upper_face_region=upper_face_region, overwrite=overwrite, progress=not quiet,
    )
    _print_summary(summary)


def _print_summary(summary) -> None:
    _console.print(summary.table())
    if summary.split_sizes:
        _console.print("splits: " + ", ".join(f"{k} {v}" for k, v in summary.split_sizes.items()))
    for note in summary.notes:
        _console.print(f"[yellow]note:[/yellow] {note}")
    _console.print(f"next: ptalker data check {summary.out_dir}")
    if summary.failed:
        raise typer.Exit(1)


@data_app.command("check")
def check_cmd(
    root: Path = typer.Argument(..., help="Dataset folder (with dataset.json)."),
    tolerance: float = typer.Option(0.5, help="Allowed motion/audio duration difference in seconds "
                                    "(or 10 %, whichever is larger)."),
    quick: bool = typer.Option(False, "--quick", help="Skip the NaN scan of the vertex data."),
    all_rows: bool = typer.Option(False, "--all", help="List every sequence, not only those with problems."),
) -> None:
    """Validate a dataset folder; exit status 1 if there are errors."""
    from ..data.check import check_dataset

    report = check_dataset(root, tolerance_s=tolerance, scan_values=not quick)
    tables = report.tables()
    if not all_rows:
        bad = [r for r in report.rows if r.status != "ok"]
        if len(bad) < len(report.rows):
            report_rows, report.rows = report.rows, bad
            tables = report.tables()
            report.rows = report_rows
            if not bad:
                tables = tables[1:]
    for t in tables:
        _console.print(t)
    n = len(report.rows)
    if report.ok:
        _console.print(f"[green]OK[/green]: {n} sequence(s), {len(report.warnings)} warning(s)")
    else:
        _console.print(f"[red]{len(report.errors)} error(s)[/red] in {n} sequence(s); see the table above")
        raise typer.Exit(1)
