"""Auxiliary viseme classification: the features must say which mouth shape sounds now.

Not a term of the paper (issue 19). A linear classifier reads each frame's viseme (the 15
Oculus visemes, p/b/m being one) from the decoder's features or the speech features pooled to
motion frames (``ModelConfig.viseme_source``), against labels from a corpus's phone timings
(:mod:`ptalker_cli.data.synth.labels`)::

    L_vis = mean over labelled valid frames of CE(W h_t, v_t)

Phone supervision gives the speech path a dense signal for what the lips must do at every
frame, on text the motion losses have seen only a few times, instead of leaving it to the
vertex error of two lip vertices among thousands.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import check_mask, fp32, zero

IGNORE = -100


@fp32
def viseme_loss(logits: Tensor, labels: Tensor, mask: Optional[Tensor] = None) -> Tensor:
    """Mean cross-entropy of ``(B, T, C)`` logits against ``(B, T)`` classes, ``-100`` = no label.

    Frames outside ``mask`` and frames labelled -100 never count; with no labelled frame the
    result is an exact zero attached to the graph.
    """
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, C), got {tuple(logits.shape)}")
    B, T, C = logits.shape
    labels = torch.as_tensor(labels, device=logits.device).long()
    if labels.shape != (B, T):
        raise ValueError(f"labels must be (B, T) = {(B, T)}, got {tuple(labels.shape)}")
    m = check_mask(mask, B, T, logits.device)
    labels = torch.where(m, labels, torch.full_like(labels, IGNORE))
    valid = labels != IGNORE
    n = int(valid.sum())
    if n == 0:
        return zero(logits)
    if int(labels[valid].min()) < 0 or int(labels[valid].max()) >= C:
        raise ValueError(f"labels must be -100 or in [0, {C - 1}]")
    return F.cross_entropy(logits.float().reshape(B * T, C), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="sum") / n
