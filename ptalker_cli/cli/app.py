"""The ``ptalker`` Typer application; ``main()`` is the console-script entry point."""

from __future__ import annotations

import sys

import typer

from ..errors import PtalkerError
from .animate_cmd import animate
from .common import error

app = typer.Typer(
    name="ptalker",
    help="Personalized speech-driven 3D talking heads (PTalker).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("animate")(animate)

try:
    from .eval_cmd import eval_command

    app.command("eval")(eval_command)
except ImportError:  # pragma: no cover
    pass

try:  # commands whose modules may be absent in a partial checkout are optional
    from .render_cmd import render

    app.command("render")(render)
except ImportError:  # pragma: no cover
    pass
try:
    from .data_cmd import data_app
    from .synth_cmd import synth

    data_app.command("synth")(synth)
    app.add_typer(data_app, name="data", help="Prepare and check datasets.")
except ImportError:  # pragma: no cover
    pass


@app.callback()
def _root() -> None:
    """Personalized speech-driven 3D talking heads (PTalker)."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line (no traceback) and exit non-zero."""
    try:
        app(args=argv, prog_name="ptalker", standalone_mode=True)
    except PtalkerError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)
    return 0


if __name__ == "__main__":  # pragma: no cover
    main()
