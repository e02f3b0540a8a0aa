"""Motion: a vertex sequence with its frame rate and provenance.

On disk a motion is ``NAME.npy`` holding (T, V, 3) float32 vertices, plus a small
JSON sidecar ``NAME.json`` (fps, topology, subject, model, audio, ...). Files of
shape (T, V*3), as the research code writes them, are read too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MotionError
from .fileio import atomic_path


@dataclass
class Motion:
    """A (T, V, 3) vertex sequence at ``fps`` frames per second."""

    vertices: np.ndarray
    fps: float
    topology: str = "unknown"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices)
        if v.ndim == 2 and v.shape[1] % 3 == 0:
            v = v.reshape(v.shape[0], -1, 3)
        if v.ndim != 3 or v.shape[-1] != 3:
            raise MotionError(f"motion must have shape (T, V, 3) or (T, V*3); got {v.shape}")
        self.vertices = v.astype(np.float32, copy=False)
        if not (self.fps > 0):
            raise MotionError(f"motion fps must be positive; got {self.fps}")

    @property
    def num_frames(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[1])

    @property
    def duration(self) -> float:
        return self.num_frames / float(self.fps)

    def sidecar(self) -> dict[str, Any]:
        return {
            "fps": float(self.fps),
            "topology": self.topology,
            "num_frames": self.num_frames,
            "num_vertices": self.num_vertices,
            **self.meta,
        }

    def validate(self, num_vertices: int | None = None, source: str = "motion") -> None:
        """Raise :class:`MotionError` for empty, non-finite or wrongly sized motion."""
        if self.num_frames == 0:
            raise MotionError(f"{source} has no frames")
        if not np.isfinite(self.vertices).all():
            raise MotionError(f"{source} has NaN or infinite vertex coordinates")
        if num_vertices is not None and self.num_vertices != num_vertices:
            raise MotionError(
                f"{source} has {self.num_vertices} vertices per frame but the template has "
                f"{num_vertices}; use the template of the mesh it was made for"
            )

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.npy) and its JSON sidecar atomically."""
        path = Path(path)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, self.vertices.astype(np.float32))
            # both or neither: the sidecar is in place before the .npy is renamed into place
            with atomic_path(path.with_suffix(".json")) as tmp_json:
                tmp_json.write_text(json.dumps(self.sidecar(), indent=2, default=str) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path, fps: float | None = None) -> "Motion":
        """Read a ``.npy`` motion (and its sidecar when present)."""
        path = Path(path)
        if not path.exists():
            raise MotionError(f"motion file {path} does not exist")
        if path.is_dir():
            raise MotionError(f"motion file {path} is a folder; give a .npy file of (T, V, 3) vertices")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            # numpy's own message may advise allow_pickle=True (unsafe): say what the file is instead
            raise MotionError(f"cannot read motion file {path}: not a plain .npy array of vertices "
                              f"({type(exc).__name__}); give a (T, V, 3) float .npy as ptalker animate "
                              f"writes it") from None
        if not isinstance(arr, np.ndarray):  # an .npz archive
            arr.close()
            raise MotionError(f"cannot read motion file {path}: it is an .npz archive; give a (T, V, 3) float .npy")
        meta: dict[str, Any] = {}
        side = path.with_suffix(".json")
        if side.exists():
            try:
                meta = json.loads(side.read_text())
            except json.JSONDecodeError:
                raise MotionError(f"sidecar {side} is not valid JSON; fix or delete it") from None
        file_fps = meta.pop("fps", None)
        topology = meta.pop("topology", "unknown")
        meta.pop("num_frames", None)
        meta.pop("num_vertices", None)
        rate = fps if fps is not None else (file_fps if file_fps is not None else 25.0)
        try:
            return cls(arr, float(rate), topology, meta)
        except MotionError as exc:
            raise MotionError(f"{path}: {exc}") from None
