"""Does the mouth close on p, b and m? Bilabial closure rate on speech the model has not seen (issue 19).

Usage:
  python benchmarks/lip_closure.py [--model synthtalk-ict|FOLDER] [--voices kal ked slt] [--json out.json]

1. Festival speech. Bilabial-rich sentences that are not among SynthTalk's Harvard sentences,
   spoken by the three Debian Festival voices at their default settings; Festival's own
   segment times locate every phone. Each utterance is animated as ``ptalker animate`` does
   (no subject: the model's default style) and scored with ptalker_cli.eval.closure: a
   bilabial is closed when the inner-lip gap within ±1 frame of the phone's middle falls
   below 30 % of the utterance's mean gap on vowels.
2. Real speech (tests/data/arctic, examples/speech.wav): the closure rate where phone labels
   exist (ARCTIC slt ships its .lab), and for every clip the correlation of the mouth opening
   with the speech envelope (ptalker_cli.eval.lipsync). The envelope correlation alone rewards
   a mouth that never closes, hence both.

Prints the figures per voice and overall, with the date, the machine and its load average.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import soxr  # noqa: E402
import torch  # noqa: E402

from ptalker_cli.audio import load_audio  # noqa: E402
from ptalker_cli.data.synth.tts import Voice, synthesize  # noqa: E402
from ptalker_cli.eval.closure import ClosureStats, closure_stats, inner_lip_gap, pooled, read_lab  # noqa: E402
from ptalker_cli.eval.lipsync import lipsync_report, speech_envelope  # noqa: E402
from ptalker_cli.inference import Animator, load_model  # noqa: E402

#: not among the Harvard sentences SynthTalk speaks
SENTENCES = (
    "Peter Piper picked a peck of pickled peppers.",
    "Bob brought a big blue bag of maple bread to my mum.",
    "My mom made a pumpkin pie maybe by mistake.",
    "Please pass the purple paper plates by the window.",
    "Mike bumped the big map and the lamp fell.",
    "The puppy paws at the bubbles by the pool.",
)
SR = 16000


def festival(animator: Animator, voices: list[str]) -> dict:
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="ptalker-lips-") as tmp:
        for key in voices:
            utts = synthesize(list(SENTENCES), Voice(key), tmp)
            stats = []
            for utt in utts:
                wave = soxr.resample(utt.wave.astype(np.float64), utt.sample_rate, SR).astype(np.float32)
                motion = animator.animate(wave).motion
                phones = [(p.name, p.start, p.end) for p in utt.phones]
                stats.append(closure_stats(inner_lip_gap(motion.vertices), phones, motion.fps))
            out[key] = pooled(stats)
    return out


def real_speech(animator: Animator, files: list[Path]) -> dict:
    rows = {}
    for f in files:
        wave = load_audio(f)
        motion = animator.animate(wave).motion
        gap = inner_lip_gap(motion.vertices)
        env = speech_envelope(wave, motion.num_frames, motion.fps)
        row = {"envelope_r": lipsync_report(gap, env).correlation, "closure": None}
        lab = f.with_suffix(".lab")
        if lab.is_file():
            row["closure"] = closure_stats(gap, read_lab(lab), motion.fps)
        rows[f.name] = row
    return rows


def _pct(s: ClosureStats) -> str:
    return "—" if s.rate is None else f"{100 * s.rate:5.1f} % ({s.closed}/{s.bilabials})"


def _ratio(s: ClosureStats) -> str:
    r = s.vowel_opening_ratio
    return "—" if r is None else f"{r:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="synthtalk-ict")
    ap.add_argument("--voices", nargs="+", default=["kal", "ked", "slt"])
    ap.add_argument("--real-speech", nargs="*", type=Path,
                    default=sorted((ROOT / "tests" / "data" / "arctic").glob("*.wav")) + [ROOT / "examples" /
                                                                                       "speech.wav"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    animator = Animator(load_model(args.model, "cpu"), "cpu")
    print(f"lip closure — model {args.model} — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}, "
          f"{platform.node()} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, torch threads {args.threads}")
    fest = festival(animator, args.voices)
    print(f"\nFestival speech, {len(SENTENCES)} bilabial-rich sentences not in SynthTalk, default voice settings")
    print(f"{'voice':>8} {'bilabials closed':>22} {'vowel-opening ratio':>20} {'vowel gap cm':>13} "
          f"{'p/b/m gap cm':>13}")
    for key, s in list(fest.items()) + [("overall", pooled(fest.values()))]:
        print(f"{key:>8} {_pct(s):>22} {_ratio(s):>20} {s.vowel_gap or float('nan'):13.3f} "
              f"{s.bilabial_gap or float('nan'):13.3f}")
    real = real_speech(animator, [p for p in args.real_speech if p.is_file()])
    print("\nreal speech")
    print(f"{'clip':>28} {'envelope r':>11} {'bilabials closed (labels)':>27} {'vowel-opening ratio':>20}")
    for name, row in real.items():
        c = row["closure"]
        print(f"{name:>28} {row['envelope_r']:11.3f} {(_pct(c) if c else 'no labels'):>27} "
              f"{(_ratio(c) if c else '—'):>20}")
    print(f"\n{time.perf_counter() - t0:.0f} s")
    if args.json:
        data = {"model": args.model, "festival": {k: v.to_json() for k, v in fest.items()},
                "festival_overall": pooled(fest.values()).to_json(),
                "real": {k: {"envelope_r": v["envelope_r"], "closure": v["closure"].to_json() if v["closure"] else None}
                         for k, v in real.items()}}
        args.json.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
