"""ARKit-52 curves: names, the ICT mapping, the Live Link Face CSV and JSON files, render round trip."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ptalker_cli.arkit import ARKIT_NAMES, ArkitCurves, ArkitMapping, arkit_name, curves_to_motion, solve_arkit
from ptalker_cli.blendshapes import Blendshapes, load_builtin_blendshapes
from ptalker_cli.cli.app import app
from ptalker_cli.errors import PtalkerError
from ptalker_cli.export.arkit_json import read_arkit_json, write_arkit_json
from ptalker_cli.export.livelink_csv import read_livelink_csv, timecode, write_livelink_csv
from ptalker_cli.mesh import load_builtin, tiny_topology
from ptalker_cli.motion import Motion

# Apple's ARFaceAnchor.BlendShapeLocation, in the order of its documentation
APPLE = """eyeBlinkLeft eyeLookDownLeft eyeLookInLeft eyeLookOutLeft eyeLookUpLeft eyeSquintLeft eyeWideLeft
eyeBlinkRight eyeLookDownRight eyeLookInRight eyeLookOutRight eyeLookUpRight eyeSquintRight eyeWideRight
jawForward jawLeft jawRight jawOpen mouthClose mouthFunnel mouthPucker mouthLeft mouthRight mouthSmileLeft
mouthSmileRight mouthFrownLeft mouthFrownRight mouthDimpleLeft mouthDimpleRight mouthStretchLeft
mouthStretchRight mouthRollLower mouthRollUpper mouthShrugLower mouthShrugUpper mouthPressLeft mouthPressRight
mouthLowerDownLeft mouthLowerDownRight mouthUpperUpLeft mouthUpperUpRight browDownLeft browDownRight browInnerUp
browOuterUpLeft browOuterUpRight cheekPuff cheekSquintLeft cheekSquintRight noseSneerLeft noseSneerRight
tongueOut""".split()
NOT_IN_ICT = {n for n in APPLE if n.startswith("eyeLook")} | {"tongueOut"}


@pytest.fixture(scope="module")
def ict():
    return load_builtin("ict"), load_builtin_blendshapes("ict")


def random_curves(T=40, fps=25.0, seed=0, driven=ARKIT_NAMES):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, (T, 52)).astype(np.float32)
    w[:, [i for i, n in enumerate(ARKIT_NAMES) if n not in driven]] = 0
    return ArkitCurves(fps, w, tuple(driven))


def test_the_52_names_are_apples():
    assert list(ARKIT_NAMES) == APPLE and len(set(APPLE)) == 52


@pytest.mark.parametrize("spelling", ["eyeBlinkLeft", "EyeBlinkLeft", "eyeBlink_L", "eyeblinkleft", "EYEBLINK_L",
                                      "eyeBlink.L", "eyeBlink_l"])
def test_accepted_spellings(spelling):
    assert arkit_name(spelling) == "eyeBlinkLeft"


def test_spellings_do_not_confuse_names():
    assert arkit_name("mouthFunnel") == "mouthFunnel"  # ends in 'l' but is no left side
    assert arkit_name("MouthRollLower") == "mouthRollLower"
    assert arkit_name("mouthSmile_R") == "mouthSmileRight"
    assert arkit_name("browInnerUp_L") is None  # not an ARKit name by itself (ICT's half)
    assert arkit_name("myCustomShape") is None


def test_ict_mapping(ict):
    _, basis = ict
    m = ArkitMapping.for_names(basis.names)
    assert set(m.driven) == set(APPLE) - NOT_IN_ICT and len(m.driven) == 43
    assert m.unmapped == ()
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 1, (5, basis.num_shapes)).astype(np.float32)
    a = m.to_arkit(w)
    col = {n: i for i, n in enumerate(ARKIT_NAMES)}
    idx = {n: i for i, n in enumerate(basis.names)}
    assert np.allclose(a[:, col["browInnerUp"]], (w[:, idx["browInnerUp_L"]] + w[:, idx["browInnerUp_R"]]) / 2)
    assert np.allclose(a[:, col["cheekPuff"]], (w[:, idx["cheekPuff_L"]] + w[:, idx["cheekPuff_R"]]) / 2)
    assert np.array_equal(a[:, col["eyeBlinkLeft"]], w[:, idx["eyeBlink_L"]])
    assert np.array_equal(a[:, col["mouthSmileRight"]], w[:, idx["mouthSmile_R"]])
    assert not a[:, [col[n] for n in NOT_IN_ICT]].any()
    back = m.to_basis(a)
    assert np.array_equal(back[:, idx["jawOpen"]], w[:, idx["jawOpen"]])
    assert np.allclose(back[:, idx["browInnerUp_L"]], a[:, col["browInnerUp"]])


def test_solve_arkit_recovers_curves_by_name(ict):
    topo, basis = ict
    T = 30
    w = np.zeros((T, basis.num_shapes), np.float32)
    t = np.arange(T) / 25
    w[:, basis.index("jawOpen")] = 0.5 + 0.4 * np.sin(2 * np.pi * t)
    w[:, basis.index("eyeBlink_R")] = (np.arange(T) % 10 < 2).astype(np.float32)
    w[:, basis.index("browInnerUp_L")] = w[:, basis.index("browInnerUp_R")] = 0.3
    curves = solve_arkit(Motion(basis.pose(topo.vertices, w), 25.0, "ict"), topo)
    assert np.abs(curves.curve("jawOpen") - w[:, basis.index("jawOpen")]).max() < 0.02
    assert np.abs(curves.curve("EyeBlinkRight") - w[:, basis.index("eyeBlink_R")]).max() < 0.02
    assert np.abs(curves.curve("browInnerUp") - 0.3).max() < 0.02
    assert np.abs(curves.curve("eyeBlinkLeft")).max() < 0.02
    frame = curves.frames()[3]
    assert set(frame) == set(APPLE) and frame["jawOpen"] == pytest.approx(float(curves.curve("jawOpen")[3]))
    assert "eyeLookUpLeft" not in curves.driven and "jawOpen" in curves.driven


def test_a_topology_without_a_basis_is_a_one_line_error():
    topo = tiny_topology()
    with pytest.raises(PtalkerError, match="no blendshape basis.*--blendshapes"):
        solve_arkit(Motion(np.repeat(topo.vertices[None], 3, 0), 25.0, "tiny"), topo)


def test_livelink_csv_layout(tmp_path):
    curves = random_curves(T=60)
    path = write_livelink_csv(curves, tmp_path / "take.csv")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))  # an independent reader, by column name
    header = path.read_text().splitlines()[0].split(",")
    assert header[:2] == ["Timecode", "BlendShapeCount"] and len(header) == 2 + 61
    assert header[-9:] == ["HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                           "RightEyeYaw", "RightEyePitch", "RightEyeRoll"]
    assert set(header[2:54]) == {n[0].upper() + n[1:] for n in APPLE}
    assert header.index("JawRight") < header.index("JawLeft")  # the app's own column order
    assert len(rows) == 60 and all(r["BlendShapeCount"] == "61" for r in rows)
    for k in (0, 17, 59):
        for name in ("JawOpen", "EyeBlinkLeft", "MouthLeft", "TongueOut"):
            assert float(rows[k][name]) == pytest.approx(float(curves.curve(name)[k]), abs=1e-6)
    # Unreal's importer reads HH:MM:SS:FF.fff with FF at 30 fps (or 60 if any FF > 30)
    assert rows[0]["Timecode"] == "00:00:00:00.000" and rows[1]["Timecode"] == "00:00:00:01.200"
    assert rows[25]["Timecode"] == "00:00:01:00.000"
    assert max(float(r["Timecode"].split(":")[3]) for r in rows) < 30
    assert timecode(3723.5) == "01:02:03:15.000"


def test_livelink_csv_is_read_by_name_whatever_the_column_order(tmp_path):
    curves = random_curves(T=12, fps=25.0)
    path = write_livelink_csv(curves, tmp_path / "a.csv")
    lines = [line.split(",") for line in path.read_text().splitlines()]
    perm = [0, 1] + list(np.random.default_rng(0).permutation(np.arange(2, len(lines[0]))))
    shuffled = tmp_path / "b.csv"
    shuffled.write_text("\n".join(",".join(row[i] for i in perm) for row in lines) + "\n")
    back = read_livelink_csv(shuffled)
    assert back.fps == pytest.approx(25.0, abs=1e-3)
    assert np.allclose(back.weights, curves.weights, atol=1e-6)


def test_livelink_csv_from_a_phone_at_60_fps(tmp_path):
    """A recording's wall-clock timecodes with 60-fps frames read back at 60 fps."""
    names = ["EyeBlinkLeft", "JawOpen"]
    lines = ["Timecode,BlendShapeCount," + ",".join(names)]
    for k in range(90):
        sec, fr = divmod(k, 60)
        lines.append(f"14:03:{52 + sec:02d}:{fr:02d}.000,61,0.1,{k / 100:.2f}")
    (tmp_path / "phone.csv").write_text("\n".join(lines) + "\n")
    c = read_livelink_csv(tmp_path / "phone.csv")
    assert c.fps == pytest.approx(60.0, abs=1e-3) and c.num_frames == 90
    assert c.curve("jawOpen")[45] == pytest.approx(0.45) and set(c.driven) == {"eyeBlinkLeft", "jawOpen"}


def test_bad_csv_is_a_one_line_error(tmp_path):
    (tmp_path / "x.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(PtalkerError, match="not a Live Link Face CSV"):
        read_livelink_csv(tmp_path / "x.csv")


def test_arkit_json(tmp_path):
    curves = random_curves(T=7, fps=30.0, driven=("jawOpen", "eyeBlinkLeft"))
    path = write_arkit_json(curves, tmp_path / "c.json")
    doc = json.loads(path.read_text())
    assert doc["fps"] == 30.0 and doc["names"] == APPLE and len(doc["frames"]) == 7
    assert doc["frames"][2]["jawOpen"] == pytest.approx(float(curves.curve("jawOpen")[2]), abs=1e-6)
    assert set(doc["driven"]) == {"jawOpen", "eyeBlinkLeft"}
    back = read_arkit_json(path)
    assert back.fps == 30.0 and np.allclose(back.weights, curves.weights, atol=1e-6)
    (tmp_path / "bare.json").write_text(json.dumps([{"JawOpen": 0.5}, {"jaw_open": 0.1, "EyeBlink_L": 1}]))
    bare = read_arkit_json(tmp_path / "bare.json", fps=25)
    assert bare.curve("jawOpen")[0] == 0.5 and bare.curve("eyeBlinkLeft")[1] == 1.0


def test_render_accepts_curves_and_reposes_the_ict_head(tmp_path, ict):
    """animate → csv → render gives the re-posed mesh: template + basis weights from the curves."""
    topo, basis = ict
    curves = random_curves(T=10, driven=tuple(n for n in APPLE if n not in NOT_IN_ICT))
    write_livelink_csv(curves, tmp_path / "c.csv")
    res = CliRunner().invoke(app, ["render", str(tmp_path / "c.csv"), "-o", str(tmp_path / "m.npy"), "-q"])
    assert res.exit_code == 0, res.output
    m = Motion.load(tmp_path / "m.npy")
    # expected, written out here: ICT's X_L/X_R take ARKit's XLeft/XRight, the two halves of
    # browInnerUp and cheekPuff both take the shared value, everything else its own name
    w = np.zeros((curves.num_frames, basis.num_shapes), np.float32)
    for k, name in enumerate(basis.names):
        base, side = (name[:-2], {"_L": "Left", "_R": "Right"}[name[-2:]]) if name[-2:] in ("_L", "_R") else (name, "")
        w[:, k] = curves.curve(base if base in ("browInnerUp", "cheekPuff") else base + side)
    expected = topo.vertices[None] + np.einsum("tk,kvc->tvc", w, basis.offsets)
    assert m.fps == 25.0 and np.allclose(m.vertices, expected, atol=1e-4)
    assert np.allclose(m.vertices, curves_to_motion(curves, topo, basis).vertices, atol=1e-5)


def test_cli_curves_need_a_basis_for_a_model_without_one(tmp_path, wav_file):
    wav = wav_file(0.5)
    out = tmp_path / "o.csv"
    res = CliRunner().invoke(app, ["animate", str(wav), "-m", "tiny", "-o", str(out), "-q"])
    assert res.exit_code != 0 and "no blendshape basis" in res.output and "--blendshapes" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".o.csv*"))


def tiny_basis(tmp_path):
    topo = tiny_topology()
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 0.3, (3, topo.num_vertices, 3)).astype(np.float32)
    return Blendshapes(("jawOpen", "eyeBlink_L", "myCustomShape"), offsets).save(tmp_path / "tiny_basis.npz")


def test_cli_writes_csv_and_json_with_a_user_basis(tmp_path, wav_file):
    wav, basis = wav_file(0.6), tiny_basis(tmp_path)
    r = CliRunner().invoke(app, ["animate", str(wav), "-m", "tiny", "--blendshapes", str(basis), "-o",
                                 str(tmp_path / "o.csv"), "-q"])
    assert r.exit_code == 0, r.output
    c = read_livelink_csv(tmp_path / "o.csv")
    assert c.num_frames == 14 and set(c.driven) == set(APPLE)  # a CSV names every column
    r = CliRunner().invoke(app, ["animate", str(wav), "-m", "tiny", "--blendshapes", str(basis), "-o",
                                 str(tmp_path / "o.json"), "--format", "arkit-json", "-q"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "o.json").read_text())
    assert doc["driven"] == ["eyeBlinkLeft", "jawOpen"] and doc["num_frames"] == 14
    r = CliRunner().invoke(app, ["animate", str(wav), "-m", "tiny", "--blendshapes", str(basis), "-o",
                                 str(tmp_path / "p.json"), "-q"])
    assert r.exit_code != 0 and "--format arkit-json" in r.output and not (tmp_path / "p.json").exists()
