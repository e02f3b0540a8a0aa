"""Training speed at the paper's BIWI size: optimizer steps per second and peak memory.

Usage:  python benchmarks/train_speed.py [--device cpu|cuda] [--speech-encoders tiny large]
                                         [--frames 100] [--steps 5] [--threads N] [--amp auto|off|bf16|fp16]

Each step is the real ``ptalker train`` step (``Trainer.train_micro_batch`` +
``Trainer.optimizer_step``: teacher-forced forward, every loss term, backward,
gradient clipping, Adam) on batch size 1 with a T-frame sequence (default 100 frames
= 4 s at 25 fps) of a synthetic 23,370-vertex mesh (BIWI's own mesh cannot be
shipped). The model is the ``biwi`` preset (d = 128, 6-layer decoder, GAT encoder,
both motion encoders, identity and audio style) with random weights. Speech encoders:
``tiny`` = small HuBERT/wav2vec2 configs (isolates everything else); ``large`` = the
real HuBERT-large + two wav2vec2-large architectures built from their configs (random
weights, the paper's compute and memory; ~950 M parameters, ~15 GB of Adam state).
Peak memory: ``torch.cuda.max_memory_allocated`` on CUDA; the process's peak resident
set size on CPU (it includes the model, gradients and Adam state).
"""

from __future__ import annotations

import argparse
import gc
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from decode_speed import biwi_like_topology, large_encoder  # noqa: E402

from ptalker_cli.config import tiny_speech_encoder  # noqa: E402
from ptalker_cli.mesh import Topology  # noqa: E402


def make_dataset(root: Path, frames: int) -> Path:
    from ptalker_cli.data.testing import make_fake_dataset

    topo = biwi_like_topology()
    regions = dict(topo.regions)
    regions["upper_face"] = np.arange(15000, 15000 + 7784)
    topo = Topology("biwi-like", topo.vertices, topo.faces, regions, topo.units)
    return make_fake_dataset(root, subjects=("F2", "F3"), sentences=("e01", "e02"), train_subjects=("F2", "F3"),
                             frames=frames, topology=topo)


def encoders(kind: str) -> dict:
    import dataclasses

    if kind == "tiny":
        content, style = tiny_speech_encoder("hubert"), tiny_speech_encoder("wav2vec2")
    else:
        content, style = large_encoder("hubert"), large_encoder("wav2vec2")
    return {"audio_content": dataclasses.asdict(content), "audio_style": [dataclasses.asdict(style)] * 2}


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB on Linux


def run(kind: str, args, data: Path, out: Path) -> None:
    from ptalker_cli.train import TrainConfig
    from ptalker_cli.train.trainer import Trainer

    dev = torch.device(args.device)
    cfg = TrainConfig(data=str(data), out=str(out / kind), preset="biwi", model=encoders(kind), epochs=1,
                      device=args.device, amp=args.amp, tensorboard=False, progress=False, seed=0)
    torch.manual_seed(0)
    trainer = Trainer(cfg, quiet=True, force=True)
    trainer.setup()
    trainer._enter_stage(2)
    model = trainer.model
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for n, p in model.named_parameters() if n in trainer.trainable)
    batch = next(iter(trainer.train_loader))
    frames = int(batch["frame_mask"].sum())

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def step():
        trainer.train_micro_batch(batch, 1.0)
        trainer.optimizer_step()

    for _ in range(args.warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(args.steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    if dev.type == "cuda":
        mem = f"peak CUDA memory {torch.cuda.max_memory_allocated(dev) / 1024**3:.2f} GiB"
    else:
        mem = f"peak RSS {peak_rss_gb():.2f} GiB"
    amp = str(trainer.amp).replace("torch.", "") if trainer.amp is not None else "off"
    print(f"{kind:>6} speech encoders: params {n_all / 1e6:8.2f} M ({n_train / 1e6:.2f} M trained), "
          f"T = {frames} frames, batch 1, AMP {amp}: {1 / med:7.3f} steps/s "
          f"(median {med:.3f} s/step over {len(times)}, min {min(times):.3f}), {mem}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--speech-encoders", nargs="+", choices=["tiny", "large"], default=["tiny", "large"])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--amp", default="auto", choices=["auto", "off", "bf16", "fp16"])
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device: {dev} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print("model: biwi preset, V = 23370 (synthetic mesh), d = 128, 6 decoder layers, GAT + motion encoders, "
          "all loss terms (default LossConfig), Adam, grad clip 1.0")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_dataset(tmp / "data", args.frames)
        for kind in args.speech_encoders:
            # the run with large encoders holds ~15 GB of weights + Adam state on CPU
            run(kind, args, data, tmp / "runs")
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
