"""Scoring existing predictions from any method: one ``.npy`` per sequence of a split.

:func:`evaluate_predictions` finds each sequence's file (``<sequence>.npy``, or the
research code's ``<sequence>_condition_<subject>.npy``), checks it and compares it with
the same protocol as :func:`~ptalker_cli.eval.protocol.evaluate`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import PtalkerError
from . import metrics as M
from .protocol import EvalResult, ProgressFn, finish_result, load_setup, protocol_record, score_split

_COND = "_condition_"


def index_predictions(pred_dir: Path, names: list[str]) -> dict[str, dict[str, Path]]:
    """``{sequence: {"": path of <seq>.npy, subject: path of <seq>_condition_<subject>.npy}}``."""
    wanted = set(names)
    out: dict[str, dict[str, Path]] = {}
    for p in sorted(pred_dir.glob("*.npy")):
        stem = p.stem
        if stem in wanted:
            out.setdefault(stem, {})[""] = p
            continue
        for m in re.finditer(re.escape(_COND), stem):
            seq, cond = stem[: m.start()], stem[m.end():]
            if seq in wanted and cond:
                out.setdefault(seq, {})[cond] = p
                break
    return out


def _load_prediction(path: Path, num_vertices: int) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises several kinds
        raise PtalkerError(f"cannot read prediction {path}: {exc}") from None
    try:
        m = M.as_motion(arr, f"prediction {path}")
    except M.MetricError as exc:
        raise PtalkerError(str(exc)) from None
    if m.shape[1] != num_vertices:
        raise PtalkerError(f"prediction {path} has {m.shape[1]} vertices per frame but the dataset has "
                           f"{num_vertices}; predictions must be absolute vertex positions on the dataset's mesh")
    if not np.isfinite(m).all():
        raise PtalkerError(f"prediction {path} has NaN or infinite values")
    return m


def evaluate_predictions(
    pred_dir: str | Path,
    dataset_root: str | Path,
    split: str | None = None,
    *,
    lip_region: str | Path | None = None,
    upper_face_region: str | Path | None = None,
    videos_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Score existing predictions: one ``.npy`` per sequence of ``split`` in ``pred_dir``.

    Files are absolute vertex positions, (T, V, 3) or (T, V*3), in the dataset's units,
    frame of reference and frame rate. Per sequence the file used is

    1. ``<sequence>.npy`` when present;
    2. else, for a subject in the dataset's ``train_subjects`` (seen),
       ``<sequence>_condition_<subject>.npy`` (the research code's naming);
    3. else, for an unseen subject, the mean of all ``<sequence>_condition_*.npy``
       (the research code writes one per training identity).

    A sequence with none of these is an error that names it.
    """
    pred_dir = Path(pred_dir).expanduser()
    if not pred_dir.is_dir():
        raise PtalkerError(f"predictions folder {pred_dir} does not exist")
    setup = load_setup(dataset_root, split, lip_region, upper_face_region)
    manifest = setup.dataset.manifest
    train = set(manifest.train_subjects)
    index = index_predictions(pred_dir, setup.names)
    chosen: dict[str, tuple[list[Path], str]] = {}
    missing: list[str] = []
    for name, subject in zip(setup.names, setup.dataset.subjects):
        files = index.get(name, {})
        if "" in files:
            chosen[name] = ([files[""]], "file")
        elif subject in train and subject in files:
            chosen[name] = ([files[subject]], subject)
        elif subject not in train and files:
            conds = sorted(files)
            chosen[name] = ([files[c] for c in conds], f"average({','.join(conds)})")
        else:
            missing.append(name)
    if missing:
        shown = ", ".join(missing[:5]) + (f", ... ({len(missing)} in all)" if len(missing) > 5 else "")
        raise PtalkerError(
            f"no prediction in {pred_dir} for {len(missing)} of {len(setup.names)} sequence(s) of split "
            f"'{setup.split}': {shown}; expected <sequence>.npy (or <sequence>_condition_<subject>.npy)")
    def predict(name: str, subject: str) -> tuple[np.ndarray, str, str]:
        paths, condition = chosen[name]
        preds = [_load_prediction(p, manifest.num_vertices) for p in paths]
        if len({p.shape[0] for p in preds}) > 1:
            n = min(p.shape[0] for p in preds)
            preds = [p[:n] for p in preds]
        pred = preds[0] if len(preds) == 1 else np.mean(np.stack(preds), axis=0)
        return pred, condition, ", ".join(x.name for x in paths)

    notes: list[str] = []
    rows, conditions, closure = score_split(setup, predict, train, videos_dir, notes, progress)
    used = {Path(x) for paths, _ in chosen.values() for x in paths}
    unused = sorted(p.name for p in pred_dir.glob("*.npy") if p not in used)
    if unused:
        notes.append(f"{len(unused)} .npy file(s) in {pred_dir} were not used (e.g. {unused[0]})")
    source = {"predictions": str(pred_dir), "files_used": len(used)}
    seen_rule = ("<sequence>.npy, else <sequence>_condition_<subject>.npy (the subject's own identity; "
                 "seen = in the dataset's train_subjects)")
    unseen_rule = "<sequence>.npy, else the mean of all <sequence>_condition_*.npy files"
    protocol = protocol_record(setup, "predictions", source, conditions, unseen_rule, seen_rule, rows, notes)
    return finish_result(setup, rows, protocol, closure)


__all__ = ["evaluate_predictions", "index_predictions"]
