"""Multi-process training with the standard tools: torchrun + DistributedDataParallel.

``torchrun --nproc-per-node N -m ptalker_cli train ...`` starts N processes and sets
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; :func:`init` joins the process group (NCCL
on CUDA, gloo on CPU). :class:`ShardedBatchSampler` gives every rank its share of the
length-bucketed batches (the distributed-sampler equivalent for batch samplers) and
can start in the middle of an epoch, which is what makes ``--resume`` exact.
"""

from __future__ import annotations

import datetime
import os
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..data.dataset import LengthBucketSampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """The process's place in a torchrun launch (world size 1 when not launched by torchrun)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("WORLD_SIZE", 1)))


def init(info: DistInfo, device: torch.device) -> None:
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: Sequence[float], info: DistInfo, device: torch.device) -> list[float]:
    """Sum float values over ranks (float64 on the communication device)."""
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj, info: DistInfo):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_keys(keys: list[str], info: DistInfo) -> list[str]:
    """The sorted union of every rank's ``keys`` (ranks without batches still take part in a reduction)."""
    gathered = all_gather_object(sorted(keys), info)
    return sorted({k for ks in gathered for k in ks})


def comm_device(device: torch.device) -> torch.device:
    """Where reductions run: the GPU for NCCL, the CPU for gloo."""
    return device if device.type == "cuda" else torch.device("cpu")


class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's batches of a :class:`LengthBucketSampler`, from a given batch on.

    Every rank computes the same global batch list (same seed and epoch); rank ``r``
    takes batches ``r, r + W, r + 2W, ...``. With ``pad=True`` (training) the list is
    first padded by repeating its first batches so every rank gets the same number of
    batches: DDP needs all ranks to take the same number of steps. ``start`` skips this
    rank's first batches (resuming in the middle of an epoch).
    """

    def __init__(self, base: LengthBucketSampler, rank: int = 0, world_size: int = 1, pad: bool = True):
        self.base = base
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.start = int(start)

    def batches(self) -> list[list[int]]:
        batches = self.base._batches()
        w = self.world_size
        if w > 1 and self.pad and batches and len(batches) % w:
            extra = w - len(batches) % w
            batches = batches + [batches[i % len(batches)] for i in range(extra)]
        return batches[self.rank::w]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self.batches()) - self.start)


def launch_torchrun(devices: int, argv: list[str], run_dir: str | os.PathLike | None = None) -> int:
    """Re-run this command under torchrun with ``devices`` processes (``--devices N``); returns its exit code.

    torchrun runs in its own session and its stderr is relayed line by line. When this
    process is interrupted (SIGINT / SIGTERM) or fails, the relay stops (torchrun's own
    shutdown report is not shown), torchrun gets SIGTERM (it passes it on to the
    training processes, which stop cleanly), and after :data:`STOP_TIMEOUT_S` seconds
    whatever is left of its process group is killed. ``run_dir``: tidied afterwards
    (an unfinished checkpoint folder is removed; the last complete one is kept).
    """
    import signal
    import subprocess
    import threading

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
           "-m", "ptalker_cli", "train", *argv]
    env = dict(os.environ, PTALKER_TORCHRUN="1")
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, start_new_session=True)
    relay_on = threading.Event()
    relay_on.set()

    def relay() -> None:
        out = getattr(sys.stderr, "buffer", None)
        for line in iter(proc.stderr.readline, b""):
            if relay_on.is_set():
                if out is not None:
                    out.write(line)
                    out.flush()
                else:
                    sys.stderr.write(line.decode("utf-8", "replace"))
                    sys.stderr.flush()

    thread = threading.Thread(target=relay, name="ptalker-torchrun-stderr", daemon=True)
    thread.start()
    try:
        code = proc.wait()
    except BaseException:
        relay_on.clear()
        _stop_group(proc, signal)
        if run_dir is not None:
            from .checkpoint import tidy_run_dir

            tidy_run_dir(run_dir)
        raise
    finally:
        thread.join(timeout=5)
    return code


#: Seconds torchrun (and the training processes) get to stop after SIGTERM before they are killed.
STOP_TIMEOUT_S = 60.0


def _stop_group(proc, signal) -> None:
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except OSError:
        return
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (workers blocked in a collective)
    except OSError:
        pass
    proc.wait()
