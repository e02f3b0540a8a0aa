"""--rig: a user's glTF character gets an ARKit animation and is otherwise untouched.

The rig is built here with pygltflib, and the output is read back with pygltflib (a reader
independent of ptalker's) and checked by the Khronos glTF validator.
"""

import base64
import copy
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ptalker_cli.arkit import ARKIT_NAMES, ArkitCurves
from ptalker_cli.errors import PtalkerError
from ptalker_cli.export.rig_gltf import animate_rig

pygltflib = pytest.importorskip("pygltflib")

JS = Path(__file__).resolve().parent / "js"
FACE_TARGETS = ["EyeBlinkLeft", "jawOpen", "mouthSmile_L", "myCustomShape"]
UNTOUCHED = ["scene", "scenes", "nodes", "meshes", "skins", "materials", "textures", "images", "samplers", "asset"]
PNG_1x1 = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAA"
                           "AABJRU5ErkJggg==")


def build_rig(path: Path, gltf_json: bool = False, external_bin: bool = False) -> None:
    """A skinned face (4 morph targets, one unknown), teeth (jawOpen), and a body without targets."""
    g = pygltflib
    quad = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
    idx = np.array([0, 1, 2, 0, 2, 3], np.uint16)
    rng = np.random.default_rng(0)
    blobs, views, accs = [], [], []

    def add(arr, kind, comp, target=None, minmax=False):
        data = arr.tobytes()
        off = sum(len(b) for b in blobs)
        blobs.append(data + b"\0" * ((4 - len(data) % 4) % 4))
        views.append(g.BufferView(buffer=0, byteOffset=off, byteLength=len(data), target=target))
        count = arr.shape[0]
        extra = dict(min=arr.min(0).tolist(), max=arr.max(0).tolist()) if minmax else {}
        accs.append(g.Accessor(bufferView=len(views) - 1, componentType=comp, count=count, type=kind, **extra))
        return len(accs) - 1

    pos = add(quad, g.VEC3, g.FLOAT, g.ARRAY_BUFFER, True)
    ind = add(idx, g.SCALAR, g.UNSIGNED_SHORT, g.ELEMENT_ARRAY_BUFFER)
    targets = [{"POSITION": add(rng.normal(0, 0.1, (4, 3)).astype(np.float32), g.VEC3, g.FLOAT, g.ARRAY_BUFFER,
                                True)} for _ in FACE_TARGETS]
    teeth_t = [{"POSITION": add(rng.normal(0, 0.1, (4, 3)).astype(np.float32), g.VEC3, g.FLOAT, g.ARRAY_BUFFER, True)}]
    joints = add(np.array([[0, 1, 0, 0]] * 4, np.uint8), g.VEC4, g.UNSIGNED_BYTE, g.ARRAY_BUFFER)
    wts = add(np.array([[0.5, 0.5, 0, 0]] * 4, np.float32), g.VEC4, g.FLOAT, g.ARRAY_BUFFER)
    ibm = add(np.stack([np.eye(4, dtype=np.float32).T.ravel()] * 2), g.MAT4, g.FLOAT)
    uv = add(np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32), "VEC2", g.FLOAT, g.ARRAY_BUFFER)
    png_off = sum(len(b) for b in blobs)
    blobs.append(PNG_1x1 + b"\0" * ((4 - len(PNG_1x1) % 4) % 4))
    views.append(g.BufferView(buffer=0, byteOffset=png_off, byteLength=len(PNG_1x1)))
    png_view = len(views) - 1
    data = b"".join(blobs)
    attrs = dict(POSITION=pos, TEXCOORD_0=uv, JOINTS_0=joints, WEIGHTS_0=wts)
    gltf = g.GLTF2(
        asset=g.Asset(version="2.0", generator="ptalker test rig"),
        scene=0,
        scenes=[g.Scene(nodes=[0])],
        nodes=[
            g.Node(name="root", children=[1, 2, 3, 4]),
            g.Node(name="head", mesh=0, skin=0, translation=[0, 1.6, 0]),
            g.Node(name="teeth", mesh=1, translation=[0, 1.5, 0.05]),
            g.Node(name="body", mesh=2),
            g.Node(name="jaw_bone", rotation=[0, 0, 0, 1]),
        ],
        meshes=[
            g.Mesh(name="Face", primitives=[g.Primitive(attributes=g.Attributes(**attrs), indices=ind, material=0,
                                                        targets=targets)],
                   weights=[0.0, 0.0, 0.0, 0.25], extras={"targetNames": FACE_TARGETS}),
            g.Mesh(name="Teeth", primitives=[g.Primitive(attributes=g.Attributes(POSITION=pos), indices=ind,
                                                         targets=teeth_t)], extras={"targetNames": ["JawOpen"]}),
            g.Mesh(name="Body", primitives=[g.Primitive(attributes=g.Attributes(POSITION=pos), indices=ind)]),
        ],
        skins=[g.Skin(joints=[0, 4], inverseBindMatrices=ibm)],
        materials=[g.Material(name="skin", pbrMetallicRoughness=g.PbrMetallicRoughness(baseColorTexture=g.TextureInfo(
            index=0)))],
        textures=[g.Texture(source=0, sampler=0)],
        samplers=[g.Sampler(magFilter=9729, minFilter=9729)],
        images=[g.Image(bufferView=png_view, mimeType="image/png")],
        accessors=accs,
        bufferViews=views,
        buffers=[g.Buffer(byteLength=len(data))],
    )
    if not gltf_json:
        gltf.set_binary_blob(data)
        gltf.save_binary(str(path))
    elif external_bin:
        (path.parent / "rig.bin").write_bytes(data)
        gltf.buffers[0].uri = "rig.bin"
        gltf.save_json(str(path))
    else:
        gltf.buffers[0].uri = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
        gltf.save_json(str(path))


def curves(T=20, fps=25.0):
    rng = np.random.default_rng(1)
    driven = tuple(n for n in ARKIT_NAMES if not n.startswith("eyeLook") and n != "tongueOut")
    w = rng.uniform(0, 1, (T, 52)).astype(np.float32)
    w[:, [i for i, n in enumerate(ARKIT_NAMES) if n not in driven]] = 0
    return ArkitCurves(fps, w, driven)


def accessor(gltf, blob: bytes, i: int) -> np.ndarray:
    """Decode a float SCALAR/VECn accessor with numpy from pygltflib's document (no ptalker code)."""
    acc = gltf.accessors[i]
    view = gltf.bufferViews[acc.bufferView]
    n = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    start = (view.byteOffset or 0) + (acc.byteOffset or 0)
    return np.frombuffer(blob, "<f4", acc.count * n, start).reshape(acc.count, n).squeeze()


def blob_of(gltf, path: Path, buffer: int) -> bytes:
    uri = gltf.buffers[buffer].uri
    if uri is None:
        return gltf.binary_blob()
    if uri.startswith("data:"):
        return base64.b64decode(uri.split(",", 1)[1])
    return (path.parent / uri).read_bytes()


def test_glb_rig_gets_one_weights_animation_and_keeps_everything_else(tmp_path):
    build_rig(tmp_path / "rig.glb")
    before = pygltflib.GLTF2.load(str(tmp_path / "rig.glb"))
    before_blob = before.binary_blob()
    c = curves()
    out, summary = animate_rig(tmp_path / "rig.glb", c, tmp_path / "out.glb")
    after = pygltflib.GLTF2.load(str(out))
    blob = after.binary_blob()
    # untouched: every original part of the document, and every original byte of the binary
    b, a = json.loads(before.to_json()), json.loads(after.to_json())
    for key in UNTOUCHED:
        assert a.get(key) == b.get(key), key
    assert a["accessors"][: len(b["accessors"])] == b["accessors"]
    assert a["bufferViews"][: len(b["bufferViews"])] == b["bufferViews"]
    assert blob[: len(before_blob)] == before_blob
    # the animation
    (anim,) = after.animations
    assert anim.name == "ptalker_arkit"
    by_node = {ch.target.node: anim.samplers[ch.sampler] for ch in anim.channels}
    assert set(by_node) == {1, 2} and all(ch.target.path == "weights" for ch in anim.channels)
    face = by_node[1]
    assert face.interpolation == "LINEAR"
    times = accessor(after, blob, face.input)
    assert np.allclose(times, np.arange(c.num_frames) / 25.0)
    w = accessor(after, blob, face.output).reshape(c.num_frames, len(FACE_TARGETS))
    assert np.allclose(w[:, 0], c.curve("eyeBlinkLeft"))
    assert np.allclose(w[:, 1], c.curve("jawOpen"))
    assert np.allclose(w[:, 2], c.curve("mouthSmileLeft"))
    assert np.allclose(w[:, 3], 0.25)  # the unknown target keeps the mesh's default weight
    teeth = accessor(after, blob, by_node[2].output)
    assert np.allclose(teeth, c.curve("jawOpen"))
    # one summary line naming what it could not use
    assert "\n" not in summary and "myCustomShape" in summary and "cheekPuff" in summary


def test_rig_names_are_matched_in_every_spelling(tmp_path):
    build_rig(tmp_path / "rig.glb")
    out, summary = animate_rig(tmp_path / "rig.glb", curves(T=3), tmp_path / "o.glb")
    assert "3 ARKit targets" in summary  # EyeBlinkLeft, jawOpen/JawOpen, mouthSmile_L


@pytest.mark.parametrize("external", [False, True])
def test_gltf_json_rig(tmp_path, external):
    build_rig(tmp_path / "rig.gltf", gltf_json=True, external_bin=external)
    out, _ = animate_rig(tmp_path / "rig.gltf", curves(T=5), tmp_path / "out.gltf")
    g = pygltflib.GLTF2.load(str(out))
    original = pygltflib.GLTF2.load(str(tmp_path / "rig.gltf")).buffers[0].uri
    assert g.buffers[0].uri == ("rig.bin" if external else original)
    (anim,) = g.animations
    s = anim.samplers[anim.channels[0].sampler]
    blob = blob_of(g, out, g.bufferViews[g.accessors[s.output].bufferView].buffer)
    w = accessor(g, blob, s.output).reshape(5, -1)
    assert np.allclose(w[:, 1], curves(T=5).curve("jawOpen"))
    if external:
        other = tmp_path / "elsewhere"
        other.mkdir()
        with pytest.raises(PtalkerError, match="same folder"):
            animate_rig(tmp_path / "rig.gltf", curves(T=5), other / "out.gltf")


def test_rig_errors_are_one_line(tmp_path):
    build_rig(tmp_path / "rig.glb")
    with pytest.raises(PtalkerError, match=r"must end in \.glb"):
        animate_rig(tmp_path / "rig.glb", curves(), tmp_path / "out.gltf")
    (tmp_path / "exists.glb").write_bytes(b"x")
    with pytest.raises(PtalkerError, match="--force"):
        animate_rig(tmp_path / "rig.glb", curves(), tmp_path / "exists.glb")
    # a rig whose targets have no ARKit names
    g = pygltflib.GLTF2.load(str(tmp_path / "rig.glb"))
    g.meshes[0].extras = {"targetNames": ["a", "b", "c", "d"]}
    g.meshes[1].extras = {"targetNames": ["smile"]}
    g.save_binary(str(tmp_path / "plain.glb"))
    with pytest.raises(PtalkerError, match="no morph targets with ARKit names") as exc:
        animate_rig(tmp_path / "plain.glb", curves(), tmp_path / "o.glb")
    assert "\n" not in str(exc.value) and not (tmp_path / "o.glb").exists()


def test_cli_animate_with_rig(tmp_path, wav_file):
    from test_arkit import tiny_basis

    from ptalker_cli.cli.app import app

    build_rig(tmp_path / "rig.glb")
    r = CliRunner().invoke(app, ["animate", str(wav_file(0.6)), "-m", "tiny", "--blendshapes",
                                 str(tiny_basis(tmp_path)), "--rig", str(tmp_path / "rig.glb"), "-o",
                                 str(tmp_path / "character.glb")])
    assert r.exit_code == 0, r.output
    r2 = CliRunner().invoke(app, ["animate", str(wav_file(0.3)), "-m", "tiny", "--rig", str(tmp_path / "rig.glb"),
                                  "--osc", "127.0.0.1:9"])
    assert r2.exit_code != 0 and "--rig needs -o OUT.glb" in r2.output
    (line,) = [x for x in r.output.splitlines() if "myCustomShape" in x]  # one summary line
    assert "not predicted, kept at 0: mouthSmileLeft;" in line and "curves the rig has no target for" not in line
    g = pygltflib.GLTF2.load(str(tmp_path / "character.glb"))
    assert [a.name for a in g.animations] == ["ptalker_arkit"]


def validate(path: Path) -> dict:
    res = subprocess.run(["node", str(JS / "validate_gltf.mjs"), str(path)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.system("node-gltf-validator")
@pytest.mark.parametrize("kind", ["glb", "gltf"])
def test_khronos_validator_accepts_the_animated_rig(tmp_path, kind):
    build_rig(tmp_path / f"rig.{kind}", gltf_json=kind == "gltf", external_bin=kind == "gltf")
    before = validate(tmp_path / f"rig.{kind}")
    assert before["issues"]["numErrors"] == 0, before["issues"]["messages"]
    out, _ = animate_rig(tmp_path / f"rig.{kind}", curves(T=30), tmp_path / f"out.{kind}")
    report = validate(out)
    issues = report["issues"]
    assert issues["numErrors"] == 0, [m for m in issues["messages"] if m["severity"] == 0]
    assert issues["numWarnings"] <= before["issues"]["numWarnings"], issues["messages"]
    assert report["info"]["animationCount"] == 1


@pytest.mark.system("node-gltf-validator")
def test_validator_catches_a_broken_animation(tmp_path):
    """The validator test can fail: a weights output one key short is an error to it."""
    build_rig(tmp_path / "rig.glb")
    out, _ = animate_rig(tmp_path / "rig.glb", curves(T=10), tmp_path / "out.glb")
    g = pygltflib.GLTF2.load(str(out))
    g2 = copy.deepcopy(g)
    g2.accessors[g2.animations[0].samplers[0].output].count -= 1
    g2.set_binary_blob(g.binary_blob())
    g2.save_binary(str(tmp_path / "broken.glb"))
    assert validate(tmp_path / "broken.glb")["issues"]["numErrors"] > 0


@pytest.mark.system("chromium-three")
def test_three_js_in_headless_chromium_plays_the_blink_and_the_jaw(tmp_path):
    """three.js's GLTFLoader + AnimationMixer, in a real browser, move the targets as the curves say."""
    import functools
    import html
    import http.server
    import re
    import shutil
    import threading

    import system

    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(JS / "play_rig.html", site / "index.html")
    (site / "node_modules").symlink_to(JS / "node_modules")
    build_rig(tmp_path / "rig.glb")
    c = curves(T=30)
    animate_rig(tmp_path / "rig.glb", c, site / "out.glb")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    Quiet.extensions_map = {**Quiet.extensions_map, ".js": "text/javascript", ".glb": "model/gltf-binary"}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ks = [0, 4, 9, 13, 18, 22, 29]
    times = ",".join(f"{k / c.fps:.6f}" for k in ks)
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html?file=out.glb&t={times}"
    try:
        res = subprocess.run([system.chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
                              "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                              "--virtual-time-budget=30000", "--dump-dom", url],
                             capture_output=True, text=True, timeout=180, check=False)
    finally:
        server.shutdown()
        server.server_close()
    m = re.search(r'<pre id="out">(.*?)</pre>', res.stdout, re.S)
    assert m, res.stderr[-2000:]
    text = html.unescape(m.group(1))
    assert not text.startswith(("ERROR", "pending")), text
    result = json.loads(text)
    assert result["animation"] == "ptalker_arkit"
    assert result["duration"] == pytest.approx((c.num_frames - 1) / c.fps, abs=1e-4)
    blink, jaw = [], []
    for k, sample in zip(ks, result["samples"]):
        face, teeth = sample["meshes"]["head"], sample["meshes"]["teeth"]
        assert face["EyeBlinkLeft"] == pytest.approx(float(c.curve("eyeBlinkLeft")[k]), abs=1e-4), k
        assert face["jawOpen"] == pytest.approx(float(c.curve("jawOpen")[k]), abs=1e-4)
        assert teeth["JawOpen"] == pytest.approx(float(c.curve("jawOpen")[k]), abs=1e-4)
        assert face["myCustomShape"] == pytest.approx(0.25)
        blink.append(face["EyeBlinkLeft"])
        jaw.append(face["jawOpen"])
    assert np.ptp(blink) > 0.3 and np.ptp(jaw) > 0.3  # they move
