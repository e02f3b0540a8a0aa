"""GLB writing time against `animate`'s time, for a 5.6-s and a 60-s clip, with the default model.

    python benchmarks/glb_write.py [--repeats 3] [--seconds 60] [--cli]

Audio: ``examples/speech.wav`` (5.6 s) and a 60-s track made by cycling the example and the
two CMU ARCTIC recordings in ``tests/data/arctic`` with 0.4-s pauses between them.

For each clip it times (best of ``--repeats``; wall clock, and the CPU time of this process
over all its threads, which depends much less on what else the machine runs):
* ``animate``: :meth:`Animator.animate` on the audio (model already loaded: speech encoders,
  decoder, output mesh);
* ``glb``: :func:`write_motion` to a ``.glb`` in a temporary folder, for each layout
  (compact, compact + quantized, per-frame), with the audio written beside it as the CLI does;
and prints the file size, the number of morph targets, the measured error, and the GLB's
share of ``animate + glb``. ``ptalker animate`` itself also starts Python and loads the model
(several seconds), which this does not count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from speech_tracks import long_track  # noqa: E402

from ptalker_cli.export import write_motion  # noqa: E402
from ptalker_cli.export.glb import GlbOptions, read_glb  # noqa: E402
from ptalker_cli.inference import DEFAULT_MODEL, Animator, load_model  # noqa: E402

LAYOUTS = {"compact": GlbOptions(), "quantized": GlbOptions(quantize=True), "per-frame": GlbOptions(motion="per-frame")}


def best(fn, repeats: int):
    """(best wall seconds, best CPU seconds of this process, all threads, the result)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--cli", action="store_true", help="also time the whole `ptalker animate` command (.npy vs .glb)")
    args = ap.parse_args()
    import soundfile as sf

    print(f"cpu cores: {os.cpu_count()}, load average before: {os.getloadavg()[0]:.2f}")
    animator = Animator(load_model(DEFAULT_MODEL, offline=True))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        long_wav = tmp / "long.wav"
        sf.write(long_wav, long_track(args.seconds), 16000, subtype="PCM_16")
        clips = {"example 5.6 s": ROOT / "examples" / "speech.wav", f"{args.seconds:g} s": long_wav}
        print("times: best of", args.repeats, "- wall seconds, and CPU seconds of this process (all threads)")
        print(f"{'clip':<14}{'frames':>7}{'animate':>14}  {'layout':<10}{'glb':>12}{'share':>13}"
              f"{'MB':>8}{'targets':>8}{'rms mm':>8}{'max mm':>8}{'lip mm':>8}")
        print(f"{'':<14}{'':>7}{'wall / cpu':>14}  {'':<10}{'wall / cpu':>12}{'wall / cpu':>13}")
        for label, wav in clips.items():
            a_wall, a_cpu, res = best(lambda w=wav: animator.animate(w), args.repeats)
            topo = res.topology
            for name, opts in LAYOUTS.items():
                out = tmp / f"{name}.glb"
                g_wall, g_cpu, _ = best(
                    lambda o=out, g=opts: write_motion(res.motion, topo, o, force=True, glb=g, audio=wav), args.repeats)
                extras = read_glb(out)["extras"]
                err = extras.get("error_mm") or {}
                fmt = lambda key: f"{err[key]:8.3f}" if key in err else f"{'-':>8}"  # noqa: E731
                share = f"{g_wall / (a_wall + g_wall):.0%} / {g_cpu / (a_cpu + g_cpu):.0%}"
                print(f"{label:<14}{res.motion.num_frames:>7}{a_wall:>7.2f} /{a_cpu:>5.2f}  {name:<10}"
                      f"{g_wall:>5.2f} /{g_cpu:>5.2f}{share:>13}{out.stat().st_size / 1e6:>8.2f}{extras['targets']:>8}"
                      f"{fmt('rms_mm')}{fmt('max_mm')}{fmt('lip_max_mm')}")
        if args.cli:
            cli_times(tmp, args.repeats)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def cli_times(tmp: Path, repeats: int) -> None:
    """The whole command, as a user runs it: `ptalker animate examples/speech.wav -o OUT`, .npy and
    .glb runs interleaved (the machine's load drifts), median of ``repeats`` each."""
    import subprocess

    walls: dict[str, list[float]] = {"out.npy": [], "out.glb": []}
    for _ in range(repeats):
        for out, times in walls.items():
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ptalker_cli", "animate", str(ROOT / "examples" / "speech.wav"),
                            "-o", str(tmp / out), "--force", "-q"], check=True)
            times.append(time.perf_counter() - t)
    print(f"whole command, wall seconds (median of {repeats}, interleaved): start-up, model load, animation, writing")
    for out, times in walls.items():
        print(f"  ptalker animate examples/speech.wav -o {out:<8} {float(np.median(times)):6.2f}")


if __name__ == "__main__":
    main()
