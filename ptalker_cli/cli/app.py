"""The ``ptalker`` Typer application; ``main()`` is the console-script entry point.

Every command is wrapped so that a :class:`~ptalker_cli.errors.PtalkerError` prints
one line and exits non-zero without a traceback, whether the app runs as the
console script, as ``python -m ptalker_cli`` or under Typer's test runner.
"""

from __future__ import annotations

import sys

from .. import interrupts
from ..errors import PtalkerError
from .animate_cmd import animate
from .common import GuardedTyper, error
from .convert_cmd import convert
from .data_cmd import data_app
from .doctor_cmd import doctor_command
from .eval_cmd import eval_command
from .models_cmd import models_app
from .render_cmd import render
from .serve_cmd import serve
from .synth_cmd import synth
from .train_cmd import train

app = GuardedTyper(
    name="ptalker",
    help="Personalized speech-driven 3D talking heads (PTalker).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("animate")(animate)
app.command("render")(render)
app.command("train")(train)
app.command("eval")(eval_command)
app.command("convert")(convert)
app.command("doctor")(doctor_command)
app.command("serve")(serve)
app.add_typer(models_app, name="models", help="The model zoo: list, download, verify, publish.")
data_app.command("synth")(synth)
app.add_typer(data_app, name="data", help="Prepare, synthesize and check datasets.")


@app.callback()
def _root() -> None:
    """Personalized speech-driven 3D talking heads (PTalker)."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line (no traceback) and exit non-zero."""
    try:
        app(args=argv, prog_name="ptalker", standalone_mode=True)
    except PtalkerError as exc:  # raised outside a command (e.g. while parsing)
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:  # outside a command (a command's own are reported by its guard)
        error(interrupts.message())
        sys.exit(interrupts.exit_code(exc))
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
