"""What chunked speech encoding (model/speech_chunks.py) costs in quality.

Usage:
  python benchmarks/chunking_quality.py lve --data SYNTHTALK_DIR [--model weights/synthtalk] [--first 25]
  python benchmarks/chunking_quality.py late [--minutes 10] [--model weights/synthtalk]

``lve``: for every speaker of a SynthTalk corpus, its utterances from sentence ``--first`` on (the
default model trained on sentences 1–24) are joined into one long recording: each utterance's
audio trimmed or padded to its frame count × (16000 / fps) samples, so that the joined ground
truth stays frame-aligned. Each recording is animated with the speaker's own style and template,
once with full-context speech encoders and once per window setting; printed: LVE against the
ground truth (mm², the corpus is in cm) and the LVE-style distance of each chunked prediction to
the full-context one (mean over frames of the max over lip vertices of the squared distance).

``late``: a 60-s block of real speech (tests/data/arctic and examples/speech.wav, joined with
0.7-s pauses, padded with silence to 60 s) is repeated to ``--minutes`` minutes and animated once
with the default windows. The first and the last minute hold the same audio, so any difference
between their lip-sync figures (eval/lipsync.py: mouth opening against the speech envelope) comes
from where they lie in the long recording. The block animated alone (full context) is the reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ptalker_cli.audio import load_audio  # noqa: E402
from ptalker_cli.eval.lipsync import lipsync_report, mouth_opening, speech_envelope  # noqa: E402
from ptalker_cli.eval.metrics import lve  # noqa: E402
from ptalker_cli.inference import Animator, load_model  # noqa: E402
from ptalker_cli.model.speech_chunks import ChunkingConfig  # noqa: E402

UPPER_LIP, LOWER_LIP = 5533, 5517  # ICT head: a mid upper-lip and mid lower-lip vertex (cm, +Y up)
SETTINGS = {"default": None, "20/4/4": ChunkingConfig(20, 4, 4), "10/2/2": ChunkingConfig(10, 2, 2),
            "4/1/1": ChunkingConfig(4, 1, 1)}


def header(model_name: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {tuple(round(x, 2) for x in os.getloadavg())}; model {model_name}")


def joined(setup, names: list[str], fps: float) -> tuple[np.ndarray, np.ndarray]:
    hop = int(round(16000 / fps))
    waves, verts = [], []
    for name in names:
        gt = setup.dataset.vertices(name)
        wave = load_audio(setup.dataset.layout.wav_path(name))
        n = gt.shape[0] * hop
        waves.append(np.pad(wave[:n], (0, max(0, n - len(wave)))))
        verts.append(gt)
    return np.concatenate(waves).astype(np.float32), np.concatenate(verts)


def lve_table(animator: Animator, data: Path, first: int) -> None:
    from ptalker_cli.eval.protocol import load_setup

    setup = load_setup(data, _all_names(data), None, None)
    fps = float(setup.dataset.manifest.fps)
    by_speaker: dict[str, list[str]] = {}
    for name, subject in zip(setup.names, setup.dataset.subjects):
        if int(name.rsplit("_s", 1)[1]) >= first:
            by_speaker.setdefault(subject, []).append(name)
    lip = setup.lip.ids
    print(f"{'speaker':>8} {'seconds':>8} {'setting':>8} {'LVE mm²':>9} {'Δ LVE mm²':>10} {'to full mm²':>12} "
          f"{'animate s':>9}")
    totals: dict[str, list[float]] = {}
    for subject, names in sorted(by_speaker.items()):
        wave, gt = joined(setup, names, fps)
        topo = animator.model.topology.with_vertices(setup.dataset.template(subject))
        preds, base = {}, None
        for label, chunking in [("full", ChunkingConfig.full_context()), *SETTINGS.items()]:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pred = animator.animate(wave, subject=subject, template=topo, chunking=chunking).motion.vertices
            secs = time.perf_counter() - t0
            n = min(len(pred), len(gt))
            err = lve(pred[:n], gt[:n], lip) * 100.0  # cm² → mm²
            preds[label] = pred
            base = err if label == "full" else base
            to_full = lve(pred, preds["full"], lip) * 100.0
            totals.setdefault(label, []).append(err)
            print(f"{subject:>8} {len(wave) / 16000:8.1f} {label:>8} {err:9.4f} {err - base:+10.4f} {to_full:12.6f} "
                  f"{secs:9.1f}", flush=True)
    print("mean over speakers: " + ", ".join(f"{k} {np.mean(v):.4f}" for k, v in totals.items()))


def _all_names(data: Path) -> list[str]:
    return sorted(p.stem for p in (data / "vertices_npy").glob("*.npy"))


def late(animator: Animator, minutes: float) -> None:
    sr, gap = 16000, np.zeros(int(0.7 * 16000), dtype=np.float32)
    files = sorted((ROOT / "tests/data/arctic").glob("*.wav")) + [ROOT / "examples/speech.wav"]
    parts = [gap]
    for f in files:
        parts += [load_audio(f), gap]
    block = np.concatenate(parts)
    while len(block) < 60 * sr:
        block = np.concatenate([block, *parts[1:]])
    block = block[: 60 * sr].astype(np.float32)
    print(f"block: {', '.join(f.name for f in files)} with 0.7-s pauses, repeated to 60 s, then to {minutes:g} min")
    long = np.tile(block, int(round(minutes)))

    def report(motion, wave):
        opening = mouth_opening(motion.vertices, UPPER_LIP, LOWER_LIP)
        env = speech_envelope(wave, motion.num_frames, motion.fps)
        return lipsync_report(opening, env)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = animator.animate(block, chunking=ChunkingConfig.full_context()).motion
        t0 = time.perf_counter()
        motion = animator.animate(long).motion
    secs = time.perf_counter() - t0
    fps = motion.fps
    per_min = int(round(60 * fps))
    first, last = motion.vertices[:per_min], motion.vertices[-per_min:]
    env = speech_envelope(long, motion.num_frames, fps)
    rows = [("block alone, full context", report(alone, block)),
            ("minute 1 of the long clip", lipsync_report(mouth_opening(first, UPPER_LIP, LOWER_LIP), env[:per_min])),
            (f"minute {int(round(minutes))} of the long clip",
             lipsync_report(mouth_opening(last, UPPER_LIP, LOWER_LIP), env[-per_min:]))]
    print(f"long clip: {len(long) / sr:.0f} s, {motion.num_frames} frames, animated in {secs:.0f} s")
    print(f"{'segment':>28} {'r lag 0':>8} {'best r':>7} {'lag':>4} {'open speech cm':>15} {'open pause cm':>14}")
    for label, rep in rows:
        print(f"{label:>28} {rep.correlation:8.3f} {rep.best_correlation:7.3f} {rep.best_lag_frames:4d} "
              f"{rep.opening_speech:15.4f} {rep.opening_pause:14.4f}")
    diff = np.abs(first - last)
    print(f"minute 1 vs minute {int(round(minutes))} (same audio): max vertex difference {diff.max() * 10:.4f} mm, "
          f"mean {diff.mean() * 10:.5f} mm")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["lve", "late"])
    ap.add_argument("--model", default=str(ROOT / "weights/synthtalk"))
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--first", type=int, default=25, help="first sentence number used (lve)")
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args()
    animator = Animator(load_model(args.model, "cpu"))
    header(animator.model.config.name)
    if args.what == "lve":
        if args.data is None:
            ap.error("lve needs --data SYNTHTALK_DIR")
        lve_table(animator, args.data, args.first)
    else:
        late(animator, args.minutes)


if __name__ == "__main__":
    main()
