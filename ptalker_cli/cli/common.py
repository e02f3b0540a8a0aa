"""Helpers shared by the commands: consoles, progress bars and error reporting."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import typer

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


def progress(quiet: bool = False) -> Progress:
    """A rich progress display on stderr (disabled with ``quiet``)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet or not console.is_terminal,  # no bar frames in logs and pipes
        transient=True,
    )


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def guard(fn):
    """Turn a :class:`PtalkerError` raised by a command into one error line and exit code."""
    from ..errors import PtalkerError

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PtalkerError as exc:
            error(str(exc))
            raise typer.Exit(exc.exit_code) from None

    return wrapper


class GuardedTyper(typer.Typer):
    """A Typer app whose commands report user errors as one line, without a traceback.

    The same behaviour under the console script, ``python -m ptalker_cli`` and
    Typer's test runner, for the root app and every sub-app.
    """

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(fn):
            register(guard(fn))
            return fn

        return decorator
