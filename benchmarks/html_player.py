"""Size and writing time of the one-file HTML player, for the 5.6-s example and a 60-s BIWI-size clip.

    python benchmarks/html_player.py [--repeats 2] [--seconds 60]

* ``example 5.6 s``: the default model's motion of ``examples/speech.wav`` (ICT, 14062 vertices),
  written with its audio, as ``ptalker animate examples/speech.wav -o out.html`` writes it.
* ``BIWI-size``: a synthetic motion at BIWI's size (23370 vertices, 25 fps, ``normalized`` units
  with the head 1 unit tall, so the error budget's millimetres are 250 mm / unit): a curved grid of
  190 x 123 vertices moved by 12 smooth spatial modes (Gaussian bumps, up to 5 mm) whose weights
  are band-limited noise (below 8 Hz, as speech motion), plus 0.02 mm of independent noise per
  coordinate and frame. The audio is the 60-s track of ``benchmarks/glb_write.py`` (the example and
  two CMU ARCTIC recordings, cycled). A side-by-side page (this motion against a second one) is
  written too: what an evaluation player holds.

Times are the best of ``--repeats`` (wall clock, and the CPU time of this process, all threads)
for :func:`~ptalker_cli.export.html_player.write_html_player` alone (the model's inference is not
counted). It prints the file size, the layout chosen, the number of principal shapes and the
error of what the page shows, against the issue's limits (3 MB and 25 MB).

``--browser`` also opens each page in headless Chromium (tests/browser.py: the system's browser,
WebGL on SwiftShader, i.e. on the CPU) and prints the seconds from navigation to ``ptalker.ready``
and the milliseconds of one ``seek(t)`` (pose every head, normals, heat colours, draw), mean of 20.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from glb_write import best, long_track  # noqa: E402

from ptalker_cli.export.html_player import read_player_data, write_html_player  # noqa: E402
from ptalker_cli.inference import DEFAULT_MODEL, Animator, load_model  # noqa: E402
from ptalker_cli.mesh import Topology  # noqa: E402
from ptalker_cli.motion import Motion  # noqa: E402

BIWI_VERTICES = 23370  # 190 x 123


def biwi_size_topology() -> Topology:
    rows, cols = 190, 123
    y, x = np.meshgrid(np.linspace(-0.5, 0.5, rows), np.linspace(-0.33, 0.33, cols), indexing="ij")
    z = 0.25 * (1 - (x / 0.33) ** 2) + 0.1 * (1 - (2 * y) ** 2)
    verts = np.stack([x, y, z], axis=-1).reshape(-1, 3).astype(np.float32)
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols - 1), indexing="ij")
    a = (r * cols + c).ravel()
    faces = np.concatenate([np.stack([a, a + 1, a + cols + 1], 1), np.stack([a, a + cols + 1, a + cols], 1)])
    lip = np.flatnonzero((np.abs(verts[:, 1] + 0.2) < 0.05) & (np.abs(verts[:, 0]) < 0.12))
    return Topology("biwi-size", verts, faces, {"lip": lip}, "normalized")


def synthetic_motion(topo: Topology, frames: int, seed: int, fps: float = 25.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = topo.vertices
    mm = 1.0 / 250.0  # one millimetre in units (a head 1 unit = 250 mm tall)
    modes = []
    for _ in range(12):
        centre = v[rng.integers(len(v))]
        width = rng.uniform(0.05, 0.2)
        bump = np.exp(-((v - centre) ** 2).sum(1) / (2 * width ** 2))[:, None]
        modes.append(bump * rng.normal(0, 1, 3) / np.sqrt(3) * 5 * mm)
    modes = np.stack(modes)  # (12, V, 3)
    spec = np.fft.rfft(rng.normal(0, 1, (frames, 12)), axis=0)
    spec[np.fft.rfftfreq(frames, 1 / fps) > 8.0] = 0  # band-limited, as speech motion
    w = np.fft.irfft(spec, n=frames, axis=0)
    w /= np.abs(w).max(axis=0)
    out = v[None] + np.einsum("tk,kvc->tvc", w, modes)
    out += rng.normal(0, 0.02 * mm, out.shape)
    return out.astype(np.float32)


def report(label: str, out: Path, wall: float, cpu: float, limit_mb: float) -> None:
    data = read_player_data(out)
    heads = data["heads"]
    lay = "+".join(h["anim"]["layout"] + (f"(K={h['anim']['components']})" if "components" in h["anim"] else "")
                   for h in heads)
    err = heads[0]["error_mm"]
    mb = out.stat().st_size / 1e6
    print(f"{label:<22}{data['frames']:>7}{data['vertices']:>8}{wall:>7.2f} /{cpu:>6.2f}{mb:>8.2f}"
          f"{'ok' if mb <= limit_mb * 1.048576 else 'OVER':>6} {lay:<28}{err['rms_mm']:>7.3f}{err['max_mm']:>7.3f}"
          f"{err['lip_max_mm']:>7.3f}")


def in_browser(pages: list[Path]) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from browser import Browser, Site

    print("in headless Chromium (SwiftShader: WebGL on the CPU), 512 x 512")
    with Site({"/p/": pages[0].parent}) as site, Browser() as browser:
        for path in pages:
            t = time.perf_counter()
            page = browser.open(site.url(f"/p/{path.name}"))
            page.wait_for("window.ptalker && (window.ptalker.ready || window.ptalker.error)", timeout_s=120)
            ready = time.perf_counter() - t
            ms = page.evaluate("() => { const t0 = performance.now(); for (let i = 0; i < 20; i++) "
                               "ptalker.seek(i * ptalker.duration / 20); return (performance.now() - t0) / 20; }")
            print(f"  {path.name:<16} ready after {ready:5.1f} s, one seek {ms:6.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--browser", action="store_true", help="also time the pages in headless Chromium")
    args = ap.parse_args()
    import soundfile as sf

    now = datetime.datetime.now(datetime.timezone.utc)
    print(f"{now:%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
          f", load average before: {os.getloadavg()[0]:.2f}")
    animator = Animator(load_model(DEFAULT_MODEL, offline=True))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"{'clip':<22}{'frames':>7}{'verts':>8}{'write s':>14}{'MB':>8}{'limit':>6} {'layout':<28}"
              f"{'rms mm':>7}{'max mm':>7}{'lip mm':>7}")
        print(f"{'':<37}{'wall / cpu':>14}")
        wav = ROOT / "examples" / "speech.wav"
        res = animator.animate(wav)
        out = tmp / "example.html"
        wall, cpu, _ = best(lambda: write_html_player(out, res.motion, res.topology, audio=wav, force=True),
                            args.repeats)
        report("example 5.6 s", out, wall, cpu, 3.0)
        long_wav = tmp / "long.wav"
        sf.write(long_wav, long_track(args.seconds), 16000, subtype="PCM_16")
        topo = biwi_size_topology()
        frames = int(round(args.seconds * 25))
        pred = Motion(synthetic_motion(topo, frames, 0), 25.0, topo.name)
        gt = Motion(synthetic_motion(topo, frames, 1), 25.0, topo.name)
        out = tmp / "biwi.html"
        wall, cpu, _ = best(lambda: write_html_player(out, pred, topo, audio=long_wav, force=True), args.repeats)
        report(f"BIWI-size {args.seconds:g} s", out, wall, cpu, 25.0)
        out = tmp / "biwi_sbs.html"
        wall, cpu, _ = best(lambda: write_html_player(out, pred, topo, audio=long_wav, side_by_side=gt,
                                                      error_heatmap=True, force=True), args.repeats)
        report(f"BIWI-size {args.seconds:g} s, 2 heads", out, wall, cpu, 50.0)
        if args.browser:
            in_browser([tmp / "example.html", tmp / "biwi.html", out])
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
