"""Render a motion to an H.264 MP4 with its audio.

Frames are rendered offscreen (see :mod:`.renderers`) and streamed as raw RGB into the
ffmpeg binary bundled with ``imageio-ffmpeg`` over a pipe: no temporary images, no
system ffmpeg. A writer thread feeds ffmpeg while the next frame renders, so
rendering and encoding run in parallel.

Timing rule: the audio, when given, sets the clip's length. The video gets
``round(audio_seconds * fps)`` frames; a motion that is shorter than the audio holds its
last frame, a longer one is cut. Frame ``j`` shows the motion at time ``j / fps``
(linear interpolation between motion frames when ``fps`` differs from the motion's).
So the video and audio durations agree within half a frame.
"""

from __future__ import annotations

import math
import os
import queue
import subprocess
import tempfile
import threading
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .. import interrupts
from ..errors import AudioError, PtalkerError, WriteError
from ..fileio import WRITE_ONLY_ERRNOS, atomic_path, write_error_message
from ..mesh import Topology
from ..motion import Motion
from .renderers import RENDERER_CHOICES, create_renderer
from .scene import VIEWS, NormalComputer, frame_camera, heat_colors, mesh_bounds

if TYPE_CHECKING:  # pragma: no cover
    from .frame_blocks import FrameBlocks

#: x264 settings: visually lossless for flat-shaded renders, fast to encode.
X264_PRESET = "veryfast"
X264_CRF = 18
AUDIO_BITRATE = "160k"

ProgressFn = Callable[[int, int], None]


def ffmpeg_exe() -> str:
    """Path of imageio-ffmpeg's bundled ffmpeg binary."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise PtalkerError("video output needs the imageio-ffmpeg package; run `pip install imageio-ffmpeg`") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # RuntimeError when no binary is bundled for this platform
        raise PtalkerError(
            f"imageio-ffmpeg has no ffmpeg binary for this platform ({' '.join(str(exc).split())}); "
            "reinstall it with `pip install --force-reinstall imageio-ffmpeg`"
        ) from None


def _fps_arg(fps: float) -> str:
    frac = Fraction(fps).limit_denominator(1001)
    return str(frac.numerator) if frac.denominator == 1 else f"{frac.numerator}/{frac.denominator}"


class FFmpegVideoWriter:
    """Stream (H, W, 3) uint8 frames into an H.264/yuv420p MP4, optionally muxing audio.

    Frames are handed to a writer thread through a small queue of reusable buffers
    (:meth:`buffer` / :meth:`submit`), so the caller can render the next frame while
    the previous one is piped to ffmpeg.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        fps: float,
        audio: Path | None = None,
        *,
        preset: str = X264_PRESET,
        crf: int = X264_CRF,
        queue_size: int = 3,
        label: str | Path | None = None,
    ):
        if width % 2 or height % 2:
            raise PtalkerError(f"H.264/yuv420p needs even frame dimensions; got {width}x{height}")
        self.path = Path(path)
        self.label = Path(label) if label is not None else self.path  # the name in messages (not a temp name)
        self.width, self.height = int(width), int(height)
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
            "-r", _fps_arg(fps), "-i", "pipe:0",
        ]  # fmt: skip
        if audio is not None:
            cmd += ["-i", str(audio)]
        cmd += ["-map", "0:v:0"]
        if audio is not None:
            cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", AUDIO_BITRATE]
        cmd += [
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-movflags", "+faststart", "-f", "mp4", str(self.path),
        ]  # fmt: skip
        self.cmd = cmd
        self._stderr = tempfile.TemporaryFile()  # ffmpeg's messages, for error reports
        self.proc: subprocess.Popen | None = None
        try:
            # An interruption must not fall between starting ffmpeg and keeping its handle: an
            # ffmpeg nobody ends would create its output file again after the caller removed it.
            with interrupts.deferred():
                self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=self._stderr)
            self._free: queue.Queue = queue.Queue()
            for _ in range(queue_size):
                self._free.put(np.empty((self.height, self.width, 3), dtype=np.uint8))
            self._todo: queue.Queue = queue.Queue()
            self._error: BaseException | None = None
            self.frames_written = 0
            self._thread = threading.Thread(target=self._run, name="ptalker-ffmpeg-writer", daemon=True)
            self._thread.start()
        except BaseException as exc:  # ffmpeg did not start, or an interruption / error right after
            if self.proc is not None:
                self.proc.kill()
                self.proc.wait()
            self._cleanup_log()
            if isinstance(exc, OSError) and self.proc is None:
                raise PtalkerError(f"cannot start ffmpeg ({exc.strerror or exc}); reinstall imageio-ffmpeg") from None
            raise

    # -- producer side
    def buffer(self) -> np.ndarray:
        """A free (H, W, 3) uint8 buffer to render the next frame into."""
        while True:
            self._raise_if_failed()
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                continue

    def submit(self, frame: np.ndarray) -> None:
        """Queue a frame (a buffer from :meth:`buffer`, or any array of the right shape)."""
        self._raise_if_failed()
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.height}, {self.width}, 3) uint8; got {frame.shape} {frame.dtype}")
        self._todo.put(frame)

    def write(self, frame: np.ndarray) -> None:
        """Copy ``frame`` into a pooled buffer and queue it."""
        buf = self.buffer()
        buf[...] = frame
        self.submit(buf)

    # -- writer thread
    def _run(self) -> None:
        stdin = self.proc.stdin
        while True:
            frame = self._todo.get()
            if frame is None:
                break
            if self._error is None:
                try:
                    stdin.write(memoryview(frame).cast("B"))
                    self.frames_written += 1
                except BaseException as exc:  # BrokenPipeError when ffmpeg died
                    self._error = exc
            self._free.put(frame)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            self._finish(abort=True)
            raise self._failure()

    def _failure(self, rc: int | None = None) -> PtalkerError:
        message = self._ffmpeg_message()
        for code in WRITE_ONLY_ERRNOS:  # ffmpeg could not write its output: say so like every other writer
            if os.strerror(code).lower() in message.lower():
                return WriteError(write_error_message(OSError(code, os.strerror(code)), self.label))
        code = f" (exit code {rc})" if rc is not None else ""
        return PtalkerError(f"ffmpeg failed while encoding {self.label.name}{code}: {message}")

    def _ffmpeg_message(self) -> str:
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            text = self._stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            text = ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return (lines[-1] if lines else "no message")[:300]

    def _cleanup_log(self) -> None:
        try:
            self._stderr.close()
        except OSError:
            pass

    def _finish(self, abort: bool) -> int:
        if self._thread.is_alive():
            self._todo.put(None)
            self._thread.join()
        try:
            if abort:
                self.proc.kill()
            else:
                self.proc.stdin.close()
        except OSError:
            pass
        rc = self.proc.wait()
        return rc

    def close(self) -> None:
        """Flush the queued frames and wait for ffmpeg; raise PtalkerError if it failed."""
        rc = self._finish(abort=False)
        try:
            if rc != 0 or self._error is not None:
                raise self._failure(rc)
        finally:
            self._cleanup_log()

    def abort(self) -> None:
        try:
            self._finish(abort=True)
        finally:
            self._cleanup_log()


# --------------------------------------------------------------------------- timing


def audio_duration(audio: Path) -> float:
    """Validate ``audio`` with :func:`ptalker_cli.audio.load_audio`; return its length in seconds."""
    from ..audio import audio_info, load_audio

    info = audio_info(audio)  # raises AudioError (one line) for missing / unreadable files
    load_audio(audio, sample_rate=info.sample_rate)  # decodes it all: catches broken data
    if info.duration <= 0:
        raise AudioError(f"audio file {audio} is empty; use a file with speech in it")
    return float(info.duration)


def frame_times(num_frames_out: int, fps_out: float, fps_in: float,
                num_frames_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output frame: (index a, index b, weight of b) into the input frames."""
    t = np.arange(num_frames_out, dtype=np.float64) * (fps_in / fps_out)
    t = np.clip(t, 0.0, num_frames_in - 1)
    a = np.floor(t).astype(np.int64)
    b = np.minimum(a + 1, num_frames_in - 1)
    w = (t - a).astype(np.float32)
    return a, b, w


def _sample(vertices: np.ndarray, a: int, b: int, w: float) -> np.ndarray:
    if w <= 1e-6 or a == b:
        return vertices[a]
    return (1.0 - w) * vertices[a] + w * vertices[b]


# --------------------------------------------------------------------------- public API


def parse_color(value: str | Sequence[float]) -> tuple[float, float, float]:
    """A colour as ``#rrggbb``, ``r,g,b`` (0–1 or 0–255), a few names, or a 3-sequence."""
    names = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "grey": (0.5, 0.5, 0.5), "gray": (0.5, 0.5, 0.5)}
    if isinstance(value, str):
        s = value.strip().lower()
        if s in names:
            return names[s]
        try:
            if s.startswith("#") and len(s) == 7:
                return tuple(int(s[i : i + 2], 16) / 255.0 for i in (1, 3, 5))  # type: ignore[return-value]
            parts = [float(p) for p in s.replace(" ", "").split(",")]
        except ValueError:
            parts = []
        if len(parts) != 3:
            raise PtalkerError(f"cannot read colour '{value}'; use #rrggbb, r,g,b or white/black/grey")
        value = parts
    vals = [float(c) for c in value]
    if len(vals) != 3:
        raise PtalkerError(f"a colour needs 3 components; got {len(vals)}")
    if any(c > 1.0 for c in vals):
        vals = [c / 255.0 for c in vals]
    if any(not (0.0 <= c <= 1.0) for c in vals):
        raise PtalkerError(f"colour components must be in 0–1 or 0–255; got {value}")
    return (vals[0], vals[1], vals[2])


def _check_video_options(out: Path, force: bool, view: str, renderer: str, resolution: int) -> int:
    """One-line errors for render_video's options; the resolution rounded up to even."""
    if out.exists() and not force:
        raise PtalkerError(f"{out} already exists; use --force to overwrite it")
    if out.is_dir():
        raise PtalkerError(f"{out} is a folder; give a file name ending in .mp4")
    if view not in VIEWS:
        raise PtalkerError(f"unknown view '{view}'; use one of: {', '.join(VIEWS)}")
    if renderer not in RENDERER_CHOICES:
        raise PtalkerError(f"unknown renderer '{renderer}'; use one of: {', '.join(RENDERER_CHOICES)}")
    resolution = int(resolution)
    if not 16 <= resolution <= 8192:
        raise PtalkerError(f"resolution must be between 16 and 8192 pixels; got {resolution}")
    return resolution + resolution % 2


def render_video(
    motion: "Motion | FrameBlocks",
    topology: Topology,
    out: str | Path,
    audio: str | Path | None = None,
    *,
    resolution: int = 512,
    fps: float | None = None,
    background: str | Sequence[float] = (1.0, 1.0, 1.0),
    view: str = "front",
    side_by_side: Motion | None = None,
    error_heatmap: bool = False,
    heatmap_max: float | None = None,
    renderer: str = "auto",
    force: bool = False,
    progress: ProgressFn | None = None,
) -> Path:
    """Render ``motion`` on ``topology``'s faces to an H.264 MP4 at ``out``.

    ``motion`` may be a :class:`~.frame_blocks.FrameBlocks`: each frame is then rendered and piped
    into ffmpeg as its block arrives, and the camera frames the template (the whole motion's
    bounds are not known yet; the face moves a few percent of its size); not with ``side_by_side``.

    Args:
        audio: muxed in sync; it sets the clip length (see the module docstring).
        resolution: height and per-panel width in pixels (rounded up to even).
        fps: output frame rate; default the motion's own.
        background: RGB in 0–1 (or 0–255, ``#rrggbb``).
        view: ``front`` or ``side``.
        side_by_side: a second motion (e.g. ground truth) drawn to the right.
        error_heatmap: colour the left mesh by per-vertex distance to ``side_by_side``;
            the colour scale runs from 0 to ``heatmap_max`` (default: the 99th
            percentile of the distances over the whole clip), in the mesh's units.
        renderer: ``auto`` (moderngl, else pyrender), ``moderngl`` or ``pyrender``.
        progress: called as ``progress(frames_done, frames_total)``.

    Returns the output path. Raises :class:`PtalkerError` (one line) on bad input,
    an existing output without ``force``, or when no render backend can start; in
    every error case nothing is left at ``out``.
    """
    out = Path(out)
    resolution = _check_video_options(out, force, view, renderer, resolution)
    bg = parse_color(background)
    nv = topology.num_vertices
    streamed = not isinstance(motion, Motion)
    if streamed and (side_by_side is not None or error_heatmap):
        raise PtalkerError("side-by-side and heat-map videos need the whole motion, not blocks of it")
    if streamed and motion.num_frames <= 0:
        raise PtalkerError("motion has no frames")
    if not streamed:
        motion.validate(nv, source="motion")
    if side_by_side is not None:
        side_by_side.validate(nv, source="side-by-side motion")
    if error_heatmap and side_by_side is None:
        raise PtalkerError("the error heat-map needs ground truth; pass it with --side-by-side GT.npy")
    if topology.faces.size == 0:
        raise PtalkerError(f"template '{topology.name}' has no faces, so it cannot be rendered; use a mesh with faces")
    fps_out = float(fps) if fps is not None else float(motion.fps)
    if not (fps_out > 0) or not math.isfinite(fps_out):
        raise PtalkerError(f"fps must be positive; got {fps}")

    audio_path = Path(audio) if audio is not None else None
    if audio_path is not None:
        n_out = max(1, int(round(audio_duration(audio_path) * fps_out)))
    else:
        n_out = max(1, int(round(motion.num_frames / float(motion.fps) * fps_out)))

    seqs = [motion] + ([side_by_side] if side_by_side is not None else [])
    schedule = [frame_times(n_out, fps_out, float(m.fps), m.num_frames) for m in seqs]
    vmax = None
    if error_heatmap:
        vmax = heatmap_max
        if vmax is None:
            a, b, w = schedule[0]
            ga, gb, gw = schedule[1]
            idx = np.unique(np.linspace(0, n_out - 1, min(n_out, 200)).round().astype(int))
            d = [
                np.linalg.norm(_sample(motion.vertices, a[j], b[j], w[j])
                               - _sample(side_by_side.vertices, ga[j], gb[j], gw[j]), axis=1)
                for j in idx
            ]
            vmax = float(np.percentile(np.concatenate(d), 99.0))
        vmax = max(float(vmax), 1e-9)

    lo, hi = mesh_bounds(topology.vertices) if streamed else mesh_bounds(*[m.vertices for m in seqs])
    frames = [_FrameWindow(motion, nv) if streamed else m.vertices for m in seqs]
    panels = len(seqs)
    camera = frame_camera(lo, hi, view, aspect=1.0)
    normals = NormalComputer(topology.faces, nv)
    rend = create_renderer(renderer, topology.faces, nv, resolution, resolution, camera, panels=panels, background=bg)
    try:
        with atomic_path(out) as tmp:
            writer = None
            try:
                with interrupts.deferred():  # an interruption now is raised once ``writer`` is kept
                    writer = FFmpegVideoWriter(tmp, resolution * panels, resolution, fps_out, audio_path, label=out)
                for j in range(n_out):
                    verts = [_sample(f, s[0][j], s[1][j], s[2][j]) for f, s in zip(frames, schedule)]
                    norms = [normals(v) for v in verts]
                    colors = None
                    if error_heatmap:
                        err = np.linalg.norm(verts[0] - verts[1], axis=1)
                        colors = [heat_colors(err, vmax), None]
                    buf = writer.buffer()
                    rend.render(verts, norms, colors, out=buf)
                    writer.submit(buf)
                    if progress is not None:
                        progress(j + 1, n_out)
                if streamed:
                    frames[0].drain()  # the frames past the last one shown: checked and counted too
                writer.close()
            except BaseException:  # an error or an interruption, also while ffmpeg finishes: end it first
                if writer is not None:
                    writer.abort()
                raise
    finally:
        rend.close()
    return out


class _FrameWindow:
    """Frame ``k`` of a :class:`~.frame_blocks.FrameBlocks`, asked for in non-decreasing order: the
    last two frames are kept (an output frame blends frames a and a + 1)."""

    def __init__(self, motion, num_vertices: int):
        from .frame_blocks import checked_blocks, frames_of

        self._it = frames_of(checked_blocks(motion, num_vertices))
        self._have: dict[int, np.ndarray] = {}
        self._next = 0

    def __getitem__(self, k: int) -> np.ndarray:
        while self._next <= k:
            self._have[self._next] = next(self._it)
            self._have.pop(self._next - 2, None)
            self._next += 1
        return self._have[k]

    def drain(self) -> None:
        for _ in self._it:
            pass


def render_still(
    vertices: np.ndarray,
    topology: Topology,
    *,
    resolution: int = 512,
    background: str | Sequence[float] = (1.0, 1.0, 1.0),
    view: str = "front",
    renderer: str = "auto",
    bounds_of: np.ndarray | None = None,
) -> np.ndarray:
    """Render one (V, 3) shape to an (H, W, 3) uint8 image with the video's camera and lights.

    ``bounds_of``: vertices ((V, 3) or (T, V, 3)) to frame the camera on; default
    ``vertices`` themselves.
    """
    v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    if v.shape[0] != topology.num_vertices:
        raise PtalkerError(f"shape has {v.shape[0]} vertices but the template has {topology.num_vertices}")
    resolution = int(resolution) + int(resolution) % 2
    lo, hi = mesh_bounds(v if bounds_of is None else bounds_of)
    camera = frame_camera(lo, hi, view)
    normals = NormalComputer(topology.faces, topology.num_vertices)
    rend = create_renderer(renderer, topology.faces, topology.num_vertices, resolution, resolution, camera,
                           background=parse_color(background))
    try:
        return rend.render([v], [normals(v)])
    finally:
        rend.close()


__all__ = ["FFmpegVideoWriter", "render_still", "audio_duration", "ffmpeg_exe", "parse_color", "render_video"]
