"""Read glTF 2.0 files (``.glb`` and ``.gltf`` with embedded or external buffers).

A small reader for what ptalker needs from a user's file: the JSON document, the raw
buffers, and accessors as numpy arrays (byte strides, normalized integers and sparse
accessors included). :mod:`ptalker_cli.export.rig_gltf` writes files back from it.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from ..errors import PtalkerError

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942

_DTYPE = {5126: "<f4", 5125: "<u4", 5123: "<u2", 5121: "u1", 5122: "<i2", 5120: "i1"}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_NORM = {5121: 255.0, 5123: 65535.0, 5120: 127.0, 5122: 32767.0}


class GltfError(PtalkerError):
    """A glTF file could not be read."""


@dataclass
class GltfDocument:
    """A parsed glTF: ``json`` (the document), ``buffers`` (bytes per buffer), and where it came from.

    ``glb_bin`` is the GLB binary chunk (buffer 0 of a GLB), or None; ``is_glb`` says which
    container the file was.
    """

    path: Path
    json: dict
    buffers: list[bytes] = field(default_factory=list)
    is_glb: bool = False
    glb_bin: bytes | None = None

    def view_bytes(self, index: int) -> tuple[memoryview, int]:
        view = self.json["bufferViews"][index]
        data = self.buffers[view["buffer"]]
        start = view.get("byteOffset", 0)
        return memoryview(data)[start : start + view["byteLength"]], int(view.get("byteStride", 0))

    def accessor(self, index: int) -> np.ndarray:
        """Accessor ``index`` as an array (count,) or (count, n), float for normalized/float data."""
        acc = self.json["accessors"][index]
        comp, kind, count = acc["componentType"], acc["type"], int(acc["count"])
        if comp not in _DTYPE or kind not in _NCOMP:
            raise GltfError(f"{self.path}: accessor {index} has an unsupported type {kind}/{comp}")
        dtype, n = np.dtype(_DTYPE[comp]), _NCOMP[kind]
        if "bufferView" in acc:
            raw, stride = self.view_bytes(acc["bufferView"])
            offset = int(acc.get("byteOffset", 0))
            elem = dtype.itemsize * n
            if stride and stride != elem:
                rows = np.ndarray((count, n), dtype=dtype, buffer=raw, offset=offset, strides=(stride, dtype.itemsize))
                arr = np.array(rows)
            else:
                arr = np.frombuffer(raw, dtype=dtype, count=count * n, offset=offset).reshape(count, n).copy()
        else:
            arr = np.zeros((count, n), dtype=dtype)
        sparse = acc.get("sparse")
        if sparse:
            sc = int(sparse["count"])
            ii = sparse["indices"]
            iraw, _ = self.view_bytes(ii["bufferView"])
            idx = np.frombuffer(iraw, dtype=_DTYPE[ii["componentType"]], count=sc, offset=ii.get("byteOffset", 0))
            vv = sparse["values"]
            vraw, _ = self.view_bytes(vv["bufferView"])
            vals = np.frombuffer(vraw, dtype=dtype, count=sc * n, offset=vv.get("byteOffset", 0)).reshape(sc, n)
            arr[idx.astype(np.int64)] = vals
        if acc.get("normalized") and comp in _NORM:
            arr = np.maximum(arr.astype(np.float32) / _NORM[comp], -1.0)
        return arr[:, 0] if n == 1 else arr


def _load_uri(uri: str, base: Path, what: str) -> bytes:
    if uri.startswith("data:"):
        head, _, payload = uri.partition(",")
        if ";base64" not in head:
            raise GltfError(f"{what}: only base64 data URIs are supported")
        return base64.b64decode(payload)
    path = base / unquote(uri)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise GltfError(f"{what}: cannot read external buffer {path}: {exc.strerror or exc}") from None


def parse_glb(data: bytes, path: Path) -> tuple[dict, bytes | None]:
    """(JSON document, BIN chunk or None) of a GLB's bytes."""
    if len(data) < 20:
        raise GltfError(f"{path} is not a glTF binary (too short)")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC:
        raise GltfError(f"{path} is not a glTF binary (.glb)")
    if version != 2:
        raise GltfError(f"{path} is glTF version {version}; only glTF 2.0 is supported")
    if length > len(data):
        raise GltfError(f"{path} is truncated ({len(data)} of {length} bytes)")
    doc, binary, pos = None, None, 12
    while pos + 8 <= length:
        clen, ctype = struct.unpack_from("<II", data, pos)
        chunk = data[pos + 8 : pos + 8 + clen]
        if ctype == CHUNK_JSON and doc is None:
            try:
                doc = json.loads(chunk.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise GltfError(f"{path}: the JSON chunk is not valid JSON ({exc})") from None
        elif ctype == CHUNK_BIN and binary is None:
            binary = bytes(chunk)
        pos += 8 + clen
    if doc is None:
        raise GltfError(f"{path} has no JSON chunk")
    return doc, binary


def read_gltf(path: str | Path) -> GltfDocument:
    """Read a ``.glb`` or ``.gltf`` (buffers: GLB chunk, data URIs or files beside it)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise GltfError(f"cannot read {path}: {exc.strerror or exc}") from None
    is_glb = data[:4] == b"glTF"
    binary = None
    if is_glb:
        doc, binary = parse_glb(data, path)
    else:
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise GltfError(f"{path} is neither a glTF binary nor glTF JSON") from None
    if not isinstance(doc, dict) or str(doc.get("asset", {}).get("version", "")) != "2.0":
        raise GltfError(f"{path} is not a glTF 2.0 file (asset.version must be \"2.0\")")
    buffers = []
    for i, buf in enumerate(doc.get("buffers", [])):
        if "uri" in buf:
            blob = _load_uri(buf["uri"], path.parent, str(path))
        elif is_glb and i == 0 and binary is not None:
            blob = binary
        else:
            raise GltfError(f"{path}: buffer {i} has no data (no uri and no GLB binary chunk)")
        if len(blob) < int(buf.get("byteLength", 0)):
            raise GltfError(f"{path}: buffer {i} holds {len(blob)} bytes, fewer than its byteLength")
        buffers.append(blob)
    return GltfDocument(path, doc, buffers, is_glb, binary)
