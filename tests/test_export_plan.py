"""Output planning at library level (ptalker_cli/export/plan.py; docs/inference.md, "Output names")."""

from __future__ import annotations

from pathlib import Path

import pytest

from ptalker_cli.errors import PtalkerError
from ptalker_cli.export.plan import OutputPlan, check_files, output_files, plan_outputs


def test_one_input_writes_where_o_says(tmp_path):
    plan = plan_outputs(["a.wav"], str(tmp_path / "out.npy"))
    assert plan.target("in/a.wav") == (tmp_path / "out.npy", None)
    assert plan.motion_files("in/a.wav") == {"npy": tmp_path / "out.npy"}
    frames = plan_outputs(["a.wav"], str(tmp_path / "frames"), "ply")
    assert frames.motion_files("a.wav") == {"ply": tmp_path / "frames"}


def test_a_folder_with_a_file_format_gets_the_input_name(tmp_path):
    plan = plan_outputs(["a.wav"], f"{tmp_path}/outs/", "mp4")  # a trailing slash names a folder
    assert plan.folder and plan.target("x/speech.wav") == (tmp_path / "outs" / "speech.mp4", "mp4")
    existing = plan_outputs(["a.wav"], str(tmp_path), "glb")  # an existing folder
    assert existing.motion_files("speech.wav") == {"glb": tmp_path / "speech.glb", "wav": tmp_path / "speech.wav"}


def test_format_all_with_several_inputs_names_every_file(tmp_path):
    outs = tmp_path / "outs"
    plan = plan_outputs(["d/a.wav", "d/b.wav"], f"{outs}/", "all")
    files = plan.motion_files("d/a.wav")
    assert files == {"npy": outs / "a.npy", "obj": outs / "a_obj", "ply": outs / "a_ply", "glb": outs / "a.glb",
                     "mp4": outs / "a.mp4", "wav": outs / "a.wav"}
    assert plan.motion_files("d/b.wav")["obj"] == outs / "b_obj"
    assert plan_outputs(["a.wav", "b.wav"], str(outs)).motion_files("b.wav") == {"npy": outs / "b.npy"}
    assert plan_outputs(["a.wav", "b.wav"], str(outs), "obj").target("b.wav") == (outs / "b", "obj")
    assert plan_outputs(["a.wav", "b.wav"], str(outs), "csv").target("b.wav") == (outs / "b.csv", "csv")


def test_format_all_drops_a_known_suffix_and_a_glb_gets_its_wav():
    files = output_files(Path("clip.npy"), "all", audio="speech.wav")
    assert sorted(p.name for p in files.values()) == ["clip.glb", "clip.mp4", "clip.npy", "clip.wav", "clip_obj",
                                                      "clip_ply"]
    assert "wav" not in output_files(Path("clip.glb"), None)  # no audio: no WAV
    assert output_files(Path("clip.glb"), None, audio="speech.wav")["wav"] == Path("clip.wav")


def test_a_glb_beside_its_own_wav_does_not_copy_it(tmp_path):
    wav = tmp_path / "clip.wav"
    wav.write_bytes(b"RIFF")
    assert output_files(tmp_path / "clip.glb", None, audio=wav) == {"glb": tmp_path / "clip.glb"}


@pytest.mark.parametrize("args, message", [
    ((["a.wav", "b.wav"], "outs.npy"), "with 2 inputs, -o must be a folder"),
    ((["a.wav"], None), "missing -o/--output"),
    ((["a.wav"], "x.npy", "fbx"), "unknown --format 'fbx'"),
])
def test_bad_plans_are_one_line_errors(args, message):
    with pytest.raises(PtalkerError, match=message) as exc:
        plan_outputs(*args)
    assert "\n" not in str(exc.value)


def test_several_inputs_refuse_an_existing_file_as_o(tmp_path):
    (tmp_path / "outs").write_text("")
    with pytest.raises(PtalkerError, match="must be a folder"):
        plan_outputs(2, str(tmp_path / "outs"))
    assert plan_outputs(1, None, live=True) == OutputPlan(None, False, None, False)


def test_planned_files_are_checked_before_anything_is_written(tmp_path):
    (tmp_path / "a.npy").write_text("")
    (tmp_path / "a_obj").mkdir()  # empty: nothing to overwrite
    files = output_files(tmp_path / "a", "all")
    with pytest.raises(PtalkerError, match="a.npy already exists; use --force"):
        check_files(files, force=False)
    check_files(files, force=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(PtalkerError, match="is a file, not a folder"):
        check_files(output_files(tmp_path / "file" / "x.npy", None), force=True)
    with pytest.raises(PtalkerError, match="is a folder; give a file name"):
        check_files({"npy": tmp_path / "a_obj"}, force=True)
