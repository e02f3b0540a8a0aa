"""Live latency of ``ptalker serve``: two clients sending speech at real-time pace.

Usage:  python benchmarks/stream_latency.py [--model synthtalk-ict] [--clients 2] [--chunk-ms 20]
                                            [--repeat 2] [--lookahead 0.2] [--hop 3]

Starts ``ptalker serve --port 0`` as a subprocess (the default model unless --model), then runs the
clients in this process: each sends a recording (client 1: examples/speech.wav, client 2: the
tests/data/arctic clips, each repeated --repeat times) in chunks of --chunk-ms, chunk j leaving
when its audio would have been recorded (wall clock), then ``{"type": "end"}``. For every frame it
reports the latency from the moment the audio covering that frame (frame i covers samples
[640·i, 640·(i+1))) was sent to the moment the frame arrived: p50, p95, max; the time from the first
audio to the first frame; frames received against frames expected; and the mouth-opening
correlation of the streamed motion with offline ``animate`` on the same recording.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from ptalker_cli.audio import load_audio  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
UPPER_LIP, LOWER_LIP = 5533, 5517  # ICT head (cm, +Y up), as benchmarks/default_model_quality.py


async def client(url: str, wave: np.ndarray, chunk: int, sample_rate: int = 16000) -> dict:
    from websockets.asyncio.client import connect

    sent_at = np.zeros((len(wave) + chunk - 1) // chunk)
    frames: dict[int, np.ndarray] = {}
    arrived: dict[int, float] = {}
    async with connect(url, max_size=None) as ws:
        start = json.loads(await ws.recv())

        async def receive():
            async for msg in ws:
                if isinstance(msg, bytes):
                    (i,) = struct.unpack_from("<I", msg)
                    arrived[i] = time.perf_counter()
                    frames[i] = np.frombuffer(msg, "<f4", offset=4).reshape(-1, 3)
                elif json.loads(msg).get("type") == "done":
                    return json.loads(msg)
                else:
                    raise RuntimeError(msg)

        reader = asyncio.create_task(receive())
        t0 = time.perf_counter()
        for j in range(len(sent_at)):
            delay = t0 + (j + 1) * chunk / sample_rate - time.perf_counter()  # the chunk has been "recorded"
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(wave[j * chunk: (j + 1) * chunk].astype("<f4").tobytes())
            sent_at[j] = time.perf_counter()
        await ws.send(json.dumps({"type": "end"}))
        done = await reader
    n = done["frames"]
    per = int(sample_rate / start["fps"])
    lat = np.array([arrived[i] - sent_at[min(((i + 1) * per - 1) // chunk, len(sent_at) - 1)] for i in range(n)
                    if i in arrived])
    return {"frames": n, "received": len(frames), "latency": lat, "first": arrived.get(0, np.nan) - sent_at[0],
            "vertices": np.stack([frames[i] for i in range(n)]) if len(frames) == n else None}


def cpu_per_frame(model_name: str | None, wave: np.ndarray, lookahead: float, hop: int) -> tuple[float, float]:
    """In this process, one stream at full speed: (CPU ms, wall ms) per frame, thread CPU time."""
    from ptalker_cli.inference import Animator, load_model
    from ptalker_cli.model.streaming import StreamSettings

    anim = Animator(load_model(model_name) if model_name else load_model())
    s = anim.stream(settings=StreamSettings(lookahead_s=lookahead, hop_frames=hop))
    c0, t0, n = time.thread_time(), time.perf_counter(), 0
    for i in range(0, len(wave), 320):
        n += len(s.push(wave[i: i + 320]))
    n += len(s.finish())
    return 1000 * (time.thread_time() - c0) / n, 1000 * (time.perf_counter() - t0) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--chunk-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--lookahead", type=float, default=0.2)
    ap.add_argument("--hop", type=int, default=3)
    args = ap.parse_args()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, load average before {os.getloadavg()}")
    arctic = np.concatenate([load_audio(p, 16000) for p in sorted((ROOT / "tests/data/arctic").glob("*.wav"))])
    recordings = [np.tile(load_audio(ROOT / "examples/speech.wav", 16000), args.repeat), np.tile(arctic, args.repeat)]
    recordings = (recordings * args.clients)[: args.clients]
    cpu, wall = cpu_per_frame(args.model, recordings[0], args.lookahead, args.hop)
    print(f"one stream in-process at full speed: {cpu:.1f} ms CPU, {wall:.1f} ms wall per frame "
          f"(real time at 25 fps needs 40 ms per frame per client)")
    cmd = [sys.executable, "-m", "ptalker_cli", "serve", "--port", "0", "--lookahead", str(args.lookahead),
           "--hop", str(args.hop)] + (["-m", args.model] if args.model else [])
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        if "listening on" not in line:
            raise SystemExit(f"server did not start: {line}{server.stderr.read()}")
        url = line.strip().rsplit(" ", 1)[-1]
        print(line.strip())
        chunk = int(round(args.chunk_ms * 16))

        async def run_all():
            return await asyncio.gather(*(client(url, w, chunk) for w in recordings))

        t0 = time.perf_counter()
        results = asyncio.run(run_all())
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1]
    print(f"{args.clients} clients, {args.chunk_ms:g}-ms chunks at real-time pace, look-ahead {args.lookahead} s, "
          f"hop {args.hop} frames; {wall:.1f} s wall")
    from ptalker_cli.eval.lipsync import mouth_opening
    from ptalker_cli.inference import Animator, load_model

    anim = Animator(load_model(args.model) if args.model else load_model())
    for k, (r, wave) in enumerate(zip(results, recordings)):
        lat = r["latency"]
        corr = float("nan")
        if r["vertices"] is not None and anim.config.num_vertices == r["vertices"].shape[1]:
            off = anim.animate(wave).motion.vertices
            corr = float(np.corrcoef(mouth_opening(off, UPPER_LIP, LOWER_LIP),
                                     mouth_opening(r["vertices"], UPPER_LIP, LOWER_LIP))[0, 1])
        print(f"client {k + 1}: {len(wave) / 16000:.1f} s audio, frames {r['received']}/{r['frames']}, latency "
              f"p50 {np.percentile(lat, 50):.3f} s, p95 {np.percentile(lat, 95):.3f} s, max {lat.max():.3f} s, "
              f"first frame {r['first']:.3f} s after the first audio, mouth-opening r vs offline {corr:.3f}")
    print("server log:\n  " + "\n  ".join(x for x in log.splitlines() if x.strip()))
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
