"""Motion writers: ``.npy`` (+ JSON sidecar), OBJ and PLY sequences, GLB, and MP4.

:func:`write_motion` picks the writer from ``fmt`` or the output's suffix. Every
writer is atomic: files are written under a temporary name beside the target and
renamed into place; folder outputs (OBJ/PLY sequences) are written into a temporary
folder that is renamed at the end. Existing outputs are kept unless ``force``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import MotionError, PtalkerError
from ..fileio import atomic_folder, atomic_path
from ..mesh import Topology
from ..motion import Motion

#: Formats :func:`write_motion` understands (``all`` writes every one of them).
FORMATS = ("npy", "obj", "ply", "glb", "mp4", "all")
_SUFFIX_FORMAT = {".npy": "npy", ".glb": "glb", ".mp4": "mp4"}


def detect_format(out: str | Path) -> str:
    """The format implied by ``out``: ``.npy``/``.glb``/``.mp4``, or a folder → ``obj``."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in _SUFFIX_FORMAT:
        return _SUFFIX_FORMAT[suffix]
    if out.is_dir() or suffix == "" or str(out).endswith(("/", os.sep)):
        return "obj"
    raise PtalkerError(
        f"cannot tell the output format from '{out.name}'; use a name ending in .npy, .glb or .mp4, "
        "a folder (OBJ sequence), or pass --format npy|obj|ply|glb|mp4|all"
    )


def _check_new(path: Path, force: bool) -> None:
    if not path.exists() or force:
        return
    if path.is_dir() and not any(path.iterdir()):
        return  # an empty folder holds nothing to overwrite
    raise PtalkerError(f"{path} already exists; use --force to overwrite it")


def _check_target(path: Path, folder: bool) -> None:
    """One line, before anything is written, when ``path`` cannot be created: an existing folder where a
    file goes, or a file where a parent folder should be."""
    if path.is_dir() and not folder:
        raise PtalkerError(f"{path} is a folder; give a file name for this output")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PtalkerError(f"could not write {path}: {parent} is a file, not a folder")
            break


def _frame_name(k: int, total: int, ext: str) -> str:
    width = max(5, len(str(max(total - 1, 0))))
    return f"frame_{k:0{width}d}.{ext}"


def _require_faces(topology: Topology, fmt: str) -> None:
    if topology.faces.size == 0:
        raise PtalkerError(f"template '{topology.name}' has no faces, so it cannot be written as {fmt}; use a mesh with faces")


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
    _require_faces(topology, "OBJ")
    T, V = motion.num_frames, motion.num_vertices
    faces_txt = ("f %d %d %d\n" * len(topology.faces)) % tuple((topology.faces + 1).ravel().tolist())
    header = f"# ptalker motion frame {{k}} of {T}, topology {topology.name}, fps {motion.fps:g}\n"
    vfmt = "v %.6f %.6f %.6f\n" * V
    with atomic_folder(out) as tmp:
        for k in range(T):
            text = header.format(k=k) + vfmt % tuple(motion.vertices[k].ravel().tolist()) + faces_txt
            (tmp / _frame_name(k, T, "obj")).write_text(text)
            if progress:
                progress(k + 1, T)
    return [out]


def write_ply_sequence(motion: Motion, topology: Topology, out: Path, progress=None) -> list[Path]:
    """A folder of binary little-endian ``frame_00000.ply`` ... with faces in every file."""
    _require_faces(topology, "PLY")
    T, V = motion.num_frames, motion.num_vertices
    F = len(topology.faces)
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"comment ptalker motion, topology {topology.name}, fps {motion.fps:g}\n"
        f"element vertex {V}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face {F}\nproperty list uchar int vertex_indices\nend_header\n"
    ).encode("ascii")
    face_rec = np.empty(F, dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_rec["n"] = 3
    face_rec["idx"] = topology.faces
    face_bytes = face_rec.tobytes()
    with atomic_folder(out) as tmp:
        for k in range(T):
            with open(tmp / _frame_name(k, T, "ply"), "wb") as fh:
                fh.write(header)
                fh.write(np.ascontiguousarray(motion.vertices[k], dtype="<f4").tobytes())
                fh.write(face_bytes)
            if progress:
                progress(k + 1, T)
    return [out]


def write_glb_file(motion: Motion, topology: Topology, out: Path) -> list[Path]:
    """One glTF 2.0 binary: template mesh + one morph target per frame + a weights animation."""
    from .glb import write_glb

    _require_faces(topology, "GLB")
    extras = {"topology": topology.name, **{k: v for k, v in motion.meta.items() if isinstance(v, (str, int, float))}}
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            write_glb(fh, topology.vertices, topology.faces, motion.vertices, motion.fps, units=topology.units, name=topology.name, extras=extras)
    return [out]


# --------------------------------------------------------------------------- dispatch


def _targets(out: Path, fmt: str) -> dict[str, Path]:
    if fmt != "all":
        return {fmt: out}
    stem = out.with_suffix("") if out.suffix.lower() in _SUFFIX_FORMAT else out
    return {
        "npy": stem.with_name(stem.name + ".npy"),
        "obj": stem.with_name(stem.name + "_obj"),
        "ply": stem.with_name(stem.name + "_ply"),
        "glb": stem.with_name(stem.name + ".glb"),
        "mp4": stem.with_name(stem.name + ".mp4"),
    }


def write_motion(
    motion: Motion,
    topology: Topology,
    out: str | Path,
    fmt: str | None = None,
    force: bool = False,
    **render_options,
) -> list[Path]:
    """Write ``motion`` as ``fmt`` (``npy``, ``obj``, ``ply``, ``glb``, ``mp4`` or ``all``).

    ``fmt=None`` picks the format from ``out`` (see :func:`detect_format`). With
    ``all``, ``out`` is a base name: ``OUT.npy``, ``OUT_obj/``, ``OUT_ply/``,
    ``OUT.glb`` and ``OUT.mp4`` are written. ``render_options`` go to
    :func:`~ptalker_cli.export.video.render_video` for MP4 (``audio``, ``resolution``,
    ...). Returns the paths written. Raises :class:`PtalkerError` / :class:`MotionError`
    (one line) with nothing written for: an existing output without ``force``, a
    vertex-count mismatch with the template, NaN vertices, or an empty motion.
    """
    out = Path(out)
    fmt = (fmt or detect_format(out)).lower()
    if fmt not in FORMATS:
        raise PtalkerError(f"unknown format '{fmt}'; use one of: {', '.join(FORMATS)}")
    if not isinstance(motion, Motion):
        raise MotionError(f"expected a Motion, got {type(motion).__name__}")
    motion.validate(topology.num_vertices, source="motion")
    targets = _targets(out, fmt)
    for name, path in targets.items():
        try:
            _check_target(path, folder=name in ("obj", "ply"))
            _check_new(path, force)
        except OSError as exc:  # e.g. a name too long for the file system
            raise PtalkerError(f"could not write {path}: {exc.strerror or exc}") from None
    if render_options and "mp4" not in targets:
        raise PtalkerError(f"render options ({', '.join(render_options)}) only apply to mp4 output")
    writers: dict[str, Callable[..., list[Path]]] = {
        "npy": write_npy,
        "obj": write_obj_sequence,
        "ply": write_ply_sequence,
        "glb": write_glb_file,
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
