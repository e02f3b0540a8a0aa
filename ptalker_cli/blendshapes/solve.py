"""Blendshape weights from vertices: bounded least squares, batched over frames.

For displacements dₜ = verticesₜ − template (T frames), the weights W (T, K) solve

    minimize   Σₜ ‖B wₜ − dₜ‖² / N  +  e·r·Σₜ ‖wₜ‖²  +  e·s·Σₜ ‖wₜ − wₜ₋₁‖²
    subject to 0 ≤ W ≤ 1

where B (3N, K) holds the K offsets over the N vertices any shape moves, the data term is
the mean squared vertex error (units², e.g. cm²), and ``e`` = trace(BᵀB)/(N·K) is the mean
squared per-vertex displacement of one shape at weight 1. So the two knobs are unitless:

* ``regularization`` r: a weight at 1 costs r times an average shape left fully
  unexplained. It keeps near-duplicate shapes (left/right pairs, correlated mouth shapes)
  from trading large opposite weights. Default 1e-5 (on ICT, known weights round-trip to
  within 0.01 at 1e-5, 0.04 at 1e-4).
* ``smoothness`` s: a jump of 1 between neighbouring frames costs s times an average shape
  left unexplained. 0 solves every frame on its own. Default 0.

Method: ADMM on the split W = Z, Z in the box. The W-step is an unconstrained quadratic
that decouples in the eigenvectors of BᵀB (over shapes) and of the path-graph Laplacian
(over frames: the DCT-II basis), so one iteration costs two K×K products and two DCTs per
frame batch; the step size ρ adapts by residual balancing (free: only the diagonal
changes). It stops when W and Z agree and Z moves less than ``tol`` (in weight units), or
after ``max_iter`` iterations. The dominant cost is the projection BᵀD (T·3N·K flops):
see docs/performance.md for frames per second.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import MotionError, PtalkerError
from .basis import Blendshapes

DEFAULT_REGULARIZATION = 1e-5
DEFAULT_SMOOTHNESS = 0.0
#: ADMM over-relaxation (1.5-1.8 is the usual range)
_RELAX = 1.6


class _DCT:
    """Orthonormal DCT-II / DCT-III of length T along the last axis (Makhoul's algorithm, real FFTs)."""

    def __init__(self, T: int):
        self.T = T
        k = np.arange(T)
        self.scale = np.full(T, np.sqrt(2.0 / T))
        self.scale[0] = np.sqrt(1.0 / T)
        self.fwd = np.exp(-1j * np.pi * k / (2 * T))
        self.inv = np.exp(1j * np.pi * k[: T // 2 + 1] / (2 * T))
        self.half = (T + 1) // 2

    def forward(self, x: np.ndarray) -> np.ndarray:
        T = self.T
        v = np.concatenate([x[..., 0::2], x[..., 1::2][..., ::-1]], axis=-1)
        V = np.fft.rfft(v, axis=-1)  # bins 0..T//2; V[T-k] = conj(V[k])
        full = np.concatenate([V, np.conj(V[..., 1 : (T + 1) // 2][..., ::-1])], axis=-1)
        return np.real(full * self.fwd) * self.scale

    def inverse(self, X: np.ndarray) -> np.ndarray:
        T = self.T
        y = X / self.scale
        m = T // 2 + 1
        y_rev = np.concatenate([np.zeros_like(y[..., :1]), y[..., :0:-1]], axis=-1)  # y[T-k], y[T] = 0
        V = (y[..., :m] - 1j * y_rev[..., :m]) * self.inv
        v = np.fft.irfft(V, n=T, axis=-1)
        x = np.empty_like(v)
        x[..., 0::2] = v[..., : self.half]
        x[..., 1::2] = v[..., self.half :][..., ::-1]
        return x


def dct2(x: np.ndarray) -> np.ndarray:
    """Orthonormal DCT-II along the last axis."""
    return _DCT(x.shape[-1]).forward(x)


def idct2(X: np.ndarray) -> np.ndarray:
    """Inverse of :func:`dct2` (the orthonormal DCT-III) along the last axis."""
    return _DCT(X.shape[-1]).inverse(X)


def _small_matmul(A: np.ndarray, X: np.ndarray) -> np.ndarray:
    """A (K, K) @ X (K, T), in column blocks small enough that OpenBLAS runs each on one thread.

    Threaded BLAS on products this small costs far more in thread wake-ups than it saves
    (5-10x slower on a busy 2-core machine); OpenBLAS keeps a GEMM single-threaded when
    m·n·k <= 262,144.
    """
    K, T = X.shape
    block = max(1, 262_144 // max(A.shape[0] * K, 1))
    if T <= block:
        return A @ X
    out = np.empty((A.shape[0], T), dtype=np.result_type(A, X))
    for j in range(0, T, block):
        np.matmul(A, X[:, j : j + block], out=out[:, j : j + block])
    return out


def path_laplacian_eigenvalues(T: int) -> np.ndarray:
    """Eigenvalues 2 − 2cos(πk/T) of the path graph's Laplacian; its eigenvectors are the DCT-II basis."""
    return 2.0 - 2.0 * np.cos(np.pi * np.arange(T) / T)


@dataclass
class SolveResult:
    """Weights (T, K) in [0, 1] for ``names``, with the solver's iteration count and convergence."""

    names: tuple[str, ...]
    weights: np.ndarray
    iterations: int
    converged: bool


class BlendshapeSolver:
    """Precomputed normal equations of one basis; :meth:`solve` is batched over frames."""

    def __init__(self, basis: Blendshapes, regularization: float = DEFAULT_REGULARIZATION,
                 smoothness: float = DEFAULT_SMOOTHNESS):
        if regularization < 0 or smoothness < 0:
            raise PtalkerError("blendshape regularization and smoothness must be >= 0; "
                               f"got {regularization}, {smoothness}")
        self.basis = basis
        self.regularization = float(regularization)
        self.smoothness = float(smoothness)
        K = basis.num_shapes
        ne = basis.normal_equations
        self.support, self._gather, self._B, G = ne.support, ne.gather, ne.B, ne.G
        n = float(self.support.size)
        self.energy = float(np.trace(G)) / K  # e: mean squared per-vertex displacement of one shape
        A = G + self.regularization * self.energy * np.eye(K)
        evals, evecs = np.linalg.eigh(A)
        self._evals = np.maximum(evals, 0.0)
        self._Q = evecs
        self._n = n

    @cached_property
    def _rho0(self) -> float:
        ev = self._evals
        lo = max(float(ev.min()), 1e-6 * float(ev.max()))
        # 0.3 x the geometric mean of the spectrum: fewest iterations over known-weight motions and
        # the default model's output (about 45-60; residual balancing adapts it from there)
        return 0.3 * float(np.sqrt(lo * float(ev.max())))

    def projections(self, displacements: np.ndarray) -> np.ndarray:
        """BᵀD/N (T, K) for displacements (T, V, 3)."""
        return self._project(np.asarray(displacements, dtype=np.float32), None)

    def _project(self, vertices: np.ndarray, template: np.ndarray | None) -> np.ndarray:
        """Bᵀ(V − template)/N, with the template's part a constant K-vector."""
        flat = vertices[:, self.support, :] if self._gather else vertices
        C = (flat.reshape(len(vertices), -1) @ self._B).astype(np.float64)
        if template is not None:
            t = template[self.support] if self._gather else template
            C -= t.reshape(1, -1).astype(np.float64) @ self._B.astype(np.float64)
        return C / self._n

    def solve(self, vertices: np.ndarray, template: np.ndarray, tol: float = 1e-4,
              max_iter: int = 500) -> SolveResult:
        """Weights for ``vertices`` (T, V, 3) posed on ``template`` (V, 3)."""
        v = np.asarray(vertices, dtype=np.float32)
        if v.ndim != 3 or v.shape[1:] != (self.basis.num_vertices, 3):
            raise MotionError(f"vertices must have shape (T, {self.basis.num_vertices}, 3); got {v.shape}")
        if len(v) == 0:
            raise MotionError("no frames to solve")
        C = self._project(v, np.asarray(template, dtype=np.float32))
        return self.solve_projected(C, tol, max_iter)

    def solve_projected(self, C: np.ndarray, tol: float = 1e-4, max_iter: int = 500) -> SolveResult:
        """Weights from the projections C = BᵀD/N (T, K) (see :meth:`projections`)."""
        T, K = C.shape
        s = self.smoothness * self.energy
        dct = _DCT(T) if (s > 0 and T > 1) else None
        mu = path_laplacian_eigenvalues(T)[None, :] * s if dct is not None else 0.0
        Qt, lam = self._Q.T.copy(), self._evals[:, None]
        Ct = np.ascontiguousarray(C.T)  # (K, T): frames along the last axis for the DCTs
        CQ = _small_matmul(Qt, Ct)  # C in the eigenbasis, fixed

        def w_step(rhs_q: np.ndarray, rho: float) -> np.ndarray:
            """argmin of the quadratic + ρ/2‖W − ·‖², in the eigenbasis."""
            if dct is None:
                return rhs_q / (lam + rho)
            return dct.inverse(dct.forward(rhs_q) / (lam + rho + mu))

        rho = self._rho0
        Z = np.clip(_small_matmul(self._Q, w_step(CQ, 1e-3 * rho)), 0.0, 1.0)  # ~ the unconstrained optimum
        U = np.zeros_like(Z)
        converged, it = False, 0
        for it in range(1, max_iter + 1):
            W = _small_matmul(self._Q, w_step(CQ + rho * _small_matmul(Qt, Z - U), rho))
            W_hat = _RELAX * W + (1.0 - _RELAX) * Z  # over-relaxation
            Z_old = Z
            Z = np.clip(W_hat + U, 0.0, 1.0)
            U += W_hat - Z
            primal = float(np.abs(W - Z).max())
            dual = float(np.abs(Z - Z_old).max())
            if primal < tol and dual < tol:
                converged = True
                break
            if primal > 10.0 * dual:
                rho *= 2.0
                U /= 2.0
            elif dual > 10.0 * primal:
                rho /= 2.0
                U *= 2.0
        return SolveResult(self.basis.names, np.ascontiguousarray(Z.T, dtype=np.float32), it, converged)


def solve_weights(vertices: np.ndarray, template: np.ndarray, basis: Blendshapes,
                  regularization: float = DEFAULT_REGULARIZATION, smoothness: float = DEFAULT_SMOOTHNESS,
                  tol: float = 1e-4, max_iter: int = 500) -> SolveResult:
    """Weights in [0, 1] (T, K) of ``basis`` for ``vertices`` (T, V, 3) on ``template`` (V, 3)."""
    basis.check_topology(int(np.asarray(template).shape[0]), "the template")
    return BlendshapeSolver(basis, regularization, smoothness).solve(vertices, template, tol, max_iter)
