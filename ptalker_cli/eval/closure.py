"""Bilabial closure rate and vowel-opening ratio: does the mouth close on p, b and m?

A lip-sync error viewers notice first is a mouth that stays half open on /p b m/. With
phone timings (SynthTalk's ``synth/sequences/<name>.json``, an HTS / ARCTIC ``.lab`` file,
or Festival's own segments) this module measures it on the inner-lip gap, the vertical
distance between the upper and lower inner lip on the midline (ICT vertices 5533 and 5517,
Multi-PIE landmarks 62 and 66; <= 0 is contact):

* a bilabial (p, b, m, em) is **closed** when the gap at some frame within ±``window``
  frames of the phone's middle falls below ``threshold`` (30 %) of the utterance's mean gap
  on vowel frames;
* the **closure rate** is closed / bilabials, pooled over all utterances;
* the **vowel-opening ratio** is the mean gap on vowel frames over the mean gap at the
  bilabials' middles (pooled; higher = crisper articulation: a mouth that hovers half open
  has a ratio near 1).

The same function scores the ground truth, which shows whether the metric is sound on a
corpus (SynthTalk's ground truth closes every bilabial by construction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import PtalkerError

#: ICT-FaceKit inner-lip midline vertices (upper, lower): Multi-PIE landmarks 62 and 66.
ICT_INNER_LIPS = (5533, 5517)
ICT_NUM_VERTICES = 14062
BILABIALS = frozenset({"p", "b", "m", "em"})
#: ARPAbet / Festival "radio" vowels (no stress digits), diphthongs and r-coloured ones included.
VOWELS = frozenset({"aa", "ae", "ah", "ao", "aw", "ax", "axr", "ay", "eh", "er", "ey", "ih", "ix", "iy", "ow",
                    "oy", "uh", "uw"})
THRESHOLD = 0.3
WINDOW = 1

Phones = Sequence[tuple[str, float, float]]


@dataclass
class ClosureStats:
    """Counts of one or more utterances (sums, so that stats pool by addition)."""

    bilabials: int = 0
    closed: int = 0
    vowel_frames: int = 0
    vowel_gap_sum: float = 0.0  # cm (data units)
    bilabial_gap_sum: float = 0.0  # gap at the bilabials' middle frames
    utterances: int = 0

    def __add__(self, other: "ClosureStats") -> "ClosureStats":
        return ClosureStats(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    @property
    def rate(self) -> float | None:
        return self.closed / self.bilabials if self.bilabials else None

    @property
    def vowel_gap(self) -> float | None:
        return self.vowel_gap_sum / self.vowel_frames if self.vowel_frames else None

    @property
    def bilabial_gap(self) -> float | None:
        return self.bilabial_gap_sum / self.bilabials if self.bilabials else None

    @property
    def vowel_opening_ratio(self) -> float | None:
        v, b = self.vowel_gap, self.bilabial_gap
        if v is None or b is None or b <= 0:
            return None
        return v / b

    def to_json(self) -> dict:
        return {**asdict(self), "closure_rate": self.rate, "vowel_gap": self.vowel_gap,
                "bilabial_gap": self.bilabial_gap, "vowel_opening_ratio": self.vowel_opening_ratio}


def inner_lip_gap(vertices, lips: tuple[int, int] = ICT_INNER_LIPS, axis: int = 1) -> np.ndarray:
    """(T,) upper − lower inner-lip coordinate along the up ``axis`` of (T, V, 3) vertices."""
    v = np.asarray(vertices)
    if v.ndim != 3 or v.shape[1] <= max(lips):
        raise PtalkerError(f"need (T, V, 3) vertices with V > {max(lips)}, got shape {v.shape}")
    return (v[:, lips[0], axis] - v[:, lips[1], axis]).astype(np.float64)


def _frame_phones(phones: Phones, frames: int, fps: float) -> list[str]:
    """The phone each frame time t/fps falls in ('' outside every phone)."""
    out = [""] * frames
    for name, start, end in phones:
        a, b = max(0, int(np.ceil(start * fps - 1e-9))), min(frames, int(np.ceil(end * fps - 1e-9)))
        for t in range(a, b):
            out[t] = name
    return out


def closure_stats(gap: np.ndarray, phones: Phones, fps: float, *, threshold: float = THRESHOLD,
                  window: int = WINDOW) -> ClosureStats:
    """Closure counts of one utterance from its (T,) inner-lip gap and its phones (name, start s, end s).

    Bilabials whose middle falls outside the motion are skipped; with no vowel frame, nothing is counted
    (there is no reference opening).
    """
    gap = np.asarray(gap, dtype=np.float64)
    n = len(gap)
    labels = _frame_phones(phones, n, fps)
    vowel = np.array([lab in VOWELS for lab in labels], dtype=bool)
    stats = ClosureStats(utterances=1)
    if not vowel.any():
        return stats
    vowel_mean = float(gap[vowel].mean())
    stats.vowel_frames, stats.vowel_gap_sum = int(vowel.sum()), float(gap[vowel].sum())
    limit = threshold * vowel_mean
    for name, start, end in phones:
        if name not in BILABIALS:
            continue
        mid = int(round(0.5 * (start + end) * fps))
        if not 0 <= mid < n:
            continue
        lo, hi = max(0, mid - window), min(n, mid + window + 1)
        stats.bilabials += 1
        stats.bilabial_gap_sum += float(gap[mid])
        if float(gap[lo:hi].min()) < limit:
            stats.closed += 1
    return stats


# --------------------------------------------------------------------------- phone timings


def read_lab(path: str | Path) -> list[tuple[str, float, float]]:
    """Phones of an HTS full-context (CMU ARCTIC) or plain ``start end phone`` label file.

    HTS times are in 100 ns units and the phone sits between ``-`` and ``+``; plain
    (``start end name``, seconds) files are read as they are.
    """
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        label = parts[2]
        if "-" in label and "+" in label:
            rows.append((label.split("-", 1)[1].split("+", 1)[0], int(parts[0]) * 1e-7, int(parts[1]) * 1e-7))
        else:
            rows.append((label, float(parts[0]), float(parts[1])))
    return rows


def synth_phones(root: str | Path, name: str) -> list[tuple[str, float, float]] | None:
    """A SynthTalk sequence's phones (``synth/sequences/<name>.json``), or None where there are none."""
    from ..data.synth.labels import read_phones

    return read_phones(root, name)


class ClosureTally:
    """Pools prediction and ground-truth closure counts over the sequences of an evaluation."""

    def __init__(self, root: str | Path, fps: float, num_vertices: int):
        self.root, self.fps = Path(root), float(fps)
        self.active = int(num_vertices) == ICT_NUM_VERTICES
        self.pred, self.gt = ClosureStats(), ClosureStats()
        self.per_sequence: dict[str, dict] = {}

    def add(self, name: str, pred, gt) -> None:
        """Score one (truncated) prediction / ground-truth pair; no-op without phones or off ICT."""
        if not self.active:
            return
        phones = synth_phones(self.root, name)
        if phones is None:
            return
        p = closure_stats(inner_lip_gap(pred), phones, self.fps)
        g = closure_stats(inner_lip_gap(gt), phones, self.fps)
        self.pred, self.gt = self.pred + p, self.gt + g
        self.per_sequence[name] = {"pred": p.to_json(), "gt": g.to_json()}

    def summary(self) -> dict | None:
        if not self.per_sequence:
            return None
        return {
            "definition": f"bilabial (p b m em) closed when the inner-lip gap (ICT vertices {ICT_INNER_LIPS}) within "
                          f"±{WINDOW} frame of the phone's middle falls below {THRESHOLD:.0%} of the utterance's mean "
                          "gap on vowel frames; vowel-opening ratio = mean vowel gap / mean gap at bilabial middles; "
                          "phones from synth/sequences/<name>.json",
            "pred": self.pred.to_json(),
            "gt": self.gt.to_json(),
        }


def pooled(stats: Iterable[ClosureStats]) -> ClosureStats:
    out = ClosureStats()
    for s in stats:
        out = out + s
    return out


__all__ = ["BILABIALS", "ClosureStats", "ClosureTally", "ICT_INNER_LIPS", "VOWELS", "closure_stats",
           "inner_lip_gap", "pooled", "read_lab", "synth_phones"]
