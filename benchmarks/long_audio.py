"""Peak resident memory and time of `ptalker animate` on a long recording (issue 14: outputs written as made).

    python benchmarks/long_audio.py [--minutes 10] [--formats npy,obj,mp4] [--obj-minutes 2]
                                    [--model synthtalk-ict] [--keep DIR]

Audio: ``examples/speech.wav`` and the two CMU ARCTIC recordings in ``tests/data/arctic``, cycled
with 0.4-s pauses up to the length asked for (16-kHz WAV in a temporary folder).

For each format it runs ``python -m ptalker_cli animate LONG.wav -o OUT -q`` in a subprocess (a
fresh interpreter: model load included) and reports the wall time and the child's peak resident
set size (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``, read after each run; each run is
in its own intermediate process, so the figures do not mix). ``--encoders`` also measures the
speech encoders alone on the long clip (model load + ``encode_speech``, nothing written), to say
how much of the peak they take. Prints the date, the machine and the load average with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speech_tracks import long_track  # noqa: E402


def measure(cmd: list[str]) -> dict:
    """Run ``cmd`` in a fresh intermediate process; its wall time and peak RSS (GiB)."""
    probe = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "rc = subprocess.run(sys.argv[1:]).returncode\n"
        "wall = time.perf_counter() - t\n"
        "kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': rc, 'wall_s': wall, 'peak_gib': kb / 2**20}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"measurement failed: {out.stderr[-2000:]}")
    res = json.loads(lines[-1])
    if res["rc"] != 0:
        res["stderr"] = out.stderr[-400:]
    return res


ENCODERS_ONLY = (
    "import sys, torch, warnings\n"
    "from ptalker_cli.audio import load_audio\n"
    "from ptalker_cli.inference import load_model\n"
    "m = load_model(sys.argv[1], 'cpu')\n"
    "w = torch.from_numpy(load_audio(sys.argv[2], 16000))[None]\n"
    "with warnings.catch_warnings():\n"
    "    warnings.simplefilter('ignore')\n"
    "    f = m.encode_speech(w)\n"
    "print(tuple(f['audio_content'].shape))\n"
)


DECODE_STAGE = """
import json, resource, sys, time, warnings
import numpy as np, torch
from pathlib import Path
from ptalker_cli.audio import load_audio
from ptalker_cli.export.block_writers import FrameBlocks, write_motion_blocks
from ptalker_cli.inference import load_model
from ptalker_cli.model.decoding import StyleSpec
from ptalker_cli.model.vertex_blocks import decode_blocks
from ptalker_cli.motion import Motion

model_name, wav, out, fmt, mode = sys.argv[1:6]
m = load_model(model_name, "cpu")
wave = load_audio(wav, 16000)
win = 30 * 16000
feats = []
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for i in range(0, len(wave), win):
        piece = wave[i: i + win]
        if m.num_motion_frames(len(piece)) > 0:
            feats.append(m.encode_speech(torch.from_numpy(piece)[None]))
a = torch.cat([f["audio_content"] for f in feats], dim=1)
s_a = None if feats[0]["s_a"] is None else torch.stack([f["s_a"] for f in feats]).mean(0)
t = a.shape[1] // m.k
f = {"audio_content": a, "s_a": s_a, "frame_lengths": torch.tensor([t])}
del feats
rss = lambda key: int([ln for ln in open("/proc/self/status") if ln.startswith(key)][0].split()[1]) / 2**20
before = rss("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")  # peak RSS (VmHWM) := current RSS
t0 = time.perf_counter()
topo = m.topology
tmpl = torch.from_numpy(topo.vertices)[None]
spec = StyleSpec(torch.eye(1, max(m.config.num_subjects, 1)))
if mode == "blocks":
    frames, blocks = decode_blocks(m, f, tmpl, spec)
    arrays = (b[0].numpy() for b in blocks)
    write_motion_blocks(FrameBlocks(frames, m.config.fps, topo.name, arrays), topo, Path(out), fmt, force=True)
else:  # the whole motion at once, as before this change: decode_motion, then Motion.save
    v = m.decode_motion(f, tmpl, spec)
    Motion(v[0].numpy(), m.config.fps, topo.name).save(out)
print(json.dumps({"frames": t, "rss_before_gib": before, "peak_gib": rss("VmHWM:"),
                  "decode_write_s": time.perf_counter() - t0}))
"""


def decode_stage(model: str, wav: Path, out: Path, fmt: str, mode: str) -> dict:
    """Decoder passes + output head + writing alone, in process, on speech features made in 30-s windows."""
    res = subprocess.run([sys.executable, "-c", DECODE_STAGE, model, str(wav), str(out), fmt, mode],
                         capture_output=True, text=True)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    if res.returncode != 0 or not lines:
        return {"error": f"exit {res.returncode}: {res.stderr[-300:]}"}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--formats", default="npy,obj,mp4", help="comma-separated: npy, obj, ply, mp4")
    ap.add_argument("--obj-minutes", type=float, default=2.0, help="length for the OBJ/PLY folder (large on disk)")
    ap.add_argument("--model", default="synthtalk-ict")
    ap.add_argument("--encoders", action="store_true", help="also measure the speech encoders alone")
    ap.add_argument("--keep", type=Path, default=None, help="write outputs here instead of a temporary folder")
    ap.add_argument("--stage", choices=("cli", "decode"), default="cli",
                    help="cli: the whole command; decode: the decoder, output head and writer alone (speech "
                    "features computed in 30-s windows first, not counted), block by block and, with --whole, "
                    "the whole motion at once as before")
    ap.add_argument("--whole", action="store_true", help="--stage decode: also the whole-motion path")
    args = ap.parse_args()

    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = args.keep or Path(tmp_s)
        tmp.mkdir(parents=True, exist_ok=True)
        wavs = {}
        for fmt in args.formats.split(","):
            minutes = args.obj_minutes if fmt in ("obj", "ply") else args.minutes
            if minutes not in wavs:
                path = tmp / f"long_{minutes:g}min.wav"
                sf.write(path, long_track(minutes * 60.0), 16000)
                wavs[minutes] = path
            out = tmp / (f"out_{minutes:g}min.{fmt}" if fmt in ("npy", "mp4") else f"out_{minutes:g}min_{fmt}")
            cmd = [sys.executable, "-m", "ptalker_cli", "animate", str(wavs[minutes]), "-m", args.model,
                   "-o", str(out), "-q", "--force"] + (["--format", fmt] if fmt in ("obj", "ply") else [])
            if args.stage == "decode":
                for mode in ("blocks", "whole") if args.whole and fmt == "npy" else ("blocks",):
                    r = decode_stage(args.model, wavs[minutes], out, fmt, mode)
                    print(f"decode+write {fmt} {minutes:g} min, {mode}: {json.dumps(r)}", flush=True)
                    subprocess.run(["rm", "-rf", str(out), str(out.with_suffix('.json'))])
                continue
            res = measure(cmd)
            size = sum(p.stat().st_size for p in ([out] if out.is_file() else out.rglob("*"))) if out.exists() else 0
            print(f"{fmt:4s} {minutes:g} min: {res['wall_s']:7.1f} s, peak RSS {res['peak_gib']:.2f} GiB, "
                  f"output {size / 2**30:.2f} GiB, exit {res['rc']} {res.get('stderr', '')}", flush=True)
            if args.keep is None and out.exists():
                subprocess.run(["rm", "-rf", str(out)])
        if args.encoders:
            path = wavs.get(args.minutes) or next(iter(wavs.values()))
            res = measure([sys.executable, "-c", ENCODERS_ONLY, args.model, str(path)])
            print(f"speech encoders alone ({path.name}): {res['wall_s']:7.1f} s, peak RSS {res['peak_gib']:.2f} GiB",
                  flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"ru_maxrss of this process's children: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20:.2f} "
          "GiB (the largest run)")


if __name__ == "__main__":
    main()
