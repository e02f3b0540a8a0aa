"""VOCASET conversion: restricted unpickler, subsampling, audio, templates, splits."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf

from ptalker_cli.data import DatasetLayout, check_dataset
from ptalker_cli.data import vocaset as voc
from ptalker_cli.data.layout import DatasetError
from ptalker_cli.data.testing import make_fake_vocaset
from ptalker_cli.data.vocaset import RestrictedUnpickler, prepare_vocaset, safe_load_pickle
from ptalker_cli.mesh import read_region_file, tiny_topology


@pytest.fixture(scope="module")
def voca(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voca")
    fake = make_fake_vocaset(tmp / "raw")
    lip = tmp / "lip.txt"
    lip.write_text(", ".join(map(str, tiny_topology().regions["lip"])))
    summary = prepare_vocaset(tmp / "raw", tmp / "out", lip_region=lip)
    return fake, tmp / "out", summary, lip


# ------------------------------------------------------------------ pickles


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_refuses_code(tmp_path):
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"x": _Evil()}, protocol=2))
    with pytest.raises(DatasetError, match="not allowed"):
        safe_load_pickle(p)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_loads_numpy_data(tmp_path, protocol):
    data = {"S": {"sentence01": {"audio": np.arange(5, dtype=np.int16), "sample_rate": 22000}},
            "t": np.ones((3, 3)), "n": np.float64(2.5), "i": {0: np.int64(4)}}
    p = tmp_path / "ok.pkl"
    p.write_bytes(pickle.dumps(data, protocol=protocol))
    got = safe_load_pickle(p)
    np.testing.assert_array_equal(got["S"]["sentence01"]["audio"], np.arange(5))
    assert got["S"]["sentence01"]["audio"].dtype == np.int16 and got["n"] == 2.5 and got["i"][0] == 4


def test_restricted_unpickler_python2_style_pickle():
    # A Python 2 protocol-2 pickle of {'a': numpy int16 array}: str payloads, __builtin__ names.
    import io

    arr = np.array([1, -2], dtype="<i2")
    py3 = pickle.dumps({"a": arr}, protocol=2).replace(b"numpy._core", b"numpy.core")
    got = RestrictedUnpickler(io.BytesIO(py3), encoding="latin1").load()
    np.testing.assert_array_equal(got["a"], arr)


# ------------------------------------------------------------------ prepare


def test_prepare_subsamples_60_to_30(voca):
    fake, out, summary, _ = voca
    assert summary.failed == 0 and summary.written == len(fake.sequences)
    for name, raw in fake.sequences.items():
        got = np.load(out / "vertices_npy" / f"{name}.npy")
        assert got.dtype == np.float32 and got.shape == (len(raw[::2]),) + raw.shape[1:]
        np.testing.assert_array_equal(got, raw[::2])  # frames in local order, every 2nd (0, 2, 4, ...)
    assert json.loads((out / "dataset.json").read_text())["fps"] == 30


def test_prepare_fps_60_keeps_all_frames(voca, tmp_path):
    fake, _, _, lip = voca
    seen = []
    s = prepare_vocaset(fake.root, tmp_path / "o60", fps=60, lip_region=lip,
                        subjects=["FaceTalk_170728_03272_TA"], progress=lambda *a: seen.append(a))
    assert s.written == 4
    assert seen[-1] == ("FaceTalk_170728_03272_TA_sentence40", 4, 4)  # progress callback (label, done, total)
    name = "FaceTalk_170728_03272_TA_sentence21"
    np.testing.assert_array_equal(np.load(tmp_path / "o60" / "vertices_npy" / f"{name}.npy"), fake.sequences[name])
    assert json.loads((tmp_path / "o60" / "dataset.json").read_text())["fps"] == 60
    with pytest.raises(DatasetError, match="divide 60"):
        prepare_vocaset(fake.root, tmp_path / "bad", fps=25, lip_region=lip)


def test_prepare_audio_templates_units(voca):
    fake, out, _, lip = voca
    for name, pcm in fake.audio.items():
        wav, sr = sf.read(str(out / "wav" / f"{name}.wav"), dtype="float32")
        assert sr == 16000 and wav.ndim == 1
        assert abs(len(wav) - len(pcm) * 16000 / 22000) <= 2
        # same content: RMS of the int16 tone scaled to [-1, 1]
        ref = pcm.astype(np.float64) / 32768.0
        assert np.sqrt(np.mean(wav[50:-50].astype(np.float64) ** 2)) == pytest.approx(
            np.sqrt(np.mean(ref ** 2)), rel=0.05)
    for subj, t in fake.templates.items():
        np.testing.assert_allclose(np.load(out / "templates" / f"{subj}.npy"), t, atol=1e-7)
    m = json.loads((out / "dataset.json").read_text())
    assert m["units"] == "m" and m["topology"] == "flame" and m["regions"] == {"lip": "regions/lip.txt"}
    topo = DatasetLayout(out).load_topology()
    np.testing.assert_array_equal(topo.faces, tiny_topology().faces)
    np.testing.assert_array_equal(topo.regions["lip"], np.unique(read_region_file(lip)))


def test_prepare_splits_exact_membership(voca):
    _, out, summary, _ = voca
    layout = DatasetLayout(out)
    tr, va, te = "FaceTalk_170728_03272_TA", "FaceTalk_170811_03275_TA", "FaceTalk_170809_00138_TA"
    assert layout.resolve_split("train") == [f"{tr}_sentence{n}" for n in ("01", "20", "21", "40")]
    assert layout.resolve_split("val") == [f"{va}_sentence21", f"{va}_sentence40"]
    assert layout.resolve_split("test") == [f"{te}_sentence21", f"{te}_sentence40"]
    assert json.loads((out / "dataset.json").read_text())["train_subjects"] == [tr]
    report = check_dataset(out)
    assert report.ok, report.issues


def test_prepare_memory_maps_and_skips_on_rerun(voca, monkeypatch):
    fake, out, _, lip = voca
    calls = []
    real_load = np.load

    def spy(path, *a, **k):
        calls.append((os.path.basename(str(path)), k.get("mmap_mode")))
        return real_load(path, *a, **k)

    monkeypatch.setattr(voc.np, "load", spy)
    s = prepare_vocaset(fake.root, out, lip_region=lip)
    assert ("data_verts.npy", "r") in calls
    assert s.written == 0 and s.skipped == len(fake.sequences)


def test_prepare_default_lip_region_and_missing_faces(tmp_path):
    fake = make_fake_vocaset(tmp_path / "raw", subjects=("FaceTalk_170728_03272_TA",), sentences=("sentence01",))
    # the shipped FLAME lip list indexes 5,023 vertices: refused on the small mesh
    with pytest.raises(DatasetError, match="outside"):
        prepare_vocaset(fake.root, tmp_path / "out")
    s = prepare_vocaset(fake.root, tmp_path / "out", lip_region=None)
    assert s.written == 1
    fake.faces_mesh.unlink()
    with pytest.raises(DatasetError, match="FLAME_sample.ply"):
        prepare_vocaset(fake.root, tmp_path / "out2", lip_region=None)
    with pytest.raises(DatasetError, match="lacks"):
        prepare_vocaset(tmp_path, tmp_path / "out3")


def test_shipped_vocaset_mouth_map_is_default():
    from ptalker_cli.data._common import shipped_region

    ids = read_region_file(shipped_region("vocaset", voc.VOCASET_LIP_REGIONS[voc.DEFAULT_LIP_REGION]))
    assert len(ids) == 254 and len(np.unique(ids)) == 250 and ids.max() < voc.VOCASET_NUM_VERTICES
