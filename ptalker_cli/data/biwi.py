"""BIWI (B3D(AC)^2) conversion in pure Python: ``.vl`` reader, normalisation, layout writer.

Reimplements the CodeTalker MATLAB pipeline (``creatDataset_BIWI.m``,
``process_BIWI_template.m``, the npy/pkl dumpers and ``video2audio.py``):

* every frame (and every ``rigid_scans`` template) is rotated 180 degrees about x,
  ``(x, y, z) -> (x, -y, -z)``, centred on its own vertex mean, and divided by
  ``sqrt`` of its total triangle surface area (faces of the subject's rigid scan),
  so every face has unit surface area;
* sequences are written as ``vertices_npy/<subj>_<seq>.npy`` (T, 23370, 3) float32 at
  25 fps, audio as ``wav/<subj>_<seq>.wav`` mono 16 kHz, templates as
  ``templates/<subj>.npy``; faces in ``topology/``; regions from CodeTalker.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ._common import PrepareSummary, copy_file, progress_bar, save_npy, save_wav, shipped_region
from .layout import REGIONS_DIR, DatasetError, DatasetLayout, Manifest, SplitRule

BIWI_FPS = 25
BIWI_NUM_VERTICES = 23370
BIWI_TRAIN_SUBJECTS = ["F2", "F3", "F4", "M3", "M4", "M5"]
BIWI_TEST_B_SUBJECTS = ["F1", "F5", "F6", "F7", "F8", "M1", "M2", "M6"]
#: Split presets (identical in CodeTalker / FaceFormer / PTalker).
BIWI_SPLITS: dict[str, dict[str, Any]] = {
    "train": {"subjects": BIWI_TRAIN_SUBJECTS, "sentences": ["1-32"]},
    "val": {"subjects": BIWI_TRAIN_SUBJECTS, "sentences": ["33-36"]},
    "test-a": {"subjects": BIWI_TRAIN_SUBJECTS, "sentences": ["37-40"]},
    "test-b": {"subjects": BIWI_TEST_B_SUBJECTS, "sentences": ["37-40"]},
}
#: Shipped region files (CodeTalker, MIT) -> standard region names.
BIWI_REGION_FILES = {"lip": "lve.txt", "upper_face": "fdd.txt"}
#: BIWI's emotional takes, the ones every pipeline uses.
DEFAULT_SEQUENCE_PATTERN = r"e\d+"

_ROT_X_180 = np.array([1.0, -1.0, -1.0])
_FRAME_RE = re.compile(r"frame_(\d+)\.vl$")


# --------------------------------------------------------------------------- readers


def parse_vl(data: bytes, source: str = "<bytes>", expected_vertices: int | None = None) -> np.ndarray:
    """Decode one ``.vl`` frame: a vertex-count header then 3N little-endian float32.

    The header is MATLAB's platform ``ulong``: 4 bytes (32-bit Windows MATLAB, which
    wrote the corpus) or 8 bytes (64-bit MATLAB); the size is detected from the file
    size and checked against the count it holds.
    """
    size = len(data)
    n = None
    if size >= 4 and (size - 4) % 12 == 0:
        if int(np.frombuffer(data, "<u4", 1, 0)[0]) == (size - 4) // 12:
            n, offset = (size - 4) // 12, 4
    if n is None and size >= 8 and (size - 8) % 12 == 0:
        if int(np.frombuffer(data, "<u8", 1, 0)[0]) == (size - 8) // 12:
            n, offset = (size - 8) // 12, 8
    if n is None:
        raise DatasetError(
            f"{source} is not a BIWI .vl frame (size {size} bytes does not match a 4- or 8-byte "
            "vertex-count header followed by 3N float32); re-extract the corpus archive"
        )
    if expected_vertices is not None and n != expected_vertices:
        raise DatasetError(f"{source} has {n} vertices, expected {expected_vertices}")
    return np.frombuffer(data, "<f4", 3 * n, offset).reshape(n, 3).astype(np.float32)


def read_vl(path: str | Path, expected_vertices: int | None = None) -> np.ndarray:
    """Read a ``.vl`` file as (N, 3) float32 (see :func:`parse_vl`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_vl(data, str(path), expected_vertices)


def vl_bytes(vertices: np.ndarray, header_bytes: int = 4) -> bytes:
    """Encode one ``.vl`` frame with a 4- or 8-byte vertex-count header."""
    if header_bytes not in (4, 8):
        raise ValueError("header_bytes must be 4 or 8")
    v = np.asarray(vertices, dtype="<f4").reshape(-1, 3)
    header = np.array([len(v)], dtype="<u4" if header_bytes == 4 else "<u8").tobytes()
    return header + v.tobytes()


def write_vl(path: str | Path, vertices: np.ndarray, header_bytes: int = 4) -> None:
    """Write a ``.vl`` frame (used to build test corpora)."""
    Path(path).write_bytes(vl_bytes(vertices, header_bytes))


def read_obj(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Positions and triangles of an OBJ, keeping the file's vertex order exactly.

    Texture/normal indices are ignored (a textured scan keeps its vertex numbering),
    polygons are fan-split, negative (relative) indices are resolved.
    """
    path = Path(path)
    verts: list[list[float]] = []
    faces: list[list[int]] = []
    try:
        fh = open(path, "r", errors="replace")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for line in fh:
            if line.startswith("v "):
                parts = line.split()
                verts.append([float(parts[1]), float(parts[2]), float(parts[3])])
            elif line.startswith("f "):
                idx = []
                for tok in line.split()[1:]:
                    i = int(tok.split("/")[0])
                    idx.append(i - 1 if i > 0 else len(verts) + i)
                for k in range(1, len(idx) - 1):
                    faces.append([idx[0], idx[k], idx[k + 1]])
    if not verts:
        raise DatasetError(f"{path} holds no vertices ('v' lines)")
    return np.asarray(verts, dtype=np.float64), np.asarray(faces, dtype=np.int64).reshape(-1, 3)


# --------------------------------------------------------------------------- geometry


def surface_area(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Total triangle area of (..., V, 3) vertices -> (...) (equals the mixed-Voronoi area sum)."""
    v = np.asarray(vertices, dtype=np.float64)
    a, b, c = v[..., faces[:, 0], :], v[..., faces[:, 1], :], v[..., faces[:, 2], :]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=-1).sum(axis=-1)


def normalize_biwi(vertices: np.ndarray, faces: np.ndarray, chunk: int = 16) -> np.ndarray:
    """The CodeTalker normalisation of one frame (V, 3) or a sequence (T, V, 3).

    Rotate 180 degrees about x, subtract each frame's vertex mean, divide by the
    square root of that frame's total surface area. Computed in float64, returned float32.
    """
    arr = np.asarray(vertices)
    if arr.ndim == 3 and len(arr) > chunk:  # bound the float64 temporaries (BIWI: ~7 MB per frame)
        return np.concatenate([normalize_biwi(arr[i : i + chunk], faces) for i in range(0, len(arr), chunk)])
    v = arr.astype(np.float64) * _ROT_X_180
    v = v - v.mean(axis=-2, keepdims=True)
    area = surface_area(v, faces)
    if np.any(~(area > 0)):
        raise DatasetError("a frame has zero surface area (degenerate faces); check the faces and vertices")
    return (v / np.sqrt(area)[..., None, None]).astype(np.float32)


# --------------------------------------------------------------------------- corpus


def _frame_sources(seq_path: Path) -> list[tuple[int, str, Callable[[], bytes]]]:
    """(frame number, label, reader) for a sequence folder or a .tar/.tgz archive."""
    out = []
    if seq_path.is_dir():
        for p in seq_path.iterdir():
            m = _FRAME_RE.search(p.name)
            if m:
                out.append((int(m.group(1)), str(p), p.read_bytes))
    else:
        with tarfile.open(seq_path) as tar:
            for member in tar.getmembers():
                m = _FRAME_RE.search(member.name)
                if m and member.isfile():
                    data = tar.extractfile(member).read()
                    out.append((int(m.group(1)), f"{seq_path}:{member.name}", (lambda d=data: d)))
    return sorted(out, key=lambda t: t[0])


def discover_biwi(raw_dir: Path, pattern: str = DEFAULT_SEQUENCE_PATTERN) -> dict[str, dict[str, Path]]:
    """``{subject: {sequence: folder_or_archive}}`` from ``raw/faces``."""
    faces = raw_dir / "faces"
    if not faces.is_dir():
        raise DatasetError(
            f"{faces} not found; RAW_DIR must be the extracted BIWI corpus with faces/<subject>/<seq>/frame_XXX.vl"
        )
    rx = re.compile(pattern + r"$")
    found: dict[str, dict[str, Path]] = {}
    for subj in sorted(p for p in faces.iterdir() if p.is_dir()):
        seqs: dict[str, Path] = {}
        for entry in sorted(subj.iterdir()):
            name = entry.name
            for ext in (".tar.gz", ".tgz", ".tar"):
                if entry.is_file() and name.endswith(ext):
                    name = name[: -len(ext)]
                    break
            else:
                if not entry.is_dir():
                    continue
            if rx.match(name) and name not in seqs:
                seqs[name] = entry
        if seqs:
            found[subj.name] = seqs
    if not found:
        raise DatasetError(f"no sequences matching '{pattern}' under {faces}; check RAW_DIR")
    return found


def _find_audio(raw_dir: Path, subject: str, seq: str) -> Path | None:
    name = f"{subject}_{seq}"
    for folder in ("audio", "wav", "audios", "audios/wav_e"):
        for ext in (".wav", ".flac"):
            p = raw_dir / folder / f"{name}{ext}"
            if p.is_file():
                return p
    p = raw_dir / "audio" / subject / f"{seq}.wav"
    if p.is_file():
        return p
    p = raw_dir / "videos" / f"{name}.flv"
    return p if p.is_file() else None


def _load_audio_any(path: Path, sample_rate: int) -> np.ndarray:
    from ..audio import load_audio

    if path.suffix.lower() != ".flv":
        return load_audio(path, sample_rate)
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        raise DatasetError(
            f"{path}: extracting audio from .flv needs ffmpeg (pip install imageio-ffmpeg), "
            "or put <subject>_<seq>.wav files in RAW_DIR/audio"
        ) from None
    fd, tmp = tempfile.mkstemp(suffix=".wav")
    os.close(fd)
    try:
        proc = subprocess.run(
            [exe, "-nostdin", "-loglevel", "error", "-y", "-i", str(path), "-vn", "-ac", "1",
             "-ar", str(sample_rate), "-f", "wav", tmp],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise DatasetError(f"ffmpeg could not extract audio from {path}: {' '.join(proc.stderr.split())[:200]}")
        return load_audio(tmp, sample_rate)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _resolve_regions(regions: Any, num_vertices: int, shipped: Mapping[str, str], dataset: str,
                     expected_vertices: int) -> dict[str, Path]:
    from ..mesh import read_region_file

    if regions is None:
        return {}
    if isinstance(regions, str) and regions == "default":
        if num_vertices != expected_vertices:
            raise DatasetError(
                f"the shipped {dataset} region files are for {expected_vertices} vertices but the data has "
                f"{num_vertices}; pass your own region files (--lip-region/--upper-face-region) or --no-regions"
            )
        return {k: shipped_region(dataset, f) for k, f in shipped.items()}
    out: dict[str, Path] = {}
    for key, path in dict(regions).items():
        if path is None:
            continue
        path = Path(path)
        ids = read_region_file(path)
        if ids.size == 0 or ids.min() < 0 or ids.max() >= num_vertices:
            raise DatasetError(
                f"region file {path} ('{key}') has no vertex ids or ids outside 0..{num_vertices - 1}; "
                "pass a region file made for this mesh (--lip-region / --upper-face-region) or none"
            )
        out[key] = path
    return out


def write_regions(out_dir: Path, regions: Mapping[str, Path]) -> dict[str, str]:
    """Copy region files into ``<out>/regions/<name>.txt``; returns manifest entries."""
    entries = {}
    for key, src in regions.items():
        rel = f"{REGIONS_DIR}/{key}.txt"
        copy_file(Path(src), out_dir / rel)
        entries[key] = rel
    return entries


def prepare_biwi(
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    subjects: list[str] | None = None,
    sequence_pattern: str = DEFAULT_SEQUENCE_PATTERN,
    regions: Any = "default",
    sample_rate: int = 16000,
    overwrite: bool = False,
    progress: Any = False,
) -> PrepareSummary:
    """Convert the BIWI corpus as distributed to the standard layout.

    Args:
        raw_dir: folder with ``faces/<subj>/<seq>/frame_XXX.vl`` (or ``<seq>.tar``/``.tgz``
            archives of them), ``rigid_scans/<subj>.obj`` and audio as
            ``audio/<subj>_<seq>.wav`` (also ``wav/``) or ``videos/<subj>_<seq>.flv`` (ffmpeg).
        out_dir: output dataset root.
        subjects: only these subjects (default: all found).
        sequence_pattern: regex of the sequence folders to convert (default ``e\\d+``, the
            emotional takes the standard splits use).
        regions: ``"default"`` (shipped CodeTalker lve/fdd, needs 23,370 vertices), a mapping
            ``{"lip": path, "upper_face": path}``, or None for none.
        sample_rate: output audio rate.
        overwrite: redo files that exist (default: skip finished files).
        progress: False, True (rich progress bar) or a callback ``f(label, done, total)``.
    """
    # Imported before the first file is written: Ctrl-C / SIGTERM landing inside the import of soxr's C
    # extension (on the first audio file) aborted the process instead of stopping it cleanly.
    from .. import audio  # noqa: F401

    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    if not raw_dir.is_dir():
        raise DatasetError(f"BIWI folder {raw_dir} does not exist")
    layout = DatasetLayout(out_dir)
    corpus = discover_biwi(raw_dir, sequence_pattern)
    if subjects is not None:
        unknown = sorted(set(subjects) - set(corpus))
        if unknown:
            raise DatasetError(f"subjects {unknown} not found under {raw_dir / 'faces'}; found {sorted(corpus)}")
        corpus = {s: corpus[s] for s in subjects}
    summary = PrepareSummary("biwi", out_dir)
    templates, faces_of, ref_faces = _biwi_templates(raw_dir, corpus, summary)
    num_vertices = len(next(iter(templates.values())))
    region_files = _resolve_regions(regions, num_vertices, BIWI_REGION_FILES, "biwi", BIWI_NUM_VERTICES)
    for subj, tmpl in templates.items():
        path = layout.template_path(subj)
        if overwrite or not path.exists():
            save_npy(path, tmpl)

    total = sum(len(s) for s in corpus.values())
    with progress_bar(progress, total, "BIWI") as advance:
        for subj, seqs in corpus.items():
            ss = summary.subject(subj)
            for seq, src in seqs.items():
                try:
                    _convert_biwi_sequence(raw_dir, layout, subj, seq, src, faces_of[subj], num_vertices, ss,
                                           overwrite=overwrite, sample_rate=sample_rate)
                except DatasetError as exc:
                    ss.failed += 1
                    ss.notes.append(f"{seq}: {exc}")
                advance(f"{subj}_{seq}")

    region_entries = write_regions(out_dir, region_files)
    from ..mesh import Topology, read_region_file

    generic = np.mean(np.stack(list(templates.values())), axis=0)
    topo_regions = {k: read_region_file(p) for k, p in region_files.items()}
    Topology("biwi", generic, ref_faces, topo_regions, "normalized").save(layout.topology_dir)
    _write_biwi_manifest(layout, summary, set(templates), num_vertices, region_entries, sample_rate,
                         all_subjects=subjects is None)
    return summary


def _biwi_templates(raw_dir: Path, corpus: Mapping[str, Any], summary: PrepareSummary):
    """(subject -> normalised template, subject -> faces, the reference faces) from ``rigid_scans/<subject>.obj``."""
    faces_of: dict[str, np.ndarray] = {}
    templates: dict[str, np.ndarray] = {}
    for subj in corpus:
        obj = raw_dir / "rigid_scans" / f"{subj}.obj"
        if not obj.is_file():
            raise DatasetError(f"{obj} not found; BIWI needs the rigid_scans/<subject>.obj template of every subject")
        verts, faces = read_obj(obj)
        if len(faces) == 0:
            raise DatasetError(f"{obj} has no faces; they are needed for the unit-area normalisation")
        faces_of[subj] = faces
        templates[subj] = normalize_biwi(verts, faces)
    counts = {s: len(t) for s, t in templates.items()}
    if len(set(counts.values())) != 1:
        raise DatasetError(f"rigid scans have different vertex counts {counts}; all BIWI scans share one topology")
    ref_subj = next(iter(faces_of))
    ref_faces = faces_of[ref_subj]
    for subj, f in faces_of.items():
        if f.shape != ref_faces.shape or not np.array_equal(f, ref_faces):
            summary.notes.append(f"faces of {subj} differ from {ref_subj}; its own faces are used for its area")
    return templates, faces_of, ref_faces


def _convert_biwi_sequence(raw_dir: Path, layout: DatasetLayout, subj: str, seq: str, src, faces: np.ndarray,
                           num_vertices: int, ss, *, overwrite: bool, sample_rate: int) -> None:
    """One take: its frames into ``vertices_npy/`` (normalised), its audio into ``wav/``; finished files are
    skipped unless ``overwrite``."""
    name = f"{subj}_{seq}"
    vpath = layout.vertices_path(name)
    wpath = layout.wav_dir / f"{name}.wav"
    did = False
    if overwrite or not vpath.exists():
        frames = _frame_sources(src)
        if not frames:
            raise DatasetError(f"{src} holds no frame_XXX.vl files")
        nums = [n for n, _, _ in frames]
        if nums != list(range(nums[0], nums[0] + len(nums))):
            ss.notes.append(f"{seq}: frame numbers have gaps")
        stack = np.stack([parse_vl(read(), label, num_vertices) for _, label, read in frames])
        save_npy(vpath, normalize_biwi(stack, faces))
        ss.written += 1
        ss.frames += len(stack)
        did = True
    if overwrite or not wpath.exists():
        audio_src = _find_audio(raw_dir, subj, seq)
        if audio_src is None:
            ss.notes.append(f"{seq}: no audio")
        else:
            save_wav(wpath, _load_audio_any(audio_src, sample_rate), sample_rate)
            did = True
    if not did:
        ss.skipped += 1


def _write_biwi_manifest(layout: DatasetLayout, summary: PrepareSummary, present: set[str], num_vertices: int,
                         region_entries: dict[str, str], sample_rate: int, all_subjects: bool) -> None:
    """``dataset.json`` with the standard splits restricted to the subjects present; the split sizes."""
    splits = {}
    for key, rule in BIWI_SPLITS.items():
        subs = [s for s in rule["subjects"] if s in present]
        splits[key] = SplitRule.from_json({"subjects": subs, "sentences": rule["sentences"]}, key)
    manifest = Manifest(
        name="biwi",
        fps=float(BIWI_FPS),
        topology="biwi",
        units="normalized",
        num_vertices=int(num_vertices),
        subjects=sorted(present),
        train_subjects=[s for s in BIWI_TRAIN_SUBJECTS if s in present],
        splits=splits,
        regions=region_entries,
        audio_sample_rate=int(sample_rate),
        source={
            "converter": "ptalker data prepare biwi",
            "raw_fps": BIWI_FPS,
            "normalization": "rotate 180 deg about x, centre on frame mean, divide by sqrt(surface area)",
            "generic_template": "mean of the normalised rigid_scans templates",
        },
    )
    missing = [s for s in BIWI_TRAIN_SUBJECTS + BIWI_TEST_B_SUBJECTS if s not in present]
    if missing and all_subjects:
        summary.notes.append(f"subjects not found (left out of the splits): {', '.join(missing)}")
    manifest.save(layout.root)
    names = layout.sequence_names()
    summary.split_sizes = {k: len(r.select(names)) for k, r in splits.items()}
