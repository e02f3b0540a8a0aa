"""End-to-end evaluation of the tiny model, --pred mode, regions, paper scaling and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import eval_cli

from ptalker_cli.data._common import shipped_region
from ptalker_cli.data.layout import DatasetLayout, Manifest, SplitRule
from ptalker_cli.data.testing import make_fake_dataset
from ptalker_cli.errors import PtalkerError
from ptalker_cli.eval import evaluate, evaluate_predictions, write_results
from ptalker_cli.eval import metrics as M
from ptalker_cli.eval.paper import TABLE1, TABLE2, TABLE4
from ptalker_cli.eval.regions import dataset_kind, resolve_region
from ptalker_cli.eval.report import RESULT_FILES


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """The tiny model's subjects: S1 S2 S3 trained, U1 has a template in the model, X9 is new to it."""
    root = tmp_path_factory.mktemp("evaldata") / "data"
    make_fake_dataset(root, subjects=("S1", "S2", "S3", "U1", "X9"), sentences=("s01", "s02"),
                      train_subjects=("S1", "S2", "S3"))
    m = Manifest.load(root)
    m.splits["test-a"] = SplitRule.from_json({"subjects": ["S1", "S2"], "sentences": [2]})
    m.splits["mixed"] = SplitRule.from_json(["S1_s02", "U1_s01", "X9_s02"])
    m.splits["one"] = SplitRule.from_json(["X9_s02"])
    m.save(root)
    return root


@pytest.fixture(scope="module")
def model_run(tiny, dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("evalout")
    result = evaluate(tiny, dataset, "mixed", save_predictions=out / "predictions")
    write_results(result, out)
    return result, out


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_end_to_end_tiny_model_writes_json_and_csv(model_run):
    result, out = model_run
    for name in RESULT_FILES:
        assert (out / name).is_file(), name
    data = json.loads((out / "results.json").read_text())
    proto = data["protocol"]
    assert proto["split"] == {"name": "mixed", "sequences": 3, "subjects": ["S1", "U1", "X9"],
                              "rule": ["S1_s02", "U1_s01", "X9_s02"]}
    assert proto["conditioning"]["per_sequence"] == {"S1_s02": "S1", "U1_s01": "audio", "X9_s02": "audio"}
    assert proto["conditioning"]["unseen_style"] == "audio"
    assert proto["regions"]["lip"]["vertices"] == 36 and "manifest" in proto["regions"]["lip"]["source"]
    assert proto["regions"]["upper_face"]["vertices"] == 80
    assert proto["units"]["lve_scale"] == 1.0 and "raw" in proto["units"]["scaling"]
    # GT has 10 + i frames, the tiny model makes one frame less from the same audio: truncated and counted
    assert proto["frames"]["dropped_total"] == 3 and proto["frames"]["dropped_gt"] == 3
    assert data["paper_reference"]["tables"] == []
    seqs = _read_csv(out / "sequences.csv")
    assert [r["sequence"] for r in seqs] == ["S1_s02", "U1_s01", "X9_s02"]
    assert [r["seen"] for r in seqs] == ["True", "False", "False"]
    subjects = _read_csv(out / "subjects.csv")
    assert [r["subject"] for r in subjects] == ["S1", "U1", "X9"]
    overall = _read_csv(out / "overall.csv")
    assert [r["group"] for r in overall] == ["all", "seen", "unseen"]
    # overall LVE pools frames; equals the frame-weighted mean of the per-sequence values
    frames = np.array([float(r["frames"]) for r in seqs])
    lves = np.array([float(r["lve"]) for r in seqs])
    assert float(overall[0]["lve"]) == pytest.approx((frames * lves).sum() / frames.sum())
    assert float(overall[0]["fdd"]) == pytest.approx(np.mean([float(r["fdd"]) for r in seqs]))
    assert all(np.isfinite(float(r[k])) and float(r["lve"]) > 0 for r in seqs for k in ("lve", "fdd", "mve"))


def test_predictions_come_from_the_animator_with_the_documented_conditioning(tiny, dataset, model_run):
    from ptalker_cli.inference import Animator

    _, out = model_run
    animator = Animator(tiny)
    layout = DatasetLayout(dataset)
    for name, subject in (("S1_s02", "S1"), ("U1_s01", "U1")):
        tmpl = tiny.topology.with_vertices(layout.load_template(subject))
        # seen: own identity style; U1 is unseen (template only): the model's audio-only mode
        ref = animator.animate(layout.wav_path(name), subject=subject, template=tmpl).motion.vertices
        np.testing.assert_allclose(np.load(out / "predictions" / f"{name}.npy"), ref, atol=1e-6)


def test_unseen_style_rules(tiny, dataset, monkeypatch):
    """average = mean of one prediction per training identity; blend = one uniform blend (spied Animator)."""
    from ptalker_cli.inference import AnimateResult, Animator
    from ptalker_cli.motion import Motion

    calls = []

    def fake_animate(self, audio, subject=None, style=None, template=None, **kw):
        calls.append((subject, style))
        level = {"S1": 1.0, "S2": 2.0, "S3": 6.0}.get(style, 0.5) if isinstance(style, str) else 0.5
        verts = np.repeat(template.vertices[None], 12, axis=0) + level
        return AnimateResult(Motion(verts, 25.0), subject or "", str(style), template)

    monkeypatch.setattr(Animator, "animate", fake_animate)
    res = evaluate(tiny, dataset, ["X9_s01", "S2_s01"], unseen_style="average")
    assert calls == [("S2", None), (None, "S1"), (None, "S2"), (None, "S3")]  # sorted: S2_s01, X9_s01
    assert [s.condition for s in res.sequences] == ["S2", "average(S1,S2,S3)"]
    gt = np.load(DatasetLayout(dataset).vertices_path("X9_s01"))
    tmpl = DatasetLayout(dataset).load_template("X9")
    p, g, _ = M.truncate(np.repeat(tmpl[None], 12, axis=0) + 3.0, gt)  # mean of 1, 2, 6
    assert res.sequences[1].mve == pytest.approx(M.mve(p, g))
    calls.clear()
    res = evaluate(tiny, dataset, ["X9_s01"], unseen_style="blend")
    assert len(calls) == 1 and calls[0][1] == pytest.approx({"S1": 1 / 3, "S2": 1 / 3, "S3": 1 / 3})
    assert res.sequences[0].condition == "blend(uniform)"
    calls.clear()
    res = evaluate(tiny, dataset, ["X9_s01"])
    assert calls == [(None, {})] and res.sequences[0].condition == "audio"
    with pytest.raises(PtalkerError, match="unseen style"):
        evaluate(tiny, dataset, "mixed", unseen_style="nope")
    with pytest.raises(PtalkerError, match="speaker head"):  # tiny has none
        evaluate(tiny, dataset, ["X9_s01"], unseen_style="voice")


def test_pred_mode_rescores_saved_predictions_identically(dataset, model_run):
    result, out = model_run
    again = evaluate_predictions(out / "predictions", dataset, "mixed")
    for a, b in zip(result.sequences, again.sequences):
        assert (a.name, a.frames, a.dropped_gt) == (b.name, b.frames, b.dropped_gt)
        assert a.lve == pytest.approx(b.lve) and a.fdd == pytest.approx(b.fdd) and a.mve == pytest.approx(b.mve)
    assert again.protocol["mode"] == "predictions"


def test_pred_mode_on_hand_made_predictions(dataset, tmp_path):
    layout = DatasetLayout(dataset)
    o = np.array([0.0, 0.3, 0.4])  # |o| = 0.5
    pred_dir = tmp_path / "preds"
    pred_dir.mkdir()
    for name in ("S1_s02", "S2_s02"):  # test-a: seen subjects, research-code names and (T, V*3) layout
        gt = np.load(layout.vertices_path(name))
        subject = name.split("_")[0]
        np.save(pred_dir / f"{name}_condition_{subject}.npy", (gt + o).reshape(len(gt), -1))
        np.save(pred_dir / f"{name}_condition_S3.npy", gt + 10.0)  # another identity: must be ignored
    res = evaluate_predictions(pred_dir, dataset, "test-a")
    assert [s.condition for s in res.sequences] == ["S1", "S2"]
    assert res.overall["lve"] == pytest.approx(0.25)
    assert res.overall["mve"] == pytest.approx(0.5)
    assert res.overall["frames_dropped"] == 0
    # unseen subjects: the mean over the condition files (here +o and -o: exactly the GT)
    for name in ("U1_s01", "U1_s02", "X9_s01", "X9_s02"):
        gt = np.load(layout.vertices_path(name))
        np.save(pred_dir / f"{name}_condition_S1.npy", gt + o)
        np.save(pred_dir / f"{name}_condition_S2.npy", gt - o)
    res = evaluate_predictions(pred_dir, dataset, "test")
    assert {s.condition for s in res.sequences} == {"average(S1,S2)"}
    assert res.overall["lve"] == pytest.approx(0.0, abs=1e-10)
    assert res.overall["fdd"] == pytest.approx(0.0, abs=1e-10)
    # a plain <sequence>.npy wins over condition files
    gt = np.load(layout.vertices_path("X9_s01"))
    np.save(pred_dir / "X9_s01.npy", gt)
    res = evaluate_predictions(pred_dir, dataset, ["X9_s01"])
    assert res.sequences[0].condition == "file" and res.sequences[0].mve == 0.0


def test_pred_mode_errors(dataset, tmp_path):
    layout = DatasetLayout(dataset)
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "S1_s02.npy", np.load(layout.vertices_path("S1_s02")))
    with pytest.raises(PtalkerError, match=r"no prediction .* 1 of 2 .*S2_s02"):
        evaluate_predictions(tmp_path / "p", dataset, "test-a")
    with pytest.raises(PtalkerError, match="known splits: mixed, one, test, test-a, train, val"):
        evaluate_predictions(tmp_path / "p", dataset, "test-b")
    np.save(tmp_path / "p" / "S2_s02.npy", np.zeros((5, 7, 3)))
    with pytest.raises(PtalkerError, match="7 vertices"):
        evaluate_predictions(tmp_path / "p", dataset, "test-a")
    with pytest.raises(PtalkerError, match="does not exist"):
        evaluate_predictions(tmp_path / "nope", dataset, "test-a")


def test_shipped_regions_per_topology():
    assert dataset_kind("biwi", "biwi", 23370) == "biwi"
    assert dataset_kind("vocaset", "flame", 5023) == "vocaset"
    assert dataset_kind("mine", "ict", 14062) == "ict"
    assert dataset_kind("fake", "tiny", 192) is None
    biwi_lip = resolve_region("lip", 23370, kind="biwi")
    biwi_up = resolve_region("upper_face", 23370, kind="biwi")
    assert (biwi_lip.size, biwi_up.size) == (4996, 7784) and "lve.txt" in biwi_lip.source
    assert not set(biwi_lip.ids) & set(biwi_up.ids)
    voca = resolve_region("lip", 5023, kind="vocaset")
    assert voca.size == 250 and "mouth_map" in voca.source  # FLAME lips, the documented default
    assert resolve_region("upper_face", 5023, kind="vocaset").ids is None  # none shipped
    assert resolve_region("lip", 5023, choice="lve").size == 428
    assert (resolve_region("lip", 14062, kind="ict").size, resolve_region("upper_face", 14062, kind="ict").size) \
        == (1300, 3946)
    assert resolve_region("lip", 23370, choice="none", kind="biwi").ids is None
    with pytest.raises(PtalkerError, match="5023"):
        resolve_region("lip", 23370, choice="mouth_map")
    with pytest.raises(PtalkerError, match="outside"):
        resolve_region("lip", 100, choice=shipped_region("biwi", "lve.txt"))


def test_biwi_sized_dataset_uses_paper_units_and_tables(tmp_path):
    from ptalker_cli.mesh import Topology, tiny_topology

    base = tiny_topology()
    verts = np.resize(base.vertices, (23370, 3)).astype(np.float32)
    regions = {"lip": np.array([0]), "upper_face": np.array([1])}
    topo = Topology("biwi", verts, base.faces, regions, "normalized")
    root = tmp_path / "biwi"
    make_fake_dataset(root, subjects=("F2", "F1"), sentences=("e37",), train_subjects=("F2",), frames=4,
                      topology=topo)
    Topology("biwi", verts, base.faces, {}, "normalized").save(root / "topology")  # no regions there either
    m = Manifest.load(root)
    m.name, m.topology, m.regions = "biwi", "biwi", {}  # no regions in the dataset: the shipped ones apply
    m.splits = {"test-a": SplitRule.from_json({"subjects": ["F2"], "sentences": ["37-40"]})}
    m.save(root)
    layout = DatasetLayout(root)
    gt = np.load(layout.vertices_path("F2_e37"))
    o = np.array([0.0, 0.0, 0.02])
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "F2_e37_condition_F2.npy", gt + o)
    res = evaluate_predictions(tmp_path / "p", root)  # default split: test-a
    assert res.protocol["split"]["name"] == "test-a"
    assert res.scales == (1e-4, 1e-5)
    assert res.protocol["regions"]["lip"]["vertices"] == 4996
    assert res.protocol["regions"]["upper_face"]["vertices"] == 7784
    assert [t.key for t in res.paper_tables] == ["table2", "table4"]
    assert res.overall["lve"] == pytest.approx(4e-4)
    out = tmp_path / "out"
    write_results(res, out)
    row = _read_csv(out / "overall.csv")[0]
    assert float(row["lve_scaled"]) == pytest.approx(4.0) and float(row["lve_scale"]) == 1e-4
    ref = json.loads((out / "results.json").read_text())["paper_reference"]
    assert "NOT ours" in ref["note"] and ref["tables"][0]["rows"][-1]["method"] == "PTalker"


def test_paper_tables_data():
    assert TABLE2.row("PTalker").lve == 3.8211 and TABLE2.row("PTalker").fdd == 2.5493
    assert TABLE1.row("PTalker").lrp == 93.77 and TABLE1.lve_scale == 1e-5 and TABLE1.fdd_scale == 1e-7
    assert TABLE4.row("full model").lve == TABLE2.row("PTalker").lve
    assert len(TABLE1.rows) == 10 and len(TABLE2.rows) == 11 and len(TABLE4.rows) == 8


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch, tiny):
    return eval_cli(monkeypatch, tiny)


def test_cli_model_and_pred_modes(cli, dataset, tmp_path):
    out = tmp_path / "res"
    r = cli("--model", "tiny", "--data", str(dataset), "--split", "one", "--out", str(out), "--json",
            "--save-predictions")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["protocol"]["source"]["model"] == "tiny" and data["overall"]["sequences"] == 1
    assert all((out / f).is_file() for f in RESULT_FILES)
    r = cli("--pred", str(out / "predictions"), "--data", str(dataset), "--split", "one",
            "--out", str(tmp_path / "res2"), "--sequences")
    assert r.exit_code == 0, r.output
    assert "evaluation protocol" in r.output and "per sequence" in r.output
    again = json.loads((tmp_path / "res2" / "results.json").read_text())
    assert again["overall"]["lve"] == pytest.approx(data["overall"]["lve"])


def test_cli_errors(cli, dataset, tmp_path):
    r = cli("--data", str(dataset))
    assert isinstance(r.exception, PtalkerError) and "either --model" in str(r.exception)
    r = cli("--model", "tiny", "--data", str(dataset), "--split", "test-b", "--out", str(tmp_path))
    assert isinstance(r.exception, PtalkerError) and "known splits" in str(r.exception)
    r = cli("--model", "tiny", "--data", str(dataset), "--unseen-style", "x", "--out", str(tmp_path))
    assert isinstance(r.exception, PtalkerError) and "audio, average, blend" in str(r.exception)
    r = cli("--pred", str(tmp_path), "--data", str(dataset), "--split", "test-a", "--out", str(tmp_path / "o"))
    assert isinstance(r.exception, PtalkerError) and "S1_s02" in str(r.exception)
