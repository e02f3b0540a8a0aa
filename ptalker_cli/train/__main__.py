"""``python -m ptalker_cli.train ...`` = ``ptalker train ...`` (the entry point ``--devices N`` gives torchrun)."""

from __future__ import annotations

import sys

import typer

from ..cli.common import error
from ..cli.train_cmd import train
from ..errors import PtalkerError


def main() -> None:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(train)
    try:
        app(prog_name="ptalker train", standalone_mode=True)
    except PtalkerError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
