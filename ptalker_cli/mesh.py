"""Mesh topology: template vertices, faces, the edge graph and named vertex regions.

A :class:`Topology` is what every part of ptalker agrees on about a face mesh: the
model needs its vertex count and edge graph, the exporters and the renderer its
faces, evaluation its lip and upper-face regions, and everyone its units.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from .errors import MeshError
from .resources import templates_dir

#: Standard region names. ``lip`` is used by the mouth loss and LVE, ``upper_face`` by FDD.
REGION_NAMES = ("lip", "upper_face")


@dataclass(frozen=True, eq=False)
class Topology:
    """A face mesh topology with one template (neutral) shape.

    Attributes:
        name: topology id, e.g. ``"biwi"``, ``"flame"``, ``"ict"``, ``"tiny"``.
        vertices: (V, 3) float32 template positions.
        faces: (F, 3) int64 triangle vertex indices.
        regions: named vertex-index arrays (``"lip"``, ``"upper_face"``, ...).
        units: ``"cm"``, ``"m"`` or ``"normalized"`` (BIWI's unit-area faces).
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    units: str = "normalized"

    def __post_init__(self) -> None:
        v = np.asarray(self.vertices, dtype=np.float32)
        f = np.asarray(self.faces, dtype=np.int64)
        if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
            raise MeshError(f"template of topology '{self.name}' must have shape (V, 3); got {v.shape}")
        if not np.isfinite(v).all():
            raise MeshError(f"template of topology '{self.name}' has NaN or infinite coordinates")
        if f.size and (f.ndim != 2 or f.shape[1] != 3):
            raise MeshError(f"faces of topology '{self.name}' must have shape (F, 3); got {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= len(v)):
            raise MeshError(f"faces of topology '{self.name}' index vertices outside 0..{len(v) - 1}")
        regions = {}
        for key, idx in self.regions.items():
            idx = np.unique(np.asarray(idx, dtype=np.int64))
            if idx.size and (idx.min() < 0 or idx.max() >= len(v)):
                raise MeshError(
                    f"region '{key}' of topology '{self.name}' has vertex ids outside 0..{len(v) - 1}"
                )
            regions[key] = idx
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "faces", f.reshape(-1, 3))
        object.__setattr__(self, "regions", regions)

    @property
    def num_vertices(self) -> int:
        return int(self.vertices.shape[0])

    def region(self, name: str) -> np.ndarray:
        """Vertex ids of a named region; all vertices when the topology has no such region."""
        if name in self.regions:
            return self.regions[name]
        return np.arange(self.num_vertices)

    @cached_property
    def edges(self) -> np.ndarray:
        """(E, 2) int64 undirected mesh edges (i < j), unique, from the faces."""
        if self.faces.size == 0:
            return np.zeros((0, 2), dtype=np.int64)
        f = self.faces
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=0)
        e = np.sort(e, axis=1)
        e = e[e[:, 0] != e[:, 1]]
        return np.unique(e, axis=0)

    def with_vertices(self, vertices: np.ndarray, name: str | None = None) -> "Topology":
        """The same topology with another template shape (e.g. a subject's own template)."""
        vertices = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
        if vertices.shape[0] != self.num_vertices:
            raise MeshError(
                f"template has {vertices.shape[0]} vertices but topology '{self.name}' has "
                f"{self.num_vertices}; use a template of the same mesh"
            )
        return Topology(name or self.name, vertices, self.faces, dict(self.regions), self.units)

    def save(self, folder: str | Path) -> Path:
        """Write ``topology.npz`` (vertices, faces, regions) and ``topology.json`` into ``folder``."""
        from .fileio import atomic_path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"vertices": self.vertices, "faces": self.faces}
        arrays.update({f"region_{k}": v for k, v in self.regions.items()})
        with atomic_path(folder / "topology.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        meta = {"name": self.name, "units": self.units, "num_vertices": self.num_vertices}
        with atomic_path(folder / "topology.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2) + "\n")
        return folder / "topology.npz"

    @classmethod
    def load_saved(cls, folder: str | Path) -> "Topology":
        folder = Path(folder)
        meta = json.loads((folder / "topology.json").read_text())
        with np.load(folder / "topology.npz", allow_pickle=False) as z:
            regions = {k[len("region_"):]: z[k] for k in z.files if k.startswith("region_")}
            return cls(meta["name"], z["vertices"], z["faces"], regions, meta.get("units", "normalized"))


def read_region_file(path: str | Path) -> np.ndarray:
    """Read vertex ids from a region file: integers separated by commas and/or whitespace."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MeshError(f"cannot read region file {path}: {exc.strerror or exc}") from None
    tokens = [t for t in re.split(r"[\s,]+", text) if t]
    try:
        ids = np.array([int(t) for t in tokens], dtype=np.int64)
    except ValueError:
        raise MeshError(f"region file {path} must hold integer vertex ids separated by commas or spaces") from None
    return ids


def load_mesh_file(path: str | Path, name: str | None = None, units: str = "normalized") -> Topology:
    """Load a template mesh from ``.obj``, ``.ply``, ``.npz`` (vertices, faces|triangles) or ``.npy``."""
    path = Path(path)
    if not path.exists():
        raise MeshError(f"mesh file {path} does not exist")
    suffix = path.suffix.lower()
    name = name or path.stem
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            faces_key = "faces" if "faces" in z.files else "triangles"
            if "vertices" not in z.files or faces_key not in z.files:
                raise MeshError(f"{path} must contain 'vertices' and 'faces' (or 'triangles') arrays")
            return Topology(name, z["vertices"], z[faces_key], {}, units)
    if suffix in (".obj", ".ply", ".off", ".stl"):
        import trimesh

        try:
            mesh = trimesh.load(path, process=False, force="mesh")
        except Exception as exc:  # trimesh raises many kinds
            raise MeshError(f"cannot read mesh {path}: {exc}") from None
        if not hasattr(mesh, "vertices") or len(mesh.vertices) == 0:
            raise MeshError(f"{path} holds no mesh vertices")
        return Topology(name, np.asarray(mesh.vertices), np.asarray(mesh.faces), {}, units)
    raise MeshError(f"unsupported mesh format '{suffix}' for {path}; use .obj, .ply or .npz")


def builtin_topologies() -> list[str]:
    """Names of the templates shipped in ``templates/``."""
    root = templates_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "topology.json").exists())


def load_builtin(name: str) -> Topology:
    folder = templates_dir() / name
    if not (folder / "topology.json").exists():
        known = ", ".join(builtin_topologies() + ["tiny"]) or "none"
        raise MeshError(f"unknown template '{name}'; shipped templates: {known}, or give a mesh file")
    return Topology.load_saved(folder)


def resolve_mesh(spec: str | Path) -> Topology:
    """A template given as a shipped name (``ict``, ``tiny``) or a mesh file.

    (A model folder's mesh: :func:`ptalker_cli.model.folder.resolve_template`, which takes
    all three.)
    """
    spec_s = str(spec)
    if spec_s == "tiny":
        return tiny_topology()
    path = Path(spec_s)
    if path.is_dir():
        raise MeshError(f"{path} is a folder, not a mesh file or a shipped template name")
    if path.suffix and (path.exists() or "/" in spec_s or "\\" in spec_s):
        return load_mesh_file(path)
    return load_builtin(spec_s)


def tiny_topology(rows: int = 12, cols: int = 16) -> Topology:
    """A small face-like mesh built in code (a curved sheet with a mouth slit).

    Used by the ``tiny`` preset and tests: it has real faces, a lip region around the
    slit and an upper-face region, so every code path (graph encoder, mouth loss,
    metrics, exporters) runs on it. Units are centimetres, roughly face-sized.
    """
    ys = np.linspace(-1.0, 1.0, rows)
    xs = np.linspace(-0.8, 0.8, cols)
    X, Y = np.meshgrid(xs, ys)
    Z = 0.35 * (1.0 - X**2) + 0.15 * (1.0 - Y**2)
    verts = np.stack([X * 7.0, Y * 9.0, Z * 6.0], axis=-1).reshape(-1, 3)
    faces = []
    mouth_row = int(rows * 0.3)  # a slit between rows mouth_row and mouth_row+1
    mouth_cols = range(int(cols * 0.3), int(cols * 0.7))
    for r in range(rows - 1):
        for c in range(cols - 1):
            if r == mouth_row and c in mouth_cols:
                continue  # the mouth opening
            a, b = r * cols + c, r * cols + c + 1
            d, e = (r + 1) * cols + c, (r + 1) * cols + c + 1
            faces += [[a, b, e], [a, e, d]]
    rr, cc = np.divmod(np.arange(rows * cols), cols)
    lip = np.where((np.abs(rr - mouth_row - 0.5) <= 2.0) & (cc >= int(cols * 0.25)) & (cc <= int(cols * 0.75)))[0]
    upper = np.where(rr >= int(rows * 0.6))[0]
    return Topology("tiny", verts.astype(np.float32), np.array(faces), {"lip": lip, "upper_face": upper}, "cm")
