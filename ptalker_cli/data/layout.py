"""The standard dataset layout and its ``dataset.json`` manifest (``check_dataset`` is in :mod:`.check`).

A prepared dataset is a folder::

    <root>/dataset.json                     manifest (see :class:`Manifest`)
    <root>/wav/<subject>_<sentence>.wav     speech (16 kHz mono recommended; .flac/.ogg also read)
    <root>/vertices_npy/<subject>_<sentence>.npy   (T, V, 3) float32 (also (T, V*3))
    <root>/templates/<subject>.npy          (V, 3) float32 neutral face of each subject
    <root>/topology/topology.{npz,json}     faces + generic template (Topology.save)
    <root>/regions/lip.txt, upper_face.txt  vertex-id lists (comma/space separated, 0-based)

Sequence names are ``<subject>_<sentence>``: the subject is everything before the
last underscore, the sentence everything after it, and the sentence *number* is the
trailing run of digits of the sentence (``e07`` -> 7, ``sentence21`` -> 21).
docs/datasets.md is the user-facing description of the same rules.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ..errors import PtalkerError
from ..fileio import atomic_write_text

MANIFEST_NAME = "dataset.json"
WAV_DIR = "wav"
VERTICES_DIR = "vertices_npy"
TEMPLATES_DIR = "templates"
TOPOLOGY_DIR = "topology"
REGIONS_DIR = "regions"
#: Audio file suffixes read from ``wav/`` (the first is what the converters write).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MANIFEST_VERSION = 1


class DatasetError(PtalkerError):
    """A dataset folder, manifest or raw corpus could not be used."""


# --------------------------------------------------------------------------- names


def split_name(name: str) -> tuple[str, str]:
    """``"F2_e01"`` -> ``("F2", "e01")``; subject = all before the last underscore."""
    if "_" not in name:
        raise DatasetError(
            f"sequence name '{name}' has no underscore; name files <subject>_<sentence> (e.g. F2_e01)"
        )
    subject, sentence = name.rsplit("_", 1)
    if not subject or not sentence:
        raise DatasetError(f"sequence name '{name}' must be <subject>_<sentence> with both parts non-empty")
    return subject, sentence


def sentence_number(sentence: str) -> int | None:
    """Trailing digits of a sentence id (``e07`` -> 7, ``sentence21`` -> 21), or None."""
    m = re.search(r"(\d+)$", sentence)
    return int(m.group(1)) if m else None


def _parse_sentence_selector(entry: Any) -> tuple[str, Any]:
    """One entry of a rule's ``sentences`` list: int, "A-B" range, or an exact sentence id."""
    if isinstance(entry, bool):
        raise DatasetError(f"invalid sentence selector {entry!r} in a split rule")
    if isinstance(entry, int):
        return ("num", (entry, entry))
    if isinstance(entry, (list, tuple)) and len(entry) == 2 and all(isinstance(x, int) for x in entry):
        return ("num", (int(entry[0]), int(entry[1])))
    if isinstance(entry, str):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", entry)
        if m:
            return ("num", (int(m.group(1)), int(m.group(2))))
        if entry.strip().isdigit():
            n = int(entry)
            return ("num", (n, n))
        return ("id", entry)
    raise DatasetError(
        f"invalid sentence selector {entry!r} in a split rule; use a number, \"A-B\" or a sentence id"
    )


@dataclass(frozen=True)
class SplitRule:
    """Which sequences a split holds.

    Either an explicit list of sequence names (``names``), or a rule: sequences whose
    subject is in ``subjects`` (None = every subject) and whose sentence matches one
    of ``sentences`` (None = every sentence). Sentence selectors are sentence numbers,
    inclusive ``"A-B"`` ranges of numbers, or exact sentence ids (``"e07"``).
    """

    names: tuple[str, ...] | None = None
    subjects: tuple[str, ...] | None = None
    sentences: tuple[Any, ...] | None = None

    @classmethod
    def from_json(cls, value: Any, split: str = "?") -> "SplitRule":
        if isinstance(value, SplitRule):
            return value
        if isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise DatasetError(f"split '{split}': a list split must hold sequence names (strings)")
            return cls(names=tuple(value))
        if isinstance(value, Mapping):
            unknown = set(value) - {"subjects", "sentences", "names"}
            if unknown:
                raise DatasetError(
                    f"split '{split}' has unknown keys {sorted(unknown)}; use 'subjects', 'sentences' or 'names'"
                )
            if "names" in value:
                if set(value) != {"names"}:
                    raise DatasetError(f"split '{split}': 'names' cannot be combined with subjects/sentences")
                return cls.from_json(list(value["names"]), split)
            subjects = value.get("subjects")
            sentences = value.get("sentences")
            if subjects is not None:
                if isinstance(subjects, str) or not all(isinstance(s, str) for s in subjects):
                    raise DatasetError(f"split '{split}': 'subjects' must be a list of subject names")
                subjects = tuple(subjects)
            if sentences is not None:
                if isinstance(sentences, (str, int)):
                    sentences = [sentences]
                for s in sentences:
                    _parse_sentence_selector(s)  # validate
                sentences = tuple(sentences)
            return cls(subjects=subjects, sentences=sentences)
        raise DatasetError(
            f"split '{split}' must be a list of sequence names or an object with 'subjects'/'sentences'"
        )

    def to_json(self) -> Any:
        if self.names is not None:
            return list(self.names)
        out: dict[str, Any] = {}
        if self.subjects is not None:
            out["subjects"] = list(self.subjects)
        if self.sentences is not None:
            out["sentences"] = list(self.sentences)
        return out

    def matches(self, name: str) -> bool:
        if self.names is not None:
            return name in self.names
        try:
            subject, sentence = split_name(name)
        except DatasetError:
            return False
        if self.subjects is not None and subject not in self.subjects:
            return False
        if self.sentences is None:
            return True
        num = sentence_number(sentence)
        for sel in self.sentences:
            kind, val = _parse_sentence_selector(sel)
            if kind == "id" and sentence == val:
                return True
            if kind == "num" and num is not None and val[0] <= num <= val[1]:
                return True
        return False

    def select(self, names: Iterable[str]) -> list[str]:
        return sorted(n for n in names if self.matches(n))


# --------------------------------------------------------------------------- manifest


@dataclass
class Manifest:
    """The content of ``dataset.json``.

    Attributes:
        name: dataset name (``"biwi"``, ``"vocaset"``, or yours).
        fps: motion frame rate of the ``vertices_npy`` files.
        topology: topology id (``"biwi"``, ``"flame"``, ...); faces live in ``topology/``.
        units: ``"normalized"`` (BIWI unit-area faces), ``"m"``, ``"cm"`` or ``"mm"``.
        num_vertices: V, vertices per frame.
        subjects: every subject of the dataset.
        train_subjects: the training identities, in one-hot order (``subject_index``).
        splits: split name -> :class:`SplitRule` (JSON: list of names or rule object).
        regions: region name (``lip``, ``upper_face``) -> file path relative to the root.
        audio_sample_rate: sample rate the loader resamples audio to (16000).
        source: free-form provenance (converter, raw frame rate, ...).
    """

    name: str
    fps: float
    topology: str
    units: str
    num_vertices: int
    subjects: list[str]
    train_subjects: list[str] = field(default_factory=list)
    splits: dict[str, SplitRule] = field(default_factory=dict)
    regions: dict[str, str] = field(default_factory=dict)
    audio_sample_rate: int = 16000
    source: dict[str, Any] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def subject_index(self, subject: str) -> int:
        """Index of ``subject`` in the one-hot order, -1 for an unseen identity."""
        try:
            return self.train_subjects.index(subject)
        except ValueError:
            return -1

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "name": self.name,
            "fps": self.fps,
            "topology": self.topology,
            "units": self.units,
            "num_vertices": self.num_vertices,
            "audio_sample_rate": self.audio_sample_rate,
            "subjects": list(self.subjects),
            "train_subjects": list(self.train_subjects),
            "splits": {k: v.to_json() for k, v in self.splits.items()},
            "regions": dict(self.regions),
            "source": dict(self.source),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], where: str = MANIFEST_NAME) -> "Manifest":
        if not isinstance(data, Mapping):
            raise DatasetError(f"{where} must hold a JSON object")
        missing = [k for k in ("name", "fps", "num_vertices", "subjects") if k not in data]
        if missing:
            raise DatasetError(f"{where} lacks {', '.join(missing)}; see docs/datasets.md for the manifest fields")
        try:
            fps = float(data["fps"])
            nv = int(data["num_vertices"])
            sr = int(data.get("audio_sample_rate", 16000))
        except (TypeError, ValueError):
            raise DatasetError(f"{where}: fps, num_vertices and audio_sample_rate must be numbers") from None
        if not fps > 0 or nv <= 0 or sr <= 0:
            raise DatasetError(f"{where}: fps, num_vertices and audio_sample_rate must be positive")
        subjects = data["subjects"]
        train = data.get("train_subjects", [])
        for key, val in (("subjects", subjects), ("train_subjects", train)):
            if isinstance(val, str) or not isinstance(val, list) or not all(isinstance(s, str) for s in val):
                raise DatasetError(f"{where}: '{key}' must be a list of subject names")
        splits_raw = data.get("splits", {})
        if not isinstance(splits_raw, Mapping):
            raise DatasetError(f"{where}: 'splits' must map split names to rules")
        regions = data.get("regions", {})
        if not isinstance(regions, Mapping) or not all(isinstance(v, str) for v in regions.values()):
            raise DatasetError(f"{where}: 'regions' must map region names to file paths")
        return cls(
            name=str(data["name"]),
            fps=fps,
            topology=str(data.get("topology", data["name"])),
            units=str(data.get("units", "normalized")),
            num_vertices=nv,
            subjects=list(subjects),
            train_subjects=list(train),
            splits={str(k): SplitRule.from_json(v, str(k)) for k, v in splits_raw.items()},
            regions=dict(regions),
            audio_sample_rate=sr,
            source=dict(data.get("source", {})),
            version=int(data.get("version", MANIFEST_VERSION)),
        )

    def save(self, root: str | Path) -> Path:
        path = Path(root) / MANIFEST_NAME
        atomic_write_text(path, json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, root: str | Path) -> "Manifest":
        path = Path(root) / MANIFEST_NAME
        if not path.is_file():
            raise DatasetError(
                f"{path} not found; prepare the dataset with 'ptalker data prepare' or write a manifest "
                "as described in docs/datasets.md"
            )
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"cannot read {path}: {exc}; fix the JSON") from None
        return cls.from_json(data, str(path))


# --------------------------------------------------------------------------- layout


class DatasetLayout:
    """Paths of a dataset folder in the standard layout."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def wav_dir(self) -> Path:
        return self.root / WAV_DIR

    @property
    def vertices_dir(self) -> Path:
        return self.root / VERTICES_DIR

    @property
    def templates_dir(self) -> Path:
        return self.root / TEMPLATES_DIR

    @property
    def topology_dir(self) -> Path:
        return self.root / TOPOLOGY_DIR

    @property
    def regions_dir(self) -> Path:
        return self.root / REGIONS_DIR

    def vertices_path(self, name: str) -> Path:
        return self.vertices_dir / f"{name}.npy"

    def phones_path(self, name: str) -> Path:
        """A sequence's phone timings where the corpus records them (SynthTalk: ``synth/sequences``)."""
        return self.root / "synth" / "sequences" / f"{name}.json"

    def wav_path(self, name: str) -> Path:
        """The audio file of a sequence (first existing suffix; ``.wav`` if none exists)."""
        for suffix in AUDIO_SUFFIXES:
            p = self.wav_dir / f"{name}{suffix}"
            if p.exists():
                return p
        return self.wav_dir / f"{name}.wav"

    def template_path(self, subject: str) -> Path:
        return self.templates_dir / f"{subject}.npy"

    def manifest(self) -> Manifest:
        return Manifest.load(self.root)

    def motion_names(self) -> list[str]:
        if not self.vertices_dir.is_dir():
            return []
        return sorted(p.stem for p in self.vertices_dir.glob("*.npy") if not p.name.startswith("."))

    def audio_names(self) -> list[str]:
        if not self.wav_dir.is_dir():
            return []
        return sorted(
            {p.stem for p in self.wav_dir.iterdir()
             if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")}
        )

    def sequence_names(self) -> list[str]:
        """Names that have a vertex file (the motion defines a sequence)."""
        return self.motion_names()

    def resolve_split(self, split: str | SplitRule | Sequence[str] | Mapping[str, Any] | None,
                      manifest: Manifest | None = None, names: Iterable[str] | None = None) -> list[str]:
        """Sequence names of a split: a manifest split name, a rule, a list of names, or None (all)."""
        manifest = manifest or self.manifest()
        names = list(self.sequence_names() if names is None else names)
        if split is None or split == "all":
            return sorted(names)
        if isinstance(split, str):
            if split not in manifest.splits:
                known = ", ".join(sorted(manifest.splits)) or "none"
                raise DatasetError(
                    f"unknown split '{split}' in {self.manifest_path}; known splits: {known}"
                )
            rule = manifest.splits[split]
        else:
            rule = SplitRule.from_json(split, "custom")
        return rule.select(names)

    def load_template(self, subject: str) -> np.ndarray:
        path = self.template_path(subject)
        if not path.is_file():
            raise DatasetError(f"template {path} is missing; add templates/{subject}.npy (V, 3)")
        arr = np.load(path, allow_pickle=False)
        return np.asarray(arr, dtype=np.float32).reshape(-1, 3)

    def load_topology(self, manifest: Manifest | None = None):
        """The dataset's :class:`~ptalker_cli.mesh.Topology` with the manifest's region files."""
        from ..mesh import Topology, read_region_file

        manifest = manifest or self.manifest()
        if not (self.topology_dir / "topology.json").is_file():
            raise DatasetError(
                f"{self.topology_dir} has no topology.json; save the faces there with Topology.save"
            )
        topo = Topology.load_saved(self.topology_dir)
        regions = dict(topo.regions)
        for key, rel in manifest.regions.items():
            regions[key] = read_region_file(self.root / rel)
        return Topology(topo.name, topo.vertices, topo.faces, regions, topo.units)
