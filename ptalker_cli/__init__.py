"""ptalker: personalized speech-driven 3D talking-head animation (PTalker, ACM MM 2025).

The public API is small::

    from ptalker_cli import load_model, Animator, animate, load_audio
    motion = animate("speech.wav", model="tiny", subject="S1")   # -> Motion (T, V, 3)
"""

from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "load_audio": ("ptalker_cli.audio", "load_audio"),
    "load_model": ("ptalker_cli.inference", "load_model"),
    "animate": ("ptalker_cli.inference", "animate"),
    "Animator": ("ptalker_cli.inference", "Animator"),
    "Motion": ("ptalker_cli.motion", "Motion"),
    "Topology": ("ptalker_cli.mesh", "Topology"),
    "ModelConfig": ("ptalker_cli.config", "ModelConfig"),
    "PTalker": ("ptalker_cli.model.network", "PTalker"),
    "PtalkerError": ("ptalker_cli.errors", "PtalkerError"),
}

__all__ = list(_EXPORTS) + ["__version__"]


def __getattr__(name: str):  # lazy imports keep `ptalker --help` fast
    if name in _EXPORTS:
        import importlib

        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'ptalker_cli' has no attribute {name!r}")
