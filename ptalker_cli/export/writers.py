"""Motion writers: ``.npy`` (+ JSON sidecar), OBJ and PLY sequences, GLB, and MP4.

:func:`write_motion` picks the writer from ``fmt`` or the output's suffix. Every
writer is atomic: files are written under a temporary name beside the target and
renamed into place; folder outputs (OBJ/PLY sequences) are written into a temporary
folder that is renamed at the end. Existing outputs are kept unless ``force``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import MotionError, PtalkerError
from ..fileio import atomic_path
from ..mesh import Topology
from ..motion import Motion
from .block_writers import FrameBlocks, require_faces, write_obj_blocks, write_ply_blocks
from .plan import FORMATS, check_files, detect_format, output_files, same_file

__all__ = ["FORMATS", "detect_format", "write_motion", "write_npy", "write_obj_sequence", "write_ply_sequence",
           "write_glb_file", "glb_options"]


# --------------------------------------------------------------------------- writers


def write_npy(motion: Motion, topology: Topology, out: Path) -> list[Path]:
    """``out`` (.npy, (T, V, 3) float32) plus its JSON sidecar, via :meth:`Motion.save`."""
    m = motion
    if m.topology in ("", "unknown"):
        m = Motion(motion.vertices, motion.fps, topology.name, dict(motion.meta))
    m.save(out)
    return [out, out.with_suffix(".json")]


def write_obj_sequence(motion: Motion, topology: Topology, out: Path, progress=None) -> list[Path]:
    """A folder of ``frame_00000.obj`` ...: vertices and (1-based) faces in every file."""
    return write_obj_blocks(FrameBlocks.of(motion), topology, out, progress)


def write_ply_sequence(motion: Motion, topology: Topology, out: Path, progress=None) -> list[Path]:
    """A folder of binary little-endian ``frame_00000.ply`` ... with faces in every file."""
    return write_ply_blocks(FrameBlocks.of(motion), topology, out, progress)


def write_glb_file(motion: Motion, topology: Topology, out: Path, options=None,
                   audio: str | Path | None = None) -> list[Path]:
    """One glTF 2.0 binary (see :mod:`.glb`) and, with ``audio``, ``OUT.wav`` beside it (glTF has no audio).

    The GLB's ``extras.audio`` names the WAV. When ``audio`` already is ``OUT.wav`` it is left
    as it is (and not listed as written). Both files appear or neither does.
    """
    from .glb import GlbOptions, write_glb

    require_faces(topology, "GLB")
    extras = {"topology": topology.name, **{k: v for k, v in motion.meta.items() if isinstance(v, (str, int, float))}}
    wav = out.with_suffix(".wav") if audio is not None else None
    if wav is not None:
        extras["audio"] = wav.name
        if same_file(wav, Path(audio)):
            wav = None
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            write_glb(fh, topology.vertices, topology.faces, motion.vertices, motion.fps, units=topology.units,
                      name=topology.name, extras=extras, lip=topology.regions.get("lip"),
                      options=options or GlbOptions())
        if wav is not None:  # renamed into place just before the GLB
            write_wav_copy(audio, wav)
    return [out] if wav is None else [out, wav]


def write_wav_copy(audio: str | Path, wav: Path) -> Path:
    """``audio`` (anything libsndfile reads) as 16-bit PCM WAV at its own rate and channels, streamed."""
    import soundfile as sf

    from ..audio import audio_info

    info = audio_info(audio)  # one-line AudioError for a missing or unreadable file
    with atomic_path(wav) as tmp:
        with sf.SoundFile(str(audio)) as src, sf.SoundFile(str(tmp), "w", samplerate=info.sample_rate,
                                                           channels=info.channels, subtype="PCM_16",
                                                           format="WAV") as dst:
            for block in src.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                dst.write(block)
    return wav


def glb_options(motion: str | None = None, quantize: bool = False):
    """:class:`~ptalker_cli.export.glb.GlbOptions` from the command line's ``--glb-motion`` and
    ``--glb-quantize``; None when both are left at their defaults."""
    if motion is None and not quantize:
        return None
    from .glb import GlbOptions

    return GlbOptions(motion=motion or "compact", quantize=quantize)


# --------------------------------------------------------------------------- dispatch


def write_motion(
    motion: Motion,
    topology: Topology,
    out: str | Path,
    fmt: str | None = None,
    force: bool = False,
    glb=None,
    **render_options,
) -> list[Path]:
    """Write ``motion`` as ``fmt`` (``npy``, ``obj``, ``ply``, ``glb``, ``mp4`` or ``all``).

    ``fmt=None`` picks the format from ``out`` (see :func:`detect_format`). With
    ``all``, ``out`` is a base name: ``OUT.npy``, ``OUT_obj/``, ``OUT_ply/``,
    ``OUT.glb`` and ``OUT.mp4`` are written. ``render_options`` go to
    :func:`~ptalker_cli.export.video.render_video` for MP4 (``audio``, ``resolution``,
    ...); ``audio`` also goes beside a GLB as ``OUT.wav``. ``glb``: a
    :class:`~ptalker_cli.export.glb.GlbOptions` (layout, quantization, error budget).
    Returns the paths written. Raises :class:`PtalkerError` / :class:`MotionError`
    (one line) with nothing written for: an existing output without ``force``, a
    vertex-count mismatch with the template, NaN vertices, or an empty motion.
    """
    out = Path(out)
    fmt = (fmt or detect_format(out)).lower()
    targets_to_check = output_files(out, fmt, render_options.get("audio"))  # one-line error for a bad fmt
    if not isinstance(motion, Motion):
        raise MotionError(f"expected a Motion, got {type(motion).__name__}")
    motion.validate(topology.num_vertices, source="motion")
    check_files(targets_to_check, force)
    targets = {k: v for k, v in targets_to_check.items() if k != "wav"}
    video_only = [k for k in render_options if k != "audio" or "glb" not in targets]
    if video_only and "mp4" not in targets:
        raise PtalkerError(f"render options ({', '.join(video_only)}) only apply to mp4 output")
    if glb is not None and "glb" not in targets:
        raise PtalkerError("GLB options only apply to glb output")
    writers: dict[str, Callable[..., list[Path]]] = {
        "npy": write_npy,
        "obj": write_obj_sequence,
        "ply": write_ply_sequence,
        "glb": lambda m, t, p: write_glb_file(m, t, p, glb, render_options.get("audio")),
    }
    written: list[Path] = []
    try:
        for name, path in targets.items():
            if name == "mp4":
                from .video import render_video

                written.append(render_video(motion, topology, path, force=force, **render_options))
            else:
                written += writers[name](motion, topology, path)
    except BaseException:  # with several formats: none of them, rather than some (a full disk, an interruption)
        _remove(written)
        raise
    return written


def _remove(paths: list[Path]) -> None:
    import shutil

    for p in paths:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
