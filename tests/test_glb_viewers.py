"""The GLB opened by code that is not ours: the Khronos glTF validator (npm ``gltf-validator``)
and three.js r170's GLTFLoader in headless Chromium (tests/browser.py, tests/js/glb_viewer.html).

The example is made as a user makes it: ``ptalker animate examples/speech.wav -o out.glb``.
These tests need node with ``npm ci --prefix tests/js`` and Chromium with Playwright; they are
skipped where those are missing (tests/system.py), and fail under PTALKER_REQUIRE_SYSTEM_TESTS=1.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from browser import TESTS_JS, Browser, Site
from typer.testing import CliRunner

from ptalker_cli.cli.app import app
from ptalker_cli.export.glb import read_glb

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "speech.wav"
UPPER_LIP, LOWER_LIP = 5533, 5517  # ICT vertices in the middle of the upper and lower lip
LAYOUTS = {"compact": [], "quantized": ["--glb-quantize"], "per-frame": ["--glb-motion", "per-frame"]}
runner = CliRunner()


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """out.glb (each layout) and out.npy from `ptalker animate examples/speech.wav`."""
    folder = tmp_path_factory.mktemp("viewers")
    res = runner.invoke(app, ["animate", str(EXAMPLE), "-o", str(folder / "out.npy"), "-q"])
    assert res.exit_code == 0, res.output
    files = {}
    for name, args in LAYOUTS.items():
        out = folder / ("out.glb" if name == "compact" else f"out_{name}.glb")
        res = runner.invoke(app, ["animate", str(EXAMPLE), "-o", str(out), "--json", *args])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)[0]["output"] == [str(out), str(out.with_suffix(".wav"))]
        files[name] = out
    return {"folder": folder, "files": files, "motion": np.load(folder / "out.npy"), "fps": 25.0}


def validate(*paths: Path) -> list[dict]:
    """The Khronos validator's JSON report for each file (tests/js/validate_gltf.mjs)."""
    reports = []
    for path in paths:
        res = subprocess.run([shutil.which("node") or "node", str(TESTS_JS / "validate_gltf.mjs"), str(path)],
                             capture_output=True, text=True, timeout=300, check=False)
        assert res.returncode == 0, res.stderr
        reports.append(json.loads(res.stdout))
    return reports


@pytest.mark.system("node-js-deps")
def test_khronos_validator_reports_no_errors_or_warnings(example, tmp_path):
    reports = validate(*example["files"].values())
    for path, rep in zip(example["files"].values(), reports):
        issues = rep["issues"]
        assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, (path.name, issues["messages"][:5])
        assert rep["info"]["animationCount"] == 1 and rep["info"]["hasMorphTargets"], rep["info"]
    # the validator is really checking: a file whose POSITION bounds are wrong is an error
    data = example["files"]["compact"].read_bytes()
    doc = read_glb(example["files"]["compact"])["json"]
    acc = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]
    acc["max"] = [x + 1.0 for x in acc["max"]]
    broken = tmp_path / "broken.glb"
    broken.write_bytes(with_json(data, doc))
    [bad] = validate(broken)
    assert bad["issues"]["numErrors"] > 0 and "ACCESSOR_MAX_MISMATCH" in {m["code"] for m in bad["issues"]["messages"]}


def with_json(glb: bytes, doc: dict) -> bytes:
    """The GLB with its JSON chunk replaced by ``doc``."""
    jlen = int.from_bytes(glb[12:16], "little")
    binary = glb[20 + jlen:]  # the binary chunk with its header
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    return struct.pack("<IIIII", 0x46546C67, 2, 20 + len(js) + len(binary), len(js), 0x4E4F534A) + js + binary


THREE = {"r170": "three-r170", "r187": "three"}  # tests/js/package.json: the release issue 17 names, the newest


@pytest.fixture(scope="module")
def viewer(example):
    """One headless Chromium and, per three.js release, a local site serving the viewer page."""
    sites = {name: Site({"/files/": example["folder"], "/js/": TESTS_JS, "/three/": TESTS_JS / "node_modules" / pkg})
             for name, pkg in THREE.items()}
    with contextlib.ExitStack() as stack:
        for site in sites.values():
            stack.enter_context(site)
        browser = stack.enter_context(Browser(viewport=(384, 384)))
        yield sites, browser


def open_glb(viewer, path: Path, three: str = "r170"):
    sites, browser = viewer
    page = browser.open(sites[three].url(f"/js/glb_viewer.html?src=/files/{path.name}"))
    page.wait_for("window.viewer && (window.viewer.ready || window.viewer.error)", timeout_s=180)
    assert page.evaluate("() => window.viewer.error") is None
    assert page.evaluate("() => window.viewer.revision") == three[1:]
    return page


@pytest.mark.system("chromium", "node-js-deps")
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_three_js_plays_the_motion_exactly(example, viewer, layout):
    """GLTFLoader r170 finds one animation as long as the clip and, at each frame's time, morphs the
    vertices (on the CPU, as its shaders do) to the motion within the error budget."""
    page = open_glb(viewer, example["files"][layout])
    info = page.evaluate("() => window.viewer.info")
    motion, fps = example["motion"], example["fps"]
    T = len(motion)
    [anim] = info["animations"]
    assert anim["name"] == "speech" and abs(anim["duration"] - (T - 1) / fps) < 1e-4
    assert info["hasNormals"] and info["material"] == "MeshStandardMaterial" and info["vertices"] == 14062
    doc = read_glb(example["files"][layout])["json"]
    K = len(doc["meshes"][0]["primitives"][0]["targets"])
    assert info["morphTargets"] == K and info["morphNormals"] == (0 if layout == "per-frame" else K)
    rng = np.random.default_rng(0)
    ids = sorted(set(rng.choice(14062, 300, replace=False).tolist()) | {UPPER_LIP, LOWER_LIP})
    opening = np.linalg.norm(motion[:, UPPER_LIP] - motion[:, LOWER_LIP], axis=1)
    for k in (0, int(opening.argmax()), int(opening.argmin()), T - 1):
        page.evaluate(f"() => window.viewer.show({k / fps})")
        got = np.array(page.evaluate("(ids) => window.viewer.positions(ids)", ids))
        err_mm = np.linalg.norm(got - motion[k, ids] * 0.01, axis=1) * 1000  # cm -> m -> mm
        assert err_mm.max() <= (1e-3 if layout == "per-frame" else 1.0), (k, err_mm.max())
    assert viewer[1].blocked == [] and page.errors == []


@pytest.mark.system("chromium", "node-js-deps")
@pytest.mark.parametrize("three", list(THREE))
def test_three_js_renders_the_head_lit_and_moving(example, viewer, three):
    """The head is drawn lit (not black: glTF's default material is fully metallic and renders dark),
    and the pixels around the mouth change between a closed and an open mouth."""
    page = open_glb(viewer, example["files"]["compact"], three)
    motion, fps = example["motion"], example["fps"]
    opening = np.linalg.norm(motion[:, UPPER_LIP] - motion[:, LOWER_LIP], axis=1)
    shots = {}
    for name, k in (("closed", int(opening.argmin())), ("open", int(opening.argmax()))):
        page.evaluate(f"() => window.viewer.show({k / fps})")
        shots[name] = page.screenshot("#view")
    page.evaluate(f"() => window.viewer.show({int(opening.argmin()) / fps})")
    assert np.array_equal(page.screenshot("#view"), shots["closed"])  # the same time draws the same picture
    head = shots["closed"][..., 3] > 0
    assert head.mean() > 0.15  # the head fills the frame (camera on +Z: the face)
    lum = shots["closed"][..., :3].astype(float) @ [0.2126, 0.7152, 0.0722]
    assert lum[head].mean() > 140 and lum[head].std() > 10, (lum[head].mean(), lum[head].std())
    diff = np.abs(shots["open"][..., :3].astype(int) - shots["closed"][..., :3].astype(int)).max(-1) > 24
    assert diff.sum() > 150, diff.sum()
    rows, cols = np.nonzero(head)
    d_rows, d_cols = np.nonzero(diff)
    # the change is in the lower half of the head, around its vertical middle line: the mouth
    assert np.median(d_rows) > (rows.min() + rows.max()) / 2
    assert abs(np.median(d_cols) - (cols.min() + cols.max()) / 2) < 0.1 * (cols.max() - cols.min())
    assert viewer[1].blocked == [] and page.errors == []
