"""The ICT-FaceKit head used by the generator: neutral mesh, blendshapes, identity modes.

Pose = template + Σ wₖ·offsetₖ, template = neutral + Σ cⱼ·identityⱼ (all in cm). The identity
modes live in ``assets/`` (MIT, see assets/PROVENANCE.md); the neutral mesh and the expression
blendshapes are the shipped ``templates/ict`` topology and its basis (``ptalker_cli.blendshapes``),
of which the generator drives the 22 :data:`GENERATOR_SHAPES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets"

#: The expression blendshapes the SynthTalk generator drives (a subset of the ICT basis's 45).
GENERATOR_SHAPES = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretch_L", "mouthStretch_R",
    "mouthRollLower", "mouthRollUpper", "mouthPress_L", "mouthPress_R", "mouthLowerDown_L",
    "mouthLowerDown_R", "mouthUpperUp_L", "mouthUpperUp_R", "mouthSmile_L", "mouthSmile_R",
    "eyeBlink_L", "eyeBlink_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
)

#: Upper and lower inner-lip vertices on the midline (Multi-PIE landmarks 62 and 66).
UPPER_LIP_VERTEX = 5533
LOWER_LIP_VERTEX = 5517


@dataclass(frozen=True, eq=False)
class Head:
    """Neutral vertices (V, 3), faces, regions, blendshape offsets and identity modes."""

    neutral: np.ndarray
    faces: np.ndarray
    regions: dict
    shape_names: tuple[str, ...]
    shape_offsets: np.ndarray  # (K, V, 3) float32
    identity_offsets: np.ndarray  # (J, V, 3) float32

    @property
    def num_vertices(self) -> int:
        return int(self.neutral.shape[0])

    @property
    def num_identity_modes(self) -> int:
        return int(self.identity_offsets.shape[0])

    def template(self, coefficients: Sequence[float]) -> np.ndarray:
        """Neutral + Σ c·identity mode; (V, 3) float32."""
        c = np.asarray(coefficients, dtype=np.float64)
        if c.shape != (self.num_identity_modes,):
            raise ValueError(f"need {self.num_identity_modes} identity coefficients, got {c.shape}")
        out = self.neutral.astype(np.float64) + np.tensordot(c, self.identity_offsets, axes=1)
        return out.astype(np.float32)

    def pose(self, template: np.ndarray, weights: np.ndarray, names: Sequence[str]) -> np.ndarray:
        """Vertices (T, V, 3) float32 for weights (T, len(names)) on ``template``."""
        idx = [self.shape_names.index(n) for n in names]
        w = np.asarray(weights, dtype=np.float32)
        offs = self.shape_offsets[idx].reshape(len(idx), -1)
        verts = w @ offs + template.reshape(1, -1).astype(np.float32)
        return verts.reshape(len(w), -1, 3)

    def lip_gap(self, vertices: np.ndarray) -> np.ndarray:
        """Vertical inner-lip gap on the midline (cm) of (..., V, 3) vertices; <= 0 is contact."""
        v = np.asarray(vertices)
        return v[..., UPPER_LIP_VERTEX, 1] - v[..., LOWER_LIP_VERTEX, 1]

    def gap_model(self, template: np.ndarray) -> "LipGapModel":
        """The lip gap is linear in the weights: gap = g0 + Σ dₖ wₖ."""
        g0 = float(template[UPPER_LIP_VERTEX, 1] - template[LOWER_LIP_VERTEX, 1])
        d = self.shape_offsets[:, UPPER_LIP_VERTEX, 1] - self.shape_offsets[:, LOWER_LIP_VERTEX, 1]
        return LipGapModel(g0, {n: float(x) for n, x in zip(self.shape_names, d)})


@dataclass(frozen=True)
class LipGapModel:
    """gap(w) = rest + Σ sensitivity[name]·w[name] (cm), exact for blendshape poses."""

    rest: float
    sensitivity: Mapping[str, float]

    def gap(self, weights: np.ndarray, names: Sequence[str]) -> np.ndarray:
        d = np.array([self.sensitivity.get(n, 0.0) for n in names])
        return self.rest + np.asarray(weights) @ d


@lru_cache(maxsize=1)
def load_head() -> Head:
    """The ICT head (cached): shipped ``ict`` topology, its blendshapes (the generator's 22) + identities."""
    from ...blendshapes import load_builtin_blendshapes
    from ...mesh import load_builtin

    topo = load_builtin("ict")
    basis = load_builtin_blendshapes("ict").subset(GENERATOR_SHAPES)
    names, offsets = basis.names, basis.offsets
    with np.load(ASSETS / "identities.npz", allow_pickle=False) as z:
        ident = np.ascontiguousarray(z["offsets"], dtype=np.float32)
    for arr in (offsets, ident):
        if arr.shape[1:] != topo.vertices.shape:
            raise ValueError("synth assets do not match the shipped ict topology")
    return Head(topo.vertices, topo.faces, dict(topo.regions), names, offsets, ident)
