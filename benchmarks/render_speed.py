"""Render speed: frames/s per backend for a 14k- and a 23k-vertex head at 512² and 800².

    python benchmarks/render_speed.py [--frames 250] [--backends moderngl,pyrender]
                                      [--resolutions 512,800]

Meshes:
* ``ict14k``: the shipped ICT-FaceKit head (14,062 vertices, 28,068 triangles).
* ``ict23k``: the same head with a patch of face triangles split 1-to-4 at their edge
  midpoints until it has 23,370 vertices (BIWI's vertex count); the new vertices
  follow their edge's endpoints, so the animation is the same.

Motion: the jaw opens and closes (ICT ``jawOpen`` blendshape from
shared/assets/ict-facekit, or a synthetic lower-lip drop when that file is absent).

Modes:
* ``render``: the backend's frame loop alone (vertex interpolation, normals, draw, read
  back into memory), after one warm-up frame.
* ``end-to-end``: :func:`ptalker_cli.export.render_video` with a matching sine WAV,
  wall time from the call to the finished MP4 (context start-up, audio check, H.264
  encoding and audio muxing included).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ptalker_cli.errors import PtalkerError  # noqa: E402
from ptalker_cli.export import render_video  # noqa: E402
from ptalker_cli.export.renderers import create_renderer  # noqa: E402
from ptalker_cli.export.scene import NormalComputer, frame_camera, mesh_bounds  # noqa: E402
from ptalker_cli.mesh import Topology, resolve_mesh  # noqa: E402
from ptalker_cli.motion import Motion  # noqa: E402

BIWI_VERTICES = 23370


def jaw_offsets(topo: Topology) -> np.ndarray:
    for root in (Path(__file__).resolve().parents[2] / "shared", Path("/work/shared")):
        path = root / "assets" / "ict-facekit" / "blendshapes.npz"
        if path.exists():
            with np.load(path) as z:
                names = [str(n) for n in z["names"]]
                return z["offsets"][names.index("jawOpen")].astype(np.float32)
    off = np.zeros_like(topo.vertices)
    lip = topo.region("lip")
    off[lip[topo.vertices[lip, 1] < np.median(topo.vertices[lip, 1])], 1] = -1.5
    return off


def subdivide_to(topo: Topology, offsets: np.ndarray, target: int) -> tuple[Topology, np.ndarray]:
    """Split the first N triangles 1-to-4 (N chosen so the mesh gets ``target`` vertices)."""
    faces = topo.faces

    def new_edges(n: int) -> np.ndarray:
        f = faces[:n]
        e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        return np.unique(e, axis=0)

    lo, hi = 0, len(faces)
    need = target - topo.num_vertices
    while lo < hi:  # smallest n with at least `need` unique edges
        mid = (lo + hi) // 2
        if len(new_edges(mid)) < need:
            lo = mid + 1
        else:
            hi = mid
    edges = new_edges(lo)[:need]
    key = {(int(a), int(b)): topo.num_vertices + i for i, (a, b) in enumerate(edges)}
    out_faces = []
    for tri in faces[:lo]:
        a, b, c = (int(x) for x in tri)
        m = [key.get(tuple(sorted(p))) for p in ((a, b), (b, c), (c, a))]
        if None in m:  # an edge past the cut-off: keep the triangle whole
            out_faces.append([a, b, c])
            continue
        ab, bc, ca = m
        out_faces += [[a, ab, ca], [ab, b, bc], [ca, bc, c], [ab, bc, ca]]
    out_faces = np.concatenate([np.array(out_faces), faces[lo:]])
    verts = np.concatenate([topo.vertices, topo.vertices[edges].mean(axis=1)])
    offs = np.concatenate([offsets, offsets[edges].mean(axis=1)])
    return Topology(f"ict{len(verts) // 1000}k", verts, out_faces, {}, topo.units), offs.astype(np.float32)


def make_motion(topo: Topology, offsets: np.ndarray, frames: int, fps: float = 25.0) -> Motion:
    w = 0.5 - 0.5 * np.cos(np.arange(frames) / fps * 2 * np.pi * 2.0)
    return Motion(topo.vertices[None] + w[:, None, None].astype(np.float32) * offsets[None], fps, topo.name)


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def bench_render(backend: str, topo: Topology, motion: Motion, res: int) -> tuple[float, float]:
    lo, hi = mesh_bounds(motion.vertices)
    cam = frame_camera(lo, hi, "front")
    nc = NormalComputer(topo.faces, topo.num_vertices)
    with create_renderer(backend, topo.faces, topo.num_vertices, res, res, cam) as r:
        out = np.empty(r.frame_shape, np.uint8)
        v0 = motion.vertices[0]
        r.render([v0], [nc(v0)], out=out)  # warm-up
        t0, c0 = time.perf_counter(), _cpu()
        for v in motion.vertices:
            r.render([v], [nc(v)], out=out)
        n = motion.num_frames
        return n / (time.perf_counter() - t0), (_cpu() - c0) / n * 1000


def bench_end_to_end(backend: str, topo: Topology, motion: Motion, res: int, wav: Path,
                     folder: Path) -> tuple[float, float]:
    out = folder / f"{backend}_{topo.name}_{res}.mp4"
    t0, c0 = time.perf_counter(), _cpu()
    render_video(motion, topo, out, wav, resolution=res, renderer=backend, force=True)
    n = motion.num_frames
    return n / (time.perf_counter() - t0), (_cpu() - c0) / n * 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--backends", default="moderngl,pyrender")
    ap.add_argument("--resolutions", default="512,800")
    args = ap.parse_args(argv)
    import soundfile as sf

    ict = resolve_mesh("ict")
    jaw = jaw_offsets(ict)
    big, big_jaw = subdivide_to(ict, jaw, BIWI_VERTICES)
    meshes = [(ict, jaw), (big, big_jaw)]
    print(f"cpu cores: {os.cpu_count()}, frames per run: {args.frames}")
    for topo, _ in meshes:
        print(f"mesh {topo.name}: {topo.num_vertices} vertices, {len(topo.faces)} triangles")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wav = folder / "speech.wav"
        sr = 16000
        t = np.arange(int(sr * args.frames / 25.0)) / sr
        sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
        print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores; fps drops with load)")
        print("cpu ms/frame: CPU time of this process and ffmpeg per frame, all cores added up")
        print(f"{'backend':<10} {'mesh':<8} {'size':>8} {'render fps':>11} {'cpu ms/fr':>10} "
              f"{'end-to-end fps':>15} {'cpu ms/fr':>10}")
        for backend in args.backends.split(","):
            for topo, offs in meshes:
                motion = make_motion(topo, offs, args.frames)
                for res in (int(r) for r in args.resolutions.split(",")):
                    try:
                        fr, cr = bench_render(backend, topo, motion, res)
                        fe, ce = bench_end_to_end(backend, topo, motion, res, wav, folder)
                    except PtalkerError as exc:
                        print(f"{backend:<10} {topo.name:<8} unavailable: {exc}")
                        break
                    print(
                        f"{backend:<10} {topo.name:<8} {f'{res}x{res}':>8} {fr:>11.1f} {cr:>10.1f} "
                        f"{fe:>15.1f} {ce:>10.1f}",
                        flush=True,
                    )
        print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
