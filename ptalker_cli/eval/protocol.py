"""The evaluation protocol: predict (or load) every sequence of a split, compare, aggregate.

:func:`evaluate` animates each sequence with a model through
:class:`ptalker_cli.inference.Animator` (the code behind ``ptalker animate``);
:func:`~ptalker_cli.eval.predictions.evaluate_predictions` scores existing ``.npy``
predictions from any method, with the setup, scoring and records defined here.
Both compare with the same functions (:mod:`ptalker_cli.eval.metrics`) and return an
:class:`EvalResult` holding the protocol, per-sequence and per-subject rows and the
overall numbers. docs/evaluation.md describes every rule; the protocol dictionary
records the ones used for a run.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import PtalkerError
from . import metrics as M
from .closure import ClosureTally
from .paper import tables_for
from .regions import Region, dataset_kind, resolve_region

UNSEEN_STYLES = ("audio", "average", "blend", "voice")
DEFAULT_UNSEEN_STYLE = "audio"

#: Display scaling of the paper (value shown = raw / scale): LVE, FDD.
PAPER_SCALES = {"biwi": (1e-4, 1e-5), "vocaset": (1e-5, 1e-7)}

FRAME_RULE = (
    "prediction and ground truth start at the audio's first sample; when their lengths differ both are "
    "truncated to the shorter one (frames 0..n-1 of each; the longer one's tail is dropped and counted)"
)
UNSEEN_RULES = {
    "audio": "style from the audio alone (no identity style: zero identity weights), the model's unseen-subject mode",
    "average": "mean (per vertex and frame) of the predictions conditioned on each training identity in turn "
               "(the research code's convention of one prediction per training identity, then averaged)",
    "blend": "one prediction with the identity style weights averaged uniformly over the training identities",
    "voice": "one prediction with the identity styles blended by the speaker classifier's posterior on the "
             "utterance's audio (whose voice it sounds like; models with audio_style_speaker_head)",
}
METRIC_DEFINITIONS = {
    "lve": "per frame, max over lip vertices of the squared L2 error; mean over all frames of all sequences "
           "pooled (long sequences weigh more). lve_sequence_mean: mean of the per-sequence LVEs",
    "fdd": "dyn(M) = mean over upper-face vertices of the population std over time of |M_t,v - template_v|^2; "
           "FDD_seq = dyn(GT) - dyn(pred); reported FDD = signed mean over sequences (> 0: prediction less "
           "dynamic than GT); fdd_abs = mean of |FDD_seq|",
    "mve": "mean over frames and all vertices of the L2 error (norm, not squared); frames pooled",
    "closure": "bilabial closure rate and vowel-opening ratio of prediction and ground truth on the inner-lip gap, "
               "where the dataset has phone timings (SynthTalk); see ptalker_cli/eval/closure.py",
    "lrp": "not computed: see docs/evaluation.md (needs a per-dataset lip-reading network; definition not "
           "recoverable)",
}

ProgressFn = Callable[[int, int, str], None]


@dataclass
class SequenceResult:
    """One sequence's comparison (raw data units)."""

    name: str
    subject: str
    seen: bool
    condition: str
    frames_gt: int
    frames_pred: int
    frames: int  # compared
    dropped_pred: int
    dropped_gt: int
    lve: float | None
    mve: float
    fdd: float | None
    dyn_gt: float | None
    dyn_pred: float | None
    lve_frame_sum: float | None = None
    mve_frame_sum: float = 0.0
    prediction: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EvalResult:
    """What an evaluation produced; :mod:`ptalker_cli.eval.report` prints and writes it."""

    protocol: dict[str, Any]
    sequences: list[SequenceResult]
    subjects: dict[str, dict[str, Any]]
    overall: dict[str, Any]
    paper_tables: list[Any] = field(default_factory=list)

    @property
    def scales(self) -> tuple[float, float]:
        u = self.protocol["units"]
        return float(u["lve_scale"]), float(u["fdd_scale"])

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "overall": self.overall,
            "subjects": self.subjects,
            "sequences": [s.to_json() for s in self.sequences],
            "paper_reference": {
                "note": "the PTalker paper's numbers, NOT ours; in the paper's display units",
                "tables": [t.to_json() for t in self.paper_tables],
            },
        }


# --------------------------------------------------------------------------- scoring


def score_sequence(
    name: str,
    subject: str,
    pred,
    gt,
    template,
    lip: Region,
    upper: Region,
    *,
    seen: bool,
    condition: str,
    prediction: str = "",
) -> tuple[SequenceResult, np.ndarray, np.ndarray]:
    """Compare one prediction with its ground truth; returns the row and the truncated pair."""
    p, g, cut = M.truncate(pred, gt)
    if cut.frames == 0:
        raise PtalkerError(f"{name}: no frames to compare (prediction {p.shape[0] + cut.dropped_pred}, "
                           f"ground truth {g.shape[0] + cut.dropped_gt} frames)")
    lve_frames = M.lve_per_frame(p, g, lip.ids) if lip.ids is not None else None
    mve_frames = M.mve_per_frame(p, g)
    dyn_gt = dyn_pred = fdd = None
    if upper.ids is not None:
        dyn_gt = M.dynamics(g, template, upper.ids)
        dyn_pred = M.dynamics(p, template, upper.ids)
        fdd = dyn_gt - dyn_pred
    row = SequenceResult(
        name=name, subject=subject, seen=seen, condition=condition,
        frames_gt=cut.frames + cut.dropped_gt, frames_pred=cut.frames + cut.dropped_pred, frames=cut.frames,
        dropped_pred=cut.dropped_pred, dropped_gt=cut.dropped_gt,
        lve=None if lve_frames is None else float(lve_frames.mean()),
        mve=float(mve_frames.mean()), fdd=fdd, dyn_gt=dyn_gt, dyn_pred=dyn_pred,
        lve_frame_sum=None if lve_frames is None else float(lve_frames.sum()),
        mve_frame_sum=float(mve_frames.sum()), prediction=prediction,
    )
    return row, p, g


def aggregate(rows: list[SequenceResult]) -> dict[str, Any]:
    """Overall numbers of a set of rows (pooled LVE/MVE, signed and absolute FDD)."""
    if not rows:
        return {"sequences": 0}
    frames = sum(r.frames for r in rows)
    out: dict[str, Any] = {
        "sequences": len(rows),
        "frames": frames,
        "frames_dropped": sum(r.dropped_pred + r.dropped_gt for r in rows),
        "sequences_truncated": sum(1 for r in rows if r.dropped_pred or r.dropped_gt),
        "lve": None, "lve_sequence_mean": None,
        "fdd": None, "fdd_abs": None, "dyn_gt": None, "dyn_pred": None,
        "mve": sum(r.mve_frame_sum for r in rows) / frames,
        "mve_sequence_mean": float(np.mean([r.mve for r in rows])),
    }
    if all(r.lve is not None for r in rows):
        out["lve"] = sum(r.lve_frame_sum for r in rows) / frames  # pooled over all frames
        out["lve_sequence_mean"] = float(np.mean([r.lve for r in rows]))
    if all(r.fdd is not None for r in rows):
        out["fdd"] = M.fdd_mean([r.fdd for r in rows])
        out["fdd_abs"] = M.fdd_abs_mean([r.fdd for r in rows])
        out["dyn_gt"] = float(np.mean([r.dyn_gt for r in rows]))
        out["dyn_pred"] = float(np.mean([r.dyn_pred for r in rows]))
    return out


# --------------------------------------------------------------------------- setup


@dataclass
class EvalSetup:
    root: Path
    dataset: Any  # TalkingHeadDataset
    split: str
    names: list[str]
    kind: str | None
    lip: Region
    upper: Region
    topology: Any  # mesh.Topology or None (faces, for videos)
    notes: list[str]


def default_split(manifest) -> str:
    for s in ("test-a", "test"):
        if s in manifest.splits:
            return s
    known = ", ".join(sorted(manifest.splits)) or "none"
    raise PtalkerError(f"the dataset has no 'test-a' or 'test' split; choose one with --split (known splits: {known})")


def load_setup(dataset_root, split, lip_region, upper_face_region) -> EvalSetup:
    from ..data.dataset import TalkingHeadDataset
    from ..data.layout import DatasetLayout
    from ..mesh import Topology

    root = Path(dataset_root).expanduser()
    if not root.is_dir():
        raise PtalkerError(f"dataset folder {root} does not exist")
    layout = DatasetLayout(root)
    manifest = layout.manifest()
    split = split or default_split(manifest)
    ds = TalkingHeadDataset(root, split, load_audio=False, require_audio=False)
    if not ds.names:
        raise PtalkerError(f"split '{split}' of {root} selects no sequence; check the split rule and vertices_npy/")
    kind = dataset_kind(manifest.name, manifest.topology, manifest.num_vertices)
    topology = None
    topo_regions: dict[str, np.ndarray] = {}
    notes: list[str] = []
    if (layout.topology_dir / "topology.json").is_file():
        topology = Topology.load_saved(layout.topology_dir)
        topo_regions = dict(topology.regions)
    regions = {}
    for name, choice in (("lip", lip_region), ("upper_face", upper_face_region)):
        regions[name] = resolve_region(
            name, manifest.num_vertices, choice=choice, root=root, manifest_regions=manifest.regions,
            topology_regions=topo_regions, kind=kind)
    if regions["lip"].ids is None:
        notes.append("no lip region: LVE not computed (give --lip-region or list regions.lip in dataset.json)")
    if regions["upper_face"].ids is None:
        hint = " (none ships for FLAME/VOCASET; see docs/evaluation.md)" if kind == "vocaset" else ""
        notes.append(f"no upper-face region: FDD not computed{hint}")
    if kind == "vocaset":
        notes.append("VOCASET: the paper does not document its lip / upper-face lists; LVE and FDD depend on the "
                     "region choice recorded here and are not strictly comparable with the paper's")
        if abs(manifest.fps - 30.0) > 1e-6:
            notes.append(f"VOCASET at {manifest.fps:g} fps; the paper's protocol uses 30 fps (every second frame)")
    if topology is not None:  # the faces, with the regions this evaluation uses
        topology = Topology(topology.name, topology.vertices, topology.faces,
                            {k: r.ids for k, r in regions.items() if r.ids is not None}, topology.units)
    split_label = split if isinstance(split, str) else "custom"
    return EvalSetup(root, ds, split_label, list(ds.names), kind, regions["lip"], regions["upper_face"], topology,
                  notes)


def _units(setup: EvalSetup) -> dict[str, Any]:
    m = setup.dataset.manifest
    if setup.kind in PAPER_SCALES:
        lve_s, fdd_s = PAPER_SCALES[setup.kind]
        label = "BIWI" if setup.kind == "biwi" else "VOCASET"
        scaling = f"paper ({label}): LVE x1e{round(math.log10(lve_s))}, FDD x1e{round(math.log10(fdd_s))}"
    else:
        lve_s, fdd_s = 1.0, 1.0
        scaling = "raw: no paper scaling for this dataset (not BIWI or VOCASET)"
    return {
        "data": m.units,
        "lve_scale": lve_s,
        "fdd_scale": fdd_s,
        "scaling": scaling,
        "display": "displayed LVE/FDD = raw value / scale; raw values are squared data units",
        "mve": f"data units ({m.units}), unscaled",
    }


def protocol_record(setup: EvalSetup, mode: str, source: dict[str, Any], conditions: dict[str, str],
              unseen_rule: str, seen_rule: str, rows: list[SequenceResult], extra_notes: list[str]) -> dict[str, Any]:
    from .. import __version__

    m = setup.dataset.manifest
    subjects = sorted({r.subject for r in rows})
    return {
        "ptalker_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "source": source,
        "dataset": {
            "root": str(setup.root), "name": m.name, "kind": setup.kind or "unknown", "topology": m.topology,
            "fps": m.fps, "units": m.units, "num_vertices": m.num_vertices,
            "train_subjects": list(m.train_subjects),
        },
        "split": {"name": setup.split, "sequences": len(rows), "subjects": subjects,
                  "rule": m.splits[setup.split].to_json() if setup.split in m.splits else sorted(setup.names)},
        "conditioning": {"seen": seen_rule, "unseen": unseen_rule, "per_sequence": conditions},
        "template": "the dataset's templates/<subject>.npy (the ground truth's own neutral face) for every "
                    "sequence; FDD displacements are taken from it",
        "frames": {
            "rule": FRAME_RULE,
            "dropped_total": sum(r.dropped_pred + r.dropped_gt for r in rows),
            "dropped_pred": sum(r.dropped_pred for r in rows),
            "dropped_gt": sum(r.dropped_gt for r in rows),
            "sequences_truncated": sum(1 for r in rows if r.dropped_pred or r.dropped_gt),
        },
        "regions": {"lip": setup.lip.to_json(), "upper_face": setup.upper.to_json()},
        "units": _units(setup),
        "metrics": dict(METRIC_DEFINITIONS),
        "notes": setup.notes + extra_notes,
    }


def finish_result(setup: EvalSetup, rows: list[SequenceResult], protocol: dict[str, Any],
                  closure: ClosureTally | None = None) -> EvalResult:
    subjects: dict[str, dict[str, Any]] = {}
    for subj in sorted({r.subject for r in rows}):
        mine = [r for r in rows if r.subject == subj]
        subjects[subj] = {"seen": mine[0].seen, **aggregate(mine)}
    overall = aggregate(rows)
    if any(r.seen for r in rows) and any(not r.seen for r in rows):
        overall["seen"] = aggregate([r for r in rows if r.seen])
        overall["unseen"] = aggregate([r for r in rows if not r.seen])
    if closure is not None and closure.summary() is not None:
        overall["closure"] = closure.summary()
    return EvalResult(protocol, rows, subjects, overall, tables_for(setup.kind, setup.split))


def render_comparison(videos_dir: Path | None, name: str, pred: np.ndarray, gt: np.ndarray, fps: float,
                      setup: EvalSetup, audio: Path | None, notes: list[str], state: dict) -> None:
    """Optional evaluation video; disables itself (with a note) when the renderer is unavailable."""
    if videos_dir is None or state.get("off"):
        return
    if setup.topology is None:
        notes.append("videos skipped: the dataset has no topology/ (faces)")
        state["off"] = True
        return
    try:
        from ..export import render_video
        from ..motion import Motion
    except ImportError as exc:
        notes.append(f"videos skipped: renderer not available ({exc})")
        state["off"] = True
        return
    try:
        render_video(Motion(pred.astype(np.float32), fps, setup.topology.name),
                     setup.topology, Path(videos_dir) / f"{name}.mp4",
                     audio=audio if audio is not None and audio.exists() else None,
                     side_by_side=Motion(gt.astype(np.float32), fps, setup.topology.name),
                     error_heatmap=True, force=True)
    except (PtalkerError, ImportError, TypeError) as exc:
        notes.append(f"videos skipped: {exc}")
        state["off"] = True


# --------------------------------------------------------------------------- model mode


def score_split(setup: EvalSetup, predict: Callable[[str, str], tuple[np.ndarray, str, str]], train,
                videos_dir: str | Path | None, notes: list[str],
                progress: ProgressFn | None = None) -> tuple[list[SequenceResult], dict[str, str], ClosureTally]:
    """The loop of both eval modes: each sequence of the split in order, predicted and scored.

    ``predict(name, subject)`` gives ``(prediction (T, V, 3), condition, what the prediction is)``;
    it is scored against the ground truth (:func:`score_sequence`, seen = ``subject in train``),
    added to the closure tally and, with ``videos_dir``, rendered beside it. Returns the rows, each
    sequence's condition and the closure tally.
    """
    manifest = setup.dataset.manifest
    rows: list[SequenceResult] = []
    conditions: dict[str, str] = {}
    state: dict = {}
    closure = ClosureTally(setup.root, manifest.fps, manifest.num_vertices)
    total = len(setup.names)
    for i, name in enumerate(setup.names):
        if progress:
            progress(i, total, name)
        subject = setup.dataset.subjects[i]
        pred, condition, label = predict(name, subject)
        row, p, g = score_sequence(name, subject, pred, setup.dataset.vertices(name), setup.dataset.template(subject),
                                   setup.lip, setup.upper, seen=subject in train, condition=condition,
                                   prediction=label)
        rows.append(row)
        closure.add(name, p, g)
        conditions[name] = condition
        render_comparison(Path(videos_dir) if videos_dir else None, name, p, g, manifest.fps, setup,
                          setup.dataset.layout.wav_path(name), notes, state)
    if progress:
        progress(total, total, "")
    return rows, conditions, closure


def evaluate(
    model,
    dataset_root: str | Path,
    split: str | None = None,
    *,
    unseen_style: str = DEFAULT_UNSEEN_STYLE,
    lip_region: str | Path | None = None,
    upper_face_region: str | Path | None = None,
    device: str | None = None,
    save_predictions: str | Path | None = None,
    videos_dir: str | Path | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Predict every sequence of ``split`` with ``model`` and score it.

    Args:
        model: a :class:`~ptalker_cli.model.network.PTalker`, or a name / folder for
            :func:`~ptalker_cli.inference.load_model`.
        split: a split of the dataset manifest (default ``test-a``, else ``test``).
        unseen_style: conditioning of subjects that are not in the model's
            ``train_subjects``: ``audio`` (default), ``average`` or ``blend`` (see
            :data:`UNSEEN_RULES`). Seen subjects always get their own identity style.
        lip_region, upper_face_region: override the regions (path, shipped choice, ``none``).
        save_predictions: folder to write ``<sequence>.npy`` predictions to (re-score
            them later with :func:`~ptalker_cli.eval.predictions.evaluate_predictions`).
        videos_dir: folder for evaluation videos (prediction beside ground truth, error
            heat map); skipped with a note when the renderer is unavailable.
        progress: called as ``progress(done, total, sequence_name)``.
    """
    from ..inference import Animator, load_model
    from ..motion import Motion

    if unseen_style not in UNSEEN_STYLES:
        raise PtalkerError(f"unknown unseen style '{unseen_style}'; choose one of: {', '.join(UNSEEN_STYLES)}")
    spec = str(model) if not hasattr(model, "config") else None
    if spec is not None:
        model = load_model(spec, device or "auto")
    animator = Animator(model, device)
    cfg = model.config
    setup = load_setup(dataset_root, split, lip_region, upper_face_region)
    manifest = setup.dataset.manifest
    train = list(cfg.train_subjects)
    unseen_subjects = sorted({s for s in setup.dataset.subjects if s not in train})
    _check_model_fits(model, setup, unseen_style, unseen_subjects)
    extra_notes: list[str] = []
    if list(manifest.train_subjects) != train and set(manifest.train_subjects) & set(train):
        extra_notes.append(f"the dataset's train_subjects order {list(manifest.train_subjects)} differs from "
                           f"the model's {train}; identities are matched by name")
    save_dir = Path(save_predictions) if save_predictions is not None else None

    def predict(name: str, subject: str) -> tuple[np.ndarray, str, str]:
        tmpl_topo = model.topology.with_vertices(setup.dataset.template(subject))
        seen = subject in train
        pred, condition = _predict(animator, setup.dataset.layout.wav_path(name), subject if seen else None,
                                   unseen_style, train, tmpl_topo)
        if save_dir is not None:
            Motion(np.asarray(pred, dtype=np.float32), float(cfg.fps), manifest.topology,
                   {"subject": subject, "condition": condition, "model": cfg.name}).save(save_dir / f"{name}.npy")
        return pred, condition, "model"

    rows, conditions, closure = score_split(setup, predict, train, videos_dir, extra_notes, progress)
    source = {
        "model": spec or cfg.name, "model_name": cfg.name, "train_subjects": train,
        "template_subjects": list(cfg.template_subjects), "fps": cfg.fps,
        "inference": "ptalker_cli.inference.Animator (the code of 'ptalker animate')",
    }
    if save_dir is not None:
        source["predictions_saved_to"] = str(save_dir)
    seen_rule = "the subject's own identity style (its one-hot in the model's train_subjects)"
    unseen_rule = f"{unseen_style}: {UNSEEN_RULES[unseen_style]}"
    if not unseen_subjects:
        unseen_rule += " (no unseen subject in this split)"
    protocol = protocol_record(setup, "model", source, conditions, unseen_rule, seen_rule, rows, extra_notes)
    protocol["conditioning"]["unseen_style"] = unseen_style
    return finish_result(setup, rows, protocol, closure)


def _check_model_fits(model, setup: EvalSetup, unseen_style: str, unseen_subjects: list[str]) -> None:
    """The model animates the dataset's mesh at its frame rate, and can condition its unseen subjects;
    every sequence has audio."""
    cfg, manifest = model.config, setup.dataset.manifest
    if cfg.num_vertices != manifest.num_vertices:
        raise PtalkerError(f"the model animates {cfg.num_vertices} vertices but the dataset has "
                           f"{manifest.num_vertices}; evaluate a model trained on this mesh")
    if abs(float(cfg.fps) - float(manifest.fps)) > 1e-6:
        raise PtalkerError(f"the model runs at {cfg.fps:g} fps but the dataset at {manifest.fps:g} fps; "
                           "frames would not correspond")
    if unseen_subjects and unseen_style in ("average", "blend") and not cfg.train_subjects:
        raise PtalkerError("the model has no training identities to average; use --unseen-style audio")
    if unseen_subjects and unseen_style == "voice" and not model.has_speaker_head:
        raise PtalkerError("--unseen-style voice needs a model with a speaker head on its audio style code "
                           "(audio_style_speaker_head); use audio, average or blend")
    layout = setup.dataset.layout
    missing_audio = [n for n in setup.names if not layout.wav_path(n).exists()]
    if missing_audio:
        raise PtalkerError(f"{len(missing_audio)} sequence(s) of split '{setup.split}' have no audio in "
                           f"{layout.wav_dir} (e.g. {missing_audio[0]}); the model needs it")


def _predict(animator, wav: Path, seen_subject: str | None, unseen_style: str, train: list[str],
             template) -> tuple[np.ndarray, str]:
    """(prediction, condition) of one sequence: a seen subject's own identity style, else by ``unseen_style``."""
    if seen_subject is not None:
        res = animator.animate(wav, subject=seen_subject, template=template)
        return res.motion.vertices, seen_subject
    if unseen_style == "audio":
        # subject=None with empty style weights: the audio-only style (zero identity weights),
        # for any subject name, known to the model or not
        return animator.animate(wav, style={}, template=template).motion.vertices, "audio"
    if unseen_style == "average":
        preds = [animator.animate(wav, style=s, template=template).motion.vertices for s in train]
        return np.mean(np.stack(preds), axis=0), f"average({','.join(train)})"
    if unseen_style == "voice":
        res = animator.animate(wav, style="voice", template=template)
        return res.motion.vertices, res.style
    w = 1.0 / len(train)
    return animator.animate(wav, style={s: w for s in train}, template=template).motion.vertices, "blend(uniform)"


__all__ = [
    "DEFAULT_UNSEEN_STYLE",
    "EvalResult",
    "PAPER_SCALES",
    "SequenceResult",
    "UNSEEN_RULES",
    "UNSEEN_STYLES",
    "aggregate",
    "default_split",
    "evaluate",
    "score_sequence",
]
