"""The binary side of a GLB: buffer views, accessors (dense, strided or sparse) and the container.

:class:`GlbBuffer` collects arrays (or writers that stream them) into one binary chunk and
describes them as glTF ``bufferViews`` and ``accessors``; :meth:`GlbBuffer.write` emits
the 12-byte header, the JSON chunk and the binary chunk. Vertex attributes whose element is
not a multiple of 4 bytes (16-bit VEC3, 8-bit VEC3) are padded to a 4-byte stride, as
glTF requires of vertex buffers.
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO, Callable

import numpy as np

MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A
CHUNK_BIN = 0x004E4942
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
#: glTF component types by numpy dtype
COMPONENT = {
    np.dtype("<f4"): 5126,
    np.dtype("<u4"): 5125,
    np.dtype("<u2"): 5123,
    np.dtype("<i2"): 5122,
    np.dtype("u1"): 5121,
    np.dtype("i1"): 5120,
}
DTYPE = {v: k for k, v in COMPONENT.items()}
NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
KIND = {1: "SCALAR", 2: "VEC2", 3: "VEC3", 4: "VEC4"}


def pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _bounds(values: np.ndarray, n: int, count: int, sparse_count: int | None = None) -> dict:
    """min/max per component; a sparse accessor also holds zeros where it stores nothing."""
    flat = values.reshape(-1, n)
    lo = flat.min(axis=0) if len(flat) else np.zeros(n, flat.dtype)
    hi = flat.max(axis=0) if len(flat) else np.zeros(n, flat.dtype)
    if sparse_count is not None and sparse_count < count:
        lo, hi = np.minimum(lo, 0), np.maximum(hi, 0)
    cast = float if flat.dtype.kind == "f" else int
    return {"min": [cast(x) for x in lo], "max": [cast(x) for x in hi]}


class GlbBuffer:
    """One glTF buffer being assembled: views, accessors and the bytes behind them."""

    def __init__(self) -> None:
        self.views: list[dict] = []
        self.accessors: list[dict] = []
        self._payloads: list[tuple[int, object]] = []
        self.length = 0

    # ------------------------------------------------------------------ views
    def view(self, payload: np.ndarray | Callable[[BinaryIO], None], nbytes: int | None = None, *,
             target: int | None = None, stride: int | None = None) -> int:
        """A buffer view over ``payload`` (an array, or a callable writing ``nbytes`` bytes)."""
        if nbytes is None:
            payload = np.ascontiguousarray(payload)
            nbytes = payload.nbytes
        view = {"buffer": 0, "byteOffset": self.length, "byteLength": int(nbytes)}
        if stride is not None:
            view["byteStride"] = int(stride)
        if target is not None:
            view["target"] = target
        self.views.append(view)
        self._payloads.append((int(nbytes), payload))
        self.length += int(nbytes) + pad4(int(nbytes))
        return len(self.views) - 1

    # ------------------------------------------------------------------ accessors
    def accessor(self, view: int | None, dtype, count: int, kind: str, *, byte_offset: int = 0,
                 normalized: bool = False, bounds: dict | None = None, sparse: dict | None = None) -> int:
        acc: dict = {"componentType": COMPONENT[np.dtype(dtype)], "count": int(count), "type": kind}
        if view is not None:
            acc["bufferView"] = view
        if byte_offset:
            acc["byteOffset"] = int(byte_offset)
        if normalized:
            acc["normalized"] = True
        if bounds:
            acc.update(bounds)
        if sparse:
            acc["sparse"] = sparse
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def array(self, values: np.ndarray, *, target: int | None = None, normalized: bool = False,
              bounds: bool = False) -> int:
        """A dense accessor over ``values`` ((count,) or (count, n)), in a view of its own.

        Vertex attributes (``target=ARRAY_BUFFER``) with elements not a multiple of 4 bytes
        are padded to a 4-byte stride.
        """
        values = np.asarray(values)
        n = 1 if values.ndim == 1 else values.shape[1]
        count = values.shape[0]
        stride = None
        data = values
        elem = values.dtype.itemsize * n
        if target == ARRAY_BUFFER and elem % 4:
            stride = elem + pad4(elem)
            padded = np.zeros((count, stride // values.dtype.itemsize), values.dtype)
            padded[:, :n] = values.reshape(count, n)
            data = padded
        view = self.view(np.ascontiguousarray(data), target=target, stride=stride)
        return self.accessor(view, values.dtype, count, KIND[n], normalized=normalized,
                             bounds=_bounds(values, n, count) if bounds else None)

    def sparse_array(self, count: int, index_view: int, index_dtype, rows: np.ndarray, values: np.ndarray, *,
                     normalized: bool = False, bounds: bool = False) -> int:
        """A sparse accessor of ``count`` elements, zero except ``values`` at ``rows`` (sorted ids
        stored once in ``index_view``, shared by every accessor with the same rows)."""
        n = 1 if values.ndim == 1 else values.shape[1]
        values_view = self.view(np.ascontiguousarray(values))
        sparse = {
            "count": int(len(rows)),
            "indices": {"bufferView": index_view, "componentType": COMPONENT[np.dtype(index_dtype)]},
            "values": {"bufferView": values_view},
        }
        return self.accessor(None, values.dtype, count, KIND[n], normalized=normalized, sparse=sparse,
                             bounds=_bounds(values, n, count, len(rows)) if bounds else None)

    # ------------------------------------------------------------------ output
    def write(self, fh: BinaryIO, doc: dict) -> int:
        """Write the GLB (header, JSON chunk, binary chunk) to ``fh``; returns its size in bytes."""
        doc = dict(doc, accessors=self.accessors, bufferViews=self.views, buffers=[{"byteLength": self.length}])
        js = json.dumps(doc, separators=(",", ":"), default=str).encode("utf-8")
        js += b" " * pad4(len(js))
        total = 12 + 8 + len(js) + 8 + self.length
        fh.write(struct.pack("<III", MAGIC, 2, total))
        fh.write(struct.pack("<II", len(js), CHUNK_JSON))
        fh.write(js)
        fh.write(struct.pack("<II", self.length, CHUNK_BIN))
        for nbytes, payload in self._payloads:
            if callable(payload):
                payload(fh)
            else:
                fh.write(memoryview(np.ascontiguousarray(payload)).cast("B"))
            fh.write(b"\0" * pad4(nbytes))
        return total
