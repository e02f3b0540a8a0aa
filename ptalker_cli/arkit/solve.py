"""Motion ↔ ARKit curves through a topology's blendshape basis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..blendshapes import (
    DEFAULT_REGULARIZATION,
    DEFAULT_SMOOTHNESS,
    Blendshapes,
    BlendshapeSolver,
    builtin_has_blendshapes,
    load_blendshapes,
    load_builtin_blendshapes,
)
from ..errors import PtalkerError
from ..mesh import Topology
from ..motion import Motion
from .curves import ArkitCurves, ArkitMapping

_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}


def basis_for(topology: Topology, path: str | Path | None = None) -> Blendshapes:
    """The blendshape basis of ``topology``: ``path`` (.npz/.glb/.gltf) if given, else the shipped one.

    A topology without a shipped basis and no ``path`` is a one-line error saying so.
    """
    if path is not None:
        basis = load_blendshapes(path, topology.vertices)
    elif builtin_has_blendshapes(topology.name):
        basis = load_builtin_blendshapes(topology.name)
    else:
        raise PtalkerError(f"topology '{topology.name}' has no blendshape basis, so it cannot give ARKit curves; "
                           "pass --blendshapes basis.npz|basis.glb (morph targets on the model's mesh)")
    basis.check_topology(topology.num_vertices, f"topology '{topology.name}'")
    return basis


def solve_arkit(
    motion: Motion,
    topology: Topology,
    basis: Blendshapes | str | Path | None = None,
    regularization: float = DEFAULT_REGULARIZATION,
    smoothness: float = DEFAULT_SMOOTHNESS,
) -> ArkitCurves:
    """ARKit curves (T, 52) for ``motion`` on ``topology`` (whose vertices are the motion's template)."""
    if not isinstance(basis, Blendshapes):
        basis = basis_for(topology, basis)
    basis.check_topology(topology.num_vertices, f"topology '{topology.name}'")
    motion.validate(topology.num_vertices, source="motion")
    mapping = ArkitMapping.for_names(basis.names)
    if not mapping.driven:
        raise PtalkerError(f"no shape of the blendshape basis {basis.source} has an ARKit name "
                           "(e.g. jawOpen, eyeBlinkLeft, eyeBlink_L)")
    result = BlendshapeSolver(basis, regularization, smoothness).solve(motion.vertices, topology.vertices)
    meta = {
        "topology": topology.name,
        "solver": {"regularization": regularization, "smoothness": smoothness,
                   "iterations": result.iterations, "converged": result.converged},
    }
    for key in ("subject", "style", "model", "audio"):
        if key in motion.meta:
            meta[key] = motion.meta[key]
    return ArkitCurves(motion.fps, mapping.to_arkit(result.weights), mapping.driven, meta)


def arkit_frames(motion: Motion, topology: Topology, basis: Blendshapes | str | Path | None = None,
                 **solve_options) -> list[dict[str, float]]:
    """Frames → [{ARKit name: weight}, ...] (the per-frame JSON a stream sends)."""
    return solve_arkit(motion, topology, basis, **solve_options).frames()


def curves_to_motion(curves: ArkitCurves, topology: Topology, basis: Blendshapes | str | Path | None = None) -> Motion:
    """The mesh the curves describe: template + Σ basis weights · offsets."""
    if not isinstance(basis, Blendshapes):
        basis = basis_for(topology, basis)
    basis.check_topology(topology.num_vertices, f"topology '{topology.name}'")
    mapping = ArkitMapping.for_names(basis.names)
    verts = basis.pose(topology.vertices, mapping.to_basis(curves.weights))
    meta = {k: v for k, v in curves.meta.items() if isinstance(v, (str, int, float))}
    meta["source"] = "arkit-curves"
    return Motion(verts, curves.fps, topology.name, meta)


def lip_error_mm(a: np.ndarray, b: np.ndarray, topology: Topology) -> dict[str, float]:
    """Lip-region error between two (T, V, 3) vertex sequences, in mm.

    ``mean``: mean vertex distance over the lip region and frames; ``max``: the largest;
    ``lve``: the mean over frames of each frame's largest lip-vertex distance (lip vertex error).
    """
    scale = _MM.get(topology.units)
    if scale is None:
        raise PtalkerError(f"topology '{topology.name}' is in '{topology.units}' units, "
                           "so errors cannot be given in mm")
    lip = topology.region("lip")
    d = np.linalg.norm(np.asarray(a)[:, lip] - np.asarray(b)[:, lip], axis=-1) * scale
    return {"mean": float(d.mean()), "max": float(d.max()), "lve": float(d.max(axis=1).mean())}
