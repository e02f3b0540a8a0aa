"""Layout, manifest, split rules, ``check_dataset`` (one test per error class) and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from ptalker_cli.cli.data_cmd import data_app
from ptalker_cli.data import DatasetLayout, Manifest, SplitRule, check_dataset, sentence_number, split_name
from ptalker_cli.data.layout import DatasetError
from ptalker_cli.data.testing import make_fake_dataset
from ptalker_cli.errors import PtalkerError


@pytest.fixture
def ds(tmp_path):
    return make_fake_dataset(tmp_path / "ds")


def _manifest(root):
    return json.loads((root / "dataset.json").read_text())


def _write_manifest(root, data):
    (root / "dataset.json").write_text(json.dumps(data))


# ------------------------------------------------------------------ names, rules, manifest


def test_names():
    assert split_name("F2_e01") == ("F2", "e01")
    assert split_name("FaceTalk_170725_00137_TA_sentence01") == ("FaceTalk_170725_00137_TA", "sentence01")
    assert sentence_number("e07") == 7 and sentence_number("sentence21") == 21 and sentence_number("x") is None
    with pytest.raises(DatasetError):
        split_name("nounderscore")


def test_split_rules():
    names = ["F2_e01", "F2_e32", "F2_e33", "M3_e40", "F1_e40", "F1_neutral"]
    assert SplitRule.from_json({"subjects": ["F2", "M3"], "sentences": ["1-32"]}).select(names) == ["F2_e01", "F2_e32"]
    assert SplitRule.from_json({"sentences": [40]}).select(names) == ["F1_e40", "M3_e40"]
    assert SplitRule.from_json({"sentences": ["neutral", "33-33"]}).select(names) == ["F1_neutral", "F2_e33"]
    assert SplitRule.from_json(["M3_e40"]).select(names) == ["M3_e40"]
    assert SplitRule.from_json({"names": ["F2_e01"]}).select(names) == ["F2_e01"]
    assert SplitRule.from_json({}).select(names) == sorted(names)
    for bad in ({"subject": ["F2"]}, {"subjects": "F2"}, 3, [1, 2], {"sentences": [1.5]}):
        with pytest.raises(DatasetError):
            SplitRule.from_json(bad)


def test_manifest_roundtrip_and_errors(ds):
    m = Manifest.load(ds)
    assert m.fps == 25 and m.subject_index("B") == 1 and m.subject_index("C") == -1
    again = Manifest.from_json(json.loads(json.dumps(m.to_json())))
    assert again.to_json() == m.to_json()
    with pytest.raises(DatasetError, match="lacks"):
        Manifest.from_json({"name": "x"})
    (ds / "dataset.json").write_text("{ nope")
    with pytest.raises(PtalkerError, match="fix the JSON"):
        Manifest.load(ds)
    with pytest.raises(DatasetError, match="not found"):
        Manifest.load(ds / "missing")


def test_layout_custom_split_and_unknown_split(ds):
    layout = DatasetLayout(ds)
    assert layout.resolve_split("val") == ["A_s03", "B_s03"]
    assert layout.resolve_split({"subjects": ["C"], "sentences": [1]}) == ["C_s01"]
    assert layout.resolve_split(["A_s02"]) == ["A_s02"]
    assert len(layout.resolve_split(None)) == 9
    with pytest.raises(DatasetError, match="known splits: test, train, val"):
        layout.resolve_split("nope")


# ------------------------------------------------------------------ check: clean + each error class


def test_check_clean(ds):
    report = check_dataset(ds)
    assert report.ok and not report.issues, report.issues
    assert report.split_sizes == {"train": 4, "val": 2, "test": 3}
    assert len(report.rows) == 9 and all(r.status == "ok" for r in report.rows)


def test_check_frame_audio_mismatch(ds):
    sf.write(str(ds / "wav" / "A_s01.wav"), np.zeros(16000 * 3, dtype=np.float32) + 0.1, 16000)  # 3 s vs 0.4 s
    report = check_dataset(ds)
    assert report.kinds() == {"frame_mismatch"}
    assert report.errors[0].where == "A_s01"
    # within tolerance: 0.4 s of motion vs 0.7 s of audio (0.5 s allowed)
    sf.write(str(ds / "wav" / "A_s01.wav"), np.zeros(int(16000 * 0.7), dtype=np.float32) + 0.1, 16000)
    assert check_dataset(ds).ok
    assert not check_dataset(ds, tolerance_s=0.1).ok


def test_check_vertex_count_mismatch(ds):
    v = np.load(ds / "vertices_npy" / "B_s02.npy")
    np.save(ds / "vertices_npy" / "B_s02.npy", v[:, :-1])
    report = check_dataset(ds)
    assert report.kinds() == {"vertex_count"} and "B_s02" in report.errors[0].where
    np.save(ds / "vertices_npy" / "B_s02.npy", v.reshape(len(v), -1))  # (T, V*3) is accepted
    assert check_dataset(ds).ok


def test_check_template_vertex_count(ds):
    t = np.load(ds / "templates" / "C.npy")
    np.save(ds / "templates" / "C.npy", t[:-2])
    report = check_dataset(ds)
    assert "vertex_count" in report.kinds() and any("C.npy" in e.where for e in report.errors)


def test_check_nan(ds):
    v = np.load(ds / "vertices_npy" / "A_s02.npy")
    v[3, 5, 1] = np.nan
    np.save(ds / "vertices_npy" / "A_s02.npy", v)
    report = check_dataset(ds)
    assert report.kinds() == {"nan"}
    assert check_dataset(ds, scan_values=False).ok  # --quick skips the scan


def test_check_missing_template(ds):
    (ds / "templates" / "B.npy").unlink()
    report = check_dataset(ds)
    assert report.kinds() == {"missing_template"} and "B.npy" in report.errors[0].where


def test_check_missing_audio(ds):
    (ds / "wav" / "C_s03.wav").unlink()
    report = check_dataset(ds)
    assert report.kinds() == {"missing_audio"}
    assert [r.status for r in report.rows if r.name == "C_s03"] == ["error"]


def test_check_duplicates(ds):
    sf.write(str(ds / "wav" / "A_s01.flac"), np.zeros(6400, dtype=np.float32) + 0.1, 16000)
    np.save(ds / "vertices_npy" / "a_s01.npy", np.load(ds / "vertices_npy" / "A_s01.npy"))
    np.save(ds / "templates" / "a.npy", np.load(ds / "templates" / "A.npy"))
    sf.write(str(ds / "wav" / "a_s01.wav"), np.zeros(6400, dtype=np.float32) + 0.1, 16000)
    m = _manifest(ds)
    m["subjects"].append("a")
    m["subjects"].append("A")
    _write_manifest(ds, m)
    report = check_dataset(ds)
    dup = [e for e in report.errors if e.kind == "duplicate"]
    assert report.kinds() == {"duplicate"}
    assert any("A_s01.flac" in e.message for e in dup)  # two audio files for one name
    assert any("letter case" in e.message for e in dup)  # names differing only in case
    assert any("listed twice" in e.message for e in dup)  # manifest subject repeated


def test_check_unknown_subjects_and_sequences_in_splits(ds):
    m = _manifest(ds)
    m["splits"]["test"] = {"subjects": ["C", "Z"]}
    m["splits"]["extra"] = ["A_s01", "A_s09"]
    m["train_subjects"] = ["A", "Q"]
    _write_manifest(ds, m)
    report = check_dataset(ds)
    assert report.kinds() == {"unknown_subject", "unknown_sequence"}
    msgs = " ".join(e.message for e in report.errors)
    assert "'Z'" in msgs and "'Q'" in msgs and "A_s09" in msgs


def test_check_regions_and_manifest(ds):
    (ds / "regions" / "lip.txt").write_text("1, 2, 99999")
    assert check_dataset(ds).kinds() == {"bad_region"}
    (ds / "dataset.json").unlink()
    assert check_dataset(ds).kinds() == {"manifest"}


# ------------------------------------------------------------------ CLI


def test_cli_check_exit_codes(ds):
    runner = CliRunner()
    res = runner.invoke(data_app, ["check", str(ds)])
    assert res.exit_code == 0, res.output
    assert "OK" in res.output
    (ds / "templates" / "A.npy").unlink()
    res = runner.invoke(data_app, ["check", str(ds)])
    assert res.exit_code == 1
    assert "missing_template" in res.output and "error" in res.output


def test_cli_prepare_biwi_and_vocaset(tmp_path):
    from ptalker_cli.data.testing import make_fake_biwi, make_fake_vocaset
    from ptalker_cli.mesh import tiny_topology

    lip = tmp_path / "lip.txt"
    lip.write_text(", ".join(map(str, tiny_topology().regions["lip"])))
    make_fake_biwi(tmp_path / "rb", subjects=("F2",), sequences=("e01", "e40"))
    runner = CliRunner()
    res = runner.invoke(data_app, ["prepare", "biwi", str(tmp_path / "rb"), str(tmp_path / "ob"),
                                   "--lip-region", str(lip), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "total" in res.output and (tmp_path / "ob" / "vertices_npy" / "F2_e40.npy").exists()
    fake = make_fake_vocaset(tmp_path / "rv", subjects=("FaceTalk_170728_03272_TA",), sentences=("sentence01",),
                             faces_mesh=True)
    faces = tmp_path / "FLAME_sample.ply"
    fake.faces_mesh.rename(faces)
    res = runner.invoke(data_app, ["prepare", "vocaset", str(tmp_path / "rv"), str(tmp_path / "ov"),
                                   "--faces", str(faces), "--lip-region", "none", "-q"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ov" / "wav" / "FaceTalk_170728_03272_TA_sentence01.wav").exists()
    # errors are one line, with no traceback, and a non-zero exit
    res = runner.invoke(data_app, ["prepare", "biwi", str(tmp_path / "nothing"), str(tmp_path / "o")])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), res.output


def test_main_app_mounts_data_commands(ds, tmp_path, capsys):
    from ptalker_cli.cli.app import main

    with pytest.raises(SystemExit) as exc:
        main(["data", "check", str(ds)])
    assert exc.value.code == 0
    with pytest.raises(SystemExit) as exc:
        main(["data", "prepare", "biwi", str(tmp_path / "missing"), str(tmp_path / "out")])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
