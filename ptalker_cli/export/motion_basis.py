"""A compact linear form of a vertex sequence: a few shapes plus per-frame weights.

``frames[t] ≈ base + Σ_k weights[t, k] · targets[k]`` with every weight in [0, 1], so the
shapes play as glTF morph targets in any viewer (Blender clamps shape-key values to their
slider range, which its glTF importer leaves at [0, 1] for most keys). The shapes span the
sequence's principal displacements (an SVD of the (T, 3V) matrix ``frames - template``);
K, their number, is the smallest that keeps the reconstruction inside an
:class:`ErrorBudget` in millimetres, measured over every frame and vertex.

Memory: the SVD is a randomized subspace iteration (Halko, Martinsson & Tropp 2011) that
reads the frames in chunks of about 16 MB, so apart from the motion itself it needs
O((T + V) · L) floats for an L-dimensional search space (L = 24, doubled while the budget
is not met), never a (T, 3V) copy or a float64 matrix of that size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PtalkerError
from .scene import NormalComputer

#: Millimetres per model unit for the units :class:`~ptalker_cli.mesh.Topology` knows.
MM_PER_UNIT = {"m": 1000.0, "cm": 10.0, "mm": 1.0}
#: For a template in units we cannot convert (``normalized``, BIWI), the error budget takes
#: its height (y extent) to be this many millimetres, about a human head. Only the budget uses it.
HEAD_HEIGHT_MM = 250.0
_FIRST_RANK = 24  # search-space size of the first SVD pass
_PROBE_FRAMES = 100  # frames the search for K measures (the result is measured on all)
_CHUNK_BYTES = 16 << 20


def mm_per_unit(units: str, template: np.ndarray) -> float:
    """Millimetres per model unit: exact for m/cm/mm, from :data:`HEAD_HEIGHT_MM` otherwise."""
    if units in MM_PER_UNIT:
        return MM_PER_UNIT[units]
    height = float(np.ptp(np.asarray(template)[:, 1])) if len(template) else 0.0
    return HEAD_HEIGHT_MM / height if height > 0 else 1.0


@dataclass(frozen=True)
class BasisError:
    """Reconstruction error in millimetres: RMS over all vertices and frames, the largest
    per-vertex distance, and the largest on the lip region."""

    rms_mm: float
    max_mm: float
    lip_max_mm: float

    def as_dict(self) -> dict[str, float]:
        return {"rms_mm": self.rms_mm, "max_mm": self.max_mm, "lip_max_mm": self.lip_max_mm}


@dataclass(frozen=True)
class ErrorBudget:
    """The largest reconstruction error the compact form may have, in millimetres."""

    rms_mm: float = 0.1
    lip_max_mm: float = 0.5
    max_mm: float = 1.0

    def __post_init__(self) -> None:
        for name in ("rms_mm", "lip_max_mm", "max_mm"):
            value = getattr(self, name)
            if not (value > 0 and np.isfinite(value)):
                raise PtalkerError(f"error budget {name} must be a positive number of millimetres; got {value}")

    def allows(self, err: BasisError) -> bool:
        return err.rms_mm <= self.rms_mm and err.max_mm <= self.max_mm and err.lip_max_mm <= self.lip_max_mm


@dataclass
class MotionBasis:
    """``frames[t] ≈ base + weights[t] @ targets`` (targets flattened), in model units."""

    base: np.ndarray  # (V, 3) float32
    targets: np.ndarray  # (K, V, 3) float32
    weights: np.ndarray  # (T, K) float32 in [0, 1]
    error: BasisError

    @property
    def num_components(self) -> int:
        return int(self.targets.shape[0])


# --------------------------------------------------------------------------- chunked products


def _chunks(num_frames: int, row_floats: int):
    step = max(1, _CHUNK_BYTES // max(4 * row_floats, 1))
    for s in range(0, num_frames, step):
        yield slice(s, min(s + step, num_frames))


def _d_times(F: np.ndarray, b: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(F - b) @ X for F (T, N), X (N, L), without forming F - b."""
    return F @ X - (b @ X)[None, :]


def _dt_times(F: np.ndarray, b: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(F - b).T @ Y for Y (T, L)."""
    return F.T @ Y - np.outer(b, Y.sum(axis=0))


def _orthonormal(Y: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning Y's (numerical) column space, via two small eigen-solves."""
    Q = Y.astype(np.float64)
    for _ in range(2):  # the second pass restores orthogonality lost to rounding
        w, U = np.linalg.eigh(Q.T @ Q)
        keep = w > max(float(w.max(initial=0.0)), 1e-300) * 1e-12
        Q = Q @ (U[:, keep] / np.sqrt(w[keep]))
    return Q.astype(np.float32)


def principal_shapes(F: np.ndarray, b: np.ndarray, rank: int, seed: int = 0, power_iters: int = 2) -> np.ndarray:
    """(L, N) orthonormal rows spanning the dominant row space of ``F - b``, strongest first."""
    T, N = F.shape
    rank = max(1, min(rank, T, N))
    rng = np.random.default_rng(seed)
    Y = _orthonormal(_d_times(F, b, rng.standard_normal((N, rank), dtype=np.float32)))
    for _ in range(power_iters):
        Y = _orthonormal(_d_times(F, b, _orthonormal(_dt_times(F, b, Y))))
    if Y.shape[1] == 0:
        return np.zeros((0, N), np.float32)
    B = _dt_times(F, b, Y).T.astype(np.float64)  # (L, N) = Q^T (F - b)
    w, U = np.linalg.eigh(B @ B.T)
    order = np.argsort(w)[::-1]
    w, U = w[order], U[:, order]
    keep = w > max(float(w[0]), 1e-300) * 1e-14
    return ((U[:, keep].T @ B) / np.sqrt(w[keep])[:, None]).astype(np.float32)


# --------------------------------------------------------------------------- error measurement


def reconstruction_error(frames: np.ndarray, predict, mm: float, lip: np.ndarray | None) -> BasisError:
    """Error of ``predict(slice) -> (n, V, 3)`` against ``frames[slice]``, chunk by chunk, in mm."""
    T, V = frames.shape[0], frames.shape[1]
    total, worst, lip_worst = 0.0, 0.0, 0.0
    for s in _chunks(T, 3 * V):
        r = frames[s] - predict(s)
        e2 = np.einsum("tvc,tvc->tv", r, r)
        total += float(e2.sum(dtype=np.float64))
        worst = max(worst, float(e2.max(initial=0.0)))
        if lip is not None and len(lip):
            lip_worst = max(lip_worst, float(e2[:, lip].max(initial=0.0)))
        else:
            lip_worst = worst
    n = max(T * V, 1)
    return BasisError(mm * float(np.sqrt(total / n)), mm * float(np.sqrt(worst)), mm * float(np.sqrt(lip_worst)))


# --------------------------------------------------------------------------- the fit


def fit_basis(
    frames: np.ndarray,
    template: np.ndarray,
    *,
    mm: float,
    lip: np.ndarray | None = None,
    budget: ErrorBudget = ErrorBudget(),
    seed: int = 0,
) -> MotionBasis:
    """The smallest K whose rank-K form of ``frames`` (T, V, 3) stays inside ``budget``.

    ``mm``: millimetres per model unit (see :func:`mm_per_unit`); ``lip``: vertex ids of the
    lip region. K is searched on at most :data:`_PROBE_FRAMES` frames (spread evenly, plus
    each component's extreme frames), then the result is measured on every frame and K grows
    until that full measurement is inside the budget too. The returned error is the full one.
    """
    frames = np.asarray(frames, dtype=np.float32)
    T, V = frames.shape[0], frames.shape[1]
    F = frames.reshape(T, 3 * V)
    b = np.ascontiguousarray(template, dtype=np.float32).reshape(3 * V)
    limit = min(T, 3 * V)
    rank = min(_FIRST_RANK, limit)
    still = _still_coordinates(F, b)
    while True:
        shapes = principal_shapes(F, b, rank, seed)
        shapes[:, still] = 0.0  # exactly: no component moves what never moves (sparse targets rely on it)
        coeffs = _d_times(F, b, shapes.T)
        probe = _probe_frames(coeffs, T)
        moved = (frames[probe] - template).astype(np.float32)  # (P, V, 3) displacements of the probe frames
        probe_coeffs = coeffs[probe]

        def probe_ok(k: int) -> bool:
            err = reconstruction_error(moved, lambda s: (probe_coeffs[s, :k] @ shapes[:k]).reshape(-1, V, 3), mm, lip)
            return budget.allows(err)

        full = len(shapes)
        if full == 0 or rank >= limit or probe_ok(full):
            break
        rank = min(2 * rank, limit)
    k = _smallest_k(full, probe_ok)
    while True:
        basis = _unit_weights(frames, b, shapes[:k], coeffs[:, :k], mm, lip)
        if k >= full or budget.allows(basis.error):
            return basis
        k += 1


def _still_coordinates(F: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean (N,): coordinates equal to the template's in every frame."""
    moves = np.zeros(F.shape[1], dtype=bool)
    for s in _chunks(F.shape[0], F.shape[1]):
        moves |= (F[s] != b).any(axis=0)
    return ~moves


def _probe_frames(coeffs: np.ndarray, T: int) -> np.ndarray:
    picks = set(np.linspace(0, T - 1, min(T, _PROBE_FRAMES)).round().astype(int).tolist())
    if coeffs.size:
        picks |= set(np.argmin(coeffs, axis=0).tolist()) | set(np.argmax(coeffs, axis=0).tolist())
    return np.array(sorted(picks), dtype=np.int64)


def _smallest_k(full: int, ok) -> int:
    """Binary search for the smallest k in [1, full] with ok(k) (full itself when none is)."""
    if full == 0:
        return 0
    lo, hi = 1, full
    while lo < hi:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _unit_weights(frames, b, shapes, coeffs, mm, lip) -> MotionBasis:
    """Rescale to weights in [0, 1]: c = lo + (hi - lo) u, the constant part moves into the base."""
    T, V = frames.shape[0], frames.shape[1]
    if shapes.shape[0] == 0:  # a still motion: one empty shape keeps the file a valid animation
        base = b.reshape(V, 3).copy()
        targets = np.zeros((1, V, 3), np.float32)
        weights = np.zeros((T, 1), np.float32)
    else:
        lo = coeffs.min(axis=0).astype(np.float64)
        span = coeffs.max(axis=0).astype(np.float64) - lo
        span[span <= 0] = 1.0
        base = (b.astype(np.float64) + lo @ shapes.astype(np.float64)).astype(np.float32).reshape(V, 3)
        targets = (shapes.astype(np.float64) * span[:, None]).astype(np.float32).reshape(-1, V, 3)
        weights = np.clip((coeffs - lo) / span, 0.0, 1.0).astype(np.float32)
    err = basis_error(frames, base, targets, weights, mm, lip)
    return MotionBasis(base, targets, weights, err)


def basis_error(frames, base, targets, weights, mm: float, lip) -> BasisError:
    """Error of ``base + weights @ targets`` against ``frames``, in mm."""
    V = base.shape[0]
    flat_b = base.reshape(3 * V)
    flat_t = targets.reshape(targets.shape[0], 3 * V)
    return reconstruction_error(frames, lambda s: (flat_b + weights[s] @ flat_t).reshape(-1, V, 3), mm, lip)


# --------------------------------------------------------------------------- normals


def vertex_normals(normals: NormalComputer, vertices: np.ndarray) -> np.ndarray:
    """Unit smooth normals; a vertex no triangle uses gets +Z (glTF normals must be unit length)."""
    n = normals(np.asarray(vertices, dtype=np.float32))
    zero = np.einsum("vc,vc->v", n, n) < 0.5
    n[zero] = (0.0, 0.0, 1.0)
    return n


def fit_normal_deltas(frames: np.ndarray, basis: MotionBasis, faces: np.ndarray, samples: int = 64):
    """Base normals and per-target normal deltas that light the motion like its own normals.

    Normals are not linear in the positions; the deltas are the least-squares fit of
    ``normals(frame) - normals(base)`` on the weights, over ``samples`` frames spread evenly
    through the clip plus the frames where each weight is smallest and largest.
    Returns ``(base_normals (V, 3), deltas (K, V, 3))``, float32.
    """
    T, V = frames.shape[0], frames.shape[1]
    nc = NormalComputer(faces, V)
    n_base = vertex_normals(nc, basis.base)
    picks = set(np.linspace(0, T - 1, min(T, samples)).round().astype(int).tolist())
    picks |= set(np.argmin(basis.weights, axis=0).tolist()) | set(np.argmax(basis.weights, axis=0).tolist())
    idx = np.array(sorted(picks))
    dn = np.stack([(vertex_normals(nc, frames[i]) - n_base).reshape(3 * V) for i in idx]).astype(np.float64)
    A = basis.weights[idx].astype(np.float64)
    deltas = (np.linalg.pinv(A) @ dn).astype(np.float32).reshape(-1, V, 3)
    return n_base, deltas
