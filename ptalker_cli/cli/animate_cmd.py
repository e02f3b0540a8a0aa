"""``ptalker animate``: audio file(s) → animated face (npy, OBJ sequence, …)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Optional

import typer

from .. import interrupts
from ..blendshapes.solve import DEFAULT_REGULARIZATION, DEFAULT_SMOOTHNESS
from ..config import DEFAULT_MODEL
from ..errors import PtalkerError
from .common import console, error, print_json, progress

FORMATS = ("npy", "obj", "ply", "glb", "mp4", "html", "csv", "arkit-json")
FOLDER_FORMATS = ("obj", "ply")  # a folder of frames: -o names the folder itself


def _output_for(out: Path, audio: Path, fmt: str | None, many: bool, folder: bool) -> tuple[Path, str | None]:
    """Where one input's output goes (docs/inference.md, "Output names").

    One input: ``-o`` as given, except that a folder (an existing one, or a name ending in ``/``)
    with a file format (npy, glb, mp4, all) receives ``<input stem>.<format>``. Several inputs: ``-o``
    is a folder that receives ``<stem>.<format>`` for file formats (npy by default), ``<stem>/`` for an
    OBJ or PLY sequence, and for ``all`` the base name ``<stem>`` (``<stem>.npy``, ``<stem>_obj/``, …).
    """
    if not many and (fmt is None or fmt in FOLDER_FORMATS or not folder):
        return out, fmt
    fmt = fmt or "npy"
    if fmt in ("csv", "arkit-json"):  # ARKit curves: one file per input
        return out / f"{audio.stem}.{'csv' if fmt == 'csv' else 'json'}", fmt
    if fmt in FOLDER_FORMATS or fmt == "all":
        return out / audio.stem, fmt
    return out / f"{audio.stem}.{fmt}", fmt


def _check_output(output_arg: str | None, inputs: int, live: bool) -> tuple[Path | None, bool]:
    """``-o`` as a path (None when only sending live) and whether it names a folder; one-line errors."""
    if output_arg is None:
        if not live:
            raise PtalkerError("missing -o/--output (or send live with --livelink/--osc)")
        return None, False
    output = Path(output_arg)
    try:
        is_dir, exists = output.is_dir(), output.exists()
    except OSError as exc:  # e.g. a name too long for the file system
        raise PtalkerError(f"cannot use -o {output}: {exc.strerror or exc}") from None
    if inputs > 1 and (output.suffix or (exists and not is_dir)):
        raise PtalkerError(f"with {inputs} inputs, -o must be a folder (got the file name {output})")
    return output, is_dir or output_arg.endswith(("/", os.sep))  # Path() drops a trailing slash


def _write_mesh(motion, topo, out: Path, fmt: str | None, audio: Path, glb, force: bool) -> list[Path]:
    """npy/obj/ply/glb/mp4/all through write_motion: the audio is muxed into an MP4 and written beside
    a GLB (OUT.wav); ``glb``: the --glb-* options (glb output only)."""
    from ..export import detect_format, write_motion

    if fmt == "html" or (fmt is None and out.suffix.lower() == ".html"):  # one self-contained page (docs/rendering.md)
        if glb is not None:
            raise PtalkerError("--glb-motion and --glb-quantize apply to glb output, not html")
        from ..export.html_player import write_html_player

        return [write_html_player(out, motion, topo, audio=audio, force=force)]
    chosen = fmt or detect_format(out)
    if glb is not None and chosen not in ("glb", "all"):
        raise PtalkerError(f"--glb-motion and --glb-quantize apply to glb output, not {chosen}")
    with_audio = chosen in ("mp4", "glb", "all")
    return write_motion(motion, topo, out, fmt, force=force, glb=glb if chosen in ("glb", "all") else None,
                        **({"audio": audio} if with_audio else {}))


def _interrupted_note(results: list, total: int) -> str:
    done = sum(e["status"] == "ok" for e in results)
    return f"{done} of {total} outputs were written, the one in progress was not" if done else "nothing written"


def animate(
    audio: List[Path] = typer.Argument(..., help="Speech file(s): WAV, FLAC or OGG.", show_default=False),
    output_arg: Optional[str] = typer.Option(None, "-o", "--output", help="Output file (.npy, .glb, .mp4, .html, .csv = "
                                             "ARKit curves for Live Link Face) or folder (OBJ sequence, or a folder "
                                             "that gets INPUT_NAME.FORMAT); with several inputs, a folder that gets "
                                             "one output per input. Optional with --livelink/--osc.",
                                             show_default=False),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model: a registry name (ptalker models list), a "
                              "model folder (e.g. a training run), hf://org/repo[@rev], or tiny."),
    subject: Optional[str] = typer.Option(None, "--subject", "-s", help="Subject: its template and, for a "
                                          "training subject, its style. Unseen subjects get their style from the audio."),
    style: Optional[str] = typer.Option(None, "--style", help="Style of another training subject, a blend "
                                        "ID:W,ID:W, or 'voice': the training styles blended by whose voice the "
                                        "audio sounds like (models with a speaker head)."),
    style_from: Optional[Path] = typer.Option(None, "--style-from", help="Take the motion style from a "
                                              "reference motion (.npy)."),
    style_strength: float = typer.Option(1.0, "--style-strength", help="Scale of the personal style (s_p and "
                                         "s_m), from 0 (audio style only) through 1 (the learned style) to 2."),
    template: Optional[str] = typer.Option(None, "--template", help="Template: a shipped id or a mesh file "
                                           "with the model's vertex count."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help=f"Output format: {', '.join(FORMATS)} "
                                      "(default: from the -o suffix; csv and arkit-json are ARKit curves, "
                                      "see docs/arkit.md)."),
    rig: Optional[Path] = typer.Option(None, "--rig", help="Your character (.glb/.gltf) with ARKit-named morph "
                                       "targets: -o gets the same file plus an animation of them."),
    blendshapes: Optional[Path] = typer.Option(None, "--blendshapes", help="Blendshape basis on the model's mesh "
                                               "(.npz names+offsets, or a .glb with morph targets) for ARKit "
                                               "output; default: the template's own (ict ships one)."),
    bs_regularization: float = typer.Option(DEFAULT_REGULARIZATION, "--bs-regularization",
                                            help="ARKit solve: weight penalty (relative to an average shape's "
                                            "energy)."),
    bs_smoothness: float = typer.Option(DEFAULT_SMOOTHNESS, "--bs-smoothness", help="ARKit solve: penalty on "
                                        "frame-to-frame weight changes (relative to an average shape's energy)."),
    livelink: Optional[str] = typer.Option(None, "--livelink", help="Send the ARKit curves live to HOST:PORT as "
                                           "Live Link Face UDP packets (Unreal: port 11111)."),
    osc: Optional[str] = typer.Option(None, "--osc", help="Send the ARKit curves live to HOST:PORT over OSC "
                                      "(VMC protocol, /VMC/Ext/Blend/Val; VTuber apps: port 39539)."),
    realtime: bool = typer.Option(True, "--realtime/--no-realtime", help="Pace --livelink/--osc frames at the "
                                  "motion's frame rate, or send them as fast as possible."),
    glb_motion: Optional[str] = typer.Option(None, "--glb-motion", help="GLB motion layout: compact (a few "
                                             "principal shapes + per-frame weights, within 0.1 mm RMS; default) or "
                                             "per-frame (one morph target per frame: large)."),
    glb_quantize: bool = typer.Option(False, "--glb-quantize", help="GLB: 16-bit target positions "
                                      "(KHR_mesh_quantization; about a fifth smaller)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
) -> None:
    """Animate a face from speech."""
    from ..arkit.outputs import ArkitOutputs
    from ..export import glb_options
    from ..inference import Animator, load_model
    from ..model.decoding import check_style_strength

    if fmt is not None and fmt not in FORMATS + ("all",):
        raise PtalkerError(f"unknown --format '{fmt}'; choose one of: {', '.join(FORMATS)}, all")
    check_style_strength(style_strength)
    glb = glb_options(glb_motion, glb_quantize)
    many = len(audio) > 1
    output, folder = _check_output(output_arg, len(audio), live=bool(livelink or osc))
    arkit = ArkitOutputs.from_options(rig, blendshapes, bs_regularization, bs_smoothness, livelink, osc, realtime)
    arkit.check_output(output, fmt, many)  # before inference
    animator = Animator(load_model(model, device))
    results, failed = [], 0
    interrupts.set_note(lambda: _interrupted_note(results, len(audio)))
    with progress(quiet or as_json) as bar:
        task = bar.add_task("animating", total=len(audio))
        for path in audio:
            bar.update(task, description=f"animating {path.name}")
            t0 = time.perf_counter()
            entry = {"input": str(path), "status": "ok"}
            try:
                res = animator.animate(path, subject=subject, style=style, style_from=style_from,
                                       style_strength=style_strength, template=template)
                topo = res.topology
                out, out_fmt = (None, fmt) if output is None else _output_for(output, path, fmt, many, folder)
                written, note = [], None
                if arkit.writes_curves(out, out_fmt):
                    written, note = arkit.write(res.motion, topo, arkit.rig_output(out, path, many), out_fmt, force)
                elif out is not None:
                    written = _write_mesh(res.motion, topo, out, out_fmt, path, glb, force)
                if arkit.live:
                    arkit.stream(res.motion, topo)
                entry.update(
                    output=[str(p) for p in written],
                    frames=res.motion.num_frames,
                    fps=res.motion.fps,
                    seconds=round(time.perf_counter() - t0, 3),
                    subject=res.subject,
                    style=res.style,
                    **({"arkit": note} if note else {}),
                )
            except PtalkerError as exc:
                failed += 1
                entry.update(status="error", error=str(exc))
                if not as_json:
                    error(f"{path}: {exc}" if str(path) not in str(exc) else str(exc))
                if not many:
                    if as_json:
                        print_json([entry])
                    raise typer.Exit(1)
            results.append(entry)
            bar.advance(task)
    if as_json:
        print_json(results)
    elif not quiet:
        for e in results:
            if e["status"] == "ok":
                outputs = ", ".join(e["output"]) or "live"
                console.print(f"[green]✓[/] {e['input']} → {outputs} ({e['frames']} frames)", highlight=False)
                if e.get("arkit"):
                    console.print(e["arkit"], highlight=False, markup=False, soft_wrap=True)
    if failed:
        if not as_json:
            error(f"{failed} of {len(audio)} inputs failed")
        raise typer.Exit(1)
