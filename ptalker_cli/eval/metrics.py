"""The paper's geometric metrics as plain functions on (T, V, 3) arrays.

All functions accept numpy arrays or torch tensors (converted to float64 numpy), and
(T, V*3) arrays (the research code's layout) are reshaped to (T, V, 3). Values are in
the data's own units: LVE and FDD in squared units, MVE in units. The paper's
display scaling (×1e-4 ...) is applied by the report, never here.

Definitions (docs/evaluation.md, spec §5):

* **LVE** — per frame, the maximum over the lip vertices of the *squared* L2 error;
  then the mean over frames. :func:`lve` is one sequence; :func:`lve_pooled` is the
  paper's convention over a test set: the mean over **all frames of all sequences
  pooled together** (long sequences weigh more).
* **FDD** — ``dyn(M) = mean over upper-face vertices v of std_t(‖M_{t,v} − template_v‖²)``
  (population std, ddof 0, of the squared displacement norm); ``FDD_seq = dyn(GT) −
  dyn(pred)`` (signed: positive when the prediction is less dynamic than the ground
  truth). The reported FDD is the signed mean over sequences (:func:`fdd_mean`);
  :func:`fdd_abs_mean` is the absolute variant ``mean |FDD_seq|``.
* **MVE** — mean over frames and all vertices of the L2 error (the norm, not squared).
* **Length mismatch** — :func:`truncate` cuts both sequences to the shorter length and
  reports how many frames each lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ..errors import PtalkerError


class MetricError(PtalkerError):
    """Arrays that the metrics cannot compare (shapes, regions)."""


def as_motion(x, name: str = "motion") -> np.ndarray:
    """A (T, V, 3) float64 array from a numpy array / torch tensor of (T, V, 3) or (T, V*3)."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().double().numpy()  # (also bf16 / fp16, which numpy cannot hold)
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] % 3 == 0:
        a = a.reshape(a.shape[0], -1, 3)
    if a.ndim != 3 or a.shape[2] != 3:
        raise MetricError(f"{name} must have shape (T, V, 3) or (T, V*3); got {tuple(a.shape)}")
    return a


def _as_template(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 1 and a.size % 3 == 0:
        a = a.reshape(-1, 3)
    if a.ndim != 2 or a.shape[1] != 3:
        raise MetricError(f"template must have shape (V, 3); got {tuple(a.shape)}")
    return a


def _as_index(index, num_vertices: int, what: str) -> np.ndarray:
    if hasattr(index, "detach"):
        index = index.detach().cpu().numpy()
    idx = np.unique(np.asarray(index, dtype=np.int64).reshape(-1))  # repeats are ignored
    if idx.size == 0:
        raise MetricError(f"the {what} region is empty")
    if idx.min() < 0 or idx.max() >= num_vertices:
        raise MetricError(f"the {what} region has vertex ids outside 0..{num_vertices - 1}")
    return idx


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise MetricError(
            f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ; "
            "truncate() them to a common length first"
        )
    if pred.shape[0] == 0:
        raise MetricError("no frames to compare")


@dataclass(frozen=True)
class Truncation:
    """What :func:`truncate` did: frames kept and frames dropped from each side."""

    frames: int
    dropped_pred: int
    dropped_gt: int

    @property
    def dropped(self) -> int:
        return self.dropped_pred + self.dropped_gt


def truncate(pred, gt) -> tuple[np.ndarray, np.ndarray, Truncation]:
    """Cut prediction and ground truth to the shorter length (frames 0..n−1 of each).

    Both sequences start at the audio's first sample, so frame t of one is frame t of
    the other; the longer one loses its tail. Returns ``(pred[:n], gt[:n], info)``.
    """
    p, g = as_motion(pred, "prediction"), as_motion(gt, "ground truth")
    if p.shape[1] != g.shape[1]:
        raise MetricError(f"prediction has {p.shape[1]} vertices per frame, ground truth {g.shape[1]}")
    n = min(p.shape[0], g.shape[0])
    return p[:n], g[:n], Truncation(n, p.shape[0] - n, g.shape[0] - n)


# --------------------------------------------------------------------------- LVE


def lve_per_frame(pred, gt, lip_index) -> np.ndarray:
    """(T,) max over lip vertices of the squared L2 error of each frame."""
    p, g = as_motion(pred, "prediction"), as_motion(gt, "ground truth")
    _check_pair(p, g)
    idx = _as_index(lip_index, p.shape[1], "lip")
    sq = ((p[:, idx] - g[:, idx]) ** 2).sum(-1)  # (T, n_lip)
    return sq.max(axis=1)


def lve(pred, gt, lip_index) -> float:
    """LVE of one sequence: mean over frames of the max over lip vertices of ‖x − x̂‖²."""
    return float(lve_per_frame(pred, gt, lip_index).mean())


def lve_pooled(pairs: Iterable[tuple[object, object]], lip_index) -> float:
    """LVE over many (pred, gt) pairs with all frames pooled (the paper's convention).

    Equal to the frame-count-weighted mean of the per-sequence LVEs.
    """
    frames = [lve_per_frame(p, g, lip_index) for p, g in pairs]
    if not frames:
        raise MetricError("no sequences to pool")
    return float(np.concatenate(frames).mean())


# --------------------------------------------------------------------------- FDD


def dynamics(motion, template, upper_index) -> float:
    """``dyn(M)``: mean over upper-face vertices of the population std over time of ‖M_t,v − template_v‖²."""
    m = as_motion(motion)
    t = _as_template(template)
    if t.shape[0] != m.shape[1]:
        raise MetricError(f"template has {t.shape[0]} vertices, motion {m.shape[1]}")
    if m.shape[0] == 0:
        raise MetricError("no frames to compare")
    idx = _as_index(upper_index, m.shape[1], "upper_face")
    sq = ((m[:, idx] - t[None, idx]) ** 2).sum(-1)  # (T, n_upper)
    return float(sq.std(axis=0, ddof=0).mean())


def fdd(pred, gt, template, upper_index) -> float:
    """Signed FDD of one sequence: ``dyn(GT) − dyn(pred)`` (> 0: prediction less dynamic)."""
    p, g = as_motion(pred, "prediction"), as_motion(gt, "ground truth")
    _check_pair(p, g)
    return dynamics(g, template, upper_index) - dynamics(p, template, upper_index)


def fdd_mean(values: Sequence[float]) -> float:
    """The reported FDD: signed mean over sequences (errors of opposite sign cancel)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise MetricError("no sequences to average")
    return float(v.mean())


def fdd_abs_mean(values: Sequence[float]) -> float:
    """Absolute variant: mean over sequences of |FDD_seq| (FaceDiffuser prints it too)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise MetricError("no sequences to average")
    return float(np.abs(v).mean())


# --------------------------------------------------------------------------- MVE


def mve_per_frame(pred, gt) -> np.ndarray:
    """(T,) mean over all vertices of the L2 error (norm) of each frame."""
    p, g = as_motion(pred, "prediction"), as_motion(gt, "ground truth")
    _check_pair(p, g)
    return np.sqrt(((p - g) ** 2).sum(-1)).mean(axis=1)


def mve(pred, gt) -> float:
    """MVE of one sequence: mean over frames and all vertices of ‖x − x̂‖ (not squared)."""
    return float(mve_per_frame(pred, gt).mean())


def mve_pooled(pairs: Iterable[tuple[object, object]]) -> float:
    """MVE over many pairs with all frames pooled."""
    frames = [mve_per_frame(p, g) for p, g in pairs]
    if not frames:
        raise MetricError("no sequences to pool")
    return float(np.concatenate(frames).mean())


__all__ = [
    "MetricError",
    "Truncation",
    "as_motion",
    "dynamics",
    "fdd",
    "fdd_abs_mean",
    "fdd_mean",
    "lve",
    "lve_per_frame",
    "lve_pooled",
    "mve",
    "mve_per_frame",
    "mve_pooled",
    "truncate",
]
