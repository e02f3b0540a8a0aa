"""The rich console on stderr shared by the CLI's messages and the library's progress displays.

It lives outside ``cli/`` so that library code (the trainer's progress bar and log lines)
can write to the same console as the command that runs it without importing the CLI.
"""

from __future__ import annotations

from rich.console import Console

console = Console(stderr=True)
