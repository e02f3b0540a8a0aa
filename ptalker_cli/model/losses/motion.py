"""Motion terms (paper Eq. 10-12): vertex reconstruction, mouth (lip vertices) and velocity."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._common import check_mask, fp32, zero


def _check_motion(pred: Tensor, gt: Tensor) -> None:
    if pred.dim() != 4 or pred.shape[-1] != 3:
        raise ValueError(f"motion must have shape (B, T, V, 3), got {tuple(pred.shape)}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")


def _frame_error(diff: Tensor, mask: Tensor, form: str) -> Tensor:
    """Shared reduction of a ``(B, T, V, 3)`` error tensor for rec/mouth/velocity losses."""
    B, T = diff.shape[:2]
    flat = diff.reshape(B, T, -1)
    m = mask.to(flat.dtype)
    if form == "l2":
        # ||.||_2 over all V*3 coordinates of a frame (not squared). vector_norm has a
        # zero sub-gradient at 0, so identical inputs give a finite (zero) gradient.
        per_frame = torch.linalg.vector_norm(flat, ord=2, dim=-1)  # (B, T)
        n = m.sum(dim=1)  # valid frames per sequence
        per_seq = (per_frame * m).sum(dim=1) / n.clamp_min(1.0)
        has = n > 0
        n_seq = has.sum()
        if n_seq == 0:
            return zero(diff)
        return (per_seq * has.to(per_seq.dtype)).sum() / n_seq.to(per_seq.dtype)
    if form == "mse":
        n_entries = m.sum() * flat.shape[-1]
        if n_entries == 0:
            return zero(diff)
        return ((flat.pow(2) * m.unsqueeze(-1)).sum()) / n_entries
    raise ValueError(f"form must be 'l2' or 'mse', got {form!r}")


# ---------------------------------------------------------------------------
# 1-3: motion losses
# ---------------------------------------------------------------------------


@fp32
def reconstruction_loss(
    pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None, form: str = "l2"
) -> Tensor:
    r"""Vertex reconstruction loss ``L_rec``.

    ``form="l2"`` -- paper Eq. 10::

        L_rec = (1/N) sum_n (1/T_n) sum_t || d_{n,t} - d^_{n,t} ||_2

    the L2 norm (not squared) of the whole-frame error over all ``V*3`` coordinates,
    averaged over the valid frames of each sequence, then over sequences (sequences
    with no valid frame are skipped).

    ``form="mse"`` -- released code: ``nn.MSELoss()``, the mean of squared coordinate
    errors over all valid ``T*V*3`` entries of the batch (long sequences weigh more).
    Same optimum, different scale and gradient.

    Args:
        pred, gt: ``(B, T, V, 3)``.
        mask: optional ``(B, T)`` bool, ``True`` = valid frame.
        form: ``"l2"`` or ``"mse"``.
    """
    _check_motion(pred, gt)
    B, T = pred.shape[:2]
    m = check_mask(mask, B, T, pred.device)
    return _frame_error(pred.float() - gt.float(), m, form)


@fp32
def mouth_loss(
    pred: Tensor,
    gt: Tensor,
    lip_index: Tensor,
    mask: Optional[Tensor] = None,
    form: str = "l2",
) -> Tensor:
    r"""Mouth-region loss ``L_mou`` (paper Eq. 11): ``L_rec`` restricted to vertices ``m``.

    ``lip_index`` is a 1-D LongTensor of **vertex** ids selecting along the ``V`` axis of
    ``(B, T, V, 3)`` tensors; every selected vertex contributes its 3 coordinates.

    Released-code difference (spec 2.2.2, 6.1 #5, not reproduced here): the code applies
    these vertex ids to the flattened ``V*3`` axis, so it really penalises coordinate
    ``idx % 3`` of vertex ``idx // 3`` -- for BIWI a region among the first ~7,780
    vertices, not the lips. The code also uses MSE (``form="mse"``) with weight 1.2.
    """
    _check_motion(pred, gt)
    lip_index = torch.as_tensor(lip_index, device=pred.device)
    if lip_index.dim() != 1:
        raise ValueError(f"lip_index must be 1-D, got shape {tuple(lip_index.shape)}")
    if lip_index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"lip_index must hold integer vertex ids, got {lip_index.dtype}")
    V = pred.shape[2]
    if lip_index.numel() == 0:
        raise ValueError("lip_index is empty")
    if int(lip_index.min()) < 0 or int(lip_index.max()) >= V:
        raise ValueError(f"lip_index holds vertex ids outside [0, {V - 1}]")
    lip_index = lip_index.long()
    B, T = pred.shape[:2]
    m = check_mask(mask, B, T, pred.device)
    diff = pred.float().index_select(2, lip_index) - gt.float().index_select(2, lip_index)
    return _frame_error(diff, m, form)


@fp32
def velocity_loss(
    pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None, form: str = "l2"
) -> Tensor:
    r"""Velocity loss ``L_vel`` (paper Eq. 12) on first differences along time::

        L_vel = (1/N) sum_n (1/(T_n - 1)) sum_{t>=2} || (d_t - d_{t-1}) - (d^_t - d^_{t-1}) ||_2

    A difference ``t-1 -> t`` is valid when both frames are valid. The per-sequence mean
    is over its valid differences (the paper writes ``1/T_n``; ``1/(T_n-1)`` is the mean
    of the ``T_n-1`` terms -- only a constant factor per sequence). Sequences with no
    valid difference (e.g. one frame) contribute nothing; if none remains, 0.

    ``form="mse"`` is the released code: MSE between the first differences (weight 10
    in ``main.py``), averaged over all valid difference entries.
    """
    _check_motion(pred, gt)
    B, T = pred.shape[:2]
    m = check_mask(mask, B, T, pred.device)
    if form not in ("l2", "mse"):
        raise ValueError(f"form must be 'l2' or 'mse', got {form!r}")
    if T < 2:
        return zero(pred)
    p, g = pred.float(), gt.float()
    d = (p[:, 1:] - p[:, :-1]) - (g[:, 1:] - g[:, :-1])
    dm = m[:, 1:] & m[:, :-1]
    return _frame_error(d, dm, form)
