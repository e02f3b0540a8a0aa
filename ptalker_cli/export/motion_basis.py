"""A compact linear form of a vertex sequence: a few shapes plus per-frame weights.

``frames[t] ≈ base + Σ_k weights[t, k] · targets[k]`` with every weight in [0, 1], so the
shapes play as glTF morph targets in any viewer (Blender clamps shape-key values to their
slider range, which its glTF importer leaves at [0, 1] for most keys). The shapes span the
sequence's principal displacements (an SVD of the (T, 3V) matrix ``frames - template``);
K, their number, is the smallest that keeps the reconstruction inside an
:class:`ErrorBudget` in millimetres, measured over every frame and vertex.

The SVD is a randomized range finder (Halko, Martinsson & Tropp 2011, without power
iterations: the spectrum of speech motion falls fast, and K is kept in the better half of
the L = 24-dimensional search space, which doubles when it must). It reads the motion
through products with thin matrices (``F @ X - b @ X``, never ``F - b``), and the error
measurements go through it in chunks of about 16 MB. So apart from the motion itself the fit
needs O((T + V) · L) floats and a few 16-MB chunks, never another (T, 3V) array, and no
float64 array of that size.
"""

from __future__ import annotations

import contextlib
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
    quantized: np.ndarray | None = None  # (K, V, 3) int16 when the targets are on the 16-bit grid:
    scale: float = 1.0  # targets == max(quantized / 32767, -1) * scale

    @property
    def num_components(self) -> int:
        return int(self.targets.shape[0])


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread (threadpoolctl), or a no-op without it.

    The products here are thin (T x 3V by 3V x 24) and memory-bound: more BLAS threads do not make
    them faster, and on a machine whose cores are busy (with the model's own threads, or anything
    else) OpenBLAS's waiting threads made the whole fit 2-3 times slower (benchmarks/glb_write.py)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; the fit is only slower without it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


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


def principal_shapes(F: np.ndarray, b: np.ndarray, rank: int, seed: int = 0, power_iters: int = 0) -> np.ndarray:
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
    """Error of ``predict(slice) -> (n, 3V)`` (a new array it may overwrite) against ``frames[slice]``,
    chunk by chunk, in mm."""
    T, V = frames.shape[0], frames.shape[1]
    flat = frames.reshape(T, 3 * V)
    total, worst, lip_worst = 0.0, 0.0, 0.0
    for s in _chunks(T, 3 * V):
        r = predict(s)
        np.subtract(flat[s], r, out=r)
        r *= r
        e2 = r[:, 0::3] + r[:, 1::3]
        e2 += r[:, 2::3]
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
    quantize: bool = False,
    seed: int = 0,
) -> MotionBasis:
    """The smallest K whose rank-K form of ``frames`` (T, V, 3) stays inside ``budget``.

    ``mm``: millimetres per model unit (see :func:`mm_per_unit`); ``lip``: vertex ids of the
    lip region; ``quantize``: targets on a signed 16-bit grid (see :func:`quantize_targets`).
    The search starts at the smallest K whose lip error (measured on the lip vertices of every
    frame) fits, then measures the stored form on every vertex of every frame and adds
    components until that fits too. The returned error is that last measurement.
    """
    frames = np.asarray(frames, dtype=np.float32)
    T, V = frames.shape[0], frames.shape[1]
    F = frames.reshape(T, 3 * V)
    b = np.ascontiguousarray(template, dtype=np.float32).reshape(3 * V)
    limit = min(T, 3 * V)
    rank = min(_FIRST_RANK, limit)
    still = _still(F, b)
    while True:
        shapes = principal_shapes(F, b, rank, seed)
        shapes[:, still] = 0.0  # exactly: no component moves what never moves (sparse targets rely on it)
        coeffs = _d_times(F, b, shapes.T)
        full = len(shapes)
        k = _first_candidate(F, b, shapes, coeffs, mm, lip, budget)
        while True:
            basis = _stored_form(frames, b, shapes[:k], coeffs[:, :k], mm, lip, quantize)
            if budget.allows(basis.error) or k >= full:
                break
            k += 1
        # without power iterations the weakest half of the search space is less accurate: keep K in the top half
        if rank >= limit or (budget.allows(basis.error) and k <= max(full // 2, 1)):
            fewer = _worst_frame_basis(frames, F, b, shapes, coeffs, k, still, mm, lip, quantize, budget)
            return fewer if fewer is not None else basis
        rank = min(2 * rank, limit)


def _worst_frame_basis(frames, F, b, shapes, coeffs, k: int, still, mm, lip, quantize: bool,
                       budget: ErrorBudget) -> MotionBasis | None:
    """A basis of fewer than ``k`` shapes inside ``budget``, or None: the fewest principal shapes whose RMS
    fits, then, one at a time, the residual of the frame furthest outside the max / lip budget.

    Principal shapes minimise the squared error; when a few frames' lips (hard closures) set the largest
    error, the next principal shapes barely reduce it and K grows for those frames alone. A frame's own
    residual as a shape removes that frame's error at the cost of one."""
    m = next((j for j in range(1, k - 1)
              if _stored_form(frames, b, shapes[:j], coeffs[:, :j], mm, lip, quantize).error.rms_mm <= budget.rms_mm),
             None)
    if m is None:
        return None
    S, C = shapes[:m].astype(np.float64), coeffs[:, :m].astype(np.float64)
    while len(S) < k - 1:
        d = _worst_residual(F, b, S, C, mm, lip, budget)
        d[still] = 0.0
        d -= S.T @ (S @ d)  # orthogonal to the shapes so far (the weights stay projections)
        norm = float(np.linalg.norm(d))
        if norm == 0.0:
            return None
        d /= norm
        S = np.vstack([S, d[None]])
        C = np.hstack([C, _d_times(F, b, d[:, None].astype(np.float32)).astype(np.float64)])
        basis = _stored_form(frames, b, S.astype(np.float32), C.astype(np.float32), mm, lip, quantize)
        if budget.allows(basis.error):
            return basis
    return None


def _worst_residual(F, b, S, C, mm, lip, budget: ErrorBudget) -> np.ndarray:
    """The residual (N,) of the frame whose largest error is furthest over the max / lip budget."""
    T, N = F.shape
    best, best_t = -1.0, 0
    for s in _chunks(T, N):
        r = F[s] - b - (C[s] @ S).astype(np.float32)
        r2 = r * r
        e2 = r2[:, 0::3] + r2[:, 1::3] + r2[:, 2::3]
        score = np.sqrt(e2.max(axis=1)) * mm / budget.max_mm
        if lip is not None and len(lip):
            score = np.maximum(score, np.sqrt(e2[:, lip].max(axis=1)) * mm / budget.lip_max_mm)
        j = int(np.argmax(score))
        if score[j] > best:
            best, best_t = float(score[j]), s.start + j
    return (F[best_t] - b - C[best_t] @ S).astype(np.float64)


def _still(F: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Boolean (N,): coordinates equal to the template's in every frame."""
    moves = np.zeros(F.shape[1], dtype=bool)
    for s in _chunks(F.shape[0], F.shape[1]):
        moves |= (F[s] != b).any(axis=0)
    return ~moves


def _first_candidate(F, b, shapes, coeffs, mm, lip, budget: ErrorBudget) -> int:
    """The smallest K (>= 1) whose lip error fits, measured on the lip vertices (about a tenth of
    the mesh): K = 1, 2, ... on at most 256 frames (evenly spread, plus each component's extreme
    frames), then confirmed on every frame."""
    full = len(shapes)
    if full == 0:
        return 0
    if lip is None or len(lip) == 0:
        return 1
    T = F.shape[0]
    cols = (3 * np.asarray(lip)[:, None] + np.arange(3)).ravel()
    lip_shapes = np.ascontiguousarray(shapes[:, cols])

    def worst_mm(r: np.ndarray) -> float:
        r2 = r * r
        return mm * float(np.sqrt((r2[:, 0::3] + r2[:, 1::3] + r2[:, 2::3]).max(initial=0.0)))

    probe = set(np.linspace(0, T - 1, min(T, 256)).round().astype(int).tolist())
    probe |= set(np.argmin(coeffs, axis=0).tolist()) | set(np.argmax(coeffs, axis=0).tolist())
    probe = np.array(sorted(probe))
    r = F[probe][:, cols] - b[cols]  # the probe frames' lip residuals, one component removed at a time
    k = full
    for j in range(full):
        r -= np.outer(coeffs[probe, j], lip_shapes[j])
        if worst_mm(r) <= budget.lip_max_mm:
            k = j + 1
            break
    if len(probe) == T:
        return k
    while k < full:  # confirm on every frame, a chunk at a time
        worst = 0.0
        for s in _chunks(T, F.shape[1]):
            worst = max(worst, worst_mm(F[s][:, cols] - b[cols] - coeffs[s, :k] @ lip_shapes[:k]))
        if worst <= budget.lip_max_mm:
            break
        k += 1
    return k


def quantize_targets(targets: np.ndarray) -> tuple[np.ndarray, float]:
    """Targets as int16 (``q / 32767 * scale``, glTF's normalized SHORT) and the scale: the
    smallest power of two covering the largest coordinate (dividing by it is exact)."""
    peak = float(np.abs(targets).max(initial=0.0))
    scale = float(2.0 ** np.ceil(np.log2(peak))) if peak > 0 else 1.0
    q = np.round(np.clip(targets / scale, -1.0, 1.0) * 32767).astype("<i2")
    return q, scale


def _stored_form(frames, b, shapes, coeffs, mm, lip, quantize: bool) -> MotionBasis:
    """Rescale to weights in [0, 1] (c = lo + (hi - lo) u, the constant part moves into the base),
    optionally quantize the targets, and measure the error of exactly that."""
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
    quantized, scale = None, 1.0
    if quantize:
        quantized, scale = quantize_targets(targets)
        targets = (np.maximum(quantized.astype(np.float32) / 32767.0, -1.0) * scale).astype(np.float32)
    err = basis_error(frames, base, targets, weights, mm, lip)
    return MotionBasis(base, targets, weights, err, quantized, scale)


def basis_error(frames, base, targets, weights, mm: float, lip) -> BasisError:
    """Error of ``base + weights @ targets`` against ``frames``, in mm."""
    V = base.shape[0]
    flat_b = base.reshape(3 * V)
    flat_t = targets.reshape(targets.shape[0], 3 * V)
    def predict(s: slice) -> np.ndarray:
        out = weights[s] @ flat_t
        out += flat_b
        return out

    return reconstruction_error(frames, predict, mm, lip)


# --------------------------------------------------------------------------- normals


def vertex_normals(normals: NormalComputer, vertices: np.ndarray) -> np.ndarray:
    """Unit smooth normals; a vertex no triangle uses gets +Z (glTF normals must be unit length)."""
    return _unit(normals(np.asarray(vertices, dtype=np.float32)))


def _unit(n: np.ndarray) -> np.ndarray:
    length = np.sqrt(np.einsum("...c,...c->...", n, n))
    out = n / np.where(length > 0, length, 1.0)[..., None]
    out[length == 0] = (0.0, 0.0, 1.0)
    return out.astype(np.float32)


def _many_normals(faces: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """:func:`vertex_normals` of several frames (S, V, 3) at once: area-weighted face normals
    summed onto vertices with one sparse product (scipy) for all frames."""
    S, V = frames.shape[0], frames.shape[1]
    f = np.asarray(faces, dtype=np.int64)
    x = np.ascontiguousarray(frames.transpose(1, 0, 2))  # (V, S, 3): a face's corners are whole rows
    v0 = x[f[:, 0]]
    a, c = x[f[:, 1]] - v0, x[f[:, 2]] - v0
    fn = np.empty_like(a)  # (F, S, 3) cross products, written out (faster than np.cross)
    fn[..., 0] = a[..., 1] * c[..., 2] - a[..., 2] * c[..., 1]
    fn[..., 1] = a[..., 2] * c[..., 0] - a[..., 0] * c[..., 2]
    fn[..., 2] = a[..., 0] * c[..., 1] - a[..., 1] * c[..., 0]
    try:
        import scipy.sparse as sp
    except ImportError:  # pragma: no cover - scipy comes with the dependencies
        nc = NormalComputer(faces, V)
        return np.stack([vertex_normals(nc, y) for y in frames])
    nf = len(f)
    scatter = sp.csr_matrix((np.ones(3 * nf, np.float32), (f.ravel(), np.repeat(np.arange(nf), 3))), shape=(V, nf))
    vn = np.asarray(scatter @ fn.reshape(nf, 3 * S), dtype=np.float32)
    return _unit(vn.reshape(V, S, 3).transpose(1, 0, 2))


def fit_normal_deltas(frames: np.ndarray, basis: MotionBasis, faces: np.ndarray, samples: int = 24):
    """Base normals and per-target normal deltas that light the motion like its own normals.

    Normals are not linear in the positions; the deltas are the least-squares fit of
    ``normals(frame) - normals(base)`` on the weights, over ``samples`` frames spread evenly
    through the clip plus the frames where each weight is smallest and largest.
    Returns ``(base_normals (V, 3), deltas (K, V, 3))``, float32.
    """
    T, V = frames.shape[0], frames.shape[1]
    picks = set(np.linspace(0, T - 1, min(T, samples)).round().astype(int).tolist())
    picks |= set(np.argmin(basis.weights, axis=0).tolist()) | set(np.argmax(basis.weights, axis=0).tolist())
    idx = np.array(sorted(picks))
    normals = _many_normals(faces, np.concatenate([basis.base[None], frames[idx]]))
    n_base = normals[0]
    dn = (normals[1:] - n_base).reshape(len(idx), 3 * V).astype(np.float64)
    A = basis.weights[idx].astype(np.float64)
    deltas = (np.linalg.pinv(A) @ dn).astype(np.float32).reshape(-1, V, 3)
    return n_base, deltas
