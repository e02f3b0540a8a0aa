"""One self-contained HTML file that plays a motion in the browser (three.js, vendored).

The page (``web/player.html``) inlines everything: three.js 0.187.0 (``web/three.bundle.min.js``,
MIT, see ``web/PROVENANCE.md``), the player (``web/player.js``), the mesh, the animation and the
audio, so opening it makes no network request. Its data is one JSON object (``<script
type="application/json" id="ptalker-data">``) whose arrays are base64 little-endian bytes:

* ``faces``: the triangles (uint16, or uint32 above 65535 vertices);
* per head (``heads``: the motion, and with ``side_by_side`` the ground truth), the animation
  in whichever of two layouts is smaller:

  - ``basis``: a few principal shapes and per-frame weights (:mod:`.motion_basis`, inside its
    :class:`~.motion_basis.ErrorBudget`), ``base`` float32 (V, 3), ``targets`` int16 (K, V, 3)
    with ``position = base + sum_k w_k * max(q_k / 32767, -1) * scale``, ``weights`` uint16
    (T, K) = ``round(w * 65535)``;
  - ``frames16``: every frame's positions quantized to 16 bits over the clip's box,
    ``position = origin + q * step`` (``q`` uint16, (T, V, 3)).

* ``audio``: the speech as Opus in WebM (ffmpeg from imageio-ffmpeg, mono, 32 kb/s), whose
  length is the page's duration (a motion shorter than the audio holds its last frame, as in
  the MP4s); without audio the duration is ``frames / fps``.
* ``heatmap``: with ``error_heatmap``, the colour scale's top (the 99th percentile of the
  per-vertex distances, as in the videos); the page colours the first head by its distance to
  the second, per frame, with :func:`~.scene.heat_colors`' stops.

The page exposes ``window.ptalker`` = {ready, duration, frames, seek(t), play(), pause(), ...}
(``web/player.js``). :func:`decode_player` reads the data back (tests, benchmarks).
"""

from __future__ import annotations

import base64
import html
import json
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import PtalkerError
from ..fileio import atomic_path
from .motion_basis import ErrorBudget, basis_error, fit_basis, mm_per_unit, one_blas_thread, reconstruction_error

#: What the page's data says it is; :func:`decode_player` refuses anything else.
FORMAT = "ptalker-html-player/1"
AUDIO_MIME = "audio/webm;codecs=opus"
AUDIO_BITRATE = "32k"
HEAT_STOPS = ((0.0, (0.15, 0.25, 0.85)), (0.33, (0.1, 0.8, 0.9)), (0.66, (0.95, 0.9, 0.15)), (1.0, (0.9, 0.1, 0.1)))


def web_file(name: str) -> str:
    """The text of a file of ``ptalker_cli/export/web`` (package data)."""
    return resources.files("ptalker_cli.export").joinpath("web", name).read_text(encoding="utf-8")


@dataclass
class EncodedHead:
    """One head's animation as the page stores it, and its measured error in millimetres."""

    label: str
    fps: float
    frames: int
    anim: dict
    error_mm: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"label": self.label, "fps": self.fps, "frames": self.frames, "anim": self.anim,
                "error_mm": self.error_mm}


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _frames16(frames: np.ndarray, mm: float, lip) -> tuple[dict, dict, int]:
    lo = frames.reshape(-1, 3).min(axis=0).astype(np.float64)
    hi = frames.reshape(-1, 3).max(axis=0).astype(np.float64)
    step = np.where(hi > lo, (hi - lo) / 65535.0, 1.0)
    q = np.empty(frames.shape, "<u2")
    for s in range(0, len(frames), 64):
        q[s:s + 64] = np.clip(np.round((frames[s:s + 64] - lo) / step), 0, 65535)
    T, V = frames.shape[0], frames.shape[1]
    flat = q.reshape(T, 3 * V)
    origin, step3 = np.tile(lo, V), np.tile(step, V)

    def predict(s: slice) -> np.ndarray:
        return (flat[s] * step3 + origin).astype(np.float32)

    err = reconstruction_error(frames, predict, mm, lip).as_dict()
    anim = {"layout": "frames16", "origin": lo.tolist(), "step": step.tolist(), "positions": _b64(q)}
    return anim, err, q.nbytes


def _basis(frames: np.ndarray, template: np.ndarray, mm: float, lip, budget: ErrorBudget) -> tuple[dict, dict, int]:
    with one_blas_thread():
        basis = fit_basis(frames, template, mm=mm, lip=lip, budget=budget, quantize=True)
    wq = np.round(np.clip(basis.weights, 0.0, 1.0) * 65535.0).astype("<u2")
    weights = (wq.astype(np.float32) / 65535.0).astype(np.float32)
    err = basis_error(frames, basis.base, basis.targets, weights, mm, lip).as_dict()  # what the page shows
    anim = {"layout": "basis", "components": basis.num_components, "scale": basis.scale,
            "base": _b64(basis.base.astype("<f4")), "targets": _b64(basis.quantized), "weights": _b64(wq)}
    return anim, err, basis.base.nbytes + basis.quantized.nbytes + wq.nbytes


def encode_head(label: str, frames: np.ndarray, fps: float, template: np.ndarray, *, units: str,
                lip: np.ndarray | None = None, budget: ErrorBudget = ErrorBudget()) -> EncodedHead:
    """``frames`` (T, V, 3) in whichever layout is smaller (see the module docstring)."""
    frames = np.ascontiguousarray(frames, dtype=np.float32)
    T, V = frames.shape[0], frames.shape[1]
    mm = mm_per_unit(units, template)
    choices = []
    if T > 3:  # a basis holds a base (12 bytes a vertex) and at least one shape (6): 3 frames of frames16 are no more
        choices.append(_basis(frames, template, mm, lip, budget))
    if not choices or T * V * 6 < choices[0][2]:
        choices.append(_frames16(frames, mm, lip))
    anim, err, _ = min(choices, key=lambda c: c[2])
    return EncodedHead(label, float(fps), T, anim, {k: round(v, 6) for k, v in err.items()})


def encode_audio(audio: str | Path) -> tuple[bytes, float]:
    """``audio`` (anything libsndfile reads) as Opus in WebM, and its duration in seconds."""
    from ..audio import audio_info
    from .video import ffmpeg_exe

    info = audio_info(audio)  # one-line AudioError for a missing or unreadable file
    with tempfile.TemporaryDirectory(prefix="ptalker-html-") as tmp:
        webm = Path(tmp) / "audio.webm"
        cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(audio), "-vn", "-ac", "1", "-c:a", "libopus",
               "-b:a", AUDIO_BITRATE, "-f", "webm", str(webm)]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0 or not webm.exists():
            why = " ".join((res.stderr or "").split())[:200] or f"exit code {res.returncode}"
            raise PtalkerError(f"could not encode {audio} as Opus for the HTML player: {why}")
        return webm.read_bytes(), float(info.duration)


def heat_scale(pred: np.ndarray, gt: np.ndarray, fps_pred: float, fps_gt: float) -> float:
    """The heat map's top: the 99th percentile of per-vertex distances on up to 200 frames (as the videos)."""
    n = min(len(pred), len(gt)) if abs(fps_pred - fps_gt) < 1e-9 else len(pred)
    idx = np.unique(np.linspace(0, n - 1, min(n, 200)).round().astype(int))
    j = np.minimum(np.round(idx * fps_gt / fps_pred).astype(int), len(gt) - 1)
    d = np.linalg.norm(pred[idx] - gt[j], axis=2)
    return max(float(np.percentile(d, 99.0)), 1e-9)


def player_data(topology, heads: list[tuple[str, np.ndarray, float]], *, audio: str | Path | None = None,
                error_heatmap: bool = False, title: str = "ptalker", budget: ErrorBudget = ErrorBudget()) -> dict:
    """The page's data (a JSON-able dict) for ``heads`` = [(label, frames (T, V, 3), fps), ...] on
    ``topology``'s faces; ``error_heatmap`` colours the first head by its distance to the second."""
    if topology.faces.size == 0:
        raise PtalkerError(f"template '{topology.name}' has no faces, so it cannot be played; use a mesh with faces")
    if error_heatmap and len(heads) < 2:
        raise PtalkerError("the error heat-map needs ground truth; pass it with --side-by-side GT.npy")
    V = topology.num_vertices
    lip = topology.regions.get("lip")
    enc = [encode_head(label, f, fps, topology.vertices, units=topology.units, lip=lip, budget=budget)
           for label, f, fps in heads]
    data = {
        "format": FORMAT, "generator": f"ptalker {__version__}", "title": title, "units": topology.units,
        "mm_per_unit": mm_per_unit(topology.units, topology.vertices), "vertices": V,
        "faces": _b64(np.asarray(topology.faces, dtype="<u2" if V <= 0xFFFF else "<u4").ravel()),
        "faces_type": "u16" if V <= 0xFFFF else "u32", "fps": enc[0].fps, "frames": enc[0].frames,
        "duration": enc[0].frames / enc[0].fps, "heads": [h.to_json() for h in enc], "audio": None,
        "heatmap": None,
    }
    if error_heatmap:
        vmax = heat_scale(heads[0][1], heads[1][1], heads[0][2], heads[1][2])
        data["heatmap"] = {"vmax": vmax, "stops": [[s, list(c)] for s, c in HEAT_STOPS]}
    if audio is not None:
        blob, seconds = encode_audio(audio)
        data["audio"] = {"mime": AUDIO_MIME, "data": base64.b64encode(blob).decode("ascii"), "seconds": seconds}
        data["duration"] = seconds
    return data


def data_script(data: dict, element_id: str = "ptalker-data", css_class: str = "ptalker-data") -> str:
    """``data`` as an inline JSON script element. Every ``<`` (only ever inside a JSON string) is
    written ``\\u003c``, so no string can end the element or open an HTML comment in it."""
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    return f'<script type="application/json" id="{element_id}" class="{css_class}">{text}</script>'


def inline_script(js: str) -> str:
    if re.search(r"</script|<!--", js, re.IGNORECASE):
        raise PtalkerError("internal error: a script to inline contains '</script' or '<!--'")
    return f"<script>{js}</script>"


def player_scripts() -> str:
    """three.js and the player, as inline classic scripts."""
    return inline_script(web_file("three.bundle.min.js")) + "\n" + inline_script(web_file("player.js"))


def player_page(data: dict) -> str:
    """The whole one-file page for ``data`` (from :func:`player_data`)."""
    page = web_file("player.html")
    return (page.replace("{{TITLE}}", html.escape(data.get("title") or "ptalker"))
                .replace("{{STYLE}}", web_file("player.css"))
                .replace("<!--SCRIPTS-->", player_scripts())
                .replace("<!--DATA-->", data_script(data)))


def write_html_player(out: str | Path, motion, topology, *, audio: str | Path | None = None, side_by_side=None,
                      error_heatmap: bool = False, force: bool = False, title: str | None = None,
                      budget: ErrorBudget = ErrorBudget()) -> Path:
    """Write ``motion`` (a :class:`~ptalker_cli.motion.Motion`) on ``topology`` as one HTML file.

    ``side_by_side``: a second Motion (ground truth) shown beside it; ``error_heatmap``: colour the
    motion by its distance to it. Atomic: nothing is left at ``out`` on any error.
    """
    out = Path(out)
    if out.exists() and not force:
        raise PtalkerError(f"{out} already exists; use --force to overwrite it")
    if out.is_dir():
        raise PtalkerError(f"{out} is a folder; give a file name ending in .html")
    nv = topology.num_vertices
    motion.validate(nv, source="motion")
    heads = [("prediction" if side_by_side is not None else "motion", motion.vertices, float(motion.fps))]
    if side_by_side is not None:
        side_by_side.validate(nv, source="side-by-side motion")
        heads.append(("ground truth", side_by_side.vertices, float(side_by_side.fps)))
    data = player_data(topology, heads, audio=audio, error_heatmap=error_heatmap,
                       title=title or f"ptalker: {out.stem}", budget=budget)
    text = player_page(data)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out


# --------------------------------------------------------------------------- reading back


def read_player_data(page: str | Path, element_id: str = "ptalker-data") -> dict:
    """The JSON data of a page written by :func:`write_html_player` (a path or the page's text)."""
    text = Path(page).read_text(encoding="utf-8") if isinstance(page, Path) else page
    m = re.search(rf'<script type="application/json" id="{re.escape(element_id)}"[^>]*>(.*?)</script>', text,
                  re.DOTALL)
    if m is None:
        raise PtalkerError(f"no ptalker player data ({element_id}) in the page")
    data = json.loads(m.group(1))
    if data.get("format") != FORMAT:
        raise PtalkerError(f"not a ptalker player page (format {data.get('format')!r})")
    return data


def decode_head(head: dict, vertices: int) -> np.ndarray:
    """(T, V, 3) float32 positions of one head of the page's data, as the page computes them."""
    a, T = head["anim"], head["frames"]
    raw = {k: base64.b64decode(a[k]) for k in ("base", "targets", "weights", "positions") if k in a}
    if a["layout"] == "frames16":
        q = np.frombuffer(raw["positions"], "<u2").reshape(T, vertices, 3)
        return (q * np.asarray(a["step"]) + np.asarray(a["origin"])).astype(np.float32)
    K = a["components"]
    base = np.frombuffer(raw["base"], "<f4").reshape(vertices, 3)
    q = np.frombuffer(raw["targets"], "<i2").reshape(K, vertices * 3)
    targets = np.maximum(q.astype(np.float32) / 32767.0, -1.0) * np.float32(a["scale"])
    w = np.frombuffer(raw["weights"], "<u2").reshape(T, K).astype(np.float32) / 65535.0
    return (base.reshape(1, -1) + w @ targets).reshape(T, vertices, 3).astype(np.float32)


def decode_player(page: str | Path) -> dict:
    """The page's data with each head's positions decoded (``heads[i]["positions"]``) and the audio bytes."""
    data = read_player_data(page)
    for head in data["heads"]:
        head["positions"] = decode_head(head, data["vertices"])
    if data.get("audio"):
        data["audio"]["bytes"] = base64.b64decode(data["audio"]["data"])
    return data
