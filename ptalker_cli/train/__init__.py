"""Training: ``ptalker train`` and its library API (see docs/training.md).

    from ptalker_cli.train import TrainConfig, train
    result = train(TrainConfig(data="data/biwi", preset="biwi", out="runs/biwi"))

Heavy modules are imported lazily, so importing the config stays cheap.
"""

from __future__ import annotations

from .config import TrainConfig, build_config, parse_assignments, teacher_forcing_probability

__all__ = [
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_config",
    "parse_assignments",
    "set_stage",
    "style_parameters",
    "teacher_forcing_probability",
    "train",
]

_LAZY = {"Trainer": "trainer", "TrainResult": "trainer", "train": "trainer", "set_stage": "stages",
         "style_parameters": "stages"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
