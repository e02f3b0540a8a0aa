"""Tests for ptalker_cli.export writers: npy, OBJ/PLY sequences, GLB, dispatch and safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from ptalker_cli.errors import MotionError, PtalkerError
from ptalker_cli.export import detect_format, write_motion
from ptalker_cli.export.glb import GlbOptions, read_glb
from ptalker_cli.mesh import tiny_topology
from ptalker_cli.motion import Motion


@pytest.fixture()
def topo():
    return tiny_topology()


def _motion(topo, frames=7, fps=25.0, seed=0):
    rng = np.random.default_rng(seed)
    offs = rng.normal(0, 0.3, size=(frames, topo.num_vertices, 3)).astype(np.float32)
    return Motion(topo.vertices[None] + offs, fps, topo.name, {"subject": "S1", "model": "test"})


def _one_line(exc: BaseException) -> None:
    msg = str(exc)
    assert isinstance(exc, PtalkerError)
    assert msg and "\n" not in msg and msg == msg.strip()


def test_detect_format(tmp_path):
    assert detect_format(tmp_path / "a.npy") == "npy"
    assert detect_format(tmp_path / "a.GLB") == "glb"
    assert detect_format(tmp_path / "a.mp4") == "mp4"
    assert detect_format(tmp_path / "frames") == "obj"
    assert detect_format(tmp_path) == "obj"
    with pytest.raises(PtalkerError) as ei:
        detect_format(tmp_path / "a.txt")
    _one_line(ei.value)


def test_npy_round_trip(tmp_path, topo):
    m = _motion(topo)
    paths = write_motion(m, topo, tmp_path / "m.npy")
    assert paths == [tmp_path / "m.npy", tmp_path / "m.json"]
    back = Motion.load(tmp_path / "m.npy")
    np.testing.assert_array_equal(back.vertices, m.vertices)
    assert back.fps == 25.0 and back.topology == "tiny" and back.meta["subject"] == "S1"
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["num_frames"] == 7 and side["num_vertices"] == topo.num_vertices


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_mesh_sequence_round_trip(tmp_path, topo, fmt):
    m = _motion(topo, frames=12)
    out = tmp_path / "seq"
    assert write_motion(m, topo, out, fmt) == [out]
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"frame_{k:05d}.{fmt}" for k in range(12)]
    for k, f in enumerate(files):
        mesh = trimesh.load(f, process=False, force="mesh")
        np.testing.assert_allclose(mesh.vertices, m.vertices[k], atol=1e-5)
        np.testing.assert_array_equal(mesh.faces, topo.faces)
    # nothing but the frames is left in the parent folder (no temp folders)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]


def test_folder_suffix_defaults_to_obj(tmp_path, topo):
    write_motion(_motion(topo, frames=2), topo, tmp_path / "frames")
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_00000.obj", "frame_00001.obj"]


def test_glb_round_trip(tmp_path, topo):
    m = _motion(topo, frames=10, fps=30.0)
    out = tmp_path / "m.glb"
    write_motion(m, topo, out, glb=GlbOptions(motion="per-frame"))  # the compact layout: tests/test_glb.py
    g = read_glb(out)
    np.testing.assert_allclose(g["template"], topo.vertices, atol=1e-6)
    np.testing.assert_array_equal(g["faces"], topo.faces)
    assert g["frames"].shape == m.vertices.shape
    np.testing.assert_allclose(g["frames"], m.vertices, atol=1e-5)
    # animation: one key per frame at k/fps, one-hot weights, length (T-1)/fps
    np.testing.assert_allclose(g["times"], np.arange(10) / 30.0, atol=1e-6)
    np.testing.assert_array_equal(g["weights"], np.eye(10, dtype=np.float32))
    doc = g["json"]
    assert doc["extras"]["fps"] == 30.0 and doc["extras"]["num_frames"] == 10
    assert doc["nodes"][0]["scale"] == [0.01] * 3  # the tiny mesh is in cm; glTF is in metres
    ch = doc["animations"][0]["channels"][0]
    assert ch["target"]["path"] == "weights" and doc["animations"][0]["samplers"][0]["interpolation"] == "LINEAR"
    # an independent parser (trimesh) reads the file too: the base mesh and the morph targets
    scene = trimesh.load(out, process=False)
    geom = next(iter(scene.geometry.values()))
    np.testing.assert_allclose(np.asarray(geom.vertices), topo.vertices, atol=1e-6)
    assert len(geom.faces) == len(topo.faces)


def test_glb_size_is_about_frames_times_vertices(tmp_path, topo):
    m = _motion(topo, frames=20)
    write_motion(m, topo, tmp_path / "m.glb", glb=GlbOptions(motion="per-frame"))
    size = (tmp_path / "m.glb").stat().st_size
    expected = 20 * topo.num_vertices * 12
    assert expected < size < expected + 40_000


@pytest.mark.system("egl")  # "all" includes the MP4, drawn over EGL
def test_all_formats(tmp_path, topo):
    m = _motion(topo, frames=3)
    paths = write_motion(m, topo, tmp_path / "clip", "all", resolution=64)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["clip.glb", "clip.json", "clip.mp4", "clip.npy", "clip_obj", "clip_ply"]
    assert len(paths) == 6


@pytest.mark.parametrize("name,fmt", [("m.npy", None), ("seq", "obj"), ("seq", "ply"), ("m.glb", None)])
def test_existing_output_needs_force(tmp_path, topo, name, fmt):
    m = _motion(topo, frames=2)
    out = tmp_path / name
    write_motion(m, topo, out, fmt)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(PtalkerError) as ei:
        write_motion(_motion(topo, frames=3, seed=1), topo, out, fmt)
    _one_line(ei.value)
    assert "--force" in str(ei.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    write_motion(_motion(topo, frames=3, seed=1), topo, out, fmt, force=True)
    if fmt in ("obj", "ply"):
        assert len(list(out.iterdir())) == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _bad_motions(topo):
    v = topo.vertices
    nan = np.repeat(v[None], 3, axis=0)
    nan[1, 5, 0] = np.nan
    return {
        "mismatch": Motion(np.repeat(v[None, :-1], 3, axis=0), 25.0),
        "nan": Motion(nan, 25.0),
        "empty": Motion(np.zeros((0, topo.num_vertices, 3), np.float32), 25.0),
    }


@pytest.mark.parametrize("kind", ["mismatch", "nan", "empty"])
@pytest.mark.parametrize("name,fmt", [("m.npy", None), ("seq", "obj"), ("seq", "ply"), ("m.glb", None),
                                      ("m.mp4", None), ("all", "all")])
def test_bad_input_writes_nothing(tmp_path, topo, kind, name, fmt):
    m = _bad_motions(topo)[kind]
    with pytest.raises(MotionError) as ei:
        write_motion(m, topo, tmp_path / name, fmt)
    _one_line(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(tmp_path, topo):
    with pytest.raises(PtalkerError) as ei:
        write_motion(_motion(topo), topo, tmp_path / "x.npy", "fbx")
    _one_line(ei.value)


@pytest.mark.parametrize("case,fmt", [(c, f) for c in ("folder-as-file", "file-as-parent", "name-too-long")
                                      for f in ("npy", "glb", "obj")
                                      if (c, f) != ("folder-as-file", "obj")])  # an OBJ sequence is a folder
def test_unwritable_target_is_one_line_and_writes_nothing(tmp_path, topo, case, fmt):
    """Targets the file system refuses give one PtalkerError line (no OSError traceback) before anything is
    written: an existing folder where a file goes, a file where a parent folder should be, a name longer
    than the file system allows."""
    (tmp_path / "taken.npy").mkdir()
    (tmp_path / "plain").write_text("a file")
    out = {"folder-as-file": tmp_path / "taken.npy",
           "file-as-parent": tmp_path / "plain" / "m.npy",
           "name-too-long": tmp_path / ("x" * 300 + ".npy")}[case]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(PtalkerError) as ei:
        write_motion(_motion(topo, frames=2), topo, out, fmt, force=True)
    _one_line(ei.value)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (a folder nobody can create files in)")
@pytest.mark.parametrize("fmt", ["npy", "obj"])
def test_write_refused_by_the_file_system_is_one_line(topo, fmt):
    """An OSError while writing (here: creating the temporary file in /proc, refused even to root)."""
    with pytest.raises(PtalkerError) as ei:
        write_motion(_motion(topo, frames=2), topo, Path("/proc") / f"ptalker-test.{fmt}", fmt)
    _one_line(ei.value)
    assert str(ei.value).startswith("could not write /proc/ptalker-test")  # fileio.write_errors


@pytest.mark.parametrize("make", ["wav", "object-array", "folder", "npz"])
def test_a_file_that_is_not_a_motion_is_one_line_without_unsafe_advice(tmp_path, make):
    """Motion.load (used by --style-from, render, eval) names the problem; it never passes on numpy's
    advice to load with allow_pickle=True."""
    from ptalker_cli.errors import MotionError

    path = tmp_path / "m.npy"
    if make == "wav":
        path = tmp_path / "speech.wav"
        path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    elif make == "object-array":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif make == "folder":
        path.mkdir()
    else:
        np.savez(path.with_suffix(".npz"), a=np.zeros(3))
        path = path.with_suffix(".npz")
    with pytest.raises(MotionError) as ei:
        Motion.load(path)
    msg = str(ei.value)
    assert "\n" not in msg and "allow_pickle" not in msg and str(path) in msg, msg
