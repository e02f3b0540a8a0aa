"""VOCASET conversion: release pickles + ``data_verts.npy`` -> the standard layout.

Reimplements ``process_voca_data.py`` (FaceFormer / CodeTalker / PTalker) plus the
loader's ``[::2]`` subsampling, memory-bounded: ``data_verts.npy`` (~7 GB) is
memory-mapped and only one sequence's rows are read at a time.

The release pickles are read with :class:`RestrictedUnpickler`, which refuses every
global except numpy array/scalar/dtype reconstruction and plain builtin containers, so
a tampered pickle cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ._common import PrepareSummary, progress_bar, save_npy, save_wav, shipped_region
from .biwi import _resolve_regions, write_regions
from .layout import DatasetError, DatasetLayout, Manifest, SplitRule

VOCASET_RAW_FPS = 60
VOCASET_NUM_VERTICES = 5023
VOCASET_TRAIN_SUBJECTS = [
    "FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
    "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
    "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA",
]
VOCASET_VAL_SUBJECTS = ["FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA"]
VOCASET_TEST_SUBJECTS = ["FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"]
#: FaceFormer protocol.
VOCASET_SPLITS: dict[str, dict[str, Any]] = {
    "train": {"subjects": VOCASET_TRAIN_SUBJECTS, "sentences": ["1-40"]},
    "val": {"subjects": VOCASET_VAL_SUBJECTS, "sentences": ["21-40"]},
    "test": {"subjects": VOCASET_TEST_SUBJECTS, "sentences": ["21-40"]},
}
#: Lip-region choices among the files shipped with PTalker (vocaset/regions/).
VOCASET_LIP_REGIONS = {
    "mouth_map": "vocaset_mouth_map.txt",  # = FLAME `lips` (254 entries / 250 unique); default
    "lve": "lve.txt",
    "lip": "lip.txt",
    "sorted_unique": "sorted_unique_numbers.txt",
}
DEFAULT_LIP_REGION = "mouth_map"
RAW_FILES = ("data_verts.npy", "raw_audio_fixed.pkl", "templates.pkl", "subj_seq_to_idx.pkl")


# --------------------------------------------------------------------------- pickles


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the VOCASET release files that can only rebuild data.

    Allowed globals: numpy's array/scalar/dtype reconstructors (``numpy.core`` and
    ``numpy._core`` spellings), ``_codecs.encode`` (how Python 3 pickles bytes at
    protocol 2) and plain builtin value types. Anything else raises
    ``pickle.UnpicklingError`` before it is imported or called.
    """

    _ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
        ("collections", "OrderedDict"),
    }
    _BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "str",
                 "bytes", "bytearray", "bool", "object"}

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED or (module in ("builtins", "__builtin__") and name in self._BUILTINS):
            if module == "__builtin__":
                module = "builtins"
            return super().find_class(module, name)
        if module.startswith("numpy") and module.endswith("dtypes") and name.endswith("DType"):
            return super().find_class(module, name)  # numpy >= 2 dtype classes
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a data pickle")


def safe_load_pickle(path: str | Path) -> Any:
    """Load a release pickle with :class:`RestrictedUnpickler` (``latin1`` for Python-2 pickles)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, encoding="latin1").load()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, ValueError, TypeError) as exc:
        raise DatasetError(
            f"{path} is not a VOCASET data pickle ({exc}); use the files of the official release"
        ) from None


def _sorted_frames(index: dict) -> list[int]:
    """Global rows of one sequence, in local-frame order."""
    keys = sorted(index, key=lambda k: int(k))
    return [int(index[k]) for k in keys]


def prepare_vocaset(
    raw_dir: str | Path,
    out_dir: str | Path,
    faces_mesh: str | Path | None = None,
    *,
    fps: int = 30,
    subjects: list[str] | None = None,
    lip_region: str | Path | None = DEFAULT_LIP_REGION,
    upper_face_region: str | Path | None = None,
    sample_rate: int = 16000,
    overwrite: bool = False,
    progress: Any = False,
) -> PrepareSummary:
    """Convert the VOCASET release to the standard layout.

    Args:
        raw_dir: folder with ``data_verts.npy``, ``raw_audio_fixed.pkl``, ``templates.pkl``,
            ``subj_seq_to_idx.pkl``.
        out_dir: output dataset root.
        faces_mesh: the FLAME template mesh (``FLAME_sample.ply`` from the VOCA repository)
            whose faces define the topology; default ``raw_dir/FLAME_sample.ply``.
        fps: 30 (keep every 2nd frame of the 60 fps capture, as all published loaders do)
            or 60 (keep all); any divisor of 60 works.
        lip_region: a shipped choice (``mouth_map`` = FLAME lips, default; ``lve``, ``lip``,
            ``sorted_unique``), a path to your own file, or None.
        upper_face_region: path to an upper-face (FDD) file; none is shipped for FLAME.
        sample_rate: output audio rate (16 kHz).
        overwrite / progress: as for :func:`~ptalker_cli.data.biwi.prepare_biwi`.
    """
    import soxr  # noqa: F401  (before the first file is written; see prepare_biwi)

    from ..mesh import Topology, read_region_file

    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    stride, faces_mesh, flame = _check_raw_vocaset(raw_dir, faces_mesh, fps)
    layout = DatasetLayout(out_dir)
    summary = PrepareSummary("vocaset", out_dir)
    index = safe_load_pickle(raw_dir / "subj_seq_to_idx.pkl")
    templates = safe_load_pickle(raw_dir / "templates.pkl")
    if not isinstance(index, dict) or not isinstance(templates, dict):
        raise DatasetError(f"{raw_dir}: subj_seq_to_idx.pkl and templates.pkl must hold dicts keyed by subject")
    verts = _raw_vertices(raw_dir, flame.num_vertices, faces_mesh)
    num_vertices = int(verts.shape[1])
    all_subjects = sorted(index)
    if subjects is not None:
        unknown = sorted(set(subjects) - set(index))
        if unknown:
            raise DatasetError(f"subjects {unknown} not in subj_seq_to_idx.pkl; it has {all_subjects}")
        all_subjects = [s for s in all_subjects if s in subjects]

    regions: dict[str, Path] = {}
    if lip_region is not None:
        lip = str(lip_region)
        regions["lip"] = (shipped_region("vocaset", VOCASET_LIP_REGIONS[lip]) if lip in VOCASET_LIP_REGIONS
                          else Path(lip))
    if upper_face_region is not None:
        regions["upper_face"] = Path(upper_face_region)
    region_files = _resolve_regions(regions, num_vertices, {}, "vocaset", VOCASET_NUM_VERTICES)
    _write_templates(layout, templates, all_subjects, num_vertices, overwrite)

    audio = _RawAudio(raw_dir / "raw_audio_fixed.pkl")
    jobs = [(s, q) for s in all_subjects for q in sorted(index[s])]
    with progress_bar(progress, len(jobs), "VOCASET") as advance:
        for subj, seq in jobs:
            ss = summary.subject(subj)
            try:
                _convert_vocaset_sequence(layout, verts, index, audio, subj, seq, stride, ss, overwrite=overwrite,
                                          sample_rate=sample_rate)
            except (DatasetError, KeyError, TypeError, ValueError) as exc:
                ss.failed += 1
                ss.notes.append(f"{seq}: {exc}")
            advance(f"{subj}_{seq}")
    del verts

    region_entries = write_regions(out_dir, region_files)
    topo_regions = {k: read_region_file(p) for k, p in region_files.items()}
    Topology("flame", flame.vertices, flame.faces, topo_regions, "m").save(layout.topology_dir)
    source = {
        "converter": "ptalker data prepare vocaset",
        "raw_fps": VOCASET_RAW_FPS,
        "frame_stride": stride,
        "lip_region": None if lip_region is None else str(lip_region),
        "faces": Path(faces_mesh).name,
    }
    _write_vocaset_manifest(layout, summary, set(all_subjects), num_vertices, stride, region_entries, sample_rate,
                            source, all_subjects=subjects is None)
    return summary


def _check_raw_vocaset(raw_dir: Path, faces_mesh: str | Path | None, fps: int):
    """(frame stride, faces mesh path, FLAME mesh) after checking the release's files and the frame rate."""
    from ..mesh import load_mesh_file

    if not raw_dir.is_dir():
        raise DatasetError(f"VOCASET folder {raw_dir} does not exist")
    missing = [f for f in RAW_FILES if not (raw_dir / f).is_file()]
    if missing:
        raise DatasetError(f"{raw_dir} lacks {', '.join(missing)}; download the VOCASET release (voca.is.tue.mpg.de)")
    if int(fps) <= 0 or VOCASET_RAW_FPS % int(fps):
        raise DatasetError(f"fps must divide {VOCASET_RAW_FPS} (e.g. 30 or 60); got {fps}")
    stride = VOCASET_RAW_FPS // int(fps)
    if faces_mesh is None:
        faces_mesh = raw_dir / "FLAME_sample.ply"
        if not faces_mesh.is_file():
            raise DatasetError(
                f"no FLAME template mesh: pass --faces FLAME_sample.ply (from the VOCA repository, "
                f"template/FLAME_sample.ply) or put it in {raw_dir}"
            )
    flame = load_mesh_file(faces_mesh, name="flame", units="m")
    if flame.faces.size == 0:
        raise DatasetError(f"{faces_mesh} has no faces")
    return stride, faces_mesh, flame


def _raw_vertices(raw_dir: Path, mesh_vertices: int, faces_mesh) -> np.ndarray:
    """``data_verts.npy`` memory-mapped as (N, V, 3); V must be the faces mesh's vertex count."""
    verts = np.load(raw_dir / "data_verts.npy", mmap_mode="r", allow_pickle=False)
    if verts.ndim == 2 and verts.shape[1] % 3 == 0:
        verts = verts.reshape(verts.shape[0], -1, 3)
    if verts.ndim != 3 or verts.shape[2] != 3:
        raise DatasetError(f"data_verts.npy has shape {verts.shape}; expected (N, V, 3)")
    num_vertices = int(verts.shape[1])
    if mesh_vertices != num_vertices:
        raise DatasetError(
            f"{faces_mesh} has {mesh_vertices} vertices but data_verts.npy has {num_vertices}; "
            "use FLAME_sample.ply (5,023 vertices)"
        )
    return verts


def _write_templates(layout: DatasetLayout, templates: dict, subjects: list[str], num_vertices: int,
                     overwrite: bool) -> None:
    for subj in subjects:
        if subj not in templates:
            raise DatasetError(f"templates.pkl has no template for {subj}")
        t = np.asarray(templates[subj], dtype=np.float32).reshape(-1, 3)
        if len(t) != num_vertices:
            raise DatasetError(f"template of {subj} has {len(t)} vertices, data_verts.npy has {num_vertices}")
        if overwrite or not layout.template_path(subj).exists():
            save_npy(layout.template_path(subj), t)


class _RawAudio:
    """``raw_audio_fixed.pkl`` (about 100 MB), loaded when the first audio file is written."""

    def __init__(self, path: Path):
        self.path = path
        self.data: Any = None

    def entry(self, subj: str, seq: str):
        if self.data is None:
            self.data = safe_load_pickle(self.path)
        return self.data.get(subj, {}).get(seq) if isinstance(self.data, dict) else None


def _convert_vocaset_sequence(layout: DatasetLayout, verts: np.ndarray, index: dict, audio: _RawAudio, subj: str,
                              seq: str, stride: int, ss, *, overwrite: bool, sample_rate: int) -> None:
    """One sequence: every ``stride``-th capture frame into ``vertices_npy/``, its audio (resampled) into
    ``wav/``; finished files are skipped unless ``overwrite``."""
    import soxr

    name = f"{subj}_{seq}"
    vpath = layout.vertices_path(name)
    wpath = layout.wav_dir / f"{name}.wav"
    did = False
    if overwrite or not vpath.exists():
        rows = _sorted_frames(index[subj][seq])[::stride]
        if not rows:
            raise DatasetError("no frames in subj_seq_to_idx")
        if max(rows) >= len(verts) or min(rows) < 0:
            raise DatasetError(f"frame rows outside data_verts.npy (0..{len(verts) - 1})")
        seq_verts = np.asarray(verts[np.asarray(rows)], dtype=np.float32)
        save_npy(vpath, seq_verts)
        ss.written += 1
        ss.frames += len(rows)
        did = True
    if overwrite or not wpath.exists():
        entry = audio.entry(subj, seq)
        if entry is None:
            ss.notes.append(f"{seq}: no audio")
        else:
            wave = np.asarray(entry["audio"])
            sr = int(entry.get("sample_rate", 22000))
            if np.issubdtype(wave.dtype, np.integer):
                wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max + 1)
            wave = np.asarray(wave, dtype=np.float32).reshape(-1) if wave.ndim == 1 else \
                np.asarray(wave, dtype=np.float32).mean(axis=-1)
            if sr != sample_rate:
                wave = soxr.resample(wave, sr, sample_rate, quality="HQ")
            save_wav(wpath, wave, sample_rate)
            did = True
    if not did:
        ss.skipped += 1


def _write_vocaset_manifest(layout: DatasetLayout, summary: PrepareSummary, present: set[str], num_vertices: int,
                            stride: int, region_entries: dict[str, str], sample_rate: int, source: dict[str, Any],
                            all_subjects: bool) -> None:
    """``dataset.json`` with the standard splits restricted to the subjects present; the split sizes."""
    splits = {}
    for key, rule in VOCASET_SPLITS.items():
        subs = [s for s in rule["subjects"] if s in present]
        splits[key] = SplitRule.from_json({"subjects": subs, "sentences": rule["sentences"]}, key)
    manifest = Manifest(
        name="vocaset",
        fps=float(VOCASET_RAW_FPS // stride),
        topology="flame",
        units="m",
        num_vertices=num_vertices,
        subjects=sorted(present),
        train_subjects=[s for s in VOCASET_TRAIN_SUBJECTS if s in present],
        splits=splits,
        regions=region_entries,
        audio_sample_rate=int(sample_rate),
        source=source,
    )
    if all_subjects:
        known = VOCASET_TRAIN_SUBJECTS + VOCASET_VAL_SUBJECTS + VOCASET_TEST_SUBJECTS
        miss = [s for s in known if s not in present]
        if miss:
            summary.notes.append(f"subjects not found (left out of the splits): {', '.join(miss)}")
    manifest.save(layout.root)
    names = layout.sequence_names()
    summary.split_sizes = {k: len(r.select(names)) for k, r in splits.items()}
