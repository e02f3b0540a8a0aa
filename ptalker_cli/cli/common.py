"""Helpers shared by the commands: consoles, progress bars and error reporting."""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..console import console


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
    """Run a command under :func:`~ptalker_cli.interrupts.handle_signals` and report its failures in one line.

    A :class:`PtalkerError` prints its message and exits with its code; SIGINT / SIGTERM
    print ``interrupted; ...`` and exit 130 / 143 (the clean-up has run by then); an OS
    error nothing translated (the last resort) prints one line and exits 1.
    """
    from .. import interrupts
    from ..errors import PtalkerError
    from ..fileio import os_error_message

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with interrupts.handle_signals():
            try:
                return fn(*args, **kwargs)
            except PtalkerError as exc:
                error(str(exc))
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt as exc:
                error(interrupts.message())
                raise typer.Exit(interrupts.exit_code(exc)) from None
            except OSError as exc:
                error(os_error_message(exc))
                raise typer.Exit(1) from None

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
