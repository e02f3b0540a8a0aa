"""Writers that take the motion as blocks of frames, written as they come.

A :class:`~.frame_blocks.FrameBlocks` is the motion's frame count, frame rate and provenance plus an iterator
of (n, V, 3) float32 blocks (``Animator.animate_iter`` makes one). The ``.npy`` writer writes
the header for the known frame count, then each block's bytes; the OBJ / PLY writers write
each frame's file as its block arrives (:mod:`.writers` uses the same frame writers for a
whole :class:`~ptalker_cli.motion.Motion`); MP4 pipes each frame into ffmpeg
(:func:`~.video.render_video`). Only one block is held at a time.

Every output is atomic as in :mod:`.writers`: a bad block (NaN, wrong size, too many or too few
frames), an error or an interruption while writing leaves nothing at the target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import PtalkerError
from ..fileio import atomic_folder, atomic_path
from ..mesh import Topology
from .frame_blocks import FrameBlocks, checked_blocks, frames_of

__all__ = ["BLOCK_FORMATS", "FrameBlocks", "write_motion_blocks", "write_npy_blocks", "write_obj_blocks",
           "write_ply_blocks"]

#: formats written block by block (GLB fits a basis to the whole motion, so it needs it all)
BLOCK_FORMATS = ("npy", "obj", "ply", "mp4")


def write_npy_blocks(motion: FrameBlocks, topology: Topology, out: Path) -> list[Path]:
    """``out`` (.npy, (T, V, 3) float32: the header for T frames, then each block) and its JSON sidecar."""
    V = topology.num_vertices
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
              "shape": (int(motion.num_frames), V, 3)}
    topo_name = motion.topology if motion.topology not in ("", "unknown") else topology.name
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            for block in checked_blocks(motion, V):
                fh.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
        with atomic_path(out.with_suffix(".json")) as tmp_json:  # both or neither, as Motion.save
            side = {**motion.sidecar(V), "topology": topo_name}
            tmp_json.write_text(json.dumps(side, indent=2, default=str) + "\n")
    return [out, out.with_suffix(".json")]


def frame_name(k: int, total: int, ext: str) -> str:
    width = max(5, len(str(max(total - 1, 0))))
    return f"frame_{k:0{width}d}.{ext}"


def require_faces(topology: Topology, fmt: str) -> None:
    if topology.faces.size == 0:
        raise PtalkerError(f"template '{topology.name}' has no faces, so it cannot be written as {fmt}; "
                           "use a mesh with faces")


def write_obj_blocks(motion: FrameBlocks, topology: Topology, out: Path,
                     progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """A folder of ``frame_00000.obj`` ...: vertices and (1-based) faces in every file, one per frame as it comes."""
    require_faces(topology, "OBJ")
    T, V = motion.num_frames, topology.num_vertices
    faces_txt = ("f %d %d %d\n" * len(topology.faces)) % tuple((topology.faces + 1).ravel().tolist())
    header = f"# ptalker motion frame {{k}} of {T}, topology {topology.name}, fps {motion.fps:g}\n"
    vfmt = "v %.6f %.6f %.6f\n" * V
    with atomic_folder(out) as tmp:
        for k, frame in enumerate(frames_of(checked_blocks(motion, V))):
            text = header.format(k=k) + vfmt % tuple(frame.ravel().tolist()) + faces_txt
            (tmp / frame_name(k, T, "obj")).write_text(text)
            if progress:
                progress(k + 1, T)
    return [out]


def write_ply_blocks(motion: FrameBlocks, topology: Topology, out: Path,
                     progress: Callable[[int, int], None] | None = None) -> list[Path]:
    """A folder of binary little-endian ``frame_00000.ply`` ... with faces in every file, one per frame as it comes."""
    require_faces(topology, "PLY")
    T, V = motion.num_frames, topology.num_vertices
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
        for k, frame in enumerate(frames_of(checked_blocks(motion, V))):
            with open(tmp / frame_name(k, T, "ply"), "wb") as fh:
                fh.write(header)
                fh.write(np.ascontiguousarray(frame, dtype="<f4").tobytes())
                fh.write(face_bytes)
            if progress:
                progress(k + 1, T)
    return [out]


def write_motion_blocks(motion: FrameBlocks, topology: Topology, out: str | Path, fmt: str | None = None,
                        force: bool = False, audio: str | Path | None = None) -> list[Path]:
    """Write a block-by-block motion as ``npy``, ``obj``, ``ply`` or ``mp4`` (with ``audio`` muxed in).

    The same checks as :func:`~.writers.write_motion` come first (one line, nothing written);
    the blocks are then read once. Other formats (``glb``, ``all``) need the whole motion: use
    :func:`~.writers.write_motion`.
    """
    from .plan import check_files, detect_format

    out = Path(out)
    fmt = (fmt or detect_format(out)).lower()
    if fmt not in BLOCK_FORMATS:
        raise PtalkerError(f"format '{fmt}' needs the whole motion; write it with write_motion")
    check_files({fmt: out}, force)
    if fmt == "mp4":
        from .video import render_video

        return [render_video(motion, topology, out, audio=audio, force=force)]
    writer = {"npy": write_npy_blocks, "obj": write_obj_blocks, "ply": write_ply_blocks}[fmt]
    return writer(motion, topology, out)
