"""The picture of docs/arkit.md: ARKit curves of the default model and the head they pose.

Usage: python benchmarks/arkit_figure.py [--wav examples/speech.wav] [--out docs/images/arkit_curves.png]

The wav is animated by the default model, the curves are written as a Live Link Face CSV and
read back (the file a user gets), and the ICT head is posed from the CSV alone at three
frames (mouth closed, half open, widest jawOpen) as ``ptalker render out.csv`` does. Below,
the curves over time with the speech envelope. Drawn with PIL only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

CURVES = [("jawOpen", (200, 40, 40)), ("mouthFunnel", (40, 110, 200)), ("mouthPucker", (40, 160, 90)),
          ("mouthSmileLeft", (210, 140, 20)), ("eyeBlinkLeft", (120, 60, 170))]


def main() -> None:
    from PIL import Image, ImageDraw

    from ptalker_cli.arkit import curves_to_motion, solve_arkit
    from ptalker_cli.audio import load_audio
    from ptalker_cli.eval.lipsync import speech_envelope
    from ptalker_cli.export import render_still
    from ptalker_cli.export.curves import read_curves, write_curves
    from ptalker_cli.inference import Animator, load_model
    from ptalker_cli.mesh import load_builtin

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wav", type=Path, default=Path("examples/speech.wav"))
    ap.add_argument("--out", type=Path, default=Path("docs/images/arkit_curves.png"))
    args = ap.parse_args()

    animator = Animator(load_model())
    res = animator.animate(args.wav)
    topo = animator.template_for(res.subject or None, None)
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "speech.csv"
        write_curves(solve_arkit(res.motion, topo), csv, "csv")
        curves = read_curves(csv)
    ict = load_builtin("ict")
    posed = curves_to_motion(curves, ict)
    jaw = curves.curve("jawOpen")
    k_max = int(jaw.argmax())
    k_closed = int(np.argmin(jaw[: k_max] + 1e3 * (np.arange(k_max) < 3)))
    k_mid = int(np.argmin(np.abs(jaw - jaw.max() / 2)))
    panel = 300
    stills = [render_still(posed.vertices[k], ict, resolution=panel, bounds_of=posed.vertices) for k in
              (k_closed, k_mid, k_max)]
    W, plot_h = panel * 3, 260
    img = Image.new("RGB", (W, panel + plot_h + 30), "white")
    draw = ImageDraw.Draw(img)
    for i, (k, still) in enumerate(zip((k_closed, k_mid, k_max), stills)):
        img.paste(Image.fromarray(still), (i * panel, 0))
        draw.text((i * panel + 8, 8), f"frame {k}  jawOpen {jaw[k]:.2f}", fill="black")
    top, left, right = panel + 20, 40, W - 10
    h = plot_h - 30
    T = curves.num_frames
    x = lambda k: left + (right - left) * k / max(T - 1, 1)  # noqa: E731
    y = lambda v: top + h - h * v / 0.6  # noqa: E731  weights 0..0.6 fill the plot
    env = speech_envelope(load_audio(args.wav), T, curves.fps)
    env = env / max(env.max(), 1e-9) * 0.6
    draw.polygon([(x(0), y(0))] + [(x(k), y(v)) for k, v in enumerate(env)] + [(x(T - 1), y(0))], fill=(225, 225, 225))
    draw.line([(left, top), (left, top + h), (right, top + h)], fill="black")
    for v in (0.0, 0.2, 0.4, 0.6):
        draw.text((4, y(v) - 6), f"{v:.1f}", fill="black")
    for k in (k_closed, k_mid, k_max):
        draw.line([(x(k), top), (x(k), top + h)], fill=(170, 170, 170))
    for s in range(int(T / curves.fps) + 1):
        draw.text((x(s * curves.fps) - 4, top + h + 4), f"{s}s", fill="black")
    lx = left + 10
    for name, color in CURVES:
        c = curves.curve(name)
        draw.line([(x(k), y(v)) for k, v in enumerate(c)], fill=color, width=2)
        draw.text((lx, top + 2), name, fill=color)
        lx += 8 * len(name) + 18
    draw.text((lx, top + 2), "speech envelope (grey)", fill=(120, 120, 120))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    img.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} kB): frames {k_closed}, {k_mid}, {k_max}")


if __name__ == "__main__":
    main()
