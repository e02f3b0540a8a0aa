"""Speech encoding alone: time and peak resident memory against audio length, chunked or not.

Usage:  python benchmarks/encode_memory.py [--model weights/synthtalk] [--seconds 30 120 600]
                                           [--chunk-seconds W] [--threads N]

Each length runs in a fresh process (peak resident memory is per process), which loads the
model, encodes that much audio (noise at speech level; the encoders' cost does not depend on
the content) with ``model.encode_speech`` and prints the seconds spent and the process's peak.
``--chunk-seconds 0`` is the full-context path; default: each encoder kind's windows.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def one(model_name: str, seconds: float, chunk: float | None, threads: int) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    from ptalker_cli.inference import load_model
    from ptalker_cli.model.speech_chunks import chunking_from_options

    if threads:
        torch.set_num_threads(threads)
    model = load_model(model_name, "cpu")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    audio = torch.randn(1, int(seconds * 16000), generator=torch.Generator().manual_seed(0)) * 0.1
    t0 = time.perf_counter()
    feats = model.encode_speech(audio, chunking=chunking_from_options(chunk))
    secs = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{seconds:8.0f} {feats['audio_content'].shape[1]:8d} {secs:9.2f} {secs / seconds * 60:10.2f} "
          f"{base:10.0f} {peak:9.0f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(ROOT / "weights/synthtalk"))
    ap.add_argument("--seconds", type=float, nargs="+", default=[30, 120, 600])
    ap.add_argument("--chunk-seconds", type=float, default=None)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        one(args.model, args.one, args.chunk_seconds, args.threads)
        return
    windows = "kind defaults" if args.chunk_seconds is None else (
        "full context" if args.chunk_seconds == 0 else f"{args.chunk_seconds:g} s")
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, load average "
          f"{tuple(round(x, 2) for x in os.getloadavg())}; model {args.model}; windows: {windows}")
    print(f"{'audio s':>8} {'frames':>8} {'encode s':>9} {'s/minute':>10} {'model MiB':>10} {'peak MiB':>9}")
    for seconds in args.seconds:
        cmd = [sys.executable, __file__, "--model", args.model, "--one", str(seconds), "--threads", str(args.threads)]
        if args.chunk_seconds is not None:
            cmd += ["--chunk-seconds", str(args.chunk_seconds)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
