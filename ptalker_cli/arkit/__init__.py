"""ARKit-52 blendshape curves from ptalker motion (see docs/arkit.md)."""

from .curves import ArkitCurves, ArkitMapping
from .names import ARKIT_NAMES, LIVELINK_EXTRAS, arkit_name, pascal
from .solve import arkit_frames, basis_for, curves_to_motion, lip_error_mm, solve_arkit

__all__ = [
    "ARKIT_NAMES",
    "LIVELINK_EXTRAS",
    "ArkitCurves",
    "ArkitMapping",
    "arkit_frames",
    "arkit_name",
    "basis_for",
    "curves_to_motion",
    "lip_error_mm",
    "pascal",
    "solve_arkit",
]
