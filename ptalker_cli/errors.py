"""User-facing errors.

A :class:`PtalkerError` carries a one-line message that says what is wrong and what
to do about it. The CLI prints it without a traceback and exits non-zero; library
users can catch it like any exception.
"""

from __future__ import annotations


class PtalkerError(Exception):
    """An error caused by the user's input or environment, with a one-line message."""

    exit_code = 1


class AudioError(PtalkerError):
    """An audio file could not be used."""


class MeshError(PtalkerError):
    """A mesh, template or region file could not be used."""


class MotionError(PtalkerError):
    """A motion sequence could not be used."""


class ConfigError(PtalkerError):
    """A model configuration or checkpoint could not be used."""


class WriteError(PtalkerError):
    """The operating system refused a write (no space, quota, read-only, permission, a file in the way).

    ``errno`` and ``target`` (the file or folder being written) are kept for callers that
    report it under another name (a temporary folder's file under the final output's).
    """

    def __init__(self, message: str, errno: int | None = None, target=None):
        super().__init__(message)
        self.errno = errno
        self.target = target
