"""Which lip / upper-face vertex regions an evaluation uses, and where they came from.

Resolution order, per region (``lip`` for LVE, ``upper_face`` for FDD):

1. an explicit choice (``--lip-region`` / ``--upper-face-region``): a file path, a
   shipped choice name (VOCASET lip lists: ``mouth_map``, ``lve``, ``lip``,
   ``sorted_unique``), or ``none``;
2. the dataset manifest's ``regions`` entry (a file relative to the dataset root);
3. the region stored in the dataset's ``topology/topology.npz``;
4. the file shipped with ptalker for a recognised topology:

   ==========  ========  ===========================================  ==========================
   topology    vertices  lip (LVE)                                    upper_face (FDD)
   ==========  ========  ===========================================  ==========================
   BIWI        23,370    ``data/regions/biwi/lve.txt`` (4,996)        ``data/regions/biwi/fdd.txt`` (7,784)
   FLAME       5,023     ``data/regions/vocaset/vocaset_mouth_map.txt``  none shipped (user file)
                         (FLAME ``lips``, 250 unique)
   ICT         14,062    ``templates/ict`` ``region_lip`` (1,300)     ``region_upper_face`` (3,946)
   ==========  ========  ===========================================  ==========================

Provenance of the shipped files: ``PROVENANCE.md`` and ``LICENSE`` beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data._common import shipped_region
from ..errors import PtalkerError
from ..mesh import read_region_file

REGION_NAMES = ("lip", "upper_face")

BIWI_NUM_VERTICES = 23370
FLAME_NUM_VERTICES = 5023
ICT_NUM_VERTICES = 14062

#: VOCASET (FLAME) lip-list choices shipped in data/regions/vocaset/ (PTalker's vocaset/regions/).
VOCASET_LIP_CHOICES = {
    "mouth_map": "vocaset_mouth_map.txt",  # = FLAME `lips`, 254 entries / 250 unique (default)
    "lve": "lve.txt",
    "lip": "lip.txt",
    "sorted_unique": "sorted_unique_numbers.txt",
}
DEFAULT_VOCASET_LIP = "mouth_map"


def dataset_kind(name: str | None, topology: str | None, num_vertices: int) -> str | None:
    """``"biwi"``, ``"vocaset"`` or ``"ict"`` for a recognised mesh, else None."""
    names = {str(x).lower() for x in (name, topology) if x}
    if num_vertices == BIWI_NUM_VERTICES and names & {"biwi"}:
        return "biwi"
    if num_vertices == FLAME_NUM_VERTICES and names & {"vocaset", "flame"}:
        return "vocaset"
    if num_vertices == ICT_NUM_VERTICES and names & {"ict"}:
        return "ict"
    return None


@dataclass(frozen=True)
class Region:
    """Vertex ids (unique, sorted) of one region and where they came from."""

    name: str
    ids: np.ndarray | None
    source: str

    @property
    def size(self) -> int | None:
        return None if self.ids is None else int(self.ids.size)

    def to_json(self) -> dict:
        return {"source": self.source, "vertices": self.size}


def _checked(name: str, ids: np.ndarray, num_vertices: int, source: str) -> Region:
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    if ids.size == 0:
        raise PtalkerError(f"the {name} region from {source} is empty; give a region file with vertex ids")
    if ids.min() < 0 or ids.max() >= num_vertices:
        raise PtalkerError(
            f"the {name} region from {source} has vertex ids outside 0..{num_vertices - 1}; "
            "it was made for another mesh — give a region file for this one"
        )
    return Region(name, ids, source)


def shipped_default(name: str, kind: str | None) -> tuple[np.ndarray, str] | None:
    """The region shipped with ptalker for a recognised topology, or None."""
    if kind == "biwi":
        fname = {"lip": "lve.txt", "upper_face": "fdd.txt"}[name]
        path = shipped_region("biwi", fname)
        return read_region_file(path), f"shipped BIWI {fname} (CodeTalker, MIT)"
    if kind == "vocaset" and name == "lip":
        fname = VOCASET_LIP_CHOICES[DEFAULT_VOCASET_LIP]
        return read_region_file(shipped_region("vocaset", fname)), f"shipped VOCASET {fname} (FLAME lips; default)"
    if kind == "ict":
        from ..mesh import load_builtin

        topo = load_builtin("ict")
        if name in topo.regions:
            return topo.regions[name], f"shipped templates/ict region_{name} (ICT-FaceKit, MIT)"
    return None


def resolve_region(
    name: str,
    num_vertices: int,
    *,
    choice: str | Path | None = None,
    root: Path | None = None,
    manifest_regions: dict[str, str] | None = None,
    topology_regions: dict[str, np.ndarray] | None = None,
    kind: str | None = None,
) -> Region:
    """Resolve one region (see the module docstring for the order)."""
    if choice is not None:
        c = str(choice)
        if c.lower() == "none":
            return Region(name, None, "disabled (none)")
        if name == "lip" and c in VOCASET_LIP_CHOICES:
            if num_vertices != FLAME_NUM_VERTICES:
                raise PtalkerError(
                    f"--lip-region {c} is a VOCASET (FLAME, {FLAME_NUM_VERTICES} vertices) list but the data has "
                    f"{num_vertices} vertices; give a region file for this mesh"
                )
            path = shipped_region("vocaset", VOCASET_LIP_CHOICES[c])
            return _checked(name, read_region_file(path), num_vertices,
                            f"shipped VOCASET {path.name} (--lip-region {c})")
        path = Path(c).expanduser()
        if not path.is_file():
            extra = f", or one of {', '.join(VOCASET_LIP_CHOICES)}" if name == "lip" else ""
            raise PtalkerError(f"{name} region file {path} not found; give a file of vertex ids, 'none'{extra}")
        return _checked(name, read_region_file(path), num_vertices, f"file {path}")
    if manifest_regions and name in manifest_regions and root is not None:
        rel = manifest_regions[name]
        path = root / rel
        if not path.is_file():
            raise PtalkerError(f"the manifest names the {name} region file {path}, which is missing; fix dataset.json")
        return _checked(name, read_region_file(path), num_vertices, f"dataset manifest: {rel}")
    if topology_regions and name in topology_regions:
        return _checked(name, topology_regions[name], num_vertices, "dataset topology/topology.npz")
    found = shipped_default(name, kind)
    if found is not None:
        return _checked(name, found[0], num_vertices, found[1])
    return Region(name, None, "none available")


__all__ = [
    "DEFAULT_VOCASET_LIP",
    "REGION_NAMES",
    "Region",
    "VOCASET_LIP_CHOICES",
    "dataset_kind",
    "resolve_region",
    "shipped_default",
]
