"""glTF 2.0 binary (.glb) export of an animated face mesh.

One node (``scale`` = the model's unit in metres) holds one mesh with a grey PBR material,
smooth normals and morph targets, played by one animation (``speech``) whose ``weights``
channel has one LINEAR key per motion frame, at ``k / fps``. Two layouts:

* ``compact`` (default): the targets are the motion's principal shapes, K of them, the fewest
  that keep every frame inside an :class:`~ptalker_cli.export.motion_basis.ErrorBudget`
  (0.1 mm RMS, 1 mm anywhere, 0.5 mm on the lips by default); each carries POSITION and NORMAL
  deltas. Weights lie in [0, 1]. Size: K x vertices x 24 bytes plus frames x K x 4, so a
  longer clip only grows by its weights. Targets are sparse accessors when that is smaller
  (vertices that never move are not stored). ``quantize`` stores target positions as 16-bit
  normalized integers (``KHR_mesh_quantization``, required): 18 % smaller for the example.
  Normal deltas stay float32: as 8-bit integers they would be clipped to [-1, 1], which
  turned the lips' normals by 17 degrees (99th percentile) instead of 5.
* ``per-frame``: one POSITION target per frame (``frame - template`` in float32), one-hot
  weights (a sparse accessor); the template's normals light every frame. About
  frames x vertices x 12 bytes.

Axes are the model's: +Y up, the face towards +Z (ICT-FaceKit, FLAME, BIWI after its
conversion), as glTF expects. :func:`read_glb` (in :mod:`.glb_read`) reads either layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from .. import __version__
from ..errors import PtalkerError
from .glb_buffer import ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER, GlbBuffer
from .glb_read import read_glb  # noqa: F401  (the reader lives beside; imported here for callers)
from .motion_basis import ErrorBudget, fit_basis, fit_normal_deltas, mm_per_unit, one_blas_thread, vertex_normals
from .scene import Material, NormalComputer

#: metres per model unit; a unit not listed (``normalized``) is written as metres (scale 1)
UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}
MOTION_LAYOUTS = ("compact", "per-frame")
QUANTIZATION = "KHR_mesh_quantization"


@dataclass(frozen=True)
class GlbOptions:
    """How :func:`write_glb` stores the motion (see the module docstring)."""

    motion: str = "compact"
    quantize: bool = False
    budget: ErrorBudget = field(default_factory=ErrorBudget)

    def __post_init__(self) -> None:
        if self.motion not in MOTION_LAYOUTS:
            raise PtalkerError(f"unknown GLB motion layout '{self.motion}'; use one of: {', '.join(MOTION_LAYOUTS)}")
        if self.quantize and self.motion != "compact":
            raise PtalkerError("GLB quantization applies to the compact motion layout, not per-frame")


@dataclass(frozen=True)
class GlbSummary:
    """What :func:`write_glb` wrote: the layout, the number of targets, the measured error."""

    motion: str
    targets: int
    bytes: int
    error_mm: dict | None = None


def write_glb(
    fh: BinaryIO,
    template: np.ndarray,
    faces: np.ndarray,
    frames: np.ndarray,
    fps: float,
    *,
    units: str = "normalized",
    name: str = "ptalker",
    extras: dict | None = None,
    lip: np.ndarray | None = None,
    options: GlbOptions = GlbOptions(),
) -> GlbSummary:
    """Write the GLB to an open binary file. ``frames``: (T, V, 3) float32 in model units;
    ``lip``: the lip region's vertex ids (for the compact layout's error budget)."""
    template = np.ascontiguousarray(template, dtype="<f4")
    frames = np.asarray(frames, dtype="<f4")
    T, V = frames.shape[0], frames.shape[1]
    buf = GlbBuffer()
    extras = dict(extras or {})
    index_dtype = "<u2" if V <= 0xFFFF else "<u4"  # 65535 itself is reserved (primitive restart)
    a_idx = buf.array(np.ascontiguousarray(faces, dtype=index_dtype).ravel(), target=ELEMENT_ARRAY_BUFFER)
    mm = mm_per_unit(units, template)
    if options.motion == "compact":
        local_per_unit, prim, weights, info = _compact(buf, template, faces, frames, mm, lip, options)
    else:
        local_per_unit, prim, weights, info = _per_frame(buf, template, faces, frames)
    prim.update(indices=a_idx, mode=4, material=0)
    K = len(prim["targets"])

    times = (np.arange(T, dtype=np.float64) / float(fps)).astype("<f4")
    a_t = buf.array(times, bounds=True)
    scale = UNIT_SCALE.get(units, 1.0) / local_per_unit
    node: dict = {"name": name, "mesh": 0}
    if scale != 1.0:
        node["scale"] = [scale] * 3
    mat = Material()
    doc: dict = {
        "asset": {"version": "2.0", "generator": f"ptalker {__version__}"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [node],
        "materials": [{
            "name": "ptalker grey",
            "pbrMetallicRoughness": {"baseColorFactor": [*mat.color, 1.0], "metallicFactor": 0.0,
                                     "roughnessFactor": mat.roughness},
            "doubleSided": True,
        }],
        "meshes": [{
            "name": name,
            "primitives": [prim],
            "weights": [float(w) for w in weights[0]],
            "extras": {"targetNames": info.pop("target_names")},
        }],
        "animations": [{
            "name": "speech",
            "samplers": [{"input": a_t, "output": info.pop("weights_accessor"), "interpolation": "LINEAR"}],
            "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}],
        }],
        "extras": {"fps": float(fps), "num_frames": int(T), "units": units, "motion": options.motion,
                   "targets": K, **info, **extras},
    }
    if options.quantize:
        doc["extensionsUsed"] = [QUANTIZATION]
        doc["extensionsRequired"] = [QUANTIZATION]
    size = buf.write(fh, doc)
    return GlbSummary(options.motion, K, size, info.get("error_mm"))


# --------------------------------------------------------------------------- layouts


def _compact(buf: GlbBuffer, template, faces, frames, mm, lip, options: GlbOptions):
    budget = options.budget
    with one_blas_thread():
        basis = fit_basis(frames, template, mm=mm, lip=lip, budget=budget, quantize=options.quantize)
        n_base, n_deltas = fit_normal_deltas(frames, basis, faces)
    local_per_unit = 1.0
    pos_t, nrm_t = basis.targets, n_deltas
    if options.quantize:  # positions / scale: exact for a power of two, so the base stays exact
        local_per_unit = 1.0 / basis.scale
        pos_t = basis.quantized
    a_pos = buf.array(_f32(basis.base * local_per_unit), target=ARRAY_BUFFER, bounds=True)
    a_nrm = buf.array(_f32(n_base), target=ARRAY_BUFFER)
    targets = [
        {"POSITION": a, "NORMAL": b}
        for a, b in zip(_target_accessors(buf, pos_t, bounds=True, normalized=options.quantize),
                        _target_accessors(buf, nrm_t, bounds=False, normalized=False))
    ]
    weights = _f32(basis.weights)
    info = {
        "target_names": [f"pc{k:03d}" for k in range(len(targets))],
        "weights_accessor": buf.array(weights.ravel()),
        "error_mm": {k: round(v, 6) for k, v in basis.error.as_dict().items()},
        "budget_mm": {"rms_mm": budget.rms_mm, "max_mm": budget.max_mm, "lip_max_mm": budget.lip_max_mm},
    }
    if local_per_unit != 1.0:
        info["model_units_per_local"] = basis.scale
    return local_per_unit, {"attributes": {"POSITION": a_pos, "NORMAL": a_nrm}, "targets": targets}, weights, info


def _target_accessors(buf: GlbBuffer, targets: np.ndarray, *, bounds: bool, normalized: bool) -> list[int]:
    """One accessor per target: sparse (vertices that move, ids stored once) when that is smaller."""
    K, V = targets.shape[0], targets.shape[1]
    rows = np.flatnonzero(np.any(targets != 0, axis=(0, 2)))
    elem = targets.dtype.itemsize * 3
    stride = elem + (-elem) % 4
    id_dtype = "<u2" if V <= 0xFFFF else "<u4"
    sparse_bytes = len(rows) * np.dtype(id_dtype).itemsize + K * len(rows) * elem
    if sparse_bytes < K * V * stride and len(rows) > 0:
        ids = buf.view(rows.astype(id_dtype))
        return [buf.sparse_array(V, ids, id_dtype, rows, np.ascontiguousarray(t[rows]), normalized=normalized,
                                 bounds=bounds) for t in targets]
    return [buf.array(t, target=ARRAY_BUFFER, normalized=normalized, bounds=bounds) for t in targets]


def _per_frame(buf: GlbBuffer, template, faces, frames):
    """One target per frame (streamed), one-hot weights stored sparsely, template normals."""
    T, V = frames.shape[0], frames.shape[1]
    a_pos = buf.array(template, target=ARRAY_BUFFER, bounds=True)
    a_nrm = buf.array(vertex_normals(NormalComputer(faces, V), template), target=ARRAY_BUFFER)
    block = V * 12
    lo = np.empty((T, 3), np.float32)
    hi = np.empty((T, 3), np.float32)
    for k in range(T):
        d = frames[k] - template
        lo[k], hi[k] = d.min(0), d.max(0)

    def write_deltas(out: BinaryIO) -> None:
        step = max(1, (64 << 20) // max(block, 1))  # ~64 MB at a time
        for k0 in range(0, T, step):
            out.write(np.ascontiguousarray(frames[k0 : k0 + step] - template, dtype="<f4").tobytes())

    view = buf.view(write_deltas, T * block, target=ARRAY_BUFFER, stride=12)
    targets = [
        {"POSITION": buf.accessor(view, "<f4", V, "VEC3", byte_offset=k * block,
                                  bounds={"min": lo[k].tolist(), "max": hi[k].tolist()})}
        for k in range(T)
    ]
    # weights: key k is one-hot on target k; stored as a sparse T*T accessor (T ones), not T*T floats
    ones = np.ones(T, "<f4")
    rows = np.arange(T, dtype=np.int64) * (T + 1)
    id_dtype = "<u2" if T * T <= 0xFFFF else "<u4"
    ids = buf.view(rows.astype(id_dtype))
    a_w = buf.sparse_array(T * T, ids, id_dtype, rows, ones)
    weights = np.zeros((1, T), np.float32)
    weights[0, 0] = 1.0
    info = {"target_names": [f"frame_{k:05d}" for k in range(T)], "weights_accessor": a_w}
    return 1.0, {"attributes": {"POSITION": a_pos, "NORMAL": a_nrm}, "targets": targets}, weights, info


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype="<f4")
