"""SynthTalk end to end: Festival TTS (external program), a tiny corpus that passes
check_dataset, closure/silence on the generated meshes, determinism by seed, the CLI.

These tests need the Festival packages listed in .ci/apt-packages.txt
(festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts). When they are missing
the tests FAIL with that message; they never skip.
"""

import json

import numpy as np
import pytest
import soundfile as sf

from ptalker_cli.data import DatasetLayout, Manifest, check_dataset
from ptalker_cli.data.synth import generate_corpus
from ptalker_cli.data.synth.head import LOWER_LIP_VERTEX, UPPER_LIP_VERTEX
from ptalker_cli.data.synth.tts import APT_PACKAGES, TTSError, Voice, check_tools, synthesize

TINY = dict(speakers=2, sentences=2, fps=25.0, seed=4)


@pytest.fixture(scope="session")
def festival():
    """Fail (not skip) with an install hint when the TTS tools are missing."""
    try:
        check_tools()
    except TTSError as exc:
        pytest.fail(f"SynthTalk tests need the Festival TTS tools: {exc} "
                    f"(CI installs them from .ci/apt-packages.txt: {' '.join(APT_PACKAGES)})", pytrace=False)


@pytest.fixture(scope="module")
def corpus(festival, tmp_path_factory):
    root = tmp_path_factory.mktemp("synthtalk") / "corpus"
    summary = generate_corpus(root, workers=2, **TINY)
    return root, summary


def test_missing_festival_is_a_clear_error(monkeypatch):
    import ptalker_cli.data.synth.tts as tts

    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(TTSError, match="apt-get install festival"):
        tts.check_tools()


def test_voice_parameters_are_validated():
    with pytest.raises(TTSError):
        Voice("nope")
    with pytest.raises(TTSError):
        Voice("kal", rate=5.0)


def test_festival_gives_timings_that_cover_the_audio(festival):
    text = "The birch canoe slid on the smooth planks."
    slow, fast = synthesize([text, text], Voice("kal", rate=0.9))[0], synthesize([text], Voice("kal", rate=1.2))[0]
    for utt in (slow, fast):
        ph = utt.phones
        assert ph[0].name == "pau" and ph[-1].name == "pau"
        assert ph[0].start == 0.0 and all(abs(a.end - b.start) < 1e-9 for a, b in zip(ph, ph[1:]))
        assert abs(ph[-1].end - utt.duration) < 0.1
        assert [p.name for p in ph if p.name in ("b", "m", "p")] == ["b", "m", "p"]
        assert "festival" in utt.tool and "kal_diphone" in utt.tool
    assert fast.duration < 0.85 * slow.duration
    hts = synthesize([text], Voice("slt", rate=1.0, tract=1.1))[0]
    assert hts.sample_rate > 16000 and "slt" in hts.tool and hts.phones[-1].name == "pau"


def test_tiny_corpus_passes_check_dataset(corpus):
    root, summary = corpus
    report = check_dataset(root)
    assert report.ok, [(i.kind, i.where, i.message) for i in report.errors]
    assert not report.warnings, [(i.kind, i.message) for i in report.warnings]
    m = Manifest.load(root)
    assert (m.topology, m.units, m.fps, m.num_vertices) == ("ict", "cm", 25.0, 14062)
    assert m.subjects == ["spk01", "spk02"] and m.train_subjects == ["spk01"]
    assert set(m.splits) == {"train", "test", "test-unseen", "adapt-unseen"}
    layout = DatasetLayout(root)
    assert layout.resolve_split("test-unseen", m) == ["spk02_s002"]
    assert layout.resolve_split("train", m) == ["spk01_s001"]
    synth = m.source["synth"]
    for s in m.subjects:
        style = synth["speaker_styles"][s]
        assert set(style) >= {"amplitude", "protrusion", "smoothness", "asymmetry", "timing_offset_ms", "brow_activity"}
        assert synth["speakers"][s]["voice"]["festival_voice"]
        assert len(synth["speakers"][s]["identity"]) == 12
    assert synth["sentences"]["s001"] == "The birch canoe slid on the smooth planks."
    assert summary.sequences == 4 and summary.split_sizes["test-unseen"] == 1
    # templates differ per speaker (own face shape) and topology/regions are the ICT ones
    t1, t2 = layout.load_template("spk01"), layout.load_template("spk02")
    assert t1.shape == (14062, 3) and np.abs(t1 - t2).max() > 0.1
    topo = layout.load_topology(m)
    assert len(topo.regions["lip"]) == 1300 and len(topo.regions["upper_face"]) == 3946


def test_generated_sequences_close_on_bilabials_and_rest_in_silence(corpus):
    root, _ = corpus
    layout = DatasetLayout(root)
    m = Manifest.load(root)
    shapes = m.source["synth"]["blendshapes"]
    n_bilabials = 0
    for name in layout.sequence_names():
        rec = json.loads((root / "synth" / "sequences" / f"{name}.json").read_text())
        assert rec["tool"].startswith("festival ")
        verts = np.load(layout.vertices_path(name))
        wave, sr = sf.read(layout.wav_path(name))
        assert sr == 16000 and verts.dtype == np.float32
        assert abs(len(verts) / m.fps - len(wave) / sr) < 1.0 / m.fps
        gap = verts[:, UPPER_LIP_VERTEX, 1] - verts[:, LOWER_LIP_VERTEX, 1]
        # silence at both ends: quiet audio, closed lips
        n = int(0.1 * sr)
        assert np.abs(wave[:n]).max() < 1e-3 and np.abs(wave[-n:]).max() < 1e-3
        assert abs(gap[0]) < 0.01 and abs(gap[-1]) < 0.01
        assert gap.max() > 0.5
        # every p/b/m reaches contact (<= 0 cm) on a frame within it (+- half a frame)
        t = np.arange(len(verts)) / m.fps
        off = rec["timing_offset_ms"] / 1000.0
        for ph, a, b, *_ in rec["phones"]:
            if ph in ("p", "b", "m"):
                sel = (t >= a + off - 0.5 / m.fps) & (t <= b + off + 0.5 / m.fps)
                assert gap[sel].min() <= 0.0, (name, ph, a, gap[sel])
                n_bilabials += 1
        # the mouth moves with the speech: jawOpen correlates with the audio envelope
        w = np.load(root / "synth" / "weights" / f"{name}.npy")
        hop = sr // int(m.fps)
        env = np.array([np.sqrt(np.mean(wave[max(0, i * hop - hop // 2): i * hop + hop // 2 + 1] ** 2))
                        for i in range(len(w))])
        assert np.corrcoef(w[:, shapes.index("jawOpen")], env)[0, 1] > 0.3
    assert n_bilabials >= 8  # "birch smooth planks", "blue background" x 2 speakers


def test_same_seed_gives_identical_files_and_the_cli_works(corpus, tmp_path):
    import typer
    from typer.testing import CliRunner

    from ptalker_cli.cli.synth_cmd import synth

    root, _ = corpus
    app = typer.Typer()

    @app.callback()
    def _main():  # a group, so that "synth" is a sub-command as under "ptalker data"
        pass

    app.command("synth")(synth)
    out = tmp_path / "again"
    args = ["synth", str(out), "--speakers", "2", "--sentences", "2", "--fps", "25", "--seed", "4", "-j", "1", "-q"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output + repr(res.exception)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix in (".npy", ".wav", ".npz", ".txt"):
            assert (root / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert json.loads((root / "dataset.json").read_text()) == json.loads((out / "dataset.json").read_text())
    # an existing corpus is only replaced with --force
    res = CliRunner().invoke(app, args)
    assert res.exit_code != 0 and "--force" in str(res.exception)
