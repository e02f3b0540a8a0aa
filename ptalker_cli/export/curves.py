"""Which curve format an output asks for, and reading/writing ARKit curves by format.

* ``-o out.csv`` (or ``--format csv``): the Live Link Face CSV (:mod:`.livelink_csv`).
* ``--format arkit-json``: JSON curves (:mod:`.arkit_json`). It must be asked for by name:
  a bare ``.json`` output is ambiguous with the ``.npy`` motion's JSON sidecar, so
  ``-o out.json`` alone is an error that says to add ``--format arkit-json``.
"""

from __future__ import annotations

from pathlib import Path

from ..arkit.curves import ArkitCurves
from ..errors import PtalkerError

CURVE_FORMATS = ("csv", "arkit-json")


def curve_format(out: str | Path, fmt: str | None) -> str | None:
    """``csv``/``arkit-json`` when ``out``/``fmt`` ask for curves, else None (a motion format)."""
    if fmt is not None:
        return fmt.lower() if fmt.lower() in CURVE_FORMATS else None
    suffix = Path(out).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        raise PtalkerError(f"'{Path(out).name}': for ARKit curves as JSON pass --format arkit-json "
                           "(a .json name alone could be a motion's sidecar); for a Live Link Face CSV use .csv")
    return None


def write_curves(curves: ArkitCurves, out: str | Path, fmt: str, force: bool = False) -> list[Path]:
    """Write ``curves`` as ``fmt`` (``csv`` or ``arkit-json``); an existing file needs ``force``."""
    from .arkit_json import write_arkit_json
    from .livelink_csv import write_livelink_csv

    out = Path(out)
    if out.is_dir():
        raise PtalkerError(f"{out} is a folder; ARKit curves are written to one file (e.g. out.csv)")
    if out.exists() and not force:
        raise PtalkerError(f"{out} already exists; use --force to overwrite it")
    if fmt == "csv":
        return [write_livelink_csv(curves, out)]
    if fmt == "arkit-json":
        return [write_arkit_json(curves, out)]
    raise PtalkerError(f"unknown curve format '{fmt}'; use one of: {', '.join(CURVE_FORMATS)}")


def is_curve_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in (".csv", ".json")


def read_curves(path: str | Path, fps: float | None = None) -> ArkitCurves:
    """Curves from a Live Link Face ``.csv`` or an ARKit ``.json``."""
    from .arkit_json import read_arkit_json
    from .livelink_csv import read_livelink_csv

    path = Path(path)
    if not path.exists():
        raise PtalkerError(f"curve file {path} does not exist")
    if path.suffix.lower() == ".csv":
        return read_livelink_csv(path, fps)
    if path.suffix.lower() == ".json":
        return read_arkit_json(path, fps)
    raise PtalkerError(f"cannot tell the curve format of {path.name}; use .csv (Live Link Face) or .json (arkit-json)")
