"""A blendshape basis: named per-vertex offsets on one topology.

Pose = template + Σₖ wₖ·offsetsₖ, with the offsets in the topology's units. A basis is a
property of the topology: the shipped ``ict`` template carries one
(``templates/ict/blendshapes.npz``, ICT-FaceKit's 45 expression shapes, MIT); for any other
mesh a user gives one as

* an ``.npz`` with ``names`` (str[K]) and ``offsets`` (float[K, V, 3]), and optionally
  ``neutral`` (float[V, 3], the mesh the offsets were made on); or
* a glTF / GLB whose first mesh with morph targets is on the model's topology (same vertex
  count and order): its POSITION targets are the offsets and ``mesh.extras.targetNames`` the
  names. glTF is in metres; the targets are rescaled to the topology's units by the power of
  ten that best maps the glTF's base mesh onto the template.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import MeshError
from ..resources import templates_dir

BASIS_FILE = "blendshapes.npz"


@dataclass(frozen=True, eq=False)
class Blendshapes:
    """Named blendshape offsets (K, V, 3) float32 for a topology with V vertices."""

    names: tuple[str, ...]
    offsets: np.ndarray
    neutral: np.ndarray | None = None
    source: str = ""

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.names)
        off = np.ascontiguousarray(self.offsets, dtype=np.float32)
        where = f" in {self.source}" if self.source else ""
        if off.ndim != 3 or off.shape[2] != 3 or off.shape[0] != len(names):
            raise MeshError(f"blendshape offsets{where} must have shape (K, V, 3) with K = {len(names)} names; "
                            f"got {off.shape}")
        if len(names) == 0:
            raise MeshError(f"the blendshape basis{where} has no shapes")
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise MeshError(f"duplicate blendshape names{where}: {', '.join(dup)}")
        if not np.isfinite(off).all():
            raise MeshError(f"blendshape offsets{where} have NaN or infinite values")
        neutral = None
        if self.neutral is not None:
            neutral = np.asarray(self.neutral, dtype=np.float32)
            if neutral.shape != off.shape[1:]:
                raise MeshError(f"blendshape neutral{where} has shape {neutral.shape}, offsets are for {off.shape[1:]}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "offsets", off)
        object.__setattr__(self, "neutral", neutral)

    @property
    def num_shapes(self) -> int:
        return len(self.names)

    @property
    def num_vertices(self) -> int:
        return int(self.offsets.shape[1])

    @cached_property
    def normal_equations(self) -> "NormalEquations":
        """Bᵀ B of the offsets over the vertices they move (cached: the solver's setup)."""
        return NormalEquations.of(self.offsets)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise MeshError(f"no blendshape '{name}' in the basis; it has: {', '.join(self.names)}") from None

    def subset(self, names: Sequence[str]) -> "Blendshapes":
        """The shapes ``names`` in that order."""
        idx = [self.index(n) for n in names]
        return Blendshapes(tuple(names), self.offsets[idx], self.neutral, self.source)

    def check_topology(self, num_vertices: int, what: str = "the model") -> None:
        if self.num_vertices != num_vertices:
            raise MeshError(f"the blendshape basis {self.source or ''} has {self.num_vertices} vertices but "
                            f"{what} has {num_vertices}; the basis must be on the model's mesh".replace("  ", " "))

    def pose(self, template: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Vertices (T, V, 3) float32: ``template`` + weights (T, K) · offsets."""
        w = np.asarray(weights, dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != self.num_shapes:
            raise MeshError(f"weights must have shape (T, {self.num_shapes}); got {w.shape}")
        flat = w @ self.offsets.reshape(self.num_shapes, -1)
        flat += np.asarray(template, dtype=np.float32).reshape(1, -1)
        return flat.reshape(len(w), -1, 3)

    def save(self, path: str | Path) -> Path:
        """Write the ``.npz`` layout :func:`load_blendshapes` reads (atomically)."""
        from ..fileio import atomic_path

        path = Path(path)
        arrays = {"names": np.array(self.names), "offsets": self.offsets}
        if self.neutral is not None:
            arrays["neutral"] = self.neutral
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, **arrays)
        return path


#: offsets shorter than this (in the basis's units) do not count as moving a vertex
MOVE_EPS = 1e-6


@dataclass(frozen=True, eq=False)
class NormalEquations:
    """B (3N or 3V, K) float32, G = BᵀB/N (K, K) float64 over the N vertices the basis moves.

    Gathering the moving vertices of every frame costs more than multiplying by zeros when
    most vertices move (ICT: 13,142 of 14,062), so then B spans all vertices (``gather`` False).
    """

    support: np.ndarray
    gather: bool
    B: np.ndarray
    G: np.ndarray

    @classmethod
    def of(cls, offsets: np.ndarray) -> "NormalEquations":
        K, V = offsets.shape[:2]
        support = np.flatnonzero(np.abs(offsets).max(axis=(0, 2)) > MOVE_EPS)
        if support.size == 0:
            raise MeshError("the blendshape basis moves no vertex")
        gather = support.size < 0.6 * V
        B = np.ascontiguousarray((offsets[:, support, :] if gather else offsets).reshape(K, -1).T, dtype=np.float32)
        # BᵀB as float32 products over row blocks summed in float64 (relative error ~2e-7). The
        # blocks are small enough for OpenBLAS to keep each product on one thread: its threaded
        # GEMMs took 0.1-2.3 s here on a busy 2-core machine, the blocks 0.01-0.03 s.
        G = np.zeros((K, K), np.float64)
        rows = max(1, 262_144 // (K * K))
        for r in range(0, B.shape[0], rows):
            blk = B[r : r + rows]
            G += (blk.T @ blk).astype(np.float64)
        return cls(support, gather, B, G / float(support.size))


@lru_cache(maxsize=4)
def load_builtin_blendshapes(name: str) -> Blendshapes:
    """The basis shipped with template ``name`` (``templates/NAME/blendshapes.npz``)."""
    path = templates_dir() / name / BASIS_FILE
    if not path.exists():
        raise MeshError(f"template '{name}' ships no blendshape basis; give one with --blendshapes basis.npz|basis.glb")
    return _load_npz(path, f"template '{name}'")


def builtin_has_blendshapes(name: str) -> bool:
    return (templates_dir() / name / BASIS_FILE).exists()


def _load_npz(path: Path, source: str) -> Blendshapes:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "names" not in z.files or "offsets" not in z.files:
                raise MeshError(f"{path} must hold 'names' (str[K]) and 'offsets' (float[K, V, 3]) arrays")
            names = tuple(str(n) for n in z["names"])
            offsets = z["offsets"]
            neutral = z["neutral"] if "neutral" in z.files else None
    except MeshError:
        raise
    except Exception as exc:  # zipfile/numpy errors of many kinds
        raise MeshError(f"cannot read blendshape basis {path}: {exc}") from None
    return Blendshapes(names, offsets, neutral, source)


def load_blendshapes(path: str | Path, template: np.ndarray | None = None) -> Blendshapes:
    """A user's basis from ``.npz`` or glTF (``.glb``/``.gltf``); see the module docstring.

    ``template`` (V, 3) in the topology's units lets a glTF basis be rescaled from metres.
    """
    path = Path(path)
    if not path.exists():
        raise MeshError(f"blendshape basis {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, str(path))
    if suffix in (".glb", ".gltf"):
        from ..export.gltf_io import read_gltf

        doc = read_gltf(path)
        return _basis_from_gltf(doc, template, str(path))
    raise MeshError(f"unsupported blendshape basis '{suffix}' for {path}; use .npz, .glb or .gltf")


def _basis_from_gltf(doc, template: np.ndarray | None, source: str) -> Blendshapes:
    for mesh in doc.json.get("meshes", []):
        prims = mesh.get("primitives", [])
        if not prims or not prims[0].get("targets"):
            continue
        prim = prims[0]
        names = (mesh.get("extras") or {}).get("targetNames")
        targets = prim["targets"]
        if not names or len(names) != len(targets):
            raise MeshError(f"{source}: mesh '{mesh.get('name', '?')}' has morph targets but no matching "
                            "extras.targetNames; export with shape-key names")
        base = doc.accessor(prim["attributes"]["POSITION"]).astype(np.float32)
        offsets = np.stack([
            doc.accessor(t["POSITION"]).astype(np.float32) if "POSITION" in t else np.zeros_like(base)
            for t in targets
        ])
        if template is not None and len(template) == len(base):
            scale = _unit_scale(base, np.asarray(template, np.float32))
            base, offsets = base * scale, offsets * scale
        return Blendshapes(tuple(names), offsets, base, source)
    raise MeshError(f"{source} has no mesh with morph targets")


def _unit_scale(base: np.ndarray, template: np.ndarray) -> float:
    """The power of ten s that best maps ``base`` onto ``template`` (metres → cm gives 100)."""
    b = base - base.mean(0)
    t = template - template.mean(0)
    denom = float((b * b).sum())
    if denom <= 0:
        return 1.0
    s = float((b * t).sum()) / denom
    if s <= 0:
        return 1.0
    return float(10.0 ** np.round(np.log10(s)))
