"""Tests for the MP4 renderer, its backends and the ``render`` CLI command.

The tests that draw need an offscreen OpenGL from the OS: moderngl over EGL (Mesa llvmpipe
without a GPU) and pyrender over EGL, or over OSMesa for its fallback. They carry
``@pytest.mark.system("egl")`` / ``("osmesa")`` (tests/system.py): skipped with a one-line
reason where the libraries are missing, failures under ``PTALKER_REQUIRE_SYSTEM_TESTS=1``,
which ``.ci/run`` sets after installing the packages listed in docs/rendering.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ptalker_cli.errors import AudioError, PtalkerError
from ptalker_cli.export import render_still, render_video
from ptalker_cli.export.renderers import create_renderer
from ptalker_cli.export.scene import NormalComputer, frame_camera, mesh_bounds
from ptalker_cli.export.video import ffmpeg_exe
from ptalker_cli.mesh import resolve_mesh, tiny_topology
from ptalker_cli.motion import Motion

needs_egl = pytest.mark.system("egl")  # moderngl / pyrender over EGL

ICT_ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "ict-facekit"
for _cand in (ICT_ASSETS, Path("/work/shared/assets/ict-facekit")):
    if (_cand / "blendshapes.npz").exists():
        ICT_ASSETS = _cand
        break


# ----------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ict():
    return resolve_mesh("ict")


@pytest.fixture(scope="module")
def jaw(ict):
    """The ICT jawOpen offsets (from the shared assets; from the lip region if absent)."""
    path = ICT_ASSETS / "blendshapes.npz"
    if path.exists():
        with np.load(path) as z:
            names = [str(n) for n in z["names"]]
            return z["offsets"][names.index("jawOpen")].astype(np.float32)
    # fallback: drop the lower lip region by 1.5 cm
    off = np.zeros_like(ict.vertices)
    lip = ict.region("lip")
    lower = lip[ict.vertices[lip, 1] < np.median(ict.vertices[lip, 1])]
    off[lower, 1] = -1.5
    return off


def _sine_wav(path: Path, seconds: float, sr: int = 16000) -> Path:
    t = np.arange(int(round(seconds * sr))) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), sr)
    return path


def _probe(path: Path) -> dict:
    """Frame count, size, fps, container duration, audio presence/duration of an MP4."""
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    info = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    m = re.search(r"Duration: (\d+):(\d+):([\d.]+)", info)
    duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
    has_audio = bool(re.search(r"Stream #\d+:\d+.*Audio:", info))
    audio_seconds = None
    if has_audio:
        raw = subprocess.run(
            [ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le", "-ac", "1", "-ar", "16000",
             "-"],
            capture_output=True,
        ).stdout
        audio_seconds = len(raw) / 2 / 16000
    return {
        "frames": frames, "size": (w, h), "fps": meta["fps"], "duration": duration,
        "has_audio": has_audio, "audio_seconds": audio_seconds, "pix_fmt": meta["pix_fmt"], "codec": meta["codec"],
    }  # fmt: skip


def _project(camera, pts, w, h):
    p = np.c_[pts, np.ones(len(pts))] @ (camera.proj @ camera.view).T
    ndc = p[:, :3] / p[:, 3:4]
    return np.c_[(ndc[:, 0] + 1) / 2 * w, (1 - ndc[:, 1]) / 2 * h]


def _box(camera, pts, w, h, shrink=0.0):
    xy = _project(camera, pts, w, h)
    x0, y0 = xy.min(0)
    x1, y1 = xy.max(0)
    dx, dy = (x1 - x0) * shrink, (y1 - y0) * shrink
    return (slice(int(y0 + dy), int(np.ceil(y1 - dy))), slice(int(x0 + dx), int(np.ceil(x1 - dx))))


def _diff(a, b, box):
    return float(np.abs(a[box].astype(np.int16) - b[box].astype(np.int16)).mean())


def _one_line(exc):
    msg = str(exc)
    assert isinstance(exc, PtalkerError) and msg and "\n" not in msg and msg == msg.strip()


# ----------------------------------------------------------------------------- backends


@needs_egl
@pytest.mark.parametrize("backend", ["moderngl", "pyrender"])
def test_backend_mouth_moves_forehead_still(ict, jaw, backend):
    """Opening the jaw changes the pixels around the mouth but not the forehead's."""
    closed, opened = ict.vertices, ict.vertices + jaw
    lo, hi = mesh_bounds(closed, opened)
    cam = frame_camera(lo, hi, "front")
    res = 192
    nc = NormalComputer(ict.faces, ict.num_vertices)
    with create_renderer(backend, ict.faces, ict.num_vertices, res, res, cam) as r:
        a = r.render([closed], [nc(closed)]).copy()
        b = r.render([opened], [nc(opened)]).copy()
        again = r.render([closed], [nc(closed)]).copy()
    assert a.shape == (res, res, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, again)  # deterministic, buffers really updated
    assert (a < 250).mean() > 0.2  # the head covers a good part of the frame...
    assert (a[0] > 250).all() and (a[-1, :5] > 250).all()  # ...with white margins
    mouth = _box(cam, closed[ict.region("lip")], res, res)
    forehead = _box(cam, closed[ict.region("upper_face")], res, res, shrink=0.1)
    assert _diff(a, b, mouth) > 8.0
    assert _diff(a, b, forehead) < 0.5


@needs_egl
def test_backends_look_the_same(ict, jaw):
    v = ict.vertices + 0.5 * jaw
    imgs = [render_still(v, ict, resolution=128, renderer=name) for name in ("moderngl", "pyrender")]
    fg = [(im < 250).any(axis=2) for im in imgs]
    iou = (fg[0] & fg[1]).sum() / (fg[0] | fg[1]).sum()
    assert iou > 0.97
    assert np.abs(imgs[0].astype(int) - imgs[1]).mean() < 6.0


@needs_egl
def test_framing_is_unit_independent(ict):
    """The same head in cm, m and unit-size coordinates renders (almost) the same image."""
    imgs = []
    for scale in (1.0, 0.01, 1 / 30.0):
        t = ict.with_vertices(ict.vertices * scale)
        imgs.append(render_still(t.vertices, t, resolution=96, renderer="moderngl").astype(int))
    assert np.abs(imgs[0] - imgs[1]).mean() < 1.0
    assert np.abs(imgs[0] - imgs[2]).mean() < 1.0


@needs_egl
def test_side_view_and_background(ict):
    img = render_still(ict.vertices, ict, resolution=96, view="side", background="black", renderer="moderngl")
    assert (img[0] < 5).all()  # black background
    assert (img > 40).any(axis=2).mean() > 0.1


@pytest.mark.system("osmesa")
def test_osmesa_platform_in_subprocess(tmp_path):
    """pyrender over OSMesa (the no-EGL fallback), in a fresh process (PyOpenGL picks its
    platform once per process)."""
    code = (
        "import numpy as np\n"
        "from ptalker_cli.mesh import tiny_topology\n"
        "from ptalker_cli.export import render_still\n"
        "t = tiny_topology()\n"
        "img = render_still(t.vertices, t, resolution=64, renderer='pyrender')\n"
        "assert img.shape == (64, 64, 3) and (img < 250).any(), img.mean()\n"
        "print('ok')\n"
    )
    pypath = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYOPENGL_PLATFORM="osmesa", PYTHONPATH=pypath)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


# ----------------------------------------------------------------------------- video


@needs_egl
def test_render_clip_with_audio(tmp_path, ict, jaw):
    """12 frames of the ICT head at 128x128 with a 0.48 s sine: count, size, duration, audio,
    mouth pixels change between closed and open jaw, forehead pixels do not."""
    w = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1], np.float32)
    motion = Motion(ict.vertices[None] + w[:, None, None] * jaw[None], 25.0, "ict")
    wav = _sine_wav(tmp_path / "speech.wav", 0.48)
    out = tmp_path / "clip.mp4"
    calls = []
    assert render_video(motion, ict, out, wav, resolution=128, renderer="moderngl",
                        progress=lambda d, n: calls.append((d, n))) == out
    assert calls[-1] == (12, 12)
    p = _probe(out)
    assert len(p["frames"]) == 12
    assert p["size"] == (128, 128) and p["fps"] == 25.0
    assert p["codec"] == "h264" and p["pix_fmt"].startswith("yuv420p")
    assert p["has_audio"]
    assert abs(p["audio_seconds"] - 0.48) <= 1 / 25
    assert abs(p["duration"] - 0.48) <= 1 / 25
    cam = frame_camera(*mesh_bounds(motion.vertices), "front")
    mouth = _box(cam, ict.vertices[ict.region("lip")], 128, 128)
    forehead = _box(cam, ict.vertices[ict.region("upper_face")], 128, 128, shrink=0.1)
    f = p["frames"]
    opened, same = _diff(f[1], f[4], mouth), _diff(f[1], f[7], mouth)  # closed vs open / closed
    assert opened > 6.0 and opened > 4 * same, (opened, same)
    assert _diff(f[1], f[4], forehead) < 1.5  # (H.264 noise only)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["clip.mp4", "speech.wav"]


@needs_egl
@pytest.mark.parametrize("motion_frames", [5, 40])
def test_audio_sets_length(tmp_path, motion_frames):
    """A motion shorter than the audio holds its last frame, a longer one is cut."""
    t = tiny_topology()
    m = Motion(np.repeat(t.vertices[None], motion_frames, 0), 30.0, "tiny")
    wav = _sine_wav(tmp_path / "a.wav", 0.7)
    out = render_video(m, t, tmp_path / "o.mp4", wav, resolution=64)
    p = _probe(out)
    assert len(p["frames"]) == 21  # round(0.7 * 30)
    assert abs(p["audio_seconds"] - 0.7) <= 1 / 30 and abs(p["duration"] - 0.7) <= 1 / 30


@needs_egl
def test_no_audio_and_fps_resampling(tmp_path):
    t = tiny_topology()
    m = Motion(np.repeat(t.vertices[None], 25, 0), 25.0, "tiny")
    p = _probe(render_video(m, t, tmp_path / "o.mp4", resolution=66, fps=30))
    assert len(p["frames"]) == 30 and p["fps"] == 30.0 and p["size"] == (66, 66)
    assert not p["has_audio"]
    p = _probe(render_video(m, t, tmp_path / "odd.mp4", resolution=65))
    assert p["size"] == (66, 66)  # rounded up to even


@needs_egl
def test_side_by_side_and_heatmap(tmp_path, ict, jaw):
    pred = Motion(ict.vertices[None] + np.array([0.0, 1.0], np.float32)[:, None, None] * jaw, 25.0, "ict")
    gt = Motion(np.repeat(ict.vertices[None], 2, 0), 25.0, "ict")
    p = _probe(render_video(pred, ict, tmp_path / "sbs.mp4", resolution=96, side_by_side=gt, error_heatmap=True))
    assert p["size"] == (192, 96) and len(p["frames"]) == 2
    f0, f1 = p["frames"]
    left0, left1 = f0[:, :96].astype(int), f1[:, :96].astype(int)
    # frame 0: zero error -> cool (blue) colours; frame 1: the mouth is hot (red)
    assert (left0[..., 2] - left0[..., 0] > 30).mean() > 0.1
    assert (left1[..., 0] - left1[..., 2] > 60).sum() > 20
    # the ground-truth panel stays grey
    right = f1[:, 96:].astype(int)
    assert np.abs(right[..., 0] - right[..., 2]).max() < 12
    with pytest.raises(PtalkerError) as ei:
        render_video(pred, ict, tmp_path / "h.mp4", resolution=64, error_heatmap=True)
    _one_line(ei.value)


# ----------------------------------------------------------------------------- bad input


def _bad(t, kind):
    v = np.repeat(t.vertices[None], 4, 0)
    if kind == "mismatch":
        return Motion(v[:, :-3], 25.0)
    if kind == "nan":
        v = v.copy()
        v[2, 0, 1] = np.nan
        return Motion(v, 25.0)
    return Motion(v[:0], 25.0)


@pytest.mark.parametrize("kind", ["mismatch", "nan", "empty"])
def test_bad_motion_one_line_nothing_written(tmp_path, kind):
    t = tiny_topology()
    with pytest.raises(PtalkerError) as ei:
        render_video(_bad(t, kind), t, tmp_path / "o.mp4", resolution=64)
    _one_line(ei.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", [b"", b"this is not audio at all" * 40, None])
def test_unreadable_audio(tmp_path, content):
    t = tiny_topology()
    audio = tmp_path / "speech.wav"
    if content is not None:
        audio.write_bytes(content)
    m = Motion(np.repeat(t.vertices[None], 4, 0), 25.0, "tiny")
    with pytest.raises(AudioError) as ei:
        render_video(m, t, tmp_path / "o.mp4", audio, resolution=64)
    _one_line(ei.value)
    assert not (tmp_path / "o.mp4").exists()
    assert [p.name for p in tmp_path.iterdir()] == ([] if content is None else ["speech.wav"])


@needs_egl
def test_existing_video_needs_force(tmp_path):
    t = tiny_topology()
    m = Motion(np.repeat(t.vertices[None], 3, 0), 25.0, "tiny")
    out = tmp_path / "o.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(PtalkerError) as ei:
        render_video(m, t, out, resolution=64)
    _one_line(ei.value)
    assert out.read_bytes() == b"keep me"
    render_video(m, t, out, resolution=64, force=True)
    assert len(_probe(out)["frames"]) == 3


@pytest.mark.parametrize("kw", [{"view": "top"}, {"renderer": "vulkan"}, {"background": "plaid"}, {"resolution": 4}])
def test_bad_options(tmp_path, kw):
    t = tiny_topology()
    m = Motion(np.repeat(t.vertices[None], 3, 0), 25.0, "tiny")
    with pytest.raises(PtalkerError) as ei:
        render_video(m, t, tmp_path / "o.mp4", **kw)
    _one_line(ei.value)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- CLI


def _app():
    import typer

    from ptalker_cli.cli.render_cmd import render

    app = typer.Typer()
    app.command("render")(render)
    app.command("noop")(lambda: None)  # keep "render" a sub-command
    return app


@needs_egl
def test_cli_render(tmp_path, ict, jaw):
    from typer.testing import CliRunner

    m = Motion(ict.vertices[None] + np.linspace(0, 1, 6, dtype=np.float32)[:, None, None] * jaw, 25.0, "ict")
    m.save(tmp_path / "m.npy")
    wav = _sine_wav(tmp_path / "a.wav", 0.24)
    runner = CliRunner()
    res = runner.invoke(_app(), ["render", str(tmp_path / "m.npy"), "-a", str(wav), "-o", str(tmp_path / "o.mp4"),
                                 "-r", "64"])
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "o.mp4" in res.output
    p = _probe(tmp_path / "o.mp4")
    assert len(p["frames"]) == 6 and p["has_audio"]
    # the template comes from the sidecar; export through the same command
    res = runner.invoke(_app(), ["render", str(tmp_path / "m.npy"), "-t", "ict", "-o", str(tmp_path / "m.glb")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m.glb").exists() and "wrote" in res.output
    # errors are PtalkerErrors for the app to print
    res = runner.invoke(_app(), ["render", str(tmp_path / "m.npy"), "-o", str(tmp_path / "o.mp4")])
    assert isinstance(res.exception, PtalkerError) and "--force" in str(res.exception)
    res = runner.invoke(_app(), ["render", str(tmp_path / "m.npy"), "-t", "tiny", "-o", str(tmp_path / "x.mp4")])
    assert isinstance(res.exception, PtalkerError) and "vertices" in str(res.exception)
    assert not (tmp_path / "x.mp4").exists()


def test_no_backend_gives_one_line_with_packages(monkeypatch):
    import moderngl

    from ptalker_cli.export import renderers

    def no_egl(*a, **k):
        raise Exception("eglGetDisplay failed\nsecond line")

    def no_pyrender(*a, **k):
        raise renderers.RendererUnavailable("pyrender found no working offscreen OpenGL; "
                                            "install the system packages with `x`")

    monkeypatch.setattr(moderngl, "create_context", no_egl)
    t = tiny_topology()
    cam = frame_camera(*mesh_bounds(t.vertices))
    with pytest.raises(renderers.RendererUnavailable) as ei:
        create_renderer("moderngl", t.faces, t.num_vertices, 32, 32, cam)
    _one_line(ei.value)
    assert "apt-get install" in str(ei.value) and "libegl1" in str(ei.value)
    monkeypatch.setattr(renderers.PyrenderRenderer, "__init__", no_pyrender)
    with pytest.raises(renderers.RendererUnavailable) as ei:
        create_renderer("auto", t.faces, t.num_vertices, 32, 32, cam)
    _one_line(ei.value)
    assert "apt-get install" in str(ei.value)
