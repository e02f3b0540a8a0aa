"""`ptalker animate` end to end through the Typer app (in-process) and as a subprocess."""

import json
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from ptalker_cli.cli.app import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_animate_npy_and_sidecar(wav_file, tmp_path):
    wav = wav_file(1.0)
    out = tmp_path / "out.npy"
    res = run("animate", wav, "--model", "tiny", "--subject", "S2", "-o", out, "--quiet")
    assert res.exit_code == 0, res.output
    verts = np.load(out)
    assert verts.shape == (24, 192, 3) and verts.dtype == np.float32
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["fps"] == 25.0 and side["subject"] == "S2" and side["style"] == "S2"


def test_animate_obj_sequence(wav_file, tmp_path):
    wav = wav_file(0.6)
    out = tmp_path / "objs"
    res = run("animate", wav, "--model", "tiny", "--subject", "S1", "-o", out, "--format", "obj", "--quiet")
    assert res.exit_code == 0, res.output
    files = sorted(out.glob("*.obj"))
    assert len(files) == 14
    mesh = trimesh.load(files[3], process=False)
    assert mesh.vertices.shape == (192, 3)


def test_obj_frames_equal_npy(wav_file, tmp_path):
    wav = wav_file(0.6)
    assert run("animate", wav, "-m", "tiny", "-s", "S3", "-o", tmp_path / "a.npy", "-q").exit_code == 0
    assert run("animate", wav, "-m", "tiny", "-s", "S3", "-o", tmp_path / "b", "-f", "obj", "-q").exit_code == 0
    verts = np.load(tmp_path / "a.npy")
    frame5 = trimesh.load(sorted((tmp_path / "b").glob("*.obj"))[5], process=False).vertices
    np.testing.assert_allclose(frame5, verts[5], atol=1e-5)


def test_subject_modes(wav_file, tmp_path):
    wav = wav_file(0.8)
    outs = {}
    for name, extra in {
        "seen": ["--subject", "S1"],
        "unseen": ["--subject", "U1"],
        "style": ["--subject", "S1", "--style", "S2"],
        "blend": ["--subject", "S1", "--style", "S1:0.5,S3:0.5", "--style-strength", "0.8"],
    }.items():
        out = tmp_path / f"{name}.npy"
        res = run("animate", wav, "-m", "tiny", "-o", out, "-q", *extra)
        assert res.exit_code == 0, res.output
        outs[name] = np.load(out)
    assert json.loads((tmp_path / "unseen.json").read_text())["style"] == "audio"
    for a in outs:
        for b in outs:
            if a < b:
                assert np.abs(outs[a] - outs[b]).max() > 1e-4, (a, b)


def test_style_from_reference_motion(wav_file, tmp_path):
    wav = wav_file(0.8)
    ref = tmp_path / "ref.npy"
    assert run("animate", wav_file(0.5, "r.wav", seed=3), "-m", "tiny", "-s", "S2", "-o", ref, "-q").exit_code == 0
    out = tmp_path / "styled.npy"
    res = run("animate", wav, "-m", "tiny", "-s", "S1", "--style-from", ref, "-o", out, "-q")
    assert res.exit_code == 0, res.output
    assert json.loads(out.with_suffix(".json").read_text())["style"] == "reference:ref.npy"


def test_unknown_subject_lists_known_ones(wav_file, tmp_path):
    res = run("animate", wav_file(0.5), "-m", "tiny", "--subject", "F9", "-o", tmp_path / "x.npy", "-q")
    assert res.exit_code == 1
    assert "unknown subject 'F9'" in res.output and "S1, S2, S3" in res.output
    assert not (tmp_path / "x.npy").exists()


def test_many_inputs_keep_going_past_a_failure(wav_file, tmp_path):
    good1, good2 = wav_file(0.5, "a.wav"), wav_file(0.5, "c.wav", seed=2)
    bad = tmp_path / "b.wav"
    bad.write_text("not audio")
    out = tmp_path / "outs"
    res = run("animate", good1, bad, good2, "-m", "tiny", "-o", out, "--json")
    assert res.exit_code == 1
    report = json.loads(res.stdout)
    assert [r["status"] for r in report] == ["ok", "error", "ok"]
    assert "b.wav" in report[1]["error"]
    assert (out / "a.npy").exists() and (out / "c.npy").exists() and not (out / "b.npy").exists()


def test_existing_output_needs_force(wav_file, tmp_path):
    wav, out = wav_file(0.5), tmp_path / "o.npy"
    assert run("animate", wav, "-m", "tiny", "-o", out, "-q").exit_code == 0
    before = out.read_bytes()
    res = run("animate", wav, "-m", "tiny", "-s", "S2", "-o", out, "-q")
    assert res.exit_code == 1 and "--force" in res.output
    assert out.read_bytes() == before
    assert run("animate", wav, "-m", "tiny", "-s", "S2", "-o", out, "-q", "--force").exit_code == 0


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.wav", "not found"),
        (lambda p: _write(p / "empty.wav", b""), "cannot read"),
        (lambda p: _write(p / "t.wav", b"hello, not audio"), "cannot read"),
        (lambda p: p, "directory"),
    ],
)
def test_bad_audio_is_one_line_without_traceback(tmp_path, make, message):
    path = make(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "ptalker_cli", "animate", str(path), "-m", "tiny", "-o", str(tmp_path / "o.npy")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 1
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o.npy").exists()


def test_silent_audio_gives_a_still_face(tmp_path):
    import soundfile as sf

    wav = tmp_path / "silence.wav"
    sf.write(wav, np.zeros(16000, dtype=np.float32), 16000)
    res = run("animate", wav, "-m", "tiny", "-s", "S1", "-o", tmp_path / "s.npy", "-q")
    assert res.exit_code == 0, res.output
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()


def test_unknown_model_is_an_error(wav_file, tmp_path):
    res = run("animate", wav_file(0.5), "-m", tmp_path / "nope", "-o", tmp_path / "o.npy")
    assert res.exit_code == 1 and "not found" in res.output


def test_render_takes_a_model_folder_as_template(wav_file, tmp_path, tiny):
    from ptalker_cli.model.folder import resolve_template

    tiny.save_pretrained(tmp_path / "model")
    motion = tmp_path / "m.npy"
    assert run("animate", wav_file(0.5), "-m", tmp_path / "model", "-s", "U1", "-o", motion, "-q").exit_code == 0
    topo = resolve_template(tmp_path / "model", "U1")
    assert topo.num_vertices == 192 and len(topo.faces) == len(tiny.topology.faces)
    np.testing.assert_allclose(topo.vertices, tiny.subject_templates[3].numpy())
    out = tmp_path / "frames"
    res = run("render", motion, "--template", tmp_path / "model", "-o", out, "--format", "obj", "-q")
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("*.obj"))) == 12
    res = run("render", motion, "--template", tmp_path, "-o", tmp_path / "x", "--format", "obj", "-q")
    assert res.exit_code == 1 and "not a model folder" in res.output


def _one_error_line(res) -> str:
    """The run failed through the CLI's error path (no traceback) with exactly one line; returns it."""
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.system("egl")  # --format all includes the MP4
def test_format_all_names_outputs_after_each_input(wav_file, tmp_path):
    a, b = wav_file(0.5, "a.wav"), wav_file(0.5, "b.wav", seed=2)
    outs = tmp_path / "outs"
    res = run("animate", a, b, "-m", "tiny", "-o", f"{outs}/", "--format", "all", "-q")
    assert res.exit_code == 0, res.output
    kinds = (".glb", ".json", ".mp4", ".npy", ".wav", "_obj", "_ply")  # .wav: the audio beside the GLB
    assert sorted(p.name for p in outs.iterdir()) == [f"{s}{k}" for s in "ab" for k in kinds]
    assert np.load(outs / "a.npy").shape == (12, 192, 3) and len(list((outs / "b_obj").glob("*.obj"))) == 12
    # one input: -o is a base name, a .npy / .glb / .mp4 suffix is dropped
    res = run("animate", a, "-m", "tiny", "-o", tmp_path / "clip.npy", "--format", "all", "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.glob("clip*")) == [f"clip{k}" for k in kinds]


def test_one_input_into_a_folder_is_named_after_the_input(wav_file, tmp_path):
    wav = wav_file(0.5, "talk.wav")
    (tmp_path / "existing").mkdir()
    for out in (f"{tmp_path / 'new'}/", tmp_path / "existing"):
        res = run("animate", wav, "-m", "tiny", "-o", out, "--format", "npy", "-q")
        assert res.exit_code == 0, res.output
        assert _tree(tmp_path / str(out).rstrip("/")) == ["talk.json", "talk.npy"]
    # without --format a folder is an OBJ sequence, as before
    assert run("animate", wav, "-m", "tiny", "-o", f"{tmp_path / 'objs'}/", "-q").exit_code == 0
    assert len(list((tmp_path / "objs").glob("frame_*.obj"))) == 12


@pytest.mark.parametrize("value", ["-5", "2.5", "nan", "inf"])
def test_style_strength_outside_its_range_is_one_line(wav_file, tmp_path, value):
    wav = wav_file(0.5)
    before = _tree(tmp_path)
    res = run("animate", wav, "-m", "tiny", "-o", tmp_path / "o.npy", "--style-strength", value)
    line = _one_error_line(res)
    assert "style strength" in line and "outside [0, 2]" in line
    assert _tree(tmp_path) == before


def test_style_strength_minus_five_in_a_subprocess(wav_file, tmp_path):
    wav = wav_file(0.5)
    proc = subprocess.run([sys.executable, "-m", "ptalker_cli", "animate", str(wav), "-m", "tiny",
                           "-o", str(tmp_path / "o.npy"), "--style-strength", "-5"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "style strength -5.0 is outside [0, 2]" in lines[0], proc.stderr
    assert not list(tmp_path.glob("o.*"))


@pytest.mark.parametrize("case", ["folder-named-npy", "parent-is-a-file", "several-into-a-file", "name-too-long"])
def test_bad_output_paths_are_one_line(wav_file, tmp_path, case):
    inputs = [wav_file(0.5, "a.wav")]
    (tmp_path / "taken.npy").mkdir()
    (tmp_path / "plain").write_text("a file")
    out = {"folder-named-npy": tmp_path / "taken.npy", "parent-is-a-file": tmp_path / "plain" / "o.npy",
           "several-into-a-file": tmp_path / "plain", "name-too-long": tmp_path / ("x" * 300 + ".npy")}[case]
    if case == "several-into-a-file":
        inputs.append(wav_file(0.5, "b.wav", seed=2))
    before = _tree(tmp_path)
    line = _one_error_line(run("animate", *inputs, "-m", "tiny", "-o", out, "-q"))
    assert {"folder-named-npy": "is a folder", "parent-is-a-file": "plain is a file, not a folder",
            "several-into-a-file": "-o must be a folder", "name-too-long": "File name too long"}[case] in line
    assert _tree(tmp_path) == before
