"""The validation pass: every loss term and the lip vertex error over the validation split.

LVE is the evaluation's own definition (:func:`ptalker_cli.eval.metrics.lve_per_frame`,
spec §5.1): the per-frame maximum over the lip vertices of the squared L2 error, pooled
over all valid frames of all sequences. Sums are reduced over torchrun ranks, so every
rank returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..config import LossConfig
from ..eval.metrics import lve_per_frame
from . import distributed as dist_util
from .runtime import autocast


def lip_error_sums(pred: Tensor, gt: Tensor, lip_index: Tensor, mask: Tensor) -> tuple[float, float]:
    """(sum over the valid frames of a padded batch of the per-frame LVE, number of valid frames).

    ``pred``/``gt`` are (B, T, V, 3), ``mask`` (B, T) marks the valid frames. The LVE of a
    set of sequences is the first divided by the second.
    """
    lip = lip_index.to(pred.device)
    total, frames = 0.0, 0.0
    for p, g, m in zip(pred, gt, mask.bool()):
        if not bool(m.any()):
            continue
        p_lip, g_lip = p[m][:, lip], g[m][:, lip]  # only the lip vertices leave the device
        per_frame = lve_per_frame(p_lip, g_lip, range(p_lip.shape[1]))
        total += float(per_frame.sum())
        frames += float(per_frame.shape[0])
    return total, frames


@torch.no_grad()
def validation_pass(model, loader, loss_cfg: LossConfig, to_device: Callable[[dict[str, Any]], dict[str, Tensor]],
                    amp: torch.dtype | None, device: torch.device, info: dist_util.DistInfo) -> dict[str, float]:
    """``val_<term>`` (mean per sequence over every rank's batches) and ``val_lve`` (frames pooled)."""
    model.eval()
    sums: dict[str, float] = {}
    count = 0.0
    lip_sum = lip_frames = 0.0
    for batch in loader:
        b = to_device(batch)
        with autocast(amp, device):
            out = model(b["audio"], b["vertices"], b["template"], b["subject_index"], b["audio_lengths"],
                        b["frame_mask"])
            losses = model.losses(out, b["vertices"], b["subject_index"], loss_cfg, visemes=b.get("visemes"))
        n = float(b["vertices"].shape[0])
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v) * n
        count += n
        s, f = lip_error_sums(out.vertices, b["vertices"], model.lip_index, out.frame_mask)
        lip_sum += s
        lip_frames += f
    keys = sorted(dist_util.all_keys(list(sums), info))
    vec = [sums.get(k, 0.0) for k in keys] + [count, lip_sum, lip_frames]
    vec = dist_util.all_reduce_sum(vec, info, dist_util.comm_device(device))
    count, lip_sum, lip_frames = vec[-3:]
    result = {f"val_{k}": v / max(count, 1.0) for k, v in zip(keys, vec[:-3])}
    result["val_lve"] = lip_sum / max(lip_frames, 1.0)
    model.train()
    return result
