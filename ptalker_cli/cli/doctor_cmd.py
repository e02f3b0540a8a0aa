"""``ptalker doctor``: versions, device, kernels, render backends, TTS, caches, offline mode."""

from __future__ import annotations

import typer
from rich.console import Console

from .common import print_json


def doctor_command(as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout.")) -> None:
    """What this installation can do: the block to paste into a bug report."""
    from ..doctor import doctor, format_report

    report = doctor()
    if as_json:
        print_json(report.to_dict())
        return
    out = Console(highlight=False, soft_wrap=True)
    for line in format_report(report).splitlines():
        out.print(line, markup=False, style=None if line.startswith(" ") else "bold")
