"""Camera, lights, material and per-frame normals shared by every render backend.

Everything here is derived from the mesh itself, so a topology in centimetres (ICT),
metres (VOCASET/FLAME) or unit-area coordinates (BIWI) is framed and lit the same way
with no hand-tuned numbers. Conventions: +Y is up and the face looks toward +Z (as in
ICT-FaceKit, FLAME and BIWI); the ``side`` view looks at the subject's left (+X) side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import PtalkerError

#: Vertical field of view of the camera (a portrait lens; the research renderers use
#: about 19 degrees for VOCASET).
YFOV_DEG = 22.0
#: Fraction of the frame height the mesh may fill (the rest is margin).
FILL = 0.90
VIEWS = ("front", "side")


@dataclass(frozen=True)
class Light:
    """A directional light fixed to the camera.

    ``direction`` points from the surface toward the light, in camera coordinates
    (x right, y up, z toward the viewer).
    """

    direction: tuple[float, float, float]
    intensity: float


@dataclass(frozen=True)
class Lighting:
    """A key light, a fill light and an ambient term (all white), plus a soft specular."""

    key: Light = Light((-0.50, 0.50, 0.70), 0.95)
    fill: Light = Light((0.65, -0.15, 0.75), 0.30)
    ambient: float = 0.10
    specular: float = 0.12
    shininess: float = 24.0

    @property
    def lights(self) -> tuple[Light, Light]:
        return (self.key, self.fill)


@dataclass(frozen=True)
class Material:
    """A neutral grey, non-metallic, fairly rough material (linear RGB albedo)."""

    color: tuple[float, float, float] = (0.55, 0.55, 0.55)
    roughness: float = 0.65


@dataclass
class Camera:
    """A perspective camera: OpenGL-style view and projection matrices (row-major numpy)."""

    view: np.ndarray  # (4, 4) world -> camera
    proj: np.ndarray  # (4, 4) camera -> clip
    yfov: float  # radians
    znear: float
    zfar: float
    aspect: float
    eye: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def pose(self) -> np.ndarray:
        """camera -> world (what pyrender calls the camera node's pose)."""
        return np.linalg.inv(self.view)


def mesh_bounds(*vertex_sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned (min, max) over any number of (V, 3) or (T, V, 3) arrays."""
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for vs in vertex_sets:
        if vs is None:
            continue
        pts = np.asarray(vs).reshape(-1, 3)
        if len(pts) == 0:
            continue
        lo = np.minimum(lo, pts.min(axis=0))
        hi = np.maximum(hi, pts.max(axis=0))
    if not np.isfinite(lo).all() or not np.isfinite(hi).all():
        raise PtalkerError("cannot frame the mesh: its vertex coordinates are empty or not finite")
    return lo.astype(np.float64), hi.astype(np.float64)


def _look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    f = target - eye
    f = f / np.linalg.norm(f)
    s = np.cross(f, up)
    s = s / np.linalg.norm(s)
    u = np.cross(s, f)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -m[:3, :3] @ eye
    return m


def _perspective(yfov: float, aspect: float, znear: float, zfar: float) -> np.ndarray:
    t = 1.0 / math.tan(yfov / 2.0)
    p = np.zeros((4, 4))
    p[0, 0] = t / aspect
    p[1, 1] = t
    p[2, 2] = (zfar + znear) / (znear - zfar)
    p[2, 3] = 2.0 * zfar * znear / (znear - zfar)
    p[3, 2] = -1.0
    return p


def frame_camera(
    lo: np.ndarray, hi: np.ndarray, view: str = "front", aspect: float = 1.0, yfov_deg: float = YFOV_DEG
) -> Camera:
    """A camera that frames the box [lo, hi] from the front (+Z) or the side (+X).

    The distance is chosen so that the box's projected extent fills ``FILL`` of the
    frame, measured at the box's near face (so it never clips), which makes framing
    independent of the mesh's units.
    """
    if view not in VIEWS:
        raise PtalkerError(f"unknown view '{view}'; use one of: {', '.join(VIEWS)}")
    center = (lo + hi) / 2.0
    half = np.maximum((hi - lo) / 2.0, 1e-9)
    yfov = math.radians(yfov_deg)
    tan_half = math.tan(yfov / 2.0)
    if view == "front":
        across, depth, axis = half[0], half[2], np.array([0.0, 0.0, 1.0])
    else:
        across, depth, axis = half[2], half[0], np.array([1.0, 0.0, 0.0])
    need = max(half[1], across / aspect) / FILL
    dist = depth + need / tan_half
    eye = center + axis * dist
    radius = float(np.linalg.norm(half))
    znear = max(dist - radius * 1.5, dist * 0.02)
    zfar = dist + radius * 1.5
    view_m = _look_at(eye, center, np.array([0.0, 1.0, 0.0]))
    proj = _perspective(yfov, aspect, znear, zfar)
    return Camera(view_m, proj, yfov, znear, zfar, aspect, eye)


class NormalComputer:
    """Smooth (area-weighted) vertex normals for a fixed face list, vectorised.

    The face-to-vertex scatter is a sparse matrix product when scipy is available
    (about 1 ms for the 14k-vertex ICT head) and ``np.bincount`` otherwise (about 3 ms).
    """

    def __init__(self, faces: np.ndarray, num_vertices: int):
        self.faces = np.ascontiguousarray(faces, dtype=np.int64)
        self.num_vertices = int(num_vertices)
        self._i0, self._i1, self._i2 = (np.ascontiguousarray(self.faces[:, k]) for k in range(3))
        self._flat = self.faces.ravel()
        try:
            import scipy.sparse as sp

            nf = len(self.faces)
            data = np.ones(3 * nf, dtype=np.float32)
            self._scatter = sp.csr_matrix(
                (data, (self._flat, np.repeat(np.arange(nf), 3))), shape=(self.num_vertices, nf)
            )
        except ImportError:  # pragma: no cover - depends on the environment
            self._scatter = None

    def __call__(self, vertices: np.ndarray) -> np.ndarray:
        v = vertices
        v0 = v[self._i0]
        fn = np.cross(v[self._i1] - v0, v[self._i2] - v0)
        if self._scatter is not None:
            vn = np.asarray(self._scatter @ fn, dtype=np.float32)
        else:
            fn3 = np.repeat(fn, 3, axis=0)
            vn = np.empty((self.num_vertices, 3), dtype=np.float32)
            for k in range(3):
                vn[:, k] = np.bincount(self._flat, fn3[:, k], minlength=self.num_vertices)
        norm = np.sqrt(np.einsum("ij,ij->i", vn, vn))
        norm[norm == 0] = 1.0
        vn /= norm[:, None]
        return vn


def heat_colors(values: np.ndarray, vmax: float) -> np.ndarray:
    """Map non-negative values to RGB in [0, 1] (dark blue → cyan → yellow → red), linear scale."""
    x = np.clip(np.asarray(values, dtype=np.float32) / max(float(vmax), 1e-12), 0.0, 1.0)
    stops = np.array([0.0, 0.33, 0.66, 1.0], dtype=np.float32)
    cols = np.array([[0.15, 0.25, 0.85], [0.1, 0.8, 0.9], [0.95, 0.9, 0.15], [0.9, 0.1, 0.1]], dtype=np.float32)
    out = np.empty(x.shape + (3,), dtype=np.float32)
    for c in range(3):
        out[..., c] = np.interp(x, stops, cols[:, c])
    return out
