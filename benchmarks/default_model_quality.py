"""Quality figures of a model trained on SynthTalk: style recovery from audio, and real speech.

Usage:
  python benchmarks/default_model_quality.py --model weights/synthtalk --data STYLE_CORPUS \
      [--plot docs/images/style_codes_pca.png --plot-data SYNTHTALK_DIR] \
      [--scatter docs/images/style_recovery_unseen.png] [--real-speech tests/data/arctic] [--json out.json]

STYLE_CORPUS: a SynthTalk corpus with the model's training speakers and many more
(speakers are deterministic by seed and index), e.g. for the default model
``ptalker data synth DIR --tts festival --speakers 66 --sentences 8 --unseen 36 --seed 0``.

1. Style. The audio style code s_a of every utterance of every speaker is computed.
   A ridge regression from s_a to the speakers' known style parameters (from the
   corpus manifest) is fitted on the training speakers' utterances and evaluated on
   held-out speakers: leave-one-speaker-out over the training speakers, and on the
   unseen speakers (whose audio the model never saw). Reported: per parameter, the
   Pearson r between predicted and true values over the held-out speakers and the mean
   absolute error relative to the parameter's range, against predicting the training
   mean, separately for unseen speakers (the real test) and held-out training speakers
   (whose audio the model heard); whether the nearest training speaker by predicted
   style equals the nearest by true style, and how far the picked speaker's true style
   is from the held-out speaker's against a random pick. A PCA plot of the utterance
   codes, one colour per speaker, and a predicted-vs-true scatter plot are PNGs.
2. Real speech. The recordings (by default the two CMU ARCTIC sentences shipped in
   tests/data/arctic, see PROVENANCE.md there) are joined with pauses and animated; the mouth
   opening is correlated with the speech envelope, and its mean in pauses is compared
   with its mean in speech.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ptalker_cli.audio import load_audio  # noqa: E402
from ptalker_cli.eval.lipsync import lipsync_report, mouth_opening, speech_envelope  # noqa: E402
from ptalker_cli.inference import Animator, load_model  # noqa: E402

UPPER_LIP, LOWER_LIP = 5533, 5517  # ICT head: a mid upper-lip and mid lower-lip vertex (cm, +Y up)
AUDIBLE = ("amplitude", "protrusion", "smoothness")


def style_codes(model, data: Path, manifest: dict, only=None) -> tuple[np.ndarray, list[str]]:
    codes, speakers = [], []
    for wav in sorted((data / "wav").glob("*.wav")):
        subject = wav.stem.rsplit("_", 1)[0]
        if only is not None and subject not in only:
            continue
        wave = torch.from_numpy(load_audio(wav))[None]
        with torch.inference_mode():
            s_a = model.encode_speech(wave)["s_a"]
        codes.append(s_a[0].float().numpy())
        speakers.append(subject)
    return np.stack(codes), speakers


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 1.0):
    mx, sx = x.mean(0), x.std(0) + 1e-6
    my = y.mean(0)
    xs = (x - mx) / sx
    w = np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T @ (y - my))
    return lambda q: ((q - mx) / sx) @ w + my


def style_recovery(codes, speakers, styles, train, unseen, params):
    y_all = np.array([[styles[s][p] for p in params] for s in speakers])
    spk = np.array(speakers)
    truth, pred, base, kind = [], [], [], []
    for held in list(train) + list(unseen):
        fit_speakers = [s for s in train if s != held]
        fit = np.isin(spk, fit_speakers)
        model = ridge(codes[fit], y_all[fit])
        q = spk == held
        pred.append(model(codes[q]).mean(0))
        truth.append(np.array([styles[held][p] for p in params]))
        base.append(np.array([np.mean([styles[s][p] for s in fit_speakers]) for p in params]))
        kind.append("unseen" if held in unseen else "held-out training speaker")
    truth, pred, base = map(np.stack, (truth, pred, base))
    return truth, pred, base, kind


def pca_plot(codes: np.ndarray, speakers: list[str], unseen: list[str], path: Path) -> None:
    from PIL import Image, ImageDraw

    x = codes - codes.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    xy = x @ vt[:2].T
    size, pad = 640, 50
    lo, hi = xy.min(0), xy.max(0)
    pts = pad + (xy - lo) / np.maximum(hi - lo, 1e-9) * (size - 2 * pad)
    img = Image.new("RGB", (size + 170, size), "white")
    draw = ImageDraw.Draw(img)
    names = sorted(set(speakers))
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (0, 0, 0), (255, 215, 0)]
    for (px, py), s in zip(pts, speakers):
        c = palette[names.index(s) % len(palette)]
        r = 5
        if s in unseen:
            draw.rectangle([px - r, size - py - r, px + r, size - py + r], outline=c, width=2)
        else:
            draw.ellipse([px - r, size - py - r, px + r, size - py + r], fill=c)
    for i, s in enumerate(names):
        c = palette[i % len(palette)]
        y0 = 40 + 22 * i
        if s in unseen:
            draw.rectangle([size + 20, y0, size + 30, y0 + 10], outline=c, width=2)
        else:
            draw.ellipse([size + 20, y0, size + 30, y0 + 10], fill=c)
        draw.text((size + 40, y0 - 2), s + (" (unseen)" if s in unseen else ""), fill=(0, 0, 0))
    draw.text((pad, 12), "audio style codes s_a, one point per utterance (PCA, first two components)", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def scatter_plot(truth, pred, base, params, ranges, path: Path) -> None:
    """One panel per audible parameter: predicted (from s_a) against true value, one point per unseen speaker."""
    from PIL import Image, ImageDraw

    panel, pad = 300, 40
    img = Image.new("RGB", (panel * len(AUDIBLE), panel + 30), "white")
    draw = ImageDraw.Draw(img)
    for k, name in enumerate(AUDIBLE):
        j = params.index(name)
        lo, hi = ranges[name][:2]
        x0 = k * panel

        def to_px(v, x0=x0, lo=lo, hi=hi):
            return pad + (v - lo) / (hi - lo) * (panel - 2 * pad)

        draw.rectangle([x0 + pad, 30 + pad, x0 + panel - pad, 30 + panel - pad], outline=(160, 160, 160))
        draw.line([x0 + pad, 30 + panel - pad, x0 + panel - pad, 30 + pad], fill=(200, 200, 200))
        m = base[:, j].mean()
        draw.line([x0 + pad, 30 + panel - to_px(m), x0 + panel - pad, 30 + panel - to_px(m)], fill=(230, 160, 160))
        for t, q in zip(truth[:, j], pred[:, j]):
            px, py = x0 + to_px(t), 30 + panel - to_px(q)
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(31, 119, 180))
        r = np.corrcoef(truth[:, j], pred[:, j])[0, 1]
        draw.text((x0 + pad, 30 + 8), f"{name}: r = {r:.2f}", fill=(0, 0, 0))
        draw.text((x0 + pad, 30 + panel - pad + 8), "true", fill=(0, 0, 0))
    draw.text((10, 8), "unseen speakers: style predicted from the audio style code (y) vs true (x); red: "
              "training mean", fill=(0, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def real_speech(animator: Animator, folder: Path, pause_s: float = 0.7) -> tuple[dict, list[str]]:
    files = sorted(p for p in folder.glob("*.wav") if "noise" not in p.name.lower())
    sr = 16000
    gap = np.zeros(int(pause_s * sr), dtype=np.float32)
    parts = [gap]
    for f in files:
        parts += [load_audio(f), gap]
    wave = np.concatenate(parts)
    motion = animator.animate(wave).motion
    opening = mouth_opening(motion.vertices, UPPER_LIP, LOWER_LIP)
    env = speech_envelope(wave, motion.num_frames, motion.fps)
    return lipsync_report(opening, env).to_dict(), [f.name for f in files]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--plot", type=Path, default=None, help="PCA plot of the codes (PNG)")
    ap.add_argument("--plot-data", type=Path, default=None,
                    help="corpus for the PCA plot (default --data); its first 8 training and 4 unseen speakers")
    ap.add_argument("--scatter", type=Path, default=None,
                    help="PNG: predicted vs true audible style parameters of the unseen speakers")
    ap.add_argument("--real-speech", type=Path, default=ROOT / "tests" / "data" / "arctic")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    model = load_model(args.model)
    manifest = json.loads((args.data / "dataset.json").read_text())
    synth = manifest["source"]["synth"]
    styles, unseen = synth["speaker_styles"], list(synth["unseen_subjects"])
    train = list(manifest["train_subjects"])
    params = list(next(iter(styles.values())).keys())
    codes, speakers = style_codes(model, args.data, manifest)
    truth, pred, base, kind = style_recovery(codes, speakers, styles, train, unseen, params)
    report: dict = {"style": {}, "utterances": len(speakers)}
    ranges = synth["style_ranges"]
    print(f"style recovery from the audio style code ({len(speakers)} utterances; held out: {len(train)} training "
          f"speakers one at a time + {len(unseen)} unseen)")
    groups = {"unseen": np.array([k == "unseen" for k in kind]),
              "training": np.array([k != "unseen" for k in kind])}
    print(f"{'parameter':>18} {'speakers':>9} {'r(pred,true)':>13} {'MAE/range':>10} {'mean-predictor MAE/range':>25}")
    for j, p in enumerate(params):
        span = ranges[p][1] - ranges[p][0]
        report["style"][p] = {"audible": p in AUDIBLE}
        for g, sel in groups.items():
            t, q, b = truth[sel, j], pred[sel, j], base[sel, j]
            r = float(np.corrcoef(q, t)[0, 1]) if t.std() > 0 and q.std() > 0 else float("nan")
            mae = float(np.abs(q - t).mean() / span)
            mae0 = float(np.abs(b - t).mean() / span)
            report["style"][p][g] = {"r": r, "mae_over_range": mae, "mean_predictor_mae_over_range": mae0,
                                     "speakers": int(sel.sum())}
            print(f"{p + (' *' if p in AUDIBLE else ''):>18} {g:>9} {r:13.3f} {mae:10.3f} {mae0:25.3f}")
    print("  (* audible in SynthTalk: the voice's rate, vocal-tract length and intonation range follow them;")
    print("   'training' = each training speaker held out of the regression in turn: the model heard their")
    print("   audio in training, so 'unseen' is the real test)")
    audible = [params.index(p) for p in AUDIBLE]
    norm = np.array([ranges[p][1] - ranges[p][0] for p in params])
    tr = np.array([[styles[s][p] for p in params] for s in train]) / norm
    hits, picked, rand = [], [], []
    for i, held in enumerate(list(train) + list(unseen)):
        cands = [k for k, s in enumerate(train) if s != held]
        d_pred = np.linalg.norm(tr[cands][:, audible] - (pred[i] / norm)[audible], axis=1)
        d_true = np.linalg.norm(tr[cands][:, audible] - (truth[i] / norm)[audible], axis=1)
        hits.append(int(np.argmin(d_pred) == np.argmin(d_true)))
        picked.append(d_true[np.argmin(d_pred)])
        rand.append(d_true.mean())
    hits, picked, rand = np.array(hits), np.array(picked), np.array(rand)
    # nearest-speaker agreement is strict (one of many candidates); also: how far the picked
    # speaker's true style is from the held-out speaker's, against a random pick
    report["nearest_training_speaker"] = {}
    for g, sel in groups.items():
        chance = 1.0 / (len(train) - (1 if g == "training" else 0))
        report["nearest_training_speaker"][g] = {
            "agreement": float(hits[sel].mean()), "chance": chance,
            "style_distance_of_pick": float(picked[sel].mean()), "style_distance_random_pick": float(rand[sel].mean())}
        print(f"nearest training speaker by predicted audible style = by true style ({g}): "
              f"{hits[sel].mean():.2f} (chance {chance:.2f}); true-style distance to the picked speaker "
              f"{picked[sel].mean():.3f} vs {rand[sel].mean():.3f} for a random one (range-normalized)")
    for i, held in enumerate(unseen):
        j = len(train) + i
        print(f"  unseen {held}: " + ", ".join(f"{p} {pred[j, params.index(p)]:.3f} "
                                               f"(true {truth[j, params.index(p)]:.3f})"
                                               for p in AUDIBLE))
    if args.plot:
        pdata = args.plot_data or args.data
        pman = json.loads((pdata / "dataset.json").read_text())
        p_unseen = list(pman["source"]["synth"]["unseen_subjects"])
        keep = set(list(pman["train_subjects"])[:8] + p_unseen[:4])
        pcodes, pspk = style_codes(model, pdata, pman, keep)
        pca_plot(pcodes, pspk, p_unseen, args.plot)
        print(f"PCA plot: {args.plot} ({len(pspk)} utterances of {len(keep)} speakers from {pdata})")
    if args.scatter:
        sel = np.array([k == "unseen" for k in kind])
        scatter_plot(truth[sel], pred[sel], base[sel], params, ranges, args.scatter)
        print(f"scatter plot: {args.scatter}")
    if args.real_speech and args.real_speech.is_dir():
        rs, files = real_speech(Animator(model), args.real_speech)
        report["real_speech"] = {**rs, "files": files, "source": str(args.real_speech)}
        print(f"real speech ({len(files)} recordings from {args.real_speech}, joined with 0.7 s pauses): "
              f"r(mouth opening, envelope) = {rs['correlation']:.3f} at lag 0, best {rs['best_correlation']:.3f} "
              f"at lag {rs['best_lag_frames']} frames; mean opening {rs['opening_speech']:.3f} cm in speech vs "
              f"{rs['opening_pause']:.3f} cm in pauses ({rs['pause_frames']} pause frames)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
