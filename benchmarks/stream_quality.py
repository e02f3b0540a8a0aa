"""What streaming costs in quality: streamed vs offline ``animate`` (full context) on real speech.

Usage:  python benchmarks/stream_quality.py [--lookahead 0 0.1 0.2 0.3 0.5] [--kv-window 5 20] [--model M]
        [--left-context S]

For each recording (tests/data/arctic/*.wav, examples/speech.wav) and each look-ahead, the default
model's streamed motion (``Animator.stream``, the other settings at their defaults) is compared with
offline ``Animator.animate`` on the same recording: mouth-opening correlation (upper − lower lip
vertex, as in eval/lipsync.py), lip vertex error LVE (mean over frames of the largest squared lip
vertex error, mm²) and mean vertex error (mm). ``--kv-window`` compares attention windows on the
recordings joined into one long clip (with 0.5 s pauses) against an unbounded window.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from ptalker_cli.audio import load_audio  # noqa: E402
from ptalker_cli.eval.lipsync import mouth_opening  # noqa: E402
from ptalker_cli.inference import Animator, load_model  # noqa: E402
from ptalker_cli.model.streaming import StreamSettings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = sorted((ROOT / "tests" / "data" / "arctic").glob("*.wav")) + [ROOT / "examples" / "speech.wav"]
UPPER_LIP, LOWER_LIP = 5533, 5517  # ICT head (cm, +Y up), as benchmarks/default_model_quality.py


def streamed(anim: Animator, wave: np.ndarray, settings: StreamSettings, chunk: int = 320) -> np.ndarray:
    s = anim.stream(settings=settings)
    outs = [s.push(wave[i: i + chunk]) for i in range(0, len(wave), chunk)]
    outs.append(s.finish())
    return np.concatenate(outs)


def compare(ref: np.ndarray, out: np.ndarray, lip: np.ndarray) -> dict[str, float]:
    a, b = mouth_opening(ref, UPPER_LIP, LOWER_LIP), mouth_opening(out, UPPER_LIP, LOWER_LIP)
    err = np.linalg.norm((out - ref)[:, lip] * 10.0, axis=-1)  # cm → mm
    return {"mouth_r": float(np.corrcoef(a, b)[0, 1]), "lve_mm2": float((err.max(1) ** 2).mean()),
            "mve_mm": float(np.linalg.norm((out - ref) * 10.0, axis=-1).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lookahead", type=float, nargs="*", default=[0.0, 0.1, 0.2, 0.3, 0.5])
    ap.add_argument("--kv-window", type=float, nargs="*", default=[])
    ap.add_argument("--left-context", type=float, default=StreamSettings.left_s, help="seconds of left context")
    ap.add_argument("--model", default=None, help="model name or folder (default: the embedded default)")
    args = ap.parse_args()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()}")
    model = load_model() if args.model is None else load_model(args.model)
    reach = model.config.content_right_reach_frames
    print(f"model {args.model or 'default'}: content encoder hears "
          f"{'the whole recording' if reach is None else f'{reach * 0.02:.2f} s ahead'}; left context "
          f"{args.left_context:g} s")
    anim = Animator(model)
    lip = model.lip_index.numpy()
    waves = {p.name: load_audio(p, 16000) for p in RECORDINGS}
    offline = {name: anim.animate(w).motion.vertices for name, w in waves.items()}
    print(f"{'look-ahead':>10} {'recording':<30} {'frames':>6} {'mouth r':>8} {'LVE mm²':>8} {'MVE mm':>7}")
    for la in args.lookahead:
        rows = []
        for name, w in waves.items():
            t0 = time.perf_counter()
            r = compare(offline[name], streamed(anim, w, StreamSettings(lookahead_s=la, left_s=args.left_context)), lip)
            rows.append(r)
            print(f"{la:>10.2f} {name:<30} {len(offline[name]):>6} {r['mouth_r']:>8.3f} {r['lve_mm2']:>8.3f} "
                  f"{r['mve_mm']:>7.3f}  ({time.perf_counter() - t0:.1f} s)")
        print(f"{la:>10.2f} {'mean':<30} {'':>6} {np.mean([r['mouth_r'] for r in rows]):>8.3f} "
              f"{np.mean([r['lve_mm2'] for r in rows]):>8.3f} {np.mean([r['mve_mm'] for r in rows]):>7.3f}")
    if args.kv_window:
        pause = np.zeros(8000, dtype=np.float32)
        long = np.concatenate([x for w in list(waves.values()) * 3 for x in (w, pause)])
        ref = streamed(anim, long, StreamSettings(kv_window_s=1e6))
        print(f"kv window vs unbounded on {len(long) / 16000:.1f} s ({len(ref)} frames), look-ahead 0.2 s:")
        for kv in args.kv_window:
            r = compare(ref, streamed(anim, long, StreamSettings(kv_window_s=kv)), lip)
            print(f"  {kv:>6.1f} s: mouth r {r['mouth_r']:.4f}, LVE {r['lve_mm2']:.4f} mm², MVE {r['mve_mm']:.4f} mm")
    print(f"load average after {os.getloadavg()}")


if __name__ == "__main__":
    main()
