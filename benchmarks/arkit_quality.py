"""ARKit curves of the default model: speed of the solve, lip residual, and jawOpen against real speech.

Usage:
  python benchmarks/arkit_quality.py [--speed] [--synth SYNTHTALK_DIR] [--real-speech DIR_OR_WAV ...]
                                     [--example examples/speech.wav] [--json out.json]

1. Speed (``--speed``): frames per second of the bounded least-squares solve on the ICT
   basis (45 shapes, 14,062 vertices) for T = 250, 1000 and 4000 frames, with the default
   settings and with temporal smoothness; the basis's one-time setup (BᵀB) is timed apart.
   Median of repeats, with the load average printed (the machine may be shared).
2. Lip residual (``--synth``): on a SynthTalk corpus's test sentences (splits ``test`` and
   ``test-unseen`` of its manifest), the default model animates each wav; the ARKit curves
   are solved from the prediction and the ICT head is re-posed from the curves (the mesh
   ``ptalker render curves.csv`` draws); reported: lip-region error of the re-posed mesh
   against the prediction in mm (mean vertex distance, mean per-frame max = LVE, max).
   Also a round trip on ground truth: the corpus's own vertices are solved and the weights
   compared with the 22 weights that made them (``synth/weights``).
3. Real speech (``--real-speech``): recordings are joined with 0.7-s pauses (as
   tests/test_default_model.py does with the ALSA test voice) and animated; the jawOpen
   curve is correlated with the speech envelope (Pearson r at lag 0 and the best lag within
   ±3 frames), and compared between speech and pause frames (pause: 40 dB below the loudest
   frame), and in "deep silence" (pause frames at least 200 ms from any speech frame).
   ``--example`` does the same for one file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def speed(repeats: int = 5) -> dict:
    from ptalker_cli.blendshapes import BlendshapeSolver, load_builtin_blendshapes
    from ptalker_cli.blendshapes.basis import NormalEquations
    from ptalker_cli.mesh import load_builtin

    topo, basis = load_builtin("ict"), load_builtin_blendshapes("ict")
    t0 = time.perf_counter()
    NormalEquations.of(basis.offsets)
    setup = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    out = {"setup_s": round(setup, 3), "shapes": basis.num_shapes, "vertices": basis.num_vertices, "runs": []}
    print(f"ICT basis: {basis.num_shapes} shapes x {basis.num_vertices} vertices; one-time setup (BᵀB) {setup:.3f} s")
    print(f"{'frames':>7} {'smoothness':>10} {'iters':>6} {'median s':>9} {'frames/s':>9}")
    for T in (250, 1000, 4000):
        t = np.arange(T)[:, None] / 25.0
        w = np.clip(0.4 + 0.6 * np.sin(2 * np.pi * rng.uniform(0.3, 2, basis.num_shapes) * t
                                         + rng.uniform(0, 6, basis.num_shapes)), 0, 1).astype(np.float32)
        verts = basis.pose(topo.vertices, w)
        for smooth in (0.0, 0.01):
            solver = BlendshapeSolver(basis, smoothness=smooth)
            times, it = [], 0
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = solver.solve(verts, topo.vertices)
                times.append(time.perf_counter() - t0)
                it = res.iterations
            med = float(np.median(times))
            print(f"{T:>7} {smooth:>10g} {it:>6} {med:>9.3f} {T / med:>9.0f}")
            out["runs"].append({"frames": T, "smoothness": smooth, "iterations": it, "seconds": round(med, 4),
                                "frames_per_s": round(T / med)})
    print(f"load average {os.getloadavg()}")
    out["loadavg"] = os.getloadavg()
    return out


def synth_residual(data: Path, animator) -> dict:
    from ptalker_cli.arkit import ArkitMapping, basis_for, curves_to_motion, lip_error_mm, solve_arkit
    from ptalker_cli.audio import load_audio
    from ptalker_cli.blendshapes import solve_weights
    from ptalker_cli.data.synth.head import GENERATOR_SHAPES
    from ptalker_cli.mesh import load_builtin

    manifest = json.loads((data / "dataset.json").read_text())
    names = manifest["source"]["synth"]["blendshapes"]
    assert tuple(names) == GENERATOR_SHAPES
    seqs = []
    for split in ("test", "test-unseen"):
        sp = manifest["splits"].get(split)
        if not sp:
            continue
        for rng_text in sp["sentences"]:
            lo, _, hi = rng_text.partition("-")
            for s in range(int(lo), int(hi or lo) + 1):
                seqs += [f"{subj}_s{s:03d}" for subj in sp["subjects"]]
    ict = load_builtin("ict")
    basis = basis_for(ict)
    rows, gt_err = [], []
    for seq in seqs:
        wav = load_audio(data / "wav" / f"{seq}.wav")
        res = animator.animate(wav)
        topo = animator.template_for(res.subject or None, None)
        curves = solve_arkit(res.motion, topo)
        reposed = curves_to_motion(curves, topo, basis)
        err = lip_error_mm(reposed.vertices, res.motion.vertices, topo)
        # ground truth: solve the corpus's vertices on the speaker's template, compare the 22 weights
        gt_v = np.load(data / "vertices_npy" / f"{seq}.npy")
        tmpl = np.load(data / "templates" / f"{seq.split('_')[0]}.npy")
        gt_w = np.load(data / "synth" / "weights" / f"{seq}.npy")
        solved = solve_weights(gt_v, tmpl, basis).weights
        idx = [basis.index(n) for n in names]
        e = np.abs(solved[:, idx] - gt_w)
        others = np.delete(solved, idx, axis=1)
        gt_err.append((float(e.max()), float(e.mean()), float(others.max())))
        rows.append({"sequence": seq, "frames": res.motion.num_frames,
                     **{f"lip_{k}_mm": round(v, 4) for k, v in err.items()},
                     "gt_weight_max_err": round(gt_err[-1][0], 4), "gt_unused_shapes_max": round(gt_err[-1][2], 4)})
        print(f"{seq}: {res.motion.num_frames} frames, re-posed vs prediction lip mean {err['mean']:.3f} mm, "
              f"LVE {err['lve']:.3f} mm, max {err['max']:.3f} mm; ground-truth weights max err {e.max():.4f}, "
              f"shapes not used by the generator up to {others.max():.4f}")
    assert ArkitMapping.for_names(basis.names).driven
    summary = {
        "sequences": len(rows),
        "lip_mean_mm": round(float(np.mean([r["lip_mean_mm"] for r in rows])), 4),
        "lip_lve_mm": round(float(np.mean([r["lip_lve_mm"] for r in rows])), 4),
        "lip_max_mm": round(float(np.max([r["lip_max_mm"] for r in rows])), 4),
        "gt_weight_max_err": round(max(g[0] for g in gt_err), 4),
        "gt_weight_mean_err": round(float(np.mean([g[1] for g in gt_err])), 5),
    }
    print("summary:", summary)
    return {"summary": summary, "sequences": rows}


def jaw_vs_speech(wave: np.ndarray, animator, label: str) -> dict:
    from ptalker_cli.arkit import solve_arkit
    from ptalker_cli.eval.lipsync import lipsync_report, speech_envelope

    res = animator.animate(wave)
    topo = animator.template_for(res.subject or None, None)
    jaw = solve_arkit(res.motion, topo).curve("jawOpen")
    env = speech_envelope(wave, res.motion.num_frames, res.motion.fps)
    rep = lipsync_report(jaw, env)
    level = 20 * np.log10(np.maximum(env, 1e-9) / max(env.max(), 1e-9))
    pause = level[: len(jaw)] < -40.0
    # deep silence: pause frames at least 5 frames (200 ms) from any speech frame
    speech = np.flatnonzero(~pause)
    frames = np.arange(len(pause))
    dist = np.abs(frames[:, None] - speech[None, :]).min(axis=1) if speech.size else np.full(len(pause), 99)
    deep = pause & (dist >= 5)
    out = {**rep.to_dict(), "jaw_pause_p95": float(np.percentile(jaw[pause], 95)) if pause.any() else None,
           "jaw_deep_silence_frames": int(deep.sum()),
           "jaw_deep_silence_mean": float(jaw[deep].mean()) if deep.any() else None,
           "jaw_deep_silence_max": float(jaw[deep].max()) if deep.any() else None,
           "jaw_max": float(jaw.max())}
    print(f"{label}: {rep.frames} frames, jawOpen vs envelope r = {rep.correlation:.3f} at lag 0, "
          f"best {rep.best_correlation:.3f} at lag {rep.best_lag_frames}; jawOpen mean {rep.opening_speech:.3f} in "
          f"speech vs {rep.opening_pause:.3f} in pauses ({rep.pause_frames} frames, 95th percentile "
          f"{out['jaw_pause_p95']:.3f}); max {jaw.max():.3f}")
    if deep.any():
        print(f"  deep silence (>= 200 ms from speech, {deep.sum()} frames): jawOpen mean "
              f"{jaw[deep].mean():.3f}, max {jaw[deep].max():.3f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--synth", type=Path)
    ap.add_argument("--real-speech", type=Path, nargs="*")
    ap.add_argument("--example", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    report: dict = {}
    if args.speed:
        report["speed"] = speed()
    if args.synth or args.real_speech or args.example:
        from ptalker_cli.audio import load_audio
        from ptalker_cli.inference import Animator, load_model

        animator = Animator(load_model())
        if args.synth:
            report["synth"] = synth_residual(args.synth, animator)
        if args.real_speech:
            files = []
            for p in args.real_speech:
                files += sorted(q for q in p.glob("*.wav") if "Noise" not in q.name) if p.is_dir() else [p]
            gap = np.zeros(int(0.7 * 16000), dtype=np.float32)
            wave = np.concatenate([gap] + [x for f in files for x in (load_audio(f), gap)])
            report["real_speech"] = jaw_vs_speech(wave, animator, f"{len(files)} recordings with pauses")
            report["real_speech"]["files"] = [str(f) for f in files]
        if args.example:
            report["example"] = jaw_vs_speech(load_audio(args.example), animator, str(args.example))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
