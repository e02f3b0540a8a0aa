"""Where the shipped data lives: ``templates/`` and ``weights/``.

In a source checkout they are the top-level folders of the repository; in an
installed wheel they are the data packages ``ptalker_cli._templates`` and
``ptalker_cli._weights`` (mapped from the same folders in pyproject.toml).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _data_dir(package: str, folder: str) -> Path:
    local = _SOURCE_ROOT / folder
    if (_SOURCE_ROOT / "pyproject.toml").exists() and local.is_dir():
        return local
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return local


@lru_cache(maxsize=None)
def templates_dir() -> Path:
    return _data_dir("ptalker_cli._templates", "templates")


@lru_cache(maxsize=None)
def weights_dir() -> Path:
    return _data_dir("ptalker_cli._weights", "weights")
