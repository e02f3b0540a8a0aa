"""Where the shipped data lives: ``templates/`` and ``weights/``.

In a source checkout they are the top-level folders of the repository; in an
installed wheel they are the data packages ``ptalker_cli._templates`` and
``ptalker_cli._weights`` (mapped from the same folders in pyproject.toml).
"""

from __future__ import annotations

import importlib.util
import os
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


def ptalker_cache_dir() -> Path:
    """ptalker's own cache: ``PTALKER_CACHE``, else ``$XDG_CACHE_HOME/ptalker`` or ``~/.cache/ptalker``.

    The one root for what ptalker keeps between runs: the zoo's verification records
    (``verified.json``) and the built C kernels (``kernels/``).
    """
    env = os.environ.get("PTALKER_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ptalker"
