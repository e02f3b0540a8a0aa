"""Speed / memory benchmark of the graph attention encoder E_G at BIWI size.

BIWI.ply (23,370 vertices, 46,068 triangles, 69,440 undirected edges, degree 3-7) cannot be
shipped, so a stand-in graph of the same size is built: a 123 x 190 = 23,370-vertex grid
triangulated with one diagonal per cell (interior degree 6), plus a few opposite diagonals so the
maximum degree is 7 (neighbour-table width K = 8, as for BIWI).  Edge count ~69.5 k, mean degree
~5.95 -- the same per-frame work as BIWI.

Usage:  python benchmarks/graph_encoder_speed.py [--frames 250] [--train-frames 50]
        [--reps 7] [--channels 4 4] [--heads 1] [--out-dim 128] [--baseline-frames 3]

Prints, for inference (torch.inference_mode, 250 frames = 10 s at 25 fps): median / best seconds
over repetitions after a warm-up, frames/s; for one training step (forward + backward on
50 frames): seconds; peak RSS (resource.getrusage, whole process, so cumulative) and the
parameter count; and the torch_geometric GATConv baseline (2 layers, one frame at a time) on a
few frames.  Other processes may share the CPU: medians and best-of are both reported, plus the process
CPU time and the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptalker_cli.model.graph_encoder import (  # noqa: E402
    GraphAttentionEncoder,
    _native_error,
    native_available,
    neighbour_table,
)


def biwi_like_edges(rows: int = 123, cols: int = 190, extra: int = 40, seed: int = 0):
    idx = np.arange(rows * cols).reshape(rows, cols)
    parts = [
        np.stack([idx[:, :-1].ravel(), idx[:, 1:].ravel()], 1),
        np.stack([idx[:-1, :].ravel(), idx[1:, :].ravel()], 1),
        np.stack([idx[:-1, :-1].ravel(), idx[1:, 1:].ravel()], 1),
    ]
    rng = np.random.default_rng(seed)
    r = rng.integers(0, rows - 1, extra)
    c = rng.integers(0, cols - 1, extra)
    parts.append(np.stack([idx[r, c + 1], idx[r + 1, c]], 1))
    e = np.sort(np.concatenate(parts), axis=1)
    return np.unique(e, axis=0), rows * cols


def peak_rss_mb() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


CPU_TIMES: list[float] = []  # process CPU seconds (all threads) of the last timeit's runs


def timeit(fn, reps: int, warmup: int = 1):
    """(median, best) wall seconds; CPU seconds of each run go to CPU_TIMES."""
    for _ in range(warmup):
        fn()
    ts = []
    CPU_TIMES.clear()
    for _ in range(reps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
        CPU_TIMES.append(time.process_time() - c0)
    return statistics.median(ts), min(ts)


def cpu_note() -> str:
    return f"[process CPU time median {statistics.median(CPU_TIMES):.4f} s]"


def load() -> str:
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--train-frames", type=int, default=50)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--channels", type=int, nargs="+", default=[4, 4])
    ap.add_argument("--heads", type=int, default=1)
    ap.add_argument("--out-dim", type=int, default=128)
    ap.add_argument("--baseline-frames", type=int, default=3)
    ap.add_argument("--skip-torch-path", action="store_true")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    edges, V = biwi_like_edges()
    idx, mask = neighbour_table(edges, V)
    deg = mask.sum(1) - 1
    print(f"graph: V={V} undirected edges={len(edges)} degree {int(deg.min())}-{int(deg.max())} "
          f"(mean {deg.float().mean():.2f}), K={idx.shape[1]}  [BIWI: 23370 / 69440 / 3-7 / 5.94 / 8]")
    print(f"cpus {os.cpu_count()}, {load()} (other processes on the CPU inflate wall times)")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"native kernel: {native_available()}{'' if native_available() else ' (' + str(_native_error) + ')'}")

    enc = GraphAttentionEncoder(edges, V, args.out_dim, channels=tuple(args.channels), heads=args.heads)
    n_params = sum(p.numel() for p in enc.parameters())
    n_gat = sum(p.numel() for p in enc.layers.parameters())
    print(f"config: channels={tuple(args.channels)} heads={args.heads} out_dim={args.out_dim} "
          f"params={n_params:,} (GAT {n_gat:,}, Linear {n_params - n_gat:,})")

    disp = torch.randn(1, args.frames, V, 3) * 0.01
    rss0 = peak_rss_mb()
    with torch.inference_mode():
        med, best = timeit(lambda: enc(disp), args.reps)
        out = enc(disp)
    print(f"inference ({'native' if native_available() else 'torch'} path), {args.frames} frames: "
          f"median {med:.4f} s  best {best:.4f} s  -> {args.frames / med:,.0f} frames/s (median), "
          f"out {tuple(out.shape)}; peak RSS {peak_rss_mb():.0f} MB (before: {rss0:.0f} MB) {cpu_note()}")

    if not args.skip_torch_path:
        enc.backend = "torch"
        with torch.inference_mode():
            med_t, best_t = timeit(lambda: enc(disp), max(1, args.reps // 2))
            out_t = enc(disp)
        enc.backend = "auto"
        print(f"inference (pure-torch path, chunk {enc.chunk_frames}), {args.frames} frames: "
              f"median {med_t:.4f} s  best {best_t:.4f} s  -> {args.frames / med_t:,.0f} frames/s; "
              f"max |native - torch| = {(out - out_t).abs().max().item():.2e}; "
              f"peak RSS {peak_rss_mb():.0f} MB {cpu_note()}")

    opt = torch.optim.SGD(enc.parameters(), lr=1e-3)
    xb = torch.randn(1, args.train_frames, V, 3) * 0.01
    target = torch.randn(1, args.train_frames, args.out_dim)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(enc(xb), target)
        loss.backward()
        opt.step()

    med_s, best_s = timeit(step, max(1, args.reps // 2))
    print(f"training step (fwd+bwd+SGD, pure-torch autograd path), {args.train_frames} frames: "
          f"median {med_s:.4f} s  best {best_s:.4f} s  -> {args.train_frames / med_s:,.0f} frames/s; "
          f"peak RSS {peak_rss_mb():.0f} MB {cpu_note()}")

    if args.baseline_frames > 0:
        try:
            from torch_geometric.nn import GATConv
        except ImportError:
            print("baseline: torch_geometric not installed")
            return
        ei = torch.from_numpy(np.concatenate([edges, edges[:, ::-1]]).T.copy())
        c1 = GATConv(3, args.channels[0], heads=args.heads)
        c2 = GATConv(args.channels[0] * args.heads, args.channels[1], heads=args.heads)
        nb = args.baseline_frames

        def base():
            for t in range(nb):
                c2(torch.nn.functional.elu(c1(disp[0, t], ei)), ei)

        with torch.inference_mode():
            med_b, best_b = timeit(base, 3)
        print(f"baseline torch_geometric 2x GATConv, one frame at a time, {nb} frames: "
              f"median {med_b / nb * 1000:.1f} ms/frame (best {best_b / nb * 1000:.1f}) -> "
              f"{args.frames} frames ~ {med_b / nb * args.frames:.1f} s (GAT layers only)")
    print(f"end: {load()}")


if __name__ == "__main__":
    main()
