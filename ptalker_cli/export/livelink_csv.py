"""ARKit curves as the Live Link Face app's CSV (and back).

Layout, as the app writes it and Unreal's LiveLinkFaceImporter and Blender add-ons read it:

    Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,...,TongueOut,HeadYaw,HeadPitch,HeadRoll,
    LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll
    00:00:00:00.000,61,0.000000,...

* ``Timecode`` is ``HH:MM:SS:FF.fff``: FF.fff is the fraction of the second in frames at 30
  frames per second (Unreal's importer infers 30 or 60 from whether any FF exceeds 30, and
  30 is what it infers for our files at any length). The first frame is 00:00:00:00.000.
* ``BlendShapeCount`` is 61: the 52 shapes plus the nine head and eye rotations, which
  ptalker writes as 0.
* The shape columns use the capitalized names, in the app's column order (which swaps
  JawLeft/JawRight and MouthLeft/MouthRight against Apple's list). Readers must go by the
  header, as :func:`read_livelink_csv` does.

Reading infers the rate from the timecodes (their median step), so a 25-fps file reads
back at 25 fps and a phone recording at its own rate.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from ..arkit.curves import ArkitCurves
from ..arkit.names import ARKIT_NAMES, LIVELINK_EXTRAS, arkit_name, pascal
from ..errors import PtalkerError
from ..fileio import atomic_write_text

#: The Live Link Face app's own column order for the 52 shapes.
LIVELINK_CSV_ORDER: tuple[str, ...] = tuple(
    n.replace("jawLeft", "\0").replace("jawRight", "jawLeft").replace("\0", "jawRight")
    .replace("mouthLeft", "\0").replace("mouthRight", "mouthLeft").replace("\0", "mouthRight")
    for n in ARKIT_NAMES
)
TIMECODE_FPS = 30
BLENDSHAPE_COUNT = len(ARKIT_NAMES) + len(LIVELINK_EXTRAS)


def timecode(seconds: float, base: int = TIMECODE_FPS) -> str:
    """``HH:MM:SS:FF.fff`` with fractional frames at ``base`` frames per second."""
    ms_frames = int(round(seconds * base * 1000))  # thousandths of a frame
    whole, frac = divmod(ms_frames, 1000 * base)
    h, rem = divmod(whole, 3600)
    m, s = divmod(rem, 60)
    f, thousandths = divmod(frac, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}:{f:02d}.{thousandths:03d}"


def parse_timecode(text: str) -> tuple[int, float]:
    """(whole seconds, fractional frames) of ``HH:MM:SS:FF[.fff]``."""
    parts = text.strip().split(":")
    if len(parts) != 4:
        raise ValueError(text)
    h, m, s = (int(p) for p in parts[:3])
    return h * 3600 + m * 60 + s, float(parts[3])


def livelink_csv_text(curves: ArkitCurves) -> str:
    header = ["Timecode", "BlendShapeCount"] + [pascal(n) for n in LIVELINK_CSV_ORDER] + list(LIVELINK_EXTRAS)
    col = [ARKIT_NAMES.index(n) for n in LIVELINK_CSV_ORDER]
    w = curves.weights[:, col]
    extras = ",".join(["0.000000"] * len(LIVELINK_EXTRAS))
    lines = [",".join(header)]
    for k, t in enumerate(curves.times):
        vals = ",".join(f"{v:.6f}" for v in w[k].tolist())
        lines.append(f"{timecode(t)},{BLENDSHAPE_COUNT},{vals},{extras}")
    return "\n".join(lines) + "\n"


def write_livelink_csv(curves: ArkitCurves, out: str | Path) -> Path:
    """Write ``out`` atomically; returns it."""
    out = Path(out)
    atomic_write_text(out, livelink_csv_text(curves))
    return out


def read_livelink_csv(path: str | Path, fps: float | None = None) -> ArkitCurves:
    """Curves from a Live Link Face CSV (any column order; names in any accepted spelling)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise PtalkerError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PtalkerError(f"{path} is not a text CSV file") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r]
    if len(rows) < 2 or [c.strip() for c in rows[0][:2]] != ["Timecode", "BlendShapeCount"]:
        raise PtalkerError(f"{path} is not a Live Link Face CSV (the header must start with Timecode,BlendShapeCount "
                           "and at least one frame must follow)")
    header = [c.strip() for c in rows[0]]
    cols = {i: arkit_name(h) for i, h in enumerate(header[2:], start=2)}
    cols = {i: a for i, a in cols.items() if a is not None}
    if not cols:
        raise PtalkerError(f"{path} has no ARKit blendshape columns")
    seconds, frames, values = [], [], np.zeros((len(rows) - 1, len(ARKIT_NAMES)), np.float32)
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise PtalkerError(f"{path}, line {r}: {len(row)} values for {len(header)} columns")
        try:
            s, f = parse_timecode(row[0])
            for i, a in cols.items():
                values[r - 2, ARKIT_NAMES.index(a)] = float(row[i])
        except ValueError:
            raise PtalkerError(f"{path}, line {r}: cannot parse the timecode or a value") from None
        seconds.append(s)
        frames.append(f)
    base = 60 if max(frames) > 30.0 else 30  # Unreal's rule for Live Link Face files
    times = np.asarray(seconds, np.float64) + np.asarray(frames, np.float64) / base
    if fps is None:
        steps = np.diff(times)
        steps = steps[steps > 0]
        fps = round(1.0 / float(np.median(steps)), 3) if steps.size else 25.0
    driven = tuple(n for n in ARKIT_NAMES if n in set(cols.values()))
    return ArkitCurves(float(fps), values, driven, {"source": str(path)})
