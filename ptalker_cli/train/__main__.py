"""``python -m ptalker_cli.train ...`` = ``ptalker train ...`` (the entry point ``--devices N`` gives torchrun)."""

from __future__ import annotations

import sys

from .. import interrupts
from ..cli.common import GuardedTyper, error
from ..cli.train_cmd import train
from ..errors import PtalkerError


def main() -> None:
    app = GuardedTyper(add_completion=False, pretty_exceptions_enable=False)
    app.command()(train)
    try:
        app(prog_name="ptalker train", standalone_mode=True)
    except PtalkerError as exc:
        error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:  # outside the command (its own are reported by the guard)
        error(interrupts.message())
        sys.exit(interrupts.exit_code(exc))


if __name__ == "__main__":
    main()
