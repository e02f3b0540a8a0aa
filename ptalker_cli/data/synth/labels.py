"""Frame labels from a corpus's phone timings: the viseme every motion frame should show.

SynthTalk keeps each sequence's phones (``synth/sequences/<name>.json``: name, start s, end s).
:func:`frame_visemes` turns them into one class per motion frame, the Oculus viseme
(:data:`VISEME_CLASSES`, the generator's own set) of the phone sounding at the frame's time;
a diphthong's parts split its time as the generator's phone rules do. The auxiliary viseme
classifier (``ModelConfig.viseme_classes``, ``LossConfig.viseme``) trains on these.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..layout import DatasetError, DatasetLayout
from .visemes import VISEMES, viseme_segments

#: class index -> viseme name (sil, PP = p/b/m, FF, TH, DD, kk, CH, SS, nn, RR, aa, E, I, O, U)
VISEME_CLASSES: tuple[str, ...] = tuple(VISEMES)
#: the label of a frame without one (outside the phones, or a sequence without phones)
IGNORE = -100

Phones = list[tuple[str, float, float]]


def read_phones(root: str | Path, name: str) -> Phones | None:
    """A SynthTalk sequence's phones (name, start s, end s), or None where the corpus has none."""
    path = DatasetLayout(Path(root)).phones_path(name)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return [(str(p[0]), float(p[1]), float(p[2])) for p in record["phones"]]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise DatasetError(f"{path}: unreadable phone timings ({exc})") from None


def frame_visemes(phones: Phones, frames: int, fps: float) -> np.ndarray:
    """(frames,) int64 viseme classes at times t / fps; :data:`IGNORE` where no phone sounds."""
    out = np.full(int(frames), IGNORE, dtype=np.int64)
    times = np.arange(int(frames)) / float(fps)
    index = {v: i for i, v in enumerate(VISEME_CLASSES)}
    for seg in viseme_segments(phones):  # the generator's own split of a phone into visemes
        out[(times >= seg.start) & (times < seg.end)] = index[seg.viseme]
    return out
