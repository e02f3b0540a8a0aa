"""The ``ptalker`` command line: one Typer command per module, each a thin shell over the library."""
