"""Read back a morph-target GLB: the one :func:`~ptalker_cli.export.glb.write_glb` writes, or
any single-mesh file with a ``weights`` animation (dense, strided, normalized or sparse accessors).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from ..errors import PtalkerError
from .glb_buffer import CHUNK_BIN, CHUNK_JSON, DTYPE, MAGIC, NCOMP


def _decode(doc: dict, binary: memoryview, index: int) -> np.ndarray:
    """Accessor ``index`` as float32 (normalized integers mapped to [-1, 1] / [0, 1]) or its
    integer type, shape (count,) or (count, n)."""
    acc = doc["accessors"][index]
    dtype = np.dtype(DTYPE[acc["componentType"]])
    n, count = NCOMP[acc["type"]], acc["count"]
    out = np.zeros((count, n), dtype)
    if "bufferView" in acc:
        view = doc["bufferViews"][acc["bufferView"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        stride = view.get("byteStride", dtype.itemsize * n)
        raw = np.frombuffer(binary, np.uint8, count=(count - 1) * stride + dtype.itemsize * n if count else 0,
                            offset=start)
        out = np.lib.stride_tricks.as_strided(raw, (count, n * dtype.itemsize), (stride, 1)).copy().view(dtype)
    if "sparse" in acc:
        sp = acc["sparse"]
        iv, vv = doc["bufferViews"][sp["indices"]["bufferView"]], doc["bufferViews"][sp["values"]["bufferView"]]
        ids = np.frombuffer(binary, DTYPE[sp["indices"]["componentType"]], count=sp["count"],
                            offset=iv.get("byteOffset", 0) + sp["indices"].get("byteOffset", 0))
        vals = np.frombuffer(binary, dtype, count=sp["count"] * n,
                             offset=vv.get("byteOffset", 0) + sp["values"].get("byteOffset", 0))
        out = out.copy()
        out[ids.astype(np.int64)] = vals.reshape(-1, n)
    if acc.get("normalized"):
        info = np.iinfo(dtype)
        out = np.maximum(out.astype(np.float32) / info.max, -1.0)
    return out[:, 0] if n == 1 else out


def read_glb(path: str | Path) -> dict:
    """Parse a GLB and reconstruct its animation's frames.

    Returns a dict with ``json`` (the glTF document), ``extras`` (its top-level extras),
    ``template`` (the base mesh POSITION, (V, 3)), ``normals`` ((V, 3) or None), ``faces``
    (F, 3), ``targets`` (K, V, 3) position deltas, ``normal_targets`` ((K, V, 3) or None),
    ``times`` (T,) and ``weights`` (T, K) from the first animation's first sampler,
    ``frames`` (T, V, 3) = base + weights @ targets (float32, node-local coordinates),
    and ``node_scale`` (the mesh node's uniform scale; local x node_scale = metres).
    """
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise PtalkerError(f"{path} is not a glTF 2.0 binary file")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != MAGIC or version != 2 or length != len(data):
        raise PtalkerError(f"{path} is not a glTF 2.0 binary file")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20 : 20 + jlen])
    boff = 20 + jlen
    blen, btype = struct.unpack_from("<II", data, boff)
    if jtype != CHUNK_JSON or btype != CHUNK_BIN:
        raise PtalkerError(f"{path} has unexpected GLB chunks")
    binary = memoryview(data)[boff + 8 : boff + 8 + blen]

    prim = doc["meshes"][0]["primitives"][0]
    attrs = prim["attributes"]
    base = _decode(doc, binary, attrs["POSITION"]).astype(np.float32)
    normals = _decode(doc, binary, attrs["NORMAL"]).astype(np.float32) if "NORMAL" in attrs else None
    faces = _decode(doc, binary, prim["indices"]).reshape(-1, 3).astype(np.int64)
    tlist = prim.get("targets", [])
    V = len(base)
    targets = np.stack([_decode(doc, binary, t["POSITION"]) for t in tlist]).astype(np.float32) if tlist \
        else np.zeros((0, V, 3), np.float32)
    normal_targets = None
    if tlist and all("NORMAL" in t for t in tlist):
        normal_targets = np.stack([_decode(doc, binary, t["NORMAL"]) for t in tlist]).astype(np.float32)
    node = next(n for n in doc["nodes"] if n.get("mesh") == 0)
    out = {
        "json": doc, "extras": doc.get("extras", {}), "template": base, "normals": normals, "faces": faces,
        "targets": targets, "normal_targets": normal_targets, "node_scale": float(node.get("scale", [1.0])[0]),
    }
    if doc.get("animations"):
        sampler = doc["animations"][0]["samplers"][0]
        times = _decode(doc, binary, sampler["input"]).astype(np.float32)
        weights = _decode(doc, binary, sampler["output"]).astype(np.float32).reshape(len(times), -1)
        out["times"], out["weights"] = times, weights
        out["frames"] = base[None] + (weights @ targets.reshape(len(targets), -1)).reshape(len(times), V, 3)
    else:
        out["frames"] = np.zeros((0, V, 3), np.float32)
    return out
