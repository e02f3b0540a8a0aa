"""Where and how a training process computes: its device, mixed precision, seeds, determinism."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from ..errors import ConfigError
from .distributed import DistInfo


def resolve_train_device(spec: str, info: DistInfo) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda`` / ``cuda:N``; under torchrun each rank takes the GPU of its local rank."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(spec)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda but no CUDA device is available; use --device cpu")
        if info.enabled:
            dev = torch.device("cuda", info.local_rank)
        elif dev.index is None:
            dev = torch.device("cuda", 0)
    return dev


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on CUDA where supported, else fp16; none on CPU unless asked (bf16)."""
    if mode == "off":
        return None
    if device.type == "cuda":
        if mode == "fp16":
            return torch.float16
        if mode == "bf16":
            return torch.bfloat16
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        raise ConfigError("--amp fp16 needs CUDA; use --amp bf16 or off on CPU")
    return None


def autocast(amp: torch.dtype | None, device: torch.device):
    """``torch.autocast`` to ``amp`` on ``device``, or a no-op context when ``amp`` is None."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
