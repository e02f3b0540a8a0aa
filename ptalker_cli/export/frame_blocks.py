"""A motion that arrives block by block (:class:`FrameBlocks`), and its blocks checked as they come.

The block writers (:mod:`.block_writers`) and the MP4 renderer (:mod:`.video`) read these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from ..errors import MotionError
from ..motion import Motion


@dataclass
class FrameBlocks:
    """A motion that arrives block by block: ``blocks`` yields (n, V, 3) arrays, ``num_frames`` in all, once."""

    num_frames: int
    fps: float
    topology: str
    blocks: Iterable[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, motion: Motion, block_frames: int = 256) -> "FrameBlocks":
        """A whole motion as blocks (views, no copies)."""
        v = motion.vertices
        return cls(motion.num_frames, motion.fps, motion.topology,
                   (v[i: i + block_frames] for i in range(0, len(v), block_frames)), dict(motion.meta))

    def sidecar(self, num_vertices: int) -> dict[str, Any]:
        return {"fps": float(self.fps), "topology": self.topology, "num_frames": int(self.num_frames),
                "num_vertices": int(num_vertices), **self.meta}


def checked_blocks(motion: FrameBlocks, num_vertices: int, source: str = "motion") -> Iterator[np.ndarray]:
    """``motion``'s blocks as float32, each checked as it comes (size, finite); then the frame count.
    One-line :class:`MotionError`, as :meth:`Motion.validate` gives for a whole motion."""
    if motion.num_frames <= 0:
        raise MotionError(f"{source} has no frames")
    seen = 0
    for block in motion.blocks:
        b = np.asarray(block, dtype=np.float32)
        if b.ndim != 3 or b.shape[1:] != (num_vertices, 3):
            raise MotionError(f"{source} has {b.shape[1] if b.ndim == 3 else '?'} vertices per frame but the "
                              f"template has {num_vertices}; use the template of the mesh it was made for")
        if not np.isfinite(b).all():
            raise MotionError(f"{source} has NaN or infinite vertex coordinates")
        seen += len(b)
        if seen > motion.num_frames:
            raise MotionError(f"{source} has more frames than the {motion.num_frames} announced")
        yield b
    if seen != motion.num_frames:
        raise MotionError(f"{source} ended after {seen} of {motion.num_frames} frames")


def frames_of(blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """The (V, 3) frames of a block iterator, in order."""
    for block in blocks:
        yield from block
