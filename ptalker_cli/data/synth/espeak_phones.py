"""eSpeak NG's English phoneme mnemonics → the ARPAbet / Festival "radio" phones of :mod:`.visemes`.

eSpeak reports each phoneme by its mnemonic in its own notation (``tS``, ``'3:``, ``aI@``,
``_:``); a leading ``'`` marks primary and ``,`` secondary stress. :data:`MNEMONICS` maps every
mnemonic the English voices of :mod:`.espeak` produce to one phone, or to two that share its time
(an r-coloured or centring diphthong: ``A@`` in a rhotic accent is ``aa`` + ``r``). The table was
built from what eSpeak NG 1.52 says for all 720 Harvard sentences and a 20,000-word sample of
CMUdict in each English voice, with the IPA it gives for each mnemonic; tests check that a
pangram set needs no fallback.

Accents differ in a few realisations: eSpeak writes "car" ``k'A@`` in every accent, but only the
US voice pronounces the r (IPA ``ɑːɹ``); :data:`RHOTIC` overrides those mnemonics per accent.
"""

from __future__ import annotations

import re

#: mnemonic (without stress marks) -> one or two ARPAbet phones (lower case)
MNEMONICS: dict[str, tuple[str, ...]] = {
    # pauses (any mnemonic starting with "_" is a pause as well)
    "_": ("pau",), "_:": ("pau",), "_!": ("pau",), "_|": ("pau",),
    # stops, affricates
    "p": ("p",), "b": ("b",), "t": ("t",), "d": ("d",), "k": ("k",), "g": ("g",),
    "t#": ("dx",),  # US flap (IPA ɾ): "beauty"
    "t2": ("t",), "t[": ("t",),  # unreleased t; dental t (Caribbean)
    "?": ("t",),  # glottal stop (IPA ʔ): "button"; lips take the neighbours' shape, like t
    "tS": ("ch",), "dZ": ("jh",),
    # fricatives
    "f": ("f",), "v": ("v",), "T": ("th",), "D": ("dh",), "s": ("s",), "z": ("z",),
    "S": ("sh",), "Z": ("zh",), "h": ("hh",), "x": ("k",),  # x: velar fricative, "loch"
    # nasals, liquids, glides
    "m": ("m",), "n": ("n",), "N": ("ng",), "n-": ("en",), "l": ("l",), "l#": ("l",), "@L": ("el",),
    "r": ("r",), "r-": ("r",), "w": ("w",), "w#": ("w",), "j": ("y",),
    ";": ("y",),  # the glide eSpeak inserts between i and a vowel: "the evening"
    # vowels
    "@": ("ax",), "@2": ("ax",), "@5": ("ax",), "@-": ("ax",), "a#": ("ax",),
    "3": ("ax",), "3:": ("er",), "IR": ("er",), "VR": ("ah", "r"),
    "a": ("ae",), "aa": ("ae",), "A:": ("aa",), "A~": ("aa",), "0": ("aa",), "A@": ("aa",),
    "E": ("eh",), "e@": ("eh", "ax"), "eI": ("ey",),
    "I": ("ih",), "I2": ("ih",), "I#": ("ix",), "i": ("iy",), "i:": ("iy",),
    "i@": ("iy", "ax"), "i@3": ("ih", "ax"),
    "O": ("ao",), "O2": ("ao",), "O:": ("ao",), "O@": ("ao",), "o@": ("ao",), "OI": ("oy",), "oU": ("ow",),
    "U": ("uh",), "U@": ("uh", "ax"), "u:": ("uw",), "V": ("ah",),
    "aI": ("ay",), "aI2": ("ay",), "aI@": ("ay", "ax"), "aI3": ("ay", "axr"), "aU": ("aw",),
}

#: accent (voice without variant) -> mnemonics it pronounces with an r
RHOTIC: dict[str, dict[str, tuple[str, ...]]] = {
    "en-us": {"3": ("axr",), "A@": ("aa", "r"), "O@": ("ao", "r"), "o@": ("ao", "r"), "e@": ("eh", "r"),
              "i@3": ("ih", "r"), "U@": ("uh", "r")},
    "en-gb-scotland": {"U@": ("uh", "r")},
}

#: time share of the first of two phones of one mnemonic
FIRST_PART = 0.65

_STRIP = re.compile(r"[0-9#/\[\]~\-]+$")


def split_stress(mnemonic: str) -> tuple[str, int, bool]:
    """``"'3:"`` -> (``"3:"``, stress 1, primary True); ``",I"`` -> (``"I"``, 1, False)."""
    base = mnemonic.lstrip("',")
    marks = mnemonic[: len(mnemonic) - len(base)]
    return base, int(bool(marks)), "'" in marks


def arpabet(mnemonic: str, accent: str = "en-us") -> tuple[str, ...] | None:
    """The ARPAbet phone(s) of an eSpeak mnemonic (stress marks allowed), or None if unknown.

    Unknown mnemonics fall back to the mnemonic without a trailing variant mark
    (``aI2`` -> ``aI``) before giving up.
    """
    base = split_stress(mnemonic)[0]
    if base.startswith("_"):
        return ("pau",)
    for key in (base, _STRIP.sub("", base)):
        if key in RHOTIC.get(accent, {}):
            return RHOTIC[accent][key]
        if key in MNEMONICS:
            return MNEMONICS[key]
    return None
