"""ARKit-52 curves: per-frame weights keyed by name, from a motion or to a mesh.

``solve_arkit(motion, topology)`` solves the topology's blendshape basis (the shipped ICT
basis, or a user's) for the motion's vertices and maps the basis names to ARKit's:

* a basis name that is an ARKit name in any spelling (``jawOpen``, ``eyeBlink_L``,
  ``EyeBlinkLeft``) gives that curve;
* ARKit names without a side whose basis has only ``_L``/``_R`` halves (ICT's ``browInnerUp``
  and ``cheekPuff``) get the mean of the two;
* ARKit names the basis lacks stay 0: for ICT these are the eight ``eyeLook*`` (eye
  rotations, which the default model does not predict) and ``tongueOut``.

:attr:`ArkitCurves.driven` lists the names the basis drives; the others are 0 by
construction, not by measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from ..errors import MotionError, PtalkerError
from .names import ARKIT_NAMES, arkit_name, split_side

_INDEX = {n: i for i, n in enumerate(ARKIT_NAMES)}


@dataclass(frozen=True)
class ArkitMapping:
    """How a basis's shape names map onto the 52 ARKit names (and back)."""

    basis_names: tuple[str, ...]
    direct: tuple[tuple[int, int], ...]  # (basis index, arkit index)
    pairs: tuple[tuple[tuple[int, ...], int], ...]  # (basis indices averaged, arkit index)
    unmapped: tuple[str, ...]

    @classmethod
    def for_names(cls, names: Sequence[str]) -> "ArkitMapping":
        names = tuple(names)
        direct, taken, halves, unmapped = [], set(), {}, []
        for i, n in enumerate(names):
            a = arkit_name(n)
            if a is not None and a not in taken:
                direct.append((i, _INDEX[a]))
                taken.add(a)
                continue
            base, side = split_side(n)
            whole = arkit_name(base) if side else None
            if whole is not None:
                halves.setdefault(whole, []).append(i)
            else:
                unmapped.append(n)
        pairs = []
        for whole, idx in halves.items():
            if whole in taken:
                unmapped += [names[i] for i in idx]
            else:
                pairs.append((tuple(idx), _INDEX[whole]))
        return cls(names, tuple(direct), tuple(pairs), tuple(unmapped))

    @property
    def driven(self) -> tuple[str, ...]:
        idx = sorted({a for _, a in self.direct} | {a for _, a in self.pairs})
        return tuple(ARKIT_NAMES[a] for a in idx)

    def to_arkit(self, weights: np.ndarray) -> np.ndarray:
        """Basis weights (T, K) → ARKit weights (T, 52)."""
        w = np.asarray(weights, dtype=np.float32)
        out = np.zeros((len(w), len(ARKIT_NAMES)), dtype=np.float32)
        for b, a in self.direct:
            out[:, a] = w[:, b]
        for idx, a in self.pairs:
            out[:, a] = w[:, list(idx)].mean(axis=1)
        return out

    def to_basis(self, arkit: np.ndarray) -> np.ndarray:
        """ARKit weights (T, 52) → basis weights (T, K); both halves of a pair get the shared value."""
        a = np.asarray(arkit, dtype=np.float32)
        out = np.zeros((len(a), len(self.basis_names)), dtype=np.float32)
        for b, k in self.direct:
            out[:, b] = a[:, k]
        for idx, k in self.pairs:
            out[:, list(idx)] = a[:, k : k + 1]
        return out


@dataclass
class ArkitCurves:
    """Weights (T, 52) in ARKit's 52 names at ``fps``; read them by name, never by position."""

    fps: float
    weights: np.ndarray
    driven: tuple[str, ...] = ARKIT_NAMES
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = np.asarray(self.weights, dtype=np.float32)
        if w.ndim != 2 or w.shape[1] != len(ARKIT_NAMES):
            raise MotionError(f"ARKit curves must have shape (T, {len(ARKIT_NAMES)}); got {w.shape}")
        if not np.isfinite(w).all():
            raise MotionError("ARKit curves have NaN or infinite weights")
        if not (self.fps > 0):
            raise MotionError(f"ARKit curves need a positive fps; got {self.fps}")
        self.weights = w
        self.driven = tuple(self.driven)

    names = ARKIT_NAMES

    @property
    def num_frames(self) -> int:
        return int(self.weights.shape[0])

    @property
    def times(self) -> np.ndarray:
        return np.arange(self.num_frames, dtype=np.float64) / float(self.fps)

    def curve(self, name: str) -> np.ndarray:
        """The curve of ``name`` in any accepted spelling (``jawOpen``, ``JawOpen``, ``eyeBlink_L``)."""
        a = arkit_name(name)
        if a is None:
            raise PtalkerError(f"'{name}' is not an ARKit blendshape name")
        return self.weights[:, _INDEX[a]]

    def frame(self, k: int) -> dict[str, float]:
        """Frame ``k`` as {ARKit name: weight}."""
        return {n: float(v) for n, v in zip(ARKIT_NAMES, self.weights[k].tolist())}

    def frames(self) -> list[dict[str, float]]:
        """Every frame as {ARKit name: weight} (the shape a JSON stream sends)."""
        return [self.frame(k) for k in range(self.num_frames)]

    def __iter__(self) -> Iterator[dict[str, float]]:
        return (self.frame(k) for k in range(self.num_frames))

    @classmethod
    def from_frames(cls, frames: Sequence[Mapping[str, float]], fps: float, meta: dict | None = None) -> "ArkitCurves":
        """Curves from {name: weight} dicts in any spelling; names a frame lacks are 0."""
        w = np.zeros((len(frames), len(ARKIT_NAMES)), dtype=np.float32)
        seen: set[str] = set()
        for k, fr in enumerate(frames):
            for name, value in fr.items():
                a = arkit_name(name)
                if a is None:
                    continue
                w[k, _INDEX[a]] = float(value)
                seen.add(a)
        driven = tuple(n for n in ARKIT_NAMES if n in seen)
        return cls(float(fps), w, driven, dict(meta or {}))

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray], fps: float, meta: dict | None = None) -> "ArkitCurves":
        """Curves from {name: (T,) array} in any spelling; unknown names are ignored."""
        lengths = {len(np.asarray(v)) for v in columns.values()}
        if len(lengths) > 1:
            raise MotionError("ARKit curve columns have different lengths")
        T = lengths.pop() if lengths else 0
        w = np.zeros((T, len(ARKIT_NAMES)), dtype=np.float32)
        seen = set()
        for name, values in columns.items():
            a = arkit_name(name)
            if a is not None:
                w[:, _INDEX[a]] = np.asarray(values, dtype=np.float32)
                seen.add(a)
        return cls(float(fps), w, tuple(n for n in ARKIT_NAMES if n in seen), dict(meta or {}))
