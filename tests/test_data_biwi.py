"""BIWI conversion: .vl reader, normalisation, prepare_biwi end to end on a fake corpus."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from ptalker_cli.data import DatasetLayout, check_dataset
from ptalker_cli.data._common import shipped_region
from ptalker_cli.data.biwi import (
    BIWI_NUM_VERTICES,
    normalize_biwi,
    parse_vl,
    prepare_biwi,
    read_obj,
    read_vl,
    surface_area,
    vl_bytes,
    write_vl,
)
from ptalker_cli.data.layout import DatasetError
from ptalker_cli.data.testing import make_fake_biwi
from ptalker_cli.mesh import read_region_file, tiny_topology


def _tri_area(v, f):
    """Independent area: Heron-free cross products in a Python-level loop over faces."""
    total = 0.0
    for a, b, c in f:
        total += 0.5 * np.linalg.norm(np.cross(v[b] - v[a], v[c] - v[a]))
    return total


def _regions(tmp_path):
    topo = tiny_topology()
    paths = {}
    for key in ("lip", "upper_face"):
        p = tmp_path / f"{key}.txt"
        p.write_text(", ".join(map(str, topo.regions[key])))
        paths[key] = p
    return paths


@pytest.fixture(scope="module")
def biwi(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("biwi")
    fake = make_fake_biwi(tmp / "raw", header_bytes={"F2_e01": 8, "F1_e37": 8}, tar_sequences=("M3_e37",))
    regions = _regions(tmp)
    summary = prepare_biwi(tmp / "raw", tmp / "out", regions=regions)
    return fake, tmp / "out", summary, regions


# ------------------------------------------------------------------ reader


@pytest.mark.parametrize("header", [4, 8])
def test_read_vl_header_sizes(tmp_path, header):
    v = np.arange(30, dtype=np.float32).reshape(10, 3) * 0.5 - 3
    path = tmp_path / "frame_001.vl"
    write_vl(path, v, header)
    raw = path.read_bytes()
    assert len(raw) == header + 12 * 10
    assert int.from_bytes(raw[:4], "little") == 10  # vertex count, little-endian
    assert np.frombuffer(raw[header:header + 4], "<f4")[0] == v[0, 0]  # vertex-major x0 first
    np.testing.assert_array_equal(read_vl(path), v)
    np.testing.assert_array_equal(read_vl(path, expected_vertices=10), v)
    with pytest.raises(DatasetError, match="expected 11"):
        read_vl(path, expected_vertices=11)


def test_read_vl_rejects_garbage(tmp_path):
    path = tmp_path / "bad.vl"
    path.write_bytes(vl_bytes(np.zeros((5, 3)))[:-2])
    with pytest.raises(DatasetError, match="not a BIWI .vl frame"):
        read_vl(path)
    # right size but a header that does not match the payload
    data = bytearray(vl_bytes(np.zeros((5, 3))))
    data[0] = 7
    with pytest.raises(DatasetError):
        parse_vl(bytes(data))


def test_read_obj_keeps_vertex_order_with_texture_indices(tmp_path):
    p = tmp_path / "s.obj"
    p.write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvt 1 1\nf 1/1 2/2 3/1 4/2\n")
    v, f = read_obj(p)
    assert v.shape == (4, 3) and v[1, 0] == 1.0
    np.testing.assert_array_equal(f, [[0, 1, 2], [0, 2, 3]])


# ------------------------------------------------------------------ geometry


def test_normalize_rotation_centering_unit_area():
    topo = tiny_topology()
    rng = np.random.default_rng(1)
    raw = topo.vertices.astype(np.float64) * 13.0 + np.array([5.0, -7.0, 300.0])
    raw[:, 2] += rng.normal(0, 0.3, len(raw))
    out = normalize_biwi(raw, topo.faces)
    assert out.dtype == np.float32 and out.shape == raw.shape
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-6)
    assert _tri_area(out.astype(np.float64), topo.faces) == pytest.approx(1.0, rel=1e-5)
    # explicit expected value: (x, -y, -z), centred, / sqrt(area)
    rot = raw * np.array([1.0, -1.0, -1.0])
    rot -= rot.mean(axis=0)
    expected = rot / np.sqrt(_tri_area(raw, topo.faces))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # a rotation about x by 180 degrees, not a reflection: orientation (normals) flips y and z
    n_raw = np.cross(raw[topo.faces[0, 1]] - raw[topo.faces[0, 0]], raw[topo.faces[0, 2]] - raw[topo.faces[0, 0]])
    n_out = np.cross(out[topo.faces[0, 1]] - out[topo.faces[0, 0]], out[topo.faces[0, 2]] - out[topo.faces[0, 0]])
    assert np.sign(n_out[0]) == np.sign(n_raw[0]) or abs(n_raw[0]) < 1e-9
    assert np.sign(n_out[2]) == -np.sign(n_raw[2])


def test_normalize_sequence_per_frame_area():
    topo = tiny_topology()
    seq = np.stack([topo.vertices * s for s in (1.0, 2.0, 5.0)])
    out = normalize_biwi(seq, topo.faces)
    np.testing.assert_allclose(surface_area(out, topo.faces), 1.0, rtol=1e-5)
    # each frame scaled by its own area: uniformly scaled frames normalise to the same shape
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)


# ------------------------------------------------------------------ prepare


def test_prepare_vertices_numerically(biwi):
    fake, out, summary, _ = biwi
    faces = fake.faces
    assert summary.failed == 0 and summary.written == len(fake.vertices)
    for name in ("F2_e01", "M3_e37", "F1_e40"):  # 8-byte header, tar archive, plain
        got = np.load(out / "vertices_npy" / f"{name}.npy")
        raw = fake.vertices[name].astype(np.float64)
        assert got.dtype == np.float32 and got.shape == raw.shape
        for t in (0, len(raw) - 1):
            rot = raw[t] * np.array([1.0, -1.0, -1.0])
            rot -= rot.mean(axis=0)
            np.testing.assert_allclose(got[t], rot / np.sqrt(_tri_area(raw[t], faces)), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got[t].mean(axis=0), 0.0, atol=1e-6)
            assert _tri_area(got[t].astype(np.float64), faces) == pytest.approx(1.0, rel=1e-5)


def test_prepare_templates_audio_topology(biwi):
    fake, out, _, regions = biwi
    for subj, raw in fake.templates.items():
        t = np.load(out / "templates" / f"{subj}.npy")
        assert t.dtype == np.float32 and t.shape == raw.shape
        np.testing.assert_allclose(t, normalize_biwi(raw, fake.faces), atol=1e-6)
        assert _tri_area(t.astype(np.float64), fake.faces) == pytest.approx(1.0, rel=1e-5)
    for name, seconds in fake.audio_seconds.items():
        info = sf.info(str(out / "wav" / f"{name}.wav"))
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.frames - seconds * 16000) <= 2  # resampled from 44.1 kHz
    layout = DatasetLayout(out)
    topo = layout.load_topology()
    assert topo.num_vertices == tiny_topology().num_vertices and topo.units == "normalized"
    np.testing.assert_array_equal(topo.faces, fake.faces)
    np.testing.assert_array_equal(topo.regions["lip"], np.unique(read_region_file(regions["lip"])))
    assert (out / "regions" / "upper_face.txt").read_text() == regions["upper_face"].read_text()


def test_prepare_splits_exact_membership(biwi):
    _, out, summary, _ = biwi
    manifest = json.loads((out / "dataset.json").read_text())
    assert manifest["fps"] == 25 and manifest["units"] == "normalized"
    assert manifest["train_subjects"] == ["F2", "M3"]  # standard one-hot order, present only
    layout = DatasetLayout(out)
    assert layout.resolve_split("train") == ["F2_e01", "F2_e32", "M3_e01", "M3_e32"]
    assert layout.resolve_split("val") == ["F2_e33", "F2_e36", "M3_e33", "M3_e36"]
    assert layout.resolve_split("test-a") == ["F2_e37", "F2_e40", "M3_e37", "M3_e40"]
    assert layout.resolve_split("test-b") == ["F1_e37", "F1_e40"]
    assert summary.split_sizes == {"train": 4, "val": 4, "test-a": 4, "test-b": 2}
    assert check_dataset(out).ok


def test_prepare_rerun_skips_and_resumes(biwi, tmp_path):
    fake, out, _, regions = biwi
    target = out / "vertices_npy" / "F2_e33.npy"
    mtime = target.stat().st_mtime_ns
    (out / "vertices_npy" / "M3_e40.npy").unlink()  # an interrupted run
    (out / "wav" / "F1_e01.wav").unlink()
    s2 = prepare_biwi(fake.root, out, regions=regions)
    assert s2.written == 1 and s2.skipped == len(fake.vertices) - 2 and s2.failed == 0
    assert target.stat().st_mtime_ns == mtime
    assert (out / "vertices_npy" / "M3_e40.npy").exists() and (out / "wav" / "F1_e01.wav").exists()
    assert not list((out / "vertices_npy").glob(".*"))  # no temp files left


def test_prepare_default_regions_need_biwi_topology(tmp_path):
    make_fake_biwi(tmp_path / "raw", subjects=("F2",), sequences=("e01",))
    with pytest.raises(DatasetError, match="23370 vertices"):
        prepare_biwi(tmp_path / "raw", tmp_path / "out")
    s = prepare_biwi(tmp_path / "raw", tmp_path / "out2", regions=None)
    assert s.written == 1
    assert json.loads((tmp_path / "out2" / "dataset.json").read_text())["regions"] == {}


def test_prepare_missing_inputs(tmp_path):
    with pytest.raises(DatasetError, match="faces"):
        prepare_biwi(tmp_path, tmp_path / "out")
    make_fake_biwi(tmp_path / "raw", subjects=("F2",), sequences=("e01",), no_audio=("F2_e01",))
    s = prepare_biwi(tmp_path / "raw", tmp_path / "out", regions=None)
    assert "no audio" in s.subjects["F2"].notes[0]
    report = check_dataset(tmp_path / "out")
    assert "missing_audio" in report.kinds()
    (tmp_path / "raw" / "rigid_scans" / "F2.obj").unlink()
    with pytest.raises(DatasetError, match="rigid_scans"):
        prepare_biwi(tmp_path / "raw", tmp_path / "out3", regions=None)


def test_shipped_biwi_regions():
    lip = read_region_file(shipped_region("biwi", "lve.txt"))
    upper = read_region_file(shipped_region("biwi", "fdd.txt"))
    assert len(lip) == len(np.unique(lip)) == 4996 and len(upper) == 7784
    assert lip.max() < BIWI_NUM_VERTICES and upper.max() < BIWI_NUM_VERTICES
    assert not set(lip) & set(upper)
    for f in ("LICENSE", "PROVENANCE.md"):
        assert shipped_region("biwi", f).is_file() and shipped_region("vocaset", f).is_file()


def test_prepare_audio_from_flv_videos(tmp_path):
    """BIWI as distributed has the audio only in videos/<subj>_<seq>.flv: extracted with ffmpeg."""
    import subprocess

    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    fake = make_fake_biwi(tmp_path / "raw", subjects=("F2",), sequences=("e01",))
    wav = tmp_path / "raw" / "audio" / "F2_e01.wav"
    (tmp_path / "raw" / "videos").mkdir()
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(wav),
                    "-c:a", "pcm_s16le", "-f", "flv", str(tmp_path / "raw" / "videos" / "F2_e01.flv")], check=True)
    wav.unlink()
    s = prepare_biwi(fake.root, tmp_path / "out", regions=None)
    assert s.failed == 0 and not s.subjects["F2"].notes
    info = sf.info(str(tmp_path / "out" / "wav" / "F2_e01.wav"))
    assert info.samplerate == 16000 and abs(info.frames - fake.audio_seconds["F2_e01"] * 16000) <= 40


def test_audio_extension_is_loaded_before_the_first_file_is_written(tmp_path):
    """An interruption must not land in the import of soxr's C extension (it aborts the process, SIGABRT,
    instead of the one-line stop): prepare_biwi / prepare_vocaset import it before writing anything."""
    import subprocess
    import sys
    from pathlib import Path

    from ptalker_cli.data.testing import make_fake_vocaset

    make_fake_biwi(tmp_path / "braw", subjects=("F2",), sequences=("e01",))
    make_fake_vocaset(tmp_path / "vraw")
    calls = {"biwi": f"prepare_biwi({str(tmp_path / 'braw')!r}, {str(tmp_path / 'bout')!r}, regions=None)",
             "vocaset": f"prepare_vocaset({str(tmp_path / 'vraw')!r}, {str(tmp_path / 'vout')!r}, lip_region=None)"}
    for module, call in calls.items():
        script = (  # a fresh process: nothing imported soxr yet
            "import sys\n"
            f"from ptalker_cli.data import _common, {module} as m\n"
            "seen = []\n"
            "def spy(path, array, _save=_common.save_npy):\n"
            "    seen.append('soxr' in sys.modules)\n"
            "    _save(path, array)\n"
            "m.save_npy = spy\n"
            f"m.{call}\n"
            "print(seen[0], len(seen))\n"
        )
        res = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                             capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr[-2000:]
        first, files = res.stdout.split()
        assert int(files) > 1 and first == "True", f"{module}: soxr was not loaded before the first file"
