"""``ptalker eval … --html report.html`` (ptalker_cli/eval/html_report.py): the tiny model on a fake
dataset, the page read back in Python, and opened in headless Chromium (tests/browser.py)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import eval_cli

from ptalker_cli.data.layout import DatasetLayout, Manifest, SplitRule
from ptalker_cli.data.testing import make_fake_dataset
from ptalker_cli.errors import PtalkerError
from ptalker_cli.eval import evaluate_predictions
from ptalker_cli.eval.html_report import key_metric, pick_sequences, report_page
from ptalker_cli.export.html_player import decode_head, read_player_data
from ptalker_cli.export.motion_basis import ErrorBudget

NAMESPACES = {"http://www.w3.org/1999/xhtml"}  # createElementNS names inside three.js: identifiers, not fetched


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("evalhtml") / "data"
    make_fake_dataset(root, subjects=("S1", "S2", "S3", "U1", "X9"), sentences=("s01", "s02"),
                      train_subjects=("S1", "S2", "S3"))
    m = Manifest.load(root)
    m.splits["mixed"] = SplitRule.from_json(["S1_s02", "S2_s01", "U1_s01", "X9_s02"])
    m.save(root)
    return root


@pytest.fixture(scope="module")
def report(tiny, dataset, tmp_path_factory):
    """`ptalker eval --model tiny --split mixed --out OUT --html OUT/report.html`."""
    out = tmp_path_factory.mktemp("evalhtmlout")
    with pytest.MonkeyPatch.context() as mp:
        r = eval_cli(mp, tiny)("--model", "tiny", "--data", str(dataset), "--split", "mixed", "--out", str(out),
                               "--html", str(out / "report.html"), "-q")
    assert r.exit_code == 0, r.output
    return out


def external_references(page: str) -> list[str]:
    urls = [u for u in re.findall(r"https?://[^\s\"'<>)]+", page) if u not in NAMESPACES]
    return urls + re.findall(r"<[^>]+\s(?:src|href)\s*=", page, re.IGNORECASE)


def test_report_holds_protocol_tables_plot_and_three_players(report, dataset):
    out = report
    page = (out / "report.html").read_text(encoding="utf-8")
    assert external_references(page) == []
    assert not (out / "predictions").exists()  # the players' predictions went to a temporary folder
    assert "predictions_saved_to" not in (out / "results.json").read_text()
    for text in ("Protocol", "prediction and ground truth start at the audio", "Per sequence", "<svg class=\"plot\"",
                 "The paper reports no numbers for this dataset/split"):
        assert text in page, text
    with open(out / "sequences.csv", newline="") as fh:
        rows = {r["sequence"]: float(r["lve"]) for r in csv.DictReader(fh)}
    for name in rows:  # one sortable row per sequence, its LVE as the sort key
        assert re.search(rf'<tr><td data-value="{name}">{name}</td>', page), name
    order = sorted(rows, key=lambda n: (rows[n], n))
    want = {"best": order[0], "median": order[(len(order) - 1) // 2], "worst": order[-1]}
    layout = DatasetLayout(dataset)
    for slot, name in want.items():
        assert f"<h3>{slot}: {name} " in page
        data = read_player_data(page, element_id=f"ptalker-data-{slot}")
        assert [h["label"] for h in data["heads"]] == ["prediction", "ground truth"] and data["heatmap"]
        assert data["audio"]["mime"] == "audio/webm;codecs=opus"
        gt = np.load(layout.vertices_path(name))
        n = data["heads"][0]["frames"]
        assert data["heads"][1]["frames"] == n and n == min(len(gt), n)  # truncated as scored
        got = decode_head(data["heads"][1], data["vertices"])
        assert np.linalg.norm(got - gt[:n], axis=2).max() * 10.0 <= ErrorBudget().max_mm  # tiny mesh: cm


def test_pred_mode_report_uses_the_scored_files(tiny, dataset, tmp_path, monkeypatch):
    cli = eval_cli(monkeypatch, tiny)
    r = cli("--model", "tiny", "--data", str(dataset), "--split", "mixed", "--out", str(tmp_path / "a"),
            "--save-predictions", "-q")
    assert r.exit_code == 0, r.output
    pred = tmp_path / "a" / "predictions"
    r = cli("--pred", str(pred), "--data", str(dataset), "--split", "mixed", "--out", str(tmp_path / "b"),
            "--html", str(tmp_path / "b.html"), "-q")
    assert r.exit_code == 0, r.output
    page = (tmp_path / "b.html").read_text(encoding="utf-8")
    best = re.search(r"<h3>best: (\S+) ", page).group(1)
    data = read_player_data(page, element_id="ptalker-data-best")
    p = np.load(pred / f"{best}.npy")[: data["heads"][0]["frames"]]
    assert np.linalg.norm(decode_head(data["heads"][0], data["vertices"]) - p, axis=2).max() * 10.0 <= 1.0
    r = cli("--pred", str(pred), "--data", str(dataset), "--split", "mixed", "--out", str(tmp_path / "c"),
            "--html", str(tmp_path))
    assert isinstance(r.exception, PtalkerError) and "is a folder" in str(r.exception)


def test_paper_numbers_are_marked_as_the_papers(tmp_path):
    """On a BIWI-sized fake dataset the paper's Table 2 and 4 appear, each captioned as not ours."""
    from ptalker_cli.mesh import Topology, tiny_topology

    base = tiny_topology()
    verts = np.resize(base.vertices, (23370, 3)).astype(np.float32)
    topo = Topology("biwi", verts, base.faces, {"lip": np.array([0]), "upper_face": np.array([1])}, "normalized")
    root = tmp_path / "biwi"
    make_fake_dataset(root, subjects=("F2", "F1"), sentences=("e37",), train_subjects=("F2",), frames=4,
                      topology=topo)
    m = Manifest.load(root)
    m.name, m.topology, m.regions = "biwi", "biwi", {}
    m.splits = {"test-a": SplitRule.from_json({"subjects": ["F2"], "sentences": ["37-40"]})}
    m.save(root)
    gt = np.load(DatasetLayout(root).vertices_path("F2_e37"))
    (tmp_path / "p").mkdir()
    np.save(tmp_path / "p" / "F2_e37.npy", gt + np.array([0.0, 0.0, 0.02], np.float32))
    res = evaluate_predictions(tmp_path / "p", root)
    page = report_page(res, [], "no players here")
    captions = re.findall(r"<caption>(.*?)</caption>", page)
    assert sum("the paper's numbers, not ours" in c for c in captions) == 2
    paper = page[page.index("Table 2"):]
    assert "PTalker" in paper and "3.8211" in paper and "this run (ptalker eval), not the paper's" in paper
    assert f"{res.overall['lve'] / 1e-4:.4f}" in paper  # this run, in the paper's units (x1e-4)


def test_picks_and_key_metric():
    from ptalker_cli.eval.protocol import EvalResult, SequenceResult

    def row(name, lve, mve):
        return SequenceResult(name, "S", True, "S", 5, 5, 5, 0, 0, lve, mve, None, None, None)

    res = EvalResult({}, [row("a", 3.0, 1.0), row("b", 1.0, 2.0), row("c", 2.0, 3.0), row("d", 4.0, 0.5)], {}, {})
    assert key_metric(res) == "lve"
    assert [(s, r.name) for s, r in pick_sequences(res)] == [("best", "b"), ("median", "c"), ("worst", "d")]
    res.sequences[0].lve = None
    assert key_metric(res) == "mve"
    assert [r.name for _, r in pick_sequences(res)] == ["d", "a", "c"]  # MVE 0.5, 1, 2, 3
    res.sequences = res.sequences[:1]
    assert [s for s, _ in pick_sequences(res)] == ["best"]


@pytest.mark.system("chromium")
def test_report_in_a_browser_loads_offline_players_ready_table_sorts(report):
    from browser import Browser, Site

    with Site({"/r/": report}) as site, Browser(viewport=(900, 700)) as browser:
        page = browser.open(site.url("/r/report.html"))
        page.wait_for("window.ptalkerReport && window.ptalkerReport.ready", timeout_s=30)
        slots = page.evaluate("() => Object.keys(ptalkerReport.players)")
        assert slots == ["best", "median", "worst"]
        assert page.evaluate("() => Object.values(ptalkerReport.players).every((p) => p.heads === 2 && !p.error)")
        names = ("() => Array.from(document.querySelectorAll('table.sortable tbody tr'))"
                 ".map((r) => r.cells[0].textContent)")
        lve = ("() => Array.from(document.querySelectorAll('table.sortable tbody tr'))"
               ".map((r) => Number(r.cells[6].getAttribute('data-value')))")
        before = page.evaluate(names)
        page.raw.click("table.sortable thead th:nth-child(7)")  # LVE
        up = page.evaluate(lve)
        assert up == sorted(up) and page.evaluate(names) != before
        page.raw.click("table.sortable thead th:nth-child(7)")
        assert page.evaluate(lve) == sorted(up, reverse=True)
        page.raw.click("table.sortable thead th:nth-child(1)")
        assert page.evaluate(names) == sorted(before)
        assert browser.blocked == [] and page.errors == []
        assert all(u.startswith((site.origin, "blob:", "data:")) for u in browser.requests), browser.requests
