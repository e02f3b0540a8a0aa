"""Read a PyTorch checkpoint file without running code from it, and say plainly what it is when that fails.

``torch.load(weights_only=True)`` rebuilds tensors and plain containers only. When it
refuses a file, PyTorch's own message advises ``weights_only=False``, which would let
the file run arbitrary code: ptalker never gives that advice. :func:`load_tensors`
instead looks at the file (without unpickling anything: :mod:`pickletools` only lists
the pickle's opcodes) and says what it is: a folder, an empty or truncated file, not a
``torch.save`` file at all, or a pickle of Python objects such as a whole model, with
what to do about it.
"""

from __future__ import annotations

import pickletools
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError

#: Globals a plain state dict may name (tensor rebuilding, storages, containers).
_PLAIN_MODULES = ("torch._utils", "torch.storage", "collections", "_codecs", "torch._tensor", "numpy.core.multiarray",
                  "numpy._core.multiarray", "numpy")
_PLAIN_BUILTINS = {"set", "frozenset", "slice", "bytearray", "complex", "int", "float", "bool", "str", "bytes",
                   "tuple", "list", "dict"}
_RESAVE = "re-save it with `torch.save(model.state_dict(), PATH)` in the code that made it, or pass the released " \
          "checkpoint (a state dict)"


def load_tensors(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a :class:`ConfigError` (one line) when it fails."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a checkpoint file; pass the .pth file itself")
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # its warnings about odd files: the error below says it in one line
            warnings.simplefilter("ignore")
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError, KeyError, ... described below
        raise ConfigError(describe_unloadable(path)) from None


def describe_unloadable(path: Path) -> str:
    """What ``path`` is, for a file that ``torch.load(weights_only=True)`` refused, and what to do."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read {path}: {(exc.strerror or str(exc)).lower()}"
    if size == 0:
        return f"{path} is empty; copy or download the checkpoint again"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        return f"cannot read {path}: {(exc.strerror or str(exc)).lower()}"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if n == "data.pkl" or n.endswith("/data.pkl")]
                data = zf.read(names[0]) if names else None
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return (f"{path} is truncated or damaged (an incomplete torch.save archive); copy or download the "
                    "checkpoint again")
        if data is None:
            return f"{path} is a zip archive but not a torch.save checkpoint; pass the .pth file the model was saved to"
    else:
        with open(path, "rb") as fh:
            data = fh.read()
    objects = pickled_objects(data)
    if objects is None:
        return (f"{path} is not a PyTorch checkpoint (neither a torch.save archive nor a pickle); pass the .pth file "
                "the model was saved to")
    if objects:
        shown = ", ".join(objects[:3]) + (", ..." if len(objects) > 3 else "")
        kind = "a whole model object" if any(".nn." in o or o.startswith("__main__.") for o in objects) \
            else "Python objects"
        return (f"{path} is not a plain state dict: it pickles {kind} ({shown}); ptalker reads only tensors from a "
                f"checkpoint, so that loading it cannot run code: {_RESAVE}")
    return f"{path} is not a torch.save checkpoint of tensors (a pickle PyTorch cannot read safely); {_RESAVE}"


def pickled_objects(data: bytes) -> list[str] | None:
    """The classes and functions a pickle names beyond a plain state dict's (None: not a pickle).

    Only opcodes are listed (:func:`pickletools.genops`); nothing is imported or called.
    """
    found: list[str] = []
    start, parsed = 0, 0
    while start < len(data) and parsed < 4:  # the legacy format is a few pickles in a row (then raw storages)
        try:
            start = _scan(data, start, found) + 1
        except Exception:  # noqa: BLE001 - not a pickle (or cut short, or the legacy raw data)
            break
        parsed += 1
    return found if parsed else None


def _scan(data: bytes, start: int, found: list[str]) -> int:
    """List the globals of the pickle at ``data[start:]``; returns the position of its STOP."""
    recent: list[Any] = []  # recently pushed strings (STACK_GLOBAL takes its module and name from them)
    memo: dict[int, Any] = {}
    for op, arg, pos in pickletools.genops(data[start:]):
        name = op.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
                    "STRING"):
            recent.append(arg)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = recent[-1] if recent else None
        elif name == "MEMOIZE":
            memo[len(memo)] = recent[-1] if recent else None
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            recent.append(memo.get(int(arg)))
        elif name == "GLOBAL":
            _add(found, *str(arg).split(" ", 1))
        elif name == "STACK_GLOBAL" and len(recent) >= 2:
            _add(found, str(recent[-2]), str(recent[-1]))
        elif name == "STOP":
            return start + pos
        else:
            recent.append(None)
    raise ValueError("pickle without STOP")


def _add(found: list[str], module: str, name: str) -> None:
    if module == "__builtin__":  # protocol-2 pickles name Python 3's builtins so
        module = "builtins"
    if module == "builtins":
        if name in _PLAIN_BUILTINS:
            return
    elif module in _PLAIN_MODULES or (module == "torch" and (name.endswith("Storage") or name in ("Size", "device"))):
        return
    full = f"{module}.{name}"
    if full not in found:
        found.append(full)
