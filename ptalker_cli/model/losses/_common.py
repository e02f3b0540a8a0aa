"""Shared helpers of the loss terms: float32 without autocast, graph-attached zeros, masks."""

from __future__ import annotations

import functools
from typing import Callable, Optional, TypeVar

import torch
from torch import Tensor

_F = TypeVar("_F", bound=Callable)


def fp32(fn: _F) -> _F:
    """Run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device_type = "cpu"
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, Tensor):
                device_type = a.device.type
                break
        if device_type not in ("cpu", "cuda", "xpu", "mps", "hpu"):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def zero(*tensors: Optional[Tensor]) -> Tensor:
    """An exact float32 zero that stays connected to the graph of ``tensors``.

    Connecting it keeps ``loss.backward()`` legal (and the gradient zero) even when no
    element contributes.
    """
    out = None
    for t in tensors:
        if t is None:
            continue
        term = t.float().sum() * 0.0
        out = term if out is None else out + term
    if out is None:
        return torch.zeros((), dtype=torch.float32)
    return out


def check_mask(mask: Optional[Tensor], B: int, T: int, device: torch.device) -> Tensor:
    """Return a ``(B, T)`` bool mask (all True when ``mask`` is None)."""
    if mask is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    if mask.shape != (B, T):
        raise ValueError(f"mask must have shape ({B}, {T}), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def masked_time_mean(x: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Mean over valid frames: ``(B, T, D) -> (B, D)`` plus a ``(B,)`` has-frames flag."""
    B, T, _ = x.shape
    m = check_mask(mask, B, T, x.device).to(x.dtype)
    n = m.sum(1)
    mean = (x * m.unsqueeze(-1)).sum(1) / n.clamp_min(1.0).unsqueeze(-1)
    return mean, n > 0
