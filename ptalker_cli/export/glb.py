"""glTF 2.0 binary (.glb) export of an animated mesh, and a small reader for it.

Layout: one mesh whose base shape is the template, with one morph target per motion
frame (POSITION displacement ``frame - template``), and one animation whose ``weights``
channel is one-hot on target ``k`` at time ``k / fps`` with LINEAR interpolation
(so frame k is shown exactly at k/fps, and in-between times blend neighbouring
frames). Blender imports the targets as shape keys with the animation on them;
three.js plays it with an ``AnimationMixer``.

Size: about ``frames x vertices x 12`` bytes (float32 displacements) plus
``frames^2 x 4`` bytes of weight keys: 42 MB for 250 frames of the 14,062-vertex ICT
head. Units: glTF is in metres, so a centimetre topology gets a 0.01 scale on its
node (the stored coordinates stay the topology's own).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import PtalkerError

_MAGIC = 0x46546C67  # "glTF"
_JSON = 0x4E4F534A
_BIN = 0x004E4942
_FLOAT, _UINT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963

UNIT_SCALE = {"m": 1.0, "cm": 0.01, "mm": 0.001}


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


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
) -> None:
    """Write the GLB to an open binary file. ``frames``: (T, V, 3) float32."""
    base = np.ascontiguousarray(template, dtype="<f4")
    idx = np.ascontiguousarray(faces, dtype="<u4")
    frames = np.asarray(frames, dtype="<f4")
    T, V = frames.shape[0], frames.shape[1]
    times = (np.arange(T, dtype=np.float64) / float(fps)).astype("<f4")
    weights = np.eye(T, dtype="<f4")  # key k: target k at full weight

    views: list[dict] = []
    accessors: list[dict] = []
    chunks: list[tuple[int, object]] = []  # (byte length, array or writer)
    offset = 0

    def add_view(nbytes: int, target: int | None, payload, stride: int | None = None) -> int:
        nonlocal offset
        view = {"buffer": 0, "byteOffset": offset, "byteLength": nbytes}
        if stride is not None:  # required when several vertex accessors share a view
            view["byteStride"] = stride
        if target is not None:
            view["target"] = target
        views.append(view)
        chunks.append((nbytes, payload))
        offset += nbytes + _pad4(nbytes)
        return len(views) - 1

    def add_accessor(view: int, comp: int, count: int, kind: str, byte_offset: int = 0, **extra) -> int:
        acc = {"bufferView": view, "componentType": comp, "count": int(count), "type": kind}
        if byte_offset:
            acc["byteOffset"] = int(byte_offset)
        acc.update(extra)
        accessors.append(acc)
        return len(accessors) - 1

    v_idx = add_view(idx.nbytes, _ELEMENT_ARRAY_BUFFER, idx)
    a_idx = add_accessor(v_idx, _UINT, idx.size, "SCALAR")
    v_pos = add_view(base.nbytes, _ARRAY_BUFFER, base)
    a_pos = add_accessor(v_pos, _FLOAT, V, "VEC3", min=base.min(0).tolist(), max=base.max(0).tolist())

    # morph targets: one view holding all T displacement blocks, one accessor per frame
    block = V * 12
    deltas_min = np.empty((T, 3), np.float32)
    deltas_max = np.empty((T, 3), np.float32)
    for k in range(T):
        d = frames[k] - base
        deltas_min[k], deltas_max[k] = d.min(0), d.max(0)

    def write_deltas(out: BinaryIO) -> None:
        step = max(1, (64 << 20) // max(block, 1))  # ~64 MB at a time
        for k0 in range(0, T, step):
            out.write(np.ascontiguousarray(frames[k0 : k0 + step] - base, dtype="<f4").tobytes())

    v_tg = add_view(T * block, _ARRAY_BUFFER, write_deltas, stride=12)
    targets = [
        {"POSITION": add_accessor(v_tg, _FLOAT, V, "VEC3", k * block, min=deltas_min[k].tolist(), max=deltas_max[k].tolist())}
        for k in range(T)
    ]
    v_t = add_view(times.nbytes, None, times)
    a_t = add_accessor(v_t, _FLOAT, T, "SCALAR", min=[float(times[0])], max=[float(times[-1])])
    v_w = add_view(weights.nbytes, None, weights)
    a_w = add_accessor(v_w, _FLOAT, T * T, "SCALAR")

    target_names = [f"frame_{k:05d}" for k in range(T)]
    node: dict = {"name": name, "mesh": 0}
    scale = UNIT_SCALE.get(units)
    if scale is not None and scale != 1.0:
        node["scale"] = [scale, scale, scale]
    doc = {
        "asset": {"version": "2.0", "generator": "ptalker"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [node],
        "meshes": [
            {
                "name": name,
                "primitives": [{"attributes": {"POSITION": a_pos}, "indices": a_idx, "mode": 4, "targets": targets}],
                "weights": [1.0 if k == 0 else 0.0 for k in range(T)],
                "extras": {"targetNames": target_names},
            }
        ],
        "animations": [
            {
                "name": "speech",
                "samplers": [{"input": a_t, "output": a_w, "interpolation": "LINEAR"}],
                "channels": [{"sampler": 0, "target": {"node": 0, "path": "weights"}}],
            }
        ],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": offset}],
        "extras": {"fps": float(fps), "num_frames": int(T), "units": units, **(extras or {})},
    }
    js = json.dumps(doc, separators=(",", ":"), default=str).encode("utf-8")
    js += b" " * _pad4(len(js))
    total = 12 + 8 + len(js) + 8 + offset
    fh.write(struct.pack("<III", _MAGIC, 2, total))
    fh.write(struct.pack("<II", len(js), _JSON))
    fh.write(js)
    fh.write(struct.pack("<II", offset, _BIN))
    for nbytes, payload in chunks:
        if callable(payload):
            payload(fh)
        else:
            fh.write(np.ascontiguousarray(payload).tobytes())
        fh.write(b"\0" * _pad4(nbytes))


_NP = {_FLOAT: "<f4", _UINT: "<u4", 5123: "<u2", 5121: "u1", 5122: "<i2", 5120: "i1"}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def read_glb(path: str | Path) -> dict:
    """Parse a GLB written by :func:`write_glb` (or any simple morph-target GLB).

    Returns a dict with ``json`` (the glTF document), ``template`` (V, 3), ``faces``
    (F, 3), ``frames`` (T, V, 3) = template + each morph target, ``times`` (T,) from
    the first animation's first sampler, and ``weights`` (T, T) its output.
    """
    data = Path(path).read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != _MAGIC or version != 2 or length != len(data):
        raise PtalkerError(f"{path} is not a glTF 2.0 binary file")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20 : 20 + jlen])
    boff = 20 + jlen
    blen, btype = struct.unpack_from("<II", data, boff)
    if jtype != _JSON or btype != _BIN:
        raise PtalkerError(f"{path} has unexpected GLB chunks")
    binary = memoryview(data)[boff + 8 : boff + 8 + blen]

    def accessor(i: int) -> np.ndarray:
        acc = doc["accessors"][i]
        view = doc["bufferViews"][acc["bufferView"]]
        n = _NCOMP[acc["type"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        arr = np.frombuffer(binary, dtype=_NP[acc["componentType"]], count=acc["count"] * n, offset=start)
        return arr.reshape(acc["count"], n) if n > 1 else arr

    prim = doc["meshes"][0]["primitives"][0]
    template = accessor(prim["attributes"]["POSITION"]).astype(np.float32)
    faces = accessor(prim["indices"]).reshape(-1, 3).astype(np.int64)
    frames = np.stack([template + accessor(t["POSITION"]) for t in prim.get("targets", [])]) if prim.get("targets") else np.zeros((0,) + template.shape, np.float32)
    out = {"json": doc, "template": template, "faces": faces, "frames": frames}
    if doc.get("animations"):
        sampler = doc["animations"][0]["samplers"][0]
        times = accessor(sampler["input"]).astype(np.float32)
        out["times"] = times
        out["weights"] = accessor(sampler["output"]).reshape(len(times), -1)
    return out
