"""``ptalker animate``: audio file(s) → animated face (npy, OBJ sequence, …)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from .. import interrupts
from ..blendshapes.solve import DEFAULT_REGULARIZATION, DEFAULT_SMOOTHNESS
from ..config import DEFAULT_MODEL
from ..errors import PtalkerError
from ..export.plan import ANIMATE_FORMATS
from .common import console, error, print_json, progress


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


def _animate_one(animator, path: Path, plan, arkit, glb, force: bool, styling: dict) -> dict:
    """Animate one input and write its outputs; the report entry's fields. npy, OBJ, PLY and MP4 are
    written block by block as the vertices are made (export/block_writers.py); GLB, ``all``, ARKit
    curves and live sending take the whole motion."""
    from ..export import detect_format
    from ..export.block_writers import BLOCK_FORMATS, FrameBlocks, write_motion_blocks

    out, out_fmt = plan.target(path)
    written, note = [], None
    if out is not None and not arkit.live and not arkit.writes_curves(out, out_fmt) \
            and (out_fmt or detect_format(out)) in BLOCK_FORMATS:
        if glb is not None:
            raise PtalkerError(f"--glb-motion and --glb-quantize apply to glb output, not {out_fmt or 'npy'}")
        stream = animator.animate_iter(path, **styling)
        blocks = FrameBlocks(stream.num_frames, stream.fps, stream.topology.name, stream.blocks, stream.meta)
        written = write_motion_blocks(blocks, stream.topology, out, out_fmt, force=force, audio=path)
        frames, fps, subject, style = stream.num_frames, stream.fps, stream.subject, stream.style
    else:
        res = animator.animate(path, **styling)
        topo = res.topology
        if arkit.writes_curves(out, out_fmt):
            written, note = arkit.write(res.motion, topo, arkit.rig_output(out, path, plan.many), out_fmt, force)
        elif out is not None:
            written = _write_mesh(res.motion, topo, out, out_fmt, path, glb, force)
        if arkit.live:
            arkit.stream(res.motion, topo)
        frames, fps, subject, style = res.motion.num_frames, res.motion.fps, res.subject, res.style
    return dict(output=[str(p) for p in written], frames=frames, fps=fps, subject=subject, style=style,
                **({"arkit": note} if note else {}))


def _shard_and_device(shard_arg: str | None, device: str):
    """The shard to run (``--shard K/N``, or torchrun's rank) and its device (``cuda:LOCAL_RANK`` under
    torchrun when CUDA exists and --device is auto; ranks share the devices when there are fewer)."""
    from ..export.shards import parse_shard, shard_from_env

    ranked = shard_from_env()
    if shard_arg is not None:
        return parse_shard(shard_arg), device
    if ranked is None or ranked[0].count == 1:
        return None, device
    shard, local = ranked
    if device == "auto":
        import torch

        device = f"cuda:{local % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    return shard, device


def _report_path(report: Path | None, shard, plan) -> Path | None:
    """``--report``, or for a sharded run without it ``report.json`` in the -o folder."""
    if shard is None or report is not None:
        return report
    if plan.output is None or not (plan.folder or plan.many):
        raise PtalkerError("a sharded run writes its report with --report REPORT.json (or -o FOLDER/)")
    return plan.output / "report.json"


def _write_report(report: Path, shard, inputs: list[Path], results: list) -> None:
    from ..export.shards import write_json, write_shard_report

    if shard is None:
        write_json(report, results)
    else:
        write_shard_report(report, shard, inputs, results)


def _interrupted_note(results: list, total: int) -> str:
    done = sum(e["status"] == "ok" for e in results)
    return f"{done} of {total} outputs were written, the one in progress was not" if done else "nothing written"


def animate(
    audio: List[Path] = typer.Argument(..., help="Speech file(s): WAV, FLAC or OGG.", show_default=False),
    output_arg: Optional[str] = typer.Option(
        None, "-o", "--output", help="Output file (.npy, .glb, .mp4, .html, .csv = ARKit curves for Live Link Face) "
        "or folder (OBJ sequence, or a folder that gets INPUT_NAME.FORMAT); with several inputs, a folder that gets "
        "one output per input. Optional with --livelink/--osc.", show_default=False),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model: a registry name (ptalker models list), a "
                              "model folder (e.g. a training run), hf://org/repo[@rev], or tiny."),
    subject: Optional[str] = typer.Option(None, "--subject", "-s", help="Subject: its template and, for a "
                                          "training subject, its style. Unseen subjects get their style from the "
                                          "audio."),
    style: Optional[str] = typer.Option(None, "--style", help="Style of another training subject, a blend "
                                        "ID:W,ID:W, or 'voice': the training styles blended by whose voice the "
                                        "audio sounds like (models with a speaker head)."),
    style_from: Optional[Path] = typer.Option(None, "--style-from", help="Take the motion style from a "
                                              "reference motion (.npy)."),
    style_strength: float = typer.Option(1.0, "--style-strength", help="Scale of the personal style (s_p and "
                                         "s_m), from 0 (audio style only) through 1 (the learned style) to 2."),
    template: Optional[str] = typer.Option(None, "--template", help="Template: a shipped id or a mesh file "
                                           "with the model's vertex count."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help=f"Output format: {', '.join(ANIMATE_FORMATS)} "
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
    chunk_seconds: Optional[float] = typer.Option(
        None, "--chunk-seconds", help="Speech encoder window for long audio, a fifth of it context each side "
        "(default 20 s, log-mel 30 s; 0: none)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing outputs."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON report on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display."),
    shard_arg: Optional[str] = typer.Option(None, "--shard", help="K/N: animate only shard K of N (every N-th "
                                            "of the sorted inputs); under torchrun the rank's shard is taken "
                                            "automatically. Each shard writes REPORT.rank-K-of-N.json; the last "
                                            "to finish merges them into the report.", show_default=False),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the JSON report to this file (default "
                                          "with --shard/torchrun: FOLDER/report.json in the -o folder).",
                                          show_default=False),
) -> None:
    """Animate a face from speech."""
    from ..arkit.outputs import ArkitOutputs
    from ..export import glb_options
    from ..export.plan import plan_outputs
    from ..export.shards import shard_inputs
    from ..inference import Animator, load_model
    from ..model.decoding import check_style_strength

    plan = plan_outputs(audio, output_arg, fmt, live=bool(livelink or osc))
    check_style_strength(style_strength)
    glb = glb_options(glb_motion, glb_quantize)
    many, output = plan.many, plan.output
    arkit = ArkitOutputs.from_options(rig, blendshapes, bs_regularization, bs_smoothness, livelink, osc, realtime)
    arkit.check_output(output, fmt, many)  # before inference
    shard, device = _shard_and_device(shard_arg, device)
    todo, report = shard_inputs(audio, shard), _report_path(report, shard, plan)
    animator = Animator(load_model(model, device))
    animator.set_chunk_seconds(chunk_seconds)
    styling = dict(subject=subject, style=style, style_from=style_from, style_strength=style_strength,
                   template=template)
    results, failed = [], 0
    interrupts.set_note(lambda: _interrupted_note(results, len(todo)))
    with progress(quiet or as_json) as bar:
        task = bar.add_task("animating", total=len(todo))
        for path in todo:
            bar.update(task, description=f"animating {path.name}")
            t0 = time.perf_counter()
            entry = {"input": str(path), "status": "ok"}
            try:
                entry.update(_animate_one(animator, path, plan, arkit, glb, force, styling))
                entry["seconds"] = round(time.perf_counter() - t0, 3)
            except PtalkerError as exc:
                failed += 1
                entry.update(status="error", error=str(exc))
                if not as_json:
                    error(f"{path}: {exc}" if str(path) not in str(exc) else str(exc))
                if not many:
                    if report is not None:
                        _write_report(report, shard, audio, [entry])
                    if as_json:
                        print_json([entry])
                    raise typer.Exit(1)
            results.append(entry)
            bar.advance(task)
    if report is not None:
        _write_report(report, shard, audio, results)
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
            error(f"{failed} of {len(todo)} inputs failed")
        raise typer.Exit(1)
