"""ARKit curves as JSON (``--format arkit-json``) and back.

    {"format": "ptalker-arkit", "version": 1, "fps": 25.0, "num_frames": T,
     "names": ["eyeBlinkLeft", ...],          # the 52 ARKit names
     "driven": ["browDownLeft", ...],        # names the basis drives; the others are 0
     "frames": [{"eyeBlinkLeft": 0.0, ...}, ...],
     "meta": {...}}

Every frame is an object keyed by name, so no reader depends on an order. Reading also
accepts a bare list of frame objects (with ``--fps`` given) and frames as lists in the
order of ``names``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..arkit.curves import ArkitCurves
from ..arkit.names import ARKIT_NAMES
from ..errors import PtalkerError
from ..fileio import atomic_write_text

FORMAT = "ptalker-arkit"


def arkit_json_dict(curves: ArkitCurves) -> dict:
    return {
        "format": FORMAT,
        "version": 1,
        "fps": float(curves.fps),
        "num_frames": curves.num_frames,
        "names": list(ARKIT_NAMES),
        "driven": list(curves.driven),
        "frames": [{n: round(v, 6) for n, v in fr.items()} for fr in curves.frames()],
        "meta": {k: v for k, v in curves.meta.items() if isinstance(v, (str, int, float, bool, dict, list))},
    }


def write_arkit_json(curves: ArkitCurves, out: str | Path) -> Path:
    out = Path(out)
    atomic_write_text(out, json.dumps(arkit_json_dict(curves), separators=(",", ":")) + "\n")
    return out


def read_arkit_json(path: str | Path, fps: float | None = None) -> ArkitCurves:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PtalkerError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PtalkerError(f"{path} is not valid JSON") from None
    if isinstance(doc, list):
        doc = {"frames": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("frames"), list) or not doc["frames"]:
        raise PtalkerError(f"{path} holds no ARKit frames "
                           "(expected {\"fps\": ..., \"frames\": [{name: weight}, ...]})")
    rate = fps if fps is not None else doc.get("fps")
    if rate is None:
        raise PtalkerError(f"{path} gives no fps; pass --fps")
    frames = doc["frames"]
    if isinstance(frames[0], list):
        names = doc.get("names")
        if not names or any(len(f) != len(names) for f in frames):
            raise PtalkerError(f"{path}: frames given as lists need a 'names' list of the same length")
        frames = [dict(zip(names, f)) for f in frames]
    try:
        curves = ArkitCurves.from_frames(frames, float(rate), {"source": str(path)})
    except (TypeError, ValueError, AttributeError):
        raise PtalkerError(f"{path}: every frame must be an object of name: number") from None
    if doc.get("driven"):
        curves.driven = tuple(n for n in ARKIT_NAMES if n in set(doc["driven"]))
    return curves
