"""The one-file HTML player (ptalker_cli/export/html_player.py): the writer read back in Python, and
the page played in headless Chromium (tests/browser.py; skipped where Chromium or Playwright is
missing, a failure under PTALKER_REQUIRE_SYSTEM_TESTS=1).

The example is made as a user makes it: ``ptalker animate examples/speech.wav -o out.html``.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tomllib
from typer.testing import CliRunner

from ptalker_cli.cli.app import app
from ptalker_cli.errors import PtalkerError
from ptalker_cli.export import html_player as hp
from ptalker_cli.export.motion_basis import ErrorBudget
from ptalker_cli.mesh import tiny_topology
from ptalker_cli.motion import Motion

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "speech.wav"
WEB = ROOT / "ptalker_cli" / "export" / "web"
UPPER_LIP, LOWER_LIP = 5533, 5517  # ICT vertices in the middle of the upper and lower lip
runner = CliRunner()
#: The only http(s) strings the page may hold: XML namespace names three.js passes to createElementNS
#: (identifiers, never fetched).
NAMESPACES = {"http://www.w3.org/1999/xhtml"}


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """out.html and out.npy from `ptalker animate examples/speech.wav` (the default model)."""
    folder = tmp_path_factory.mktemp("html")
    for name in ("out.npy", "out.html"):
        res = runner.invoke(app, ["animate", str(EXAMPLE), "-o", str(folder / name), "-q"])
        assert res.exit_code == 0, res.output
    return {"folder": folder, "html": folder / "out.html", "motion": Motion.load(folder / "out.npy")}


def tiny_motion(frames: int = 40, seed: int = 0) -> np.ndarray:
    """A speech-like motion on the tiny mesh: the jaw opens and closes, a little noise everywhere."""
    topo = tiny_topology()
    rng = np.random.default_rng(seed)
    t = np.arange(frames)[:, None]
    low = (topo.vertices[:, 1] < -2.0).astype(np.float32)
    out = np.repeat(topo.vertices[None], frames, axis=0)
    out[..., 1] -= 0.6 * low * (1 + np.sin(0.5 * t + seed))
    out += rng.normal(0, 0.002, out.shape).astype(np.float32)
    return out.astype(np.float32)


def external_references(page: str) -> list[str]:
    """Every http(s):// URL in the page that is not an XML namespace name, and every src/href attribute."""
    urls = [u for u in re.findall(r"https?://[^\s\"'<>)]+", page) if u not in NAMESPACES]
    attrs = re.findall(r"<[^>]+\s(?:src|href)\s*=", page, re.IGNORECASE)
    return urls + attrs


# --------------------------------------------------------------------------- the writer, without a browser


def test_example_page_is_small_self_contained_and_decodes_to_the_motion(example):
    page = example["html"].read_text(encoding="utf-8")
    size = example["html"].stat().st_size
    assert size <= 3 * 1024 * 1024, f"{size / 1e6:.2f} MB"
    assert external_references(page) == []
    assert "<script>/*! three.js 0.187.0 (r187)" in page  # the vendored build, inlined
    data = hp.decode_player(example["html"])
    motion = example["motion"]
    [head] = data["heads"]
    assert head["anim"]["layout"] == "basis" and data["frames"] == motion.num_frames == head["frames"]
    # the page's positions are the motion's within the error budget (ICT is in cm: 10 mm per unit)
    err_mm = np.linalg.norm(head["positions"] - motion.vertices, axis=2) * 10.0
    budget = ErrorBudget()
    assert np.sqrt((err_mm ** 2).mean()) <= budget.rms_mm and err_mm.max() <= budget.max_mm, head["error_mm"]
    assert err_mm[:, [UPPER_LIP, LOWER_LIP]].max() <= budget.lip_max_mm
    # the audio is Opus in WebM as long as the speech
    audio = data["audio"]
    assert audio["mime"] == "audio/webm;codecs=opus" and audio["bytes"][:4] == b"\x1a\x45\xdf\xa3"  # EBML
    assert abs(audio["seconds"] - sf.info(str(EXAMPLE)).duration) < 1e-3 and data["duration"] == audio["seconds"]


def test_layout_is_chosen_by_size_and_both_decode_within_budget():
    topo = tiny_topology()
    for frames, layout in ((2, "frames16"), (40, "basis")):
        f = tiny_motion(frames)
        head = hp.encode_head("m", f, 25.0, topo.vertices, units="cm", lip=topo.regions["lip"])
        assert head.anim["layout"] == layout
        got = hp.decode_head(head.to_json(), topo.num_vertices)
        err_mm = np.linalg.norm(got - f, axis=2) * 10.0
        assert err_mm.max() <= ErrorBudget().max_mm and abs(err_mm.max() - head.error_mm["max_mm"]) < 1e-3
    # frames16 alone: 16-bit steps over the clip's box, so at most half a step per axis
    f = tiny_motion(40)
    anim, err, nbytes = hp._frames16(f, 10.0, None)
    got = hp.decode_head({"anim": anim, "frames": 40}, topo.num_vertices)
    step = np.ptp(f.reshape(-1, 3), axis=0) / 65535
    assert (np.abs(got - f) <= step / 2 + 1e-6).all() and nbytes == f.size * 2


def test_side_by_side_page_has_two_heads_and_a_heat_scale(tmp_path):
    topo = tiny_topology()
    pred, gt = Motion(tiny_motion(30, 1), 25.0, "tiny"), Motion(tiny_motion(30, 2), 25.0, "tiny")
    out = hp.write_html_player(tmp_path / "cmp.html", pred, topo, side_by_side=gt, error_heatmap=True)
    data = hp.decode_player(out)
    assert [h["label"] for h in data["heads"]] == ["prediction", "ground truth"]
    d = np.linalg.norm(pred.vertices - gt.vertices, axis=2)
    assert data["heatmap"]["vmax"] == pytest.approx(np.percentile(d, 99.0), rel=1e-6)
    assert data["audio"] is None and data["duration"] == pytest.approx(30 / 25.0)
    with pytest.raises(PtalkerError, match="needs ground truth"):
        hp.write_html_player(tmp_path / "x.html", pred, topo, error_heatmap=True)
    with pytest.raises(PtalkerError, match="already exists"):
        hp.write_html_player(out, pred, topo)
    assert not (tmp_path / "x.html").exists()


def test_render_writes_html_and_bad_input_is_one_line(tmp_path):
    topo = tiny_topology()
    Motion(tiny_motion(20, 1), 25.0, "tiny").save(tmp_path / "pred.npy")
    Motion(tiny_motion(20, 2), 25.0, "tiny").save(tmp_path / "gt.npy")
    res = runner.invoke(app, ["render", str(tmp_path / "pred.npy"), "-t", "tiny", "-o", str(tmp_path / "p.html"),
                              "--side-by-side", str(tmp_path / "gt.npy"), "--heatmap"])
    assert res.exit_code == 0, res.output
    data = hp.decode_player(tmp_path / "p.html")
    assert len(data["heads"]) == 2 and data["heatmap"] is not None and data["vertices"] == topo.num_vertices
    res = runner.invoke(app, ["render", str(tmp_path / "pred.npy"), "-t", "tiny", "-o", str(tmp_path / "q.html"),
                              "--glb-quantize"])
    assert res.exit_code != 0 and "apply to glb output, not html" in res.output
    res = runner.invoke(app, ["render", str(tmp_path / "pred.npy"), "-t", "tiny", "-o", str(tmp_path / "q.html"),
                              "--audio", str(tmp_path / "missing.wav")])
    assert res.exit_code != 0 and "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "q.html").exists()


def test_vendored_three_matches_its_provenance_and_ships_as_package_data():
    prov = (WEB / "PROVENANCE.md").read_text()
    digest = hashlib.sha256((WEB / "three.bundle.min.js").read_bytes()).hexdigest()
    assert f"| `three.bundle.min.js` (this folder) | `{digest}` |" in prov
    js = hp.web_file("three.bundle.min.js")
    assert js.startswith("/*! three.js 0.187.0 (r187)") and 'var PTALKER_THREE=' in js
    assert re.search(r'="187"', js), "the bundle's REVISION is not 187"
    assert "MIT License" in (WEB / "LICENSE-three.txt").read_text()
    # every file of web/ is matched by pyproject's package-data, and importlib.resources finds it
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "ptalker_cli.export"]
    for f in sorted(WEB.iterdir()):
        assert any(fnmatch.fnmatch(f"web/{f.name}", g) for g in globs), f"{f.name} is not package data"
        assert resources.files("ptalker_cli.export").joinpath("web", f.name).is_file()


# --------------------------------------------------------------------------- in a browser


@pytest.fixture(scope="module")
def browser_site(example, tmp_path_factory):
    from browser import Browser, Site

    with Site({"/files/": example["folder"]}) as site, Browser(viewport=(512, 512)) as browser:
        yield site, browser


def open_player(browser_site, name: str):
    site, browser = browser_site
    page = browser.open(site.url(f"/files/{name}"))
    page.wait_for("window.ptalker && (window.ptalker.ready || window.ptalker.error)", timeout_s=30)
    assert page.evaluate("() => window.ptalker.error") is None
    return page


def head_pixels(img: np.ndarray) -> np.ndarray:
    """Pixels that are not the white background, the heads' labels (the top 30 rows) and the player's
    rounded border (4 pixels) left out."""
    return np.abs(img[30:-4, 4:-4, :3].astype(int) - 255).sum(axis=2) > 30


@pytest.mark.system("chromium")
def test_browser_plays_the_example_offline(example, browser_site):
    page = open_player(browser_site, "out.html")
    site, browser = browser_site
    info = page.evaluate("() => ({duration: ptalker.duration, frames: ptalker.frames, audio: ptalker.audio})")
    assert info["audio"] is True and info["frames"] == example["motion"].num_frames
    assert abs(info["duration"] - sf.info(str(EXAMPLE)).duration) < 0.1, info
    pictures = {}
    for t in (0.0, 1.28):
        page.evaluate("(t) => ptalker.seek(t)", t)
        pictures[t] = page.screenshot("canvas", transparent=False)
    img = pictures[0.0]
    head = head_pixels(img)
    assert head.mean() > 0.05, "the canvas shows no head"
    grey = img[30:-4, 4:-4, :3][head].mean(axis=1)
    assert grey.std() > 10, "the head is flat: not lit"
    # the mouth moved: the pictures differ, and the page's lips are where the motion puts them
    diff = np.abs(pictures[0.0].astype(int) - pictures[1.28].astype(int)).sum(axis=2) > 30
    assert diff.sum() > 50, diff.sum()
    motion = example["motion"]
    for t in (0.0, 1.28):
        page.evaluate("(t) => ptalker.seek(t)", t)
        got = np.array(page.evaluate("(ids) => ptalker.positions(0, ids)", [UPPER_LIP, LOWER_LIP]))
        want = motion.vertices[int(round(t * motion.fps)), [UPPER_LIP, LOWER_LIP]]
        assert np.abs(got - want).max() * 10.0 <= ErrorBudget().lip_max_mm
    # wireframe changes the picture; play advances the time; pause stops it
    page.evaluate("() => { ptalker.seek(0.5); ptalker.setWireframe(true); }")
    wire = page.screenshot("canvas", transparent=False)
    page.evaluate("() => { ptalker.setWireframe(false); ptalker.seek(0.5); }")
    shaded = page.screenshot("canvas", transparent=False)
    assert (np.abs(wire.astype(int) - shaded.astype(int)).sum(axis=2) > 30).sum() > 500
    # orbit (drag on the canvas) turns the head; "reset view" brings the first picture back
    box = page.raw.locator("canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.raw.mouse.move(cx, cy)
    page.raw.mouse.down()
    page.raw.mouse.move(cx + 120, cy, steps=8)
    page.raw.mouse.up()
    turned = page.screenshot("canvas", transparent=False)
    assert (np.abs(turned.astype(int) - shaded.astype(int)).sum(axis=2) > 30).sum() > 500
    page.raw.click("button.reset")
    assert np.abs(page.screenshot("canvas", transparent=False).astype(int) - shaded.astype(int)).max() <= 2
    # the scrubber seeks the audio and the mesh
    page.evaluate("() => { const s = document.querySelector('input.scrubber'); s.value = '2.0';"
                  " s.dispatchEvent(new Event('input')); }")
    assert page.evaluate("() => [ptalker.time, document.querySelector('audio').currentTime]") == \
        pytest.approx([2.0, 2.0], abs=0.01)
    page.evaluate("() => { ptalker.seek(0); ptalker.play(); }")
    page.wait_for("window.ptalker.time > 0.3", timeout_s=20)
    page.evaluate("() => ptalker.pause()")
    t1 = page.evaluate("() => ptalker.time")
    page.raw.wait_for_timeout(300)
    assert page.evaluate("() => ptalker.time") == t1 and page.evaluate("() => ptalker.playing") is False
    assert browser.blocked == [] and all(u.startswith((site.origin, "blob:", "data:")) for u in browser.requests), \
        browser.requests
    assert page.errors == []


@pytest.mark.system("chromium")
def test_browser_plays_the_page_without_a_server(example, browser_site):
    """As when the file is opened from disk: the page's text alone, in an about:blank tab, with no
    server behind it, becomes ready with its sound and asks for nothing."""
    _, browser = browser_site
    seen = len(browser.requests)
    page = browser.open("about:blank")
    page.raw.set_content(example["html"].read_text(encoding="utf-8"), wait_until="load")
    page.wait_for("window.ptalker && (window.ptalker.ready || window.ptalker.error)", timeout_s=30)
    assert page.evaluate("() => [ptalker.error, ptalker.audio]") == [None, True]
    assert all(u.startswith(("about:", "blob:", "data:")) for u in browser.requests[seen:]), browser.requests[seen:]
    assert browser.blocked == [] and page.errors == []


@pytest.mark.system("chromium")
def test_browser_side_by_side_shows_two_heads_and_the_heat_map(example, browser_site):
    topo = tiny_topology()
    pred, gt = Motion(tiny_motion(30, 1), 25.0, "tiny"), Motion(tiny_motion(30, 2), 25.0, "tiny")
    hp.write_html_player(example["folder"] / "sbs.html", pred, topo, side_by_side=gt, error_heatmap=True)
    page = open_player(browser_site, "sbs.html")
    page.evaluate("() => ptalker.seek(0.4)")
    img = page.screenshot("canvas", transparent=False)
    cols = head_pixels(img).any(axis=0)
    runs = np.flatnonzero(np.diff(np.r_[0, cols.astype(int), 0]) == 1)  # starts of column runs with a head in them
    assert len(runs) == 2, f"{len(runs)} heads"
    left = img[:, : img.shape[1] // 2, :3].reshape(-1, 3).astype(int)
    assert ((left[:, 0] - left[:, 1]).__abs__() + (left[:, 1] - left[:, 2]).__abs__() > 60).sum() > 100, \
        "no heat-map colours on the prediction"
    page.evaluate("() => ptalker.setHeatmap(false)")
    plain = page.screenshot("canvas", transparent=False)[:, : img.shape[1] // 2, :3].reshape(-1, 3).astype(int)
    assert ((plain[:, 0] - plain[:, 1]).__abs__() + (plain[:, 1] - plain[:, 2]).__abs__() > 60).sum() < 10
    _, browser = browser_site
    assert browser.blocked == [] and page.errors == []


def test_report_json_escapes_script_end():
    title = "<!--<script></script><script>alert(1)</script>"
    text = hp.data_script({"title": title})
    assert text.count("</script>") == 1 and "<!--" not in text and "<script>" not in text[1:]
    assert json.loads(text[text.index(">") + 1 : -len("</script>")])["title"] == title
