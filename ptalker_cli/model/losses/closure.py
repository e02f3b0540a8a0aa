"""Closure-aware lip loss: the inner-lip gap must follow the ground truth where its lips are closed.

Not a term of the paper. L2 vertex losses let a model hover half open through /p b m/
(regression to the mean: an open-ish mouth is a cheap average of open vowels and short
closures, and two lip vertices weigh nothing among 14,062). This term looks only at the
inner-lip gap (upper − lower midline vertex along the up axis), and gives the frames where
the ground truth's lips are closed as much weight as all the others together::

    g_t = y(upper)_t − y(lower)_t,        closed_t = ĝ_t < threshold · mean_valid(ĝ)
    L_close = ½ (Σ closed·|g − ĝ| / Σ closed  +  Σ open·|g − ĝ| / Σ open)          (cm)

with ĝ the ground truth's midline gap and the mean over each sequence's valid frames. The
error |g − ĝ| is averaged over three vertical inner-lip pairs (Multi-PIE landmarks 61/67,
62/66, 63/65: the midline and either side of it), so that the lips close as a line, not at
one vertex pair. The open frames' mean error is the other half (``balanced``, the default):
with the closed frames alone, a model that cannot time every closure learns to keep the whole
mouth nearly shut (measured: the mean vowel gap on Festival speech fell from 1.30 to 0.46 cm);
with both halves the closed frames (the fewer) still weigh more per frame and the vowels keep
their opening. ``tolerance`` = k matches each closed ground-truth frame with the best predicted
frame within ±k. Switched on by ``LossConfig.lip_closure`` (weight, default 0),
``lip_closure_threshold`` (the fraction) and ``lip_closure_tolerance``; the shipped default was
fine-tuned with weight 400 and tolerance 1 on its own free-running frames (docs/training.md).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ._common import check_mask, fp32, zero

#: vertical inner-lip vertex pairs (upper, lower) per topology, the midline first. ICT-FaceKit:
#: Multi-PIE landmarks 62/66 (midline), 61/67 and 63/65 (templates' landmarks68, 0-based)
INNER_LIP_PAIRS: dict[str, tuple[tuple[int, int], ...]] = {"ict": ((5533, 5517), (5711, 5966), (6216, 6470))}


def lip_pairs(topology: str) -> tuple[tuple[int, int], ...]:
    """The inner-lip pairs of a topology; ValueError where none are known (the term needs them)."""
    try:
        return INNER_LIP_PAIRS[topology]
    except KeyError:
        raise ValueError(f"the lip_closure loss knows the inner lips of {', '.join(INNER_LIP_PAIRS)} only, "
                         f"not of '{topology}'; set loss.lip_closure=0") from None


def inner_lip_gap(vertices: Tensor, upper: int, lower: int, axis: int = 1) -> Tensor:
    """(B, T) gap upper − lower along ``axis`` of (B, T, V, 3) vertices."""
    return vertices[:, :, upper, axis] - vertices[:, :, lower, axis]


@fp32
def lip_closure_loss(pred: Tensor, gt: Tensor, lips: Sequence[tuple[int, int]], mask: Optional[Tensor] = None,
                     threshold: float = 0.3, balanced: bool = True, tolerance: int = 0) -> Tensor:
    """Mean absolute inner-lip gap error over the frames where the ground truth is closed (see module doc).

    Args:
        pred, gt: ``(B, T, V, 3)`` absolute vertex positions.
        lips: (upper, lower) vertex id pairs, the midline first (it decides which frames are
            closed), e.g. :data:`INNER_LIP_PAIRS` ``["ict"]``.
        mask: optional ``(B, T)`` bool, ``True`` = valid frame.
        threshold: a frame is closed when its ground-truth gap is below this fraction of the
            sequence's mean ground-truth gap.
        balanced: also the mean error over the open frames, averaged half and half with the closed
            frames' (see the module doc); False: the closed frames only.
        tolerance: a closed ground-truth frame t is matched by the best predicted frame within
            t ± ``tolerance`` (0: frame t itself): the closure must happen, give or take that many
            frames, rather than be smeared over its neighbours.
    """
    if pred.dim() != 4 or pred.shape != gt.shape:
        raise ValueError(f"pred and gt must both be (B, T, V, 3), got {tuple(pred.shape)} and {tuple(gt.shape)}")
    B, T, V = pred.shape[:3]
    if not lips or any(not (0 <= int(i) < V) for pair in lips for i in pair):
        raise ValueError(f"lip vertex pairs {lips} empty or outside [0, {V - 1}]")
    m = check_mask(mask, B, T, pred.device)
    p, g = pred.float(), gt.float()
    mid_gt = inner_lip_gap(g, *lips[0])
    mf = m.float()
    mean_gt = (mid_gt * mf).sum(1) / mf.sum(1).clamp_min(1.0)  # (B,)
    closed = (mid_gt < threshold * mean_gt.unsqueeze(1)) & m
    n = closed.sum()
    if n == 0:
        return zero(pred)
    gp = torch.stack([inner_lip_gap(p, u, lo) for u, lo in lips])  # (pairs, B, T)
    gg = torch.stack([inner_lip_gap(g, u, lo) for u, lo in lips])
    err = (gp - gg).abs().mean(0)
    closed_err = err if tolerance <= 0 else _best_within(gp, gg, m, int(tolerance))
    closed_term = torch.where(closed, closed_err, torch.zeros_like(closed_err)).sum() / n.float()
    if not balanced:
        return closed_term
    opened = m & ~closed
    n_open = opened.sum()
    if n_open == 0:
        return closed_term
    return 0.5 * (closed_term + (err * opened.float()).sum() / n_open.float())


def _best_within(gp: Tensor, gg: Tensor, valid: Tensor, k: int) -> Tensor:
    """(B, T) min over d in [−k, k] of the mean-over-pairs |gp(t + d) − gg(t)|, valid frames t + d only."""
    T = gp.shape[-1]
    best = None
    for d in range(-k, k + 1):
        lo, hi = max(0, -d), min(T, T - d)  # frames t whose t + d lies inside
        e = torch.full_like(gg[0], float("inf"))
        if hi > lo:
            part = (gp[..., lo + d: hi + d] - gg[..., lo:hi]).abs().mean(0)
            e[:, lo:hi] = torch.where(valid[:, lo + d: hi + d], part, torch.full_like(part, float("inf")))
        best = e if best is None else torch.minimum(best, e)
    return best
