"""Blendshape bases of topologies and the weight solve (vertices → weights in [0, 1])."""

from .basis import Blendshapes, builtin_has_blendshapes, load_blendshapes, load_builtin_blendshapes
from .solve import (
    DEFAULT_REGULARIZATION,
    DEFAULT_SMOOTHNESS,
    BlendshapeSolver,
    SolveResult,
    solve_weights,
)

__all__ = [
    "Blendshapes",
    "BlendshapeSolver",
    "DEFAULT_REGULARIZATION",
    "DEFAULT_SMOOTHNESS",
    "SolveResult",
    "builtin_has_blendshapes",
    "load_blendshapes",
    "load_builtin_blendshapes",
    "solve_weights",
]
