"""The 52 ARKit blendshape names and the spellings that circulate for them.

:data:`ARKIT_NAMES` lists Apple's ``ARFaceAnchor.BlendShapeLocation`` names in the order of
Apple's documentation and of the Live Link Face UDP packet. Nothing in ptalker relies on a
position: every file and packet is read and written by name (Live Link Face's own CSV, for
one, swaps jawLeft/jawRight and mouthLeft/mouthRight against this order).

"Left" is the face's own left (the person's, not the viewer's): Apple reports a closed
right eye, seen on the left of the camera image, as ``eyeBlinkRight``. ICT-FaceKit's ``_L``
is the subject's left (+X) too, so ``eyeBlink_L`` ↔ ``eyeBlinkLeft``.
"""

from __future__ import annotations

import re

ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft",
    "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight",
    "jawForward", "jawLeft", "jawRight", "jawOpen",
    "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft", "mouthRight",
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight",
    "mouthUpperUpLeft", "mouthUpperUpRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight",
    "tongueOut",
)  # fmt: skip

#: The Live Link Face app's extra CSV columns / packet values after the 52 shapes
#: (head and eye rotations); ptalker writes them as 0.
LIVELINK_EXTRAS: tuple[str, ...] = (
    "HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
    "RightEyeYaw", "RightEyePitch", "RightEyeRoll",
)  # fmt: skip

_SIDES = {"l": "Left", "r": "Right", "left": "Left", "right": "Right"}
_BY_KEY = {n.lower(): n for n in ARKIT_NAMES}
_SIDED = re.compile(r"^(?P<base>.+?)[_.\- ](?P<side>[LlRr])$")


def pascal(name: str) -> str:
    """``eyeBlinkLeft`` → ``EyeBlinkLeft`` (Live Link Face CSV and perfect-sync spelling)."""
    return name[:1].upper() + name[1:]


def arkit_name(name: str) -> str | None:
    """The ARKit name a spelling stands for, or None.

    Accepts Apple's ``eyeBlinkLeft``, the capitalized ``EyeBlinkLeft`` (Live Link Face,
    VRM perfect sync), ICT/ARKit-raw ``eyeBlink_L`` (also ``.L``, ``-L``, `` L``), in any case.
    """
    text = str(name).strip()
    hit = _BY_KEY.get(text.lower())
    if hit is not None:
        return hit
    m = _SIDED.match(text)
    if m:
        return _BY_KEY.get((m.group("base") + _SIDES[m.group("side").lower()]).lower())
    return None


def split_side(name: str) -> tuple[str, str | None]:
    """``eyeBlink_L`` → (``eyeBlink``, ``Left``); names without a side suffix → (name, None)."""
    m = _SIDED.match(str(name).strip())
    if m:
        return m.group("base"), _SIDES[m.group("side").lower()]
    return str(name).strip(), None
