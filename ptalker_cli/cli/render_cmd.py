"""``ptalker render``: a saved motion (.npy), or ARKit curves (.csv/.json), to MP4 (or OBJ/PLY/GLB/npy).

Registered by the app as ``app.command("render")(render)``. It only parses options and
calls :mod:`ptalker_cli.export`; errors are :class:`~ptalker_cli.errors.PtalkerError`
with one-line messages, printed by the app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import PtalkerError


def _load_template(spec: str | None, motion_topology: str, subject: str | None = None):
    from ..model.folder import resolve_template

    if spec is None:
        if motion_topology in ("", "unknown"):
            raise PtalkerError("the motion's sidecar names no topology; pass --template ID|mesh.obj|model-dir")
        spec = motion_topology
    return resolve_template(spec, subject)


def render(
    motion: Annotated[Path, typer.Argument(
        help="Motion file (.npy, (T, V, 3) or (T, V*3)) with its optional JSON sidecar, or ARKit curves "
             "(Live Link Face .csv, arkit-json .json) posed on the template's blendshapes.")],
    template: Annotated[
        Optional[str],
        typer.Option("--template", "-t", help="Template: a shipped id (ict, tiny), a mesh file (.obj/.ply/.npz) "
                     "or a model folder (its mesh; the sidecar's subject's template when it has one). Default: the "
                     "topology named in the motion's sidecar."),
    ] = None,
    audio: Annotated[Optional[Path], typer.Option(
        "--audio", "-a", help="Speech to mux into the video (it sets the video's length); with .glb output, "
        "written beside it as OUT.wav.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Output file; default MOTION.mp4. The suffix picks the format (.mp4, .glb, .html = "
        "a self-contained player page, .npy, a folder = OBJ frames).")] = None,
    fmt: Annotated[Optional[str], typer.Option(
        "--format", help="npy|obj|ply|glb|mp4|html|all (default: from the -o suffix).")] = None,
    resolution: Annotated[int, typer.Option(
        "--resolution", "-r", help="Frame height and per-panel width in pixels.")] = 512,
    fps: Annotated[Optional[float], typer.Option("--fps", help="Video frame rate (default: the motion's).")] = None,
    background: Annotated[str, typer.Option(
        "--background", help="Background colour: white, black, #rrggbb or r,g,b.")] = "white",
    view: Annotated[str, typer.Option("--view", help="Camera: front or side.")] = "front",
    side_by_side: Annotated[Optional[Path], typer.Option(
        "--side-by-side", help="A second motion (e.g. ground truth .npy) drawn to the right (mp4, html).")] = None,
    heatmap: Annotated[bool, typer.Option(
        "--heatmap", help="Colour the motion by per-vertex distance to the --side-by-side ground truth.")] = False,
    glb_motion: Annotated[Optional[str], typer.Option(
        "--glb-motion", help="GLB motion layout: compact (principal shapes + weights, within 0.1 mm RMS; default) "
        "or per-frame (one morph target per frame).")] = None,
    glb_quantize: Annotated[bool, typer.Option(
        "--glb-quantize", help="GLB: 16-bit target positions (KHR_mesh_quantization; about a fifth smaller).")] = False,
    renderer: Annotated[str, typer.Option(
        "--renderer", help="auto (moderngl, else pyrender), moderngl or pyrender.")] = "auto",
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing outputs.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
    blendshapes: Annotated[Optional[Path], typer.Option(
        "--blendshapes", help="For ARKit curves: the blendshape basis (.npz/.glb) of the template "
                              "(default: the template's own; ict ships one).")] = None,
) -> None:
    """Render a motion to an MP4 with audio (or export it as OBJ/PLY/GLB frames)."""
    from ..export import detect_format, glb_options, write_motion
    from ..export.curves import is_curve_file
    from ..motion import Motion

    glb = glb_options(glb_motion, glb_quantize)
    if is_curve_file(motion):  # ARKit curves: pose them on the template (default ict)
        from ..arkit import curves_to_motion
        from ..export.curves import read_curves
        topo = _load_template(template or "ict", None, None)
        m = curves_to_motion(read_curves(motion), topo, blendshapes)
    else:
        m = Motion.load(motion, fps=None)
        topo = _load_template(template, m.topology, m.meta.get("subject"))
    out = output if output is not None else motion.with_suffix(".mp4")
    gt = Motion.load(side_by_side) if side_by_side is not None else None
    if (fmt or "").lower() == "html" or (fmt is None and out.suffix.lower() == ".html"):  # docs/rendering.md
        if glb is not None:
            raise PtalkerError("--glb-motion and --glb-quantize apply to glb output, not html")
        from ..export.html_player import write_html_player

        written = [write_html_player(out, m, topo, audio=audio, side_by_side=gt, error_heatmap=heatmap, force=force)]
        if not quiet:
            typer.echo(f"wrote {written[0]}")
        return
    chosen = (fmt or detect_format(out)).lower()
    video_opts = dict(
        audio=audio, resolution=resolution, fps=fps, background=background, view=view,
        side_by_side=gt, error_heatmap=heatmap, renderer=renderer,
    )  # fmt: skip
    if glb is not None and chosen not in ("glb", "all"):
        raise PtalkerError(f"--glb-motion and --glb-quantize apply to glb output, not {chosen}")
    if chosen not in ("mp4", "all"):
        if gt is not None or heatmap:
            raise PtalkerError(f"--side-by-side and --heatmap apply to mp4 output, not {chosen}")
        if audio is not None and chosen != "glb":
            raise PtalkerError(f"--audio applies to mp4 output (muxed) and glb output (OUT.wav beside it), "
                               f"not {chosen}")
        video_opts = {"audio": audio} if audio is not None else {}
    if chosen in ("glb", "all"):
        video_opts["glb"] = glb

    if quiet or chosen not in ("mp4", "all"):
        written = write_motion(m, topo, out, chosen, force, **video_opts)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(
            TextColumn("[bold]rendering[/bold]"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
            TimeRemainingColumn(), transient=True,
        ) as bar:  # fmt: skip
            task = bar.add_task("render", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            written = write_motion(m, topo, out, chosen, force, progress=progress, **video_opts)
    if not quiet:
        for path in written:
            typer.echo(f"wrote {path}")
