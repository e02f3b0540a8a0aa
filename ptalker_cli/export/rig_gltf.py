"""Drive a user's glTF character with ARKit curves: the same file plus one animation.

The rig's meshes name their morph targets in ``mesh.extras.targetNames`` (as Blender,
three.js and VRM exports write them); a target whose name is an ARKit name in any accepted
spelling (``eyeBlink_L``, ``eyeBlinkLeft``, ``EyeBlinkLeft``, any case) is driven by that
curve. For every mesh with at least one such target, and every node that instantiates it,
the animation ``ptalker_arkit`` gets a ``weights`` channel: one key per frame at k/fps,
LINEAR, all of the mesh's targets per key (targets it does not know keep the mesh's
default weight, or 0).

Nothing else changes: the new times and weights are appended after the existing binary
data (the GLB's BIN chunk, or a new base64 buffer in a ``.gltf``), with new bufferViews and
accessors after the existing ones, so every existing index (nodes, skins, materials,
textures, accessors) stays valid and every existing byte of the binary stays in place.
Output keeps the input's container: ``.glb`` → ``.glb``, ``.gltf`` → ``.gltf``.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..arkit.curves import ArkitCurves
from ..arkit.names import ARKIT_NAMES, arkit_name
from ..errors import PtalkerError
from ..fileio import atomic_write_bytes, atomic_write_text
from .gltf_io import CHUNK_BIN, CHUNK_JSON, GLB_MAGIC, GltfDocument, read_gltf

ANIMATION_NAME = "ptalker_arkit"
_FLOAT = 5126


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


@dataclass
class RigMesh:
    mesh: int
    name: str
    targets: list[str]
    arkit: list[str | None]  # per target: the ARKit name it stands for, or None
    nodes: list[int]


@dataclass
class RigScan:
    """What :func:`scan_rig` found: meshes with ARKit targets, and the names it cannot use."""

    meshes: list[RigMesh] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # targets that are not ARKit names
    unnamed_meshes: list[str] = field(default_factory=list)  # meshes with targets but no targetNames

    @property
    def arkit_names(self) -> set[str]:
        return {a for m in self.meshes for a in m.arkit if a}


def scan_rig(doc: GltfDocument) -> RigScan:
    scan = RigScan()
    nodes = doc.json.get("nodes", [])
    for i, mesh in enumerate(doc.json.get("meshes", [])):
        prims = mesh.get("primitives", [])
        count = len(prims[0].get("targets", [])) if prims else 0
        if count == 0:
            continue
        names = (mesh.get("extras") or {}).get("targetNames") or (prims[0].get("extras") or {}).get("targetNames")
        label = mesh.get("name", f"mesh {i}")
        if not isinstance(names, list) or len(names) != count:
            scan.unnamed_meshes.append(label)
            continue
        arkit = [arkit_name(str(n)) for n in names]
        scan.unknown += [str(n) for n, a in zip(names, arkit) if a is None and str(n) not in scan.unknown]
        if any(arkit):
            users = [k for k, node in enumerate(nodes) if node.get("mesh") == i]
            scan.meshes.append(RigMesh(i, label, [str(n) for n in names], arkit, users))
    return scan


def _summary(scan: RigScan, curves: ArkitCurves, out: Path) -> str:
    used = scan.arkit_names
    driven = set(curves.driven)
    parts = [f"{out}: animated {sum(len(m.nodes) for m in scan.meshes)} mesh node(s) "
             f"({len(used)} ARKit targets, {curves.num_frames} frames at {curves.fps:g} fps)"]
    idle = [n for n in ARKIT_NAMES if n in used and n not in driven]
    if idle:
        parts.append(f"not predicted, kept at 0: {', '.join(idle)}")
    if scan.unknown:
        parts.append(f"unknown targets, left at rest: {', '.join(scan.unknown)}")
    lacking = [n for n in ARKIT_NAMES if n in driven and n not in used]
    if lacking:
        parts.append(f"curves the rig has no target for: {', '.join(lacking)}")
    if scan.unnamed_meshes:
        parts.append(f"meshes without targetNames, skipped: {', '.join(scan.unnamed_meshes)}")
    return "; ".join(parts)


def animate_rig(rig: str | Path, curves: ArkitCurves, out: str | Path, force: bool = False) -> tuple[Path, str]:
    """Write ``out``: ``rig`` plus an ARKit animation from ``curves``. Returns (out, one-line summary)."""
    rig, out = Path(rig), Path(out)
    if not rig.exists():
        raise PtalkerError(f"rig {rig} does not exist")
    in_kind = rig.suffix.lower()
    if in_kind not in (".glb", ".gltf"):
        raise PtalkerError(f"--rig must be a .glb or .gltf file; got {rig.name}")
    if out.suffix.lower() != in_kind:
        raise PtalkerError(f"with --rig {rig.name}, -o must end in {in_kind} (the output keeps the rig's container)")
    if out.exists() and not force:
        raise PtalkerError(f"{out} already exists; use --force to overwrite it")
    doc = read_gltf(rig)
    scan = scan_rig(doc)
    if not scan.meshes:
        why = "has no morph targets" if not (scan.unknown or scan.unnamed_meshes) else \
            "has no morph targets with ARKit names in mesh.extras.targetNames"
        raise PtalkerError(f"rig {rig.name} {why} (e.g. jawOpen, eyeBlinkLeft, eyeBlink_L); nothing to animate")
    if not any(m.nodes for m in scan.meshes):
        raise PtalkerError(f"rig {rig.name}: no node uses the meshes with ARKit targets; nothing to animate")
    if in_kind == ".gltf" and out.resolve().parent != rig.resolve().parent and _has_relative_uris(doc.json):
        raise PtalkerError(f"{rig.name} refers to files beside it; write -o into the same folder ({rig.parent})")

    gl = doc.json
    use_glb_bin = doc.is_glb and gl.get("buffers") and "uri" not in gl["buffers"][0] and doc.glb_bin is not None
    base = bytearray(doc.glb_bin if use_glb_bin else b"")
    start = len(base) + _pad4(len(base))
    blob = bytearray()
    views, accessors, samplers, channels = [], [], [], []
    buffer_index = 0 if use_glb_bin else len(gl.get("buffers", []))
    n_views, n_acc = len(gl.get("bufferViews", [])), len(gl.get("accessors", []))

    def add(array: np.ndarray, extra: dict | None = None) -> int:
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        blob.extend(b"\0" * _pad4(len(blob)))
        views.append({"buffer": buffer_index, "byteOffset": start + len(blob) if use_glb_bin else len(blob),
                      "byteLength": len(data)})
        blob.extend(data)
        acc = {"bufferView": n_views + len(views) - 1, "componentType": _FLOAT, "count": int(array.size),
               "type": "SCALAR"}
        acc.update(extra or {})
        accessors.append(acc)
        return n_acc + len(accessors) - 1

    times = curves.times.astype(np.float32)
    t_acc = add(times, {"min": [float(times[0])], "max": [float(times[-1])]})
    index = {n: i for i, n in enumerate(ARKIT_NAMES)}
    for m in scan.meshes:
        if not m.nodes:
            continue
        rest = list(gl["meshes"][m.mesh].get("weights") or [0.0] * len(m.targets))
        w = np.empty((curves.num_frames, len(m.targets)), np.float32)
        for j, a in enumerate(m.arkit):
            w[:, j] = curves.weights[:, index[a]] if a else rest[j]
        samplers.append({"input": t_acc, "output": add(w), "interpolation": "LINEAR"})
        for node in m.nodes:
            channels.append({"sampler": len(samplers) - 1, "target": {"node": node, "path": "weights"}})

    gl.setdefault("bufferViews", []).extend(views)
    gl.setdefault("accessors", []).extend(accessors)
    gl.setdefault("animations", []).append({"name": ANIMATION_NAME, "samplers": samplers, "channels": channels})
    if use_glb_bin:
        base.extend(b"\0" * (start - len(base)))
        base.extend(blob)
        gl["buffers"][0]["byteLength"] = len(base)
    else:
        uri = "data:application/octet-stream;base64," + base64.b64encode(bytes(blob)).decode("ascii")
        gl.setdefault("buffers", []).append({"byteLength": len(blob), "uri": uri})

    if in_kind == ".glb":
        atomic_write_bytes(out, _glb_bytes(gl, bytes(base) if use_glb_bin else None))
    else:
        atomic_write_text(out, json.dumps(gl, indent=2) + "\n")
    return out, _summary(scan, curves, out)


def _has_relative_uris(gl: dict) -> bool:
    uris = [b.get("uri") for b in gl.get("buffers", [])] + [i.get("uri") for i in gl.get("images", [])]
    return any(u and not u.startswith("data:") for u in uris)


def _glb_bytes(gl: dict, binary: bytes | None) -> bytes:
    js = json.dumps(gl, separators=(",", ":")).encode("utf-8")
    js += b" " * _pad4(len(js))
    chunks = struct.pack("<II", len(js), CHUNK_JSON) + js
    if binary is not None:
        binary = binary + b"\0" * _pad4(len(binary))
        chunks += struct.pack("<II", len(binary), CHUNK_BIN) + binary
    return struct.pack("<III", GLB_MAGIC, 2, 12 + len(chunks)) + chunks
