"""``check_dataset``: a dataset folder checked against the rules of the standard layout.

:func:`check_dataset` is a short driver over named checks, each adding its findings to a
:class:`CheckReport`: the manifest's subject lists, duplicate names, the templates, every
sequence (vertex file, then audio), the splits, the region files and the topology.
docs/datasets.md lists the rules for users.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import PtalkerError
from .layout import (
    AUDIO_SUFFIXES,
    MANIFEST_NAME,
    TEMPLATES_DIR,
    TOPOLOGY_DIR,
    VERTICES_DIR,
    WAV_DIR,
    DatasetError,
    DatasetLayout,
    Manifest,
    split_name,
)


@dataclass
class Issue:
    severity: str  # "error" | "warning"
    kind: str
    where: str
    message: str


@dataclass
class SequenceRow:
    name: str
    subject: str
    frames: int | None = None
    num_vertices: int | None = None
    audio_seconds: float | None = None
    status: str = "ok"


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`."""

    root: Path
    issues: list[Issue] = field(default_factory=list)
    rows: list[SequenceRow] = field(default_factory=list)
    split_sizes: dict[str, int] = field(default_factory=dict)
    manifest: Manifest | None = None

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def kinds(self) -> set[str]:
        return {i.kind for i in self.errors}

    def add(self, severity: str, kind: str, where: str, message: str) -> None:
        self.issues.append(Issue(severity, kind, where, message))

    def tables(self):
        """Rich tables: a per-sequence summary and the list of problems."""
        from rich.table import Table

        seq = Table(title=f"dataset {self.root}", show_lines=False)
        for col in ("sequence", "subject", "frames", "vertices", "audio s", "status"):
            seq.add_column(col, justify="right" if col in ("frames", "vertices", "audio s") else "left")
        for r in self.rows:
            style = {"ok": "green", "warning": "yellow"}.get(r.status, "red")
            seq.add_row(
                r.name, r.subject,
                "-" if r.frames is None else str(r.frames),
                "-" if r.num_vertices is None else str(r.num_vertices),
                "-" if r.audio_seconds is None else f"{r.audio_seconds:.2f}",
                f"[{style}]{r.status}[/{style}]",
            )
        out = [seq]
        if self.split_sizes:
            sp = Table(title="splits")
            sp.add_column("split")
            sp.add_column("sequences", justify="right")
            for k, v in self.split_sizes.items():
                sp.add_row(k, str(v))
            out.append(sp)
        if self.issues:
            it = Table(title=f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
            for col in ("severity", "kind", "where", "problem"):
                it.add_column(col)
            for i in self.issues:
                style = "red" if i.severity == "error" else "yellow"
                it.add_row(f"[{style}]{i.severity}[/{style}]", i.kind, i.where, i.message)
            out.append(it)
        return out


@dataclass(frozen=True)
class _Tolerance:
    seconds: float
    fraction: float

    def allowed(self, duration: float) -> float:
        return max(self.seconds, self.fraction * duration)


def check_dataset(
    root: str | Path,
    *,
    tolerance_s: float = 0.5,
    tolerance_frac: float = 0.10,
    scan_values: bool = True,
) -> CheckReport:
    """Validate a dataset folder in the standard layout.

    Errors: unreadable/missing manifest; missing or malformed templates; vertex files
    with a wrong shape, a vertex count different from the template/manifest, or NaN/inf
    values (``scan_values``); missing audio; frame counts that disagree with the audio
    duration by more than ``max(tolerance_s, tolerance_frac * duration)`` seconds;
    duplicate names (same name with two audio suffixes, names that differ only in
    case, repeated subjects); splits naming unknown subjects or sequences; region files
    missing or out of range. Warnings: audio without motion, subjects not in the
    manifest, empty splits, sequences in more than one of train/val/test.
    """
    root = Path(root)
    layout = DatasetLayout(root)
    report = CheckReport(root=root)
    if not root.is_dir():
        report.add("error", "missing", str(root), "dataset folder does not exist")
        return report
    try:
        manifest = layout.manifest()
    except DatasetError as exc:
        report.add("error", "manifest", MANIFEST_NAME, str(exc))
        return report
    report.manifest = manifest

    check_subject_lists(report, manifest)
    motion = layout.motion_names()
    audio_files = audio_files_by_name(layout)
    check_duplicate_names(report, motion, audio_files)
    if not motion:
        report.add("error", "missing", VERTICES_DIR, "no vertex files (*.npy) found")
    template_nv = check_templates(report, layout, manifest, motion)
    unlisted: set[str] = set()
    for name in motion:
        subject = check_sequence(report, layout, manifest, name, audio_files, template_nv,
                                 _Tolerance(tolerance_s, tolerance_frac), scan_values)
        if subject is not None and subject not in manifest.subjects:
            unlisted.add(subject)
    for name in sorted(set(audio_files) - set(motion)):
        report.add("warning", "missing_vertices", f"{WAV_DIR}/{name}", "audio without a vertex file; ignored")
    for s in sorted(unlisted):
        report.add("warning", "unlisted_subject", s, "subject has sequences but is not in the manifest's 'subjects'")
    check_splits(report, manifest, motion)
    check_regions(report, root, manifest)
    check_topology(report, layout, manifest.num_vertices)
    return report


# --------------------------------------------------------------------------- the checks


def check_subject_lists(report: CheckReport, manifest: Manifest) -> None:
    """Subjects listed twice; training subjects missing from ``subjects``."""
    for key, lst in (("subjects", manifest.subjects), ("train_subjects", manifest.train_subjects)):
        seen: set[str] = set()
        for s in lst:
            if s in seen:
                report.add("error", "duplicate", MANIFEST_NAME, f"subject '{s}' is listed twice in '{key}'")
            seen.add(s)
    for s in manifest.train_subjects:
        if s not in manifest.subjects:
            report.add("error", "unknown_subject", MANIFEST_NAME, f"training subject '{s}' is not in 'subjects'")


def audio_files_by_name(layout: DatasetLayout) -> dict[str, list[Path]]:
    """Sequence name -> its audio files in ``wav/`` (more than one is a duplicate)."""
    audio_files: dict[str, list[Path]] = {}
    if layout.wav_dir.is_dir():
        for p in sorted(layout.wav_dir.iterdir()):
            if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith("."):
                audio_files.setdefault(p.stem, []).append(p)
    return audio_files


def check_duplicate_names(report: CheckReport, motion: list[str], audio_files: dict[str, list[Path]]) -> None:
    """One sequence with several audio files; names that differ only in letter case."""
    for name, paths in audio_files.items():
        if len(paths) > 1:
            report.add("error", "duplicate", f"{WAV_DIR}/{name}",
                       f"{len(paths)} audio files for one sequence ({', '.join(p.name for p in paths)}); keep one")
    for folder, names in ((VERTICES_DIR, motion), (WAV_DIR, sorted(audio_files))):
        lower: dict[str, str] = {}
        for n in names:
            if n.lower() in lower:
                report.add("error", "duplicate", f"{folder}/{n}",
                           f"'{n}' and '{lower[n.lower()]}' differ only in letter case; rename one")
            lower.setdefault(n.lower(), n)


def check_templates(report: CheckReport, layout: DatasetLayout, manifest: Manifest,
                    motion: list[str]) -> dict[str, int | None]:
    """Every subject's template (of the manifest and of the vertex files); returns subject -> its vertex
    count (None when missing or unreadable)."""
    template_nv: dict[str, int | None] = {}
    subjects_seen = set()
    for name in motion:
        try:
            subjects_seen.add(split_name(name)[0])
        except DatasetError:
            pass
    for subject in sorted(set(manifest.subjects) | subjects_seen):
        template_nv[subject] = _check_template(report, layout, manifest.num_vertices, subject,
                                               required=subject in subjects_seen)
    return template_nv


def _check_template(report: CheckReport, layout: DatasetLayout, V: int, subject: str, required: bool) -> int | None:
    path = layout.template_path(subject)
    where = f"{TEMPLATES_DIR}/{subject}.npy"
    if not path.is_file():
        if required:
            report.add("error", "missing_template", where,
                       f"template of subject '{subject}' is missing; add templates/{subject}.npy (V, 3)")
        return None
    try:
        t = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds
        report.add("error", "bad_template", where, f"cannot read: {exc}")
        return None
    if t.ndim == 1 and t.size % 3 == 0:
        t = t.reshape(-1, 3)
    if t.ndim != 2 or t.shape[1] != 3:
        report.add("error", "bad_template", where, f"shape {t.shape}, expected (V, 3)")
        return None
    if t.shape[0] != V:
        report.add("error", "vertex_count", where, f"template has {t.shape[0]} vertices, manifest says {V}")
    if not np.isfinite(t).all():
        report.add("error", "nan", where, "template has NaN or infinite values")
    return t.shape[0]


def check_sequence(report: CheckReport, layout: DatasetLayout, manifest: Manifest, name: str,
                   audio_files: dict[str, list[Path]], template_nv: dict[str, int | None], tolerance: _Tolerance,
                   scan_values: bool) -> str | None:
    """One sequence: its name, its vertex file, its audio; adds its row. Returns its subject (None: bad name)."""
    where = f"{VERTICES_DIR}/{name}.npy"
    try:
        subject, _ = split_name(name)
    except DatasetError as exc:
        report.add("error", "bad_name", where, str(exc))
        report.rows.append(SequenceRow(name, "?", status="error"))
        return None
    row = SequenceRow(name, subject)
    report.rows.append(row)
    n_err = len(report.errors)
    n_warn = len(report.warnings)
    if not _check_vertex_file(report, layout, manifest.num_vertices, name, row, template_nv.get(subject),
                              scan_values):
        row.status = "error"
        return subject
    _check_audio(report, name, row, audio_files, manifest.fps, tolerance)
    if len(report.errors) > n_err or template_nv.get(subject) is None:
        row.status = "error"
    elif len(report.warnings) > n_warn:
        row.status = "warning"
    return subject


def _check_vertex_file(report: CheckReport, layout: DatasetLayout, V: int, name: str, row: SequenceRow,
                       template_nv: int | None, scan_values: bool) -> bool:
    """Shape, dtype, frames, vertex count and (``scan_values``) finiteness; False when it cannot be read."""
    where = f"{VERTICES_DIR}/{name}.npy"
    try:
        arr = np.load(layout.vertices_path(name), mmap_mode="r", allow_pickle=False)
    except Exception as exc:
        report.add("error", "bad_vertices", where, f"cannot read: {exc}")
        return False
    shape = arr.shape
    nv = None
    if arr.ndim == 3 and shape[2] == 3:
        nv = shape[1]
    elif arr.ndim == 2 and shape[1] % 3 == 0:
        nv = shape[1] // 3
    else:
        report.add("error", "bad_vertices", where, f"shape {shape}; expected (T, V, 3) or (T, V*3)")
    if not np.issubdtype(arr.dtype, np.floating):
        report.add("error", "bad_vertices", where, f"dtype {arr.dtype}; expected float32")
    row.frames = int(shape[0]) if arr.ndim >= 1 else None
    row.num_vertices = nv
    if row.frames == 0:
        report.add("error", "bad_vertices", where, "no frames")
    if nv is not None:
        if nv != V:
            report.add("error", "vertex_count", where, f"{nv} vertices per frame, manifest says {V}")
        elif template_nv is not None and nv != template_nv:
            report.add("error", "vertex_count", where, f"{nv} vertices per frame, template has {template_nv}")
        if scan_values and np.issubdtype(arr.dtype, np.floating) and _has_nonfinite(arr):
            report.add("error", "nan", where, "vertices contain NaN or infinite values")
    return True


def _has_nonfinite(arr: np.ndarray, chunk_bytes: int = 64 << 20) -> bool:
    """Scan a (possibly memory-mapped) array for NaN/inf in bounded-memory chunks."""
    if arr.ndim == 0 or arr.shape[0] == 0:
        return False
    row_bytes = max(1, arr.nbytes // max(1, arr.shape[0]))
    step = max(1, chunk_bytes // row_bytes)
    for i in range(0, arr.shape[0], step):
        if not np.isfinite(np.asarray(arr[i : i + step])).all():
            return True
    return False


def _check_audio(report: CheckReport, name: str, row: SequenceRow, audio_files: dict[str, list[Path]], fps: float,
                 tolerance: _Tolerance) -> None:
    """The sequence's audio exists, is readable and lasts as long as its motion (within the tolerance)."""
    from ..audio import audio_info
    from ..errors import AudioError

    if name not in audio_files:
        report.add("error", "missing_audio", f"{VERTICES_DIR}/{name}.npy", f"no audio file {WAV_DIR}/{name}.wav")
        return
    apath = audio_files[name][0]
    try:
        info = audio_info(apath)
    except AudioError as exc:
        report.add("error", "bad_audio", f"{WAV_DIR}/{apath.name}", str(exc))
        return
    row.audio_seconds = info.duration
    if row.frames:
        motion_s = row.frames / fps
        allowed = tolerance.allowed(info.duration)
        if abs(motion_s - info.duration) > allowed:
            report.add(
                "error", "frame_mismatch", name,
                f"{row.frames} frames at {fps:g} fps = {motion_s:.2f} s but audio is "
                f"{info.duration:.2f} s (tolerance {allowed:.2f} s); check the fps or the pairing",
            )


def check_splits(report: CheckReport, manifest: Manifest, motion: list[str]) -> None:
    """Split rules name known sequences and subjects and select something; held-out splits do not overlap train."""
    motion_set = set(motion)
    manifest_subjects = set(manifest.subjects)
    members: dict[str, set[str]] = {}
    for split, rule in manifest.splits.items():
        if rule.names is not None:
            _check_split_names(report, split, rule.names, motion_set, manifest_subjects)
        for s in rule.subjects or ():
            if s not in manifest_subjects:
                report.add("error", "unknown_subject", f"split {split}", f"subject '{s}' is not in 'subjects'")
        sel = rule.select(motion)
        members[split] = set(sel)
        report.split_sizes[split] = len(sel)
        if not sel:
            report.add("warning", "empty_split", f"split {split}", "split selects no sequence")
    held_out = [s for s in members if s != "train" and s.split("-")[0] in ("val", "valid", "test")]
    if "train" in members:
        for s in held_out:
            both = members["train"] & members[s]
            if both:
                report.add("warning", "overlap", f"split {s}",
                           f"{len(both)} sequence(s) also in train (e.g. {sorted(both)[0]})")


def _check_split_names(report: CheckReport, split: str, names: tuple[str, ...], motion_set: set[str],
                       manifest_subjects: set[str]) -> None:
    seen = set()
    for n in names:
        if n in seen:
            report.add("error", "duplicate", f"split {split}", f"'{n}' is listed twice")
        seen.add(n)
        if n not in motion_set:
            report.add("error", "unknown_sequence", f"split {split}", f"sequence '{n}' has no vertex file")
        try:
            subj = split_name(n)[0]
        except DatasetError:
            continue
        if subj not in manifest_subjects:
            report.add("error", "unknown_subject", f"split {split}", f"subject '{subj}' of '{n}' is not in 'subjects'")


def check_regions(report: CheckReport, root: Path, manifest: Manifest) -> None:
    """Every region file of the manifest exists, is readable, non-empty and within the vertex range."""
    from ..mesh import read_region_file

    V = manifest.num_vertices
    for key, rel in manifest.regions.items():
        path = root / rel
        if not path.is_file():
            report.add("error", "missing_region", rel, f"region file of '{key}' is missing")
            continue
        try:
            ids = read_region_file(path)
        except PtalkerError as exc:
            report.add("error", "bad_region", rel, str(exc))
            continue
        if ids.size == 0:
            report.add("error", "bad_region", rel, f"region '{key}' is empty")
        elif ids.min() < 0 or ids.max() >= V:
            report.add("error", "bad_region", rel, f"region '{key}' has vertex ids outside 0..{V - 1}")


def check_topology(report: CheckReport, layout: DatasetLayout, V: int) -> None:
    """``topology/topology.json`` exists (a warning otherwise) and agrees on the vertex count."""
    topo_json = layout.topology_dir / "topology.json"
    if not topo_json.is_file():
        report.add("warning", "missing_topology", TOPOLOGY_DIR,
                   "no topology/ (faces); graph encoder and rendering need it")
        return
    try:
        meta = json.loads(topo_json.read_text())
        if int(meta.get("num_vertices", V)) != V:
            report.add("error", "vertex_count", TOPOLOGY_DIR,
                       f"topology has {meta.get('num_vertices')} vertices, manifest says {V}")
    except (OSError, ValueError) as exc:
        report.add("error", "bad_topology", TOPOLOGY_DIR, f"cannot read topology.json: {exc}")
