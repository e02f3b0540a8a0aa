"""SynthTalk end to end: the TTS engines, a tiny corpus that passes check_dataset,
closure/silence on the generated meshes, determinism by seed, the CLI.

eSpeak NG comes with the ``test`` extra (``pip install ".[test]"`` installs espeakng-loader),
so these tests run everywhere and FAIL, with the install hint, when it is missing. The same
corpus tests run on Festival too where it is installed (``system("festival")``: skipped
elsewhere, a failure under PTALKER_REQUIRE_SYSTEM_TESTS=1).
"""

import json
import sys

import numpy as np
import pytest
import soundfile as sf

from ptalker_cli.data import DatasetLayout, Manifest, check_dataset
from ptalker_cli.data.synth import engines, espeak, generate_corpus
from ptalker_cli.data.synth.espeak import ACCENTS, EspeakVoice, phones_from_events
from ptalker_cli.data.synth.espeak_phones import arpabet
from ptalker_cli.data.synth.head import LOWER_LIP_VERTEX, UPPER_LIP_VERTEX
from ptalker_cli.data.synth.tts import TTSError, Voice, synthesize
from ptalker_cli.data.synth.visemes import PHONE_RULES

TINY = dict(speakers=2, sentences=2, fps=25.0, seed=4)
ENGINES = ["espeak", pytest.param("festival", marks=pytest.mark.system("festival"))]
PANGRAMS = [
    "The quick brown fox jumps over the lazy dog.", "Pack my box with five dozen liquor jugs.",
    "Sphinx of black quartz, judge my vow!", "How vexingly quick daft zebras jump.",
    "The five boxing wizards jump quickly.", "Jackdaws love my big sphinx of quartz.",
    "Uh-oh, the button on the bottle of measure's vision was torn; are you sure, Sir?",
    "Our poor fire hour near the loch: a beautiful, leisurely thought, yet her wool gear was there.",
    # and sentences that reach the rarer mnemonics (glides, r-coloured and reduced vowels, short pauses)
    "A pot of tea helps to pass the evening.",
    "Which boyish nationality cheered the typewriting theatre, real or Israel?",
    "The father's bath in Germany, my dear idea.", "The two met while playing on the sand.",
    "Help the woman get back to her feet.", "Four hours of steady work faced us.",
    "He sang a chanson en route with the ensemble, then a waltz.", "Hmm, Lloyd's allele: bottle, little, awl.",
]


@pytest.fixture(scope="session")
def espeak_ng():
    """Fail (not skip) with the install hint when eSpeak NG is missing: the test extra installs it."""
    reason = espeak.missing()
    if reason:
        pytest.fail(f"SynthTalk tests need eSpeak NG (pip install '.[test]' installs it): {reason}", pytrace=False)


@pytest.fixture(scope="module", params=ENGINES)
def corpus(request, tmp_path_factory):
    engine = request.param
    if engine == "espeak":
        request.getfixturevalue("espeak_ng")
    root = tmp_path_factory.mktemp(f"synthtalk-{engine}") / "corpus"
    summary = generate_corpus(root, workers=2, tts=engine, **TINY)
    return engine, root, summary


# ------------------------------------------------------------------------- engine choice


def test_missing_engines_are_a_clear_error(monkeypatch, tmp_path):
    import ptalker_cli.data.synth.tts as tts

    monkeypatch.setattr(tts.shutil, "which", lambda name: None)
    with pytest.raises(TTSError, match="apt-get install festival"):
        tts.check_tools()
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails as if not installed
    assert 'pip install "ptalker[tts]"' in espeak.missing()
    with pytest.raises(TTSError, match=r'no text-to-speech engine.*pip install "ptalker\[tts\]".*apt-get install '
                                       r"festival"):
        engines.resolve_engine("auto")
    with pytest.raises(TTSError, match="pip install"):
        generate_corpus(tmp_path / "out", speakers=1, sentences=1, tts="espeak")
    assert not (tmp_path / "out").exists()  # stopped before writing anything
    with pytest.raises(TTSError, match="unknown text-to-speech engine 'mbrola'"):
        engines.resolve_engine("mbrola")


def test_auto_prefers_espeak_and_voices_belong_to_their_engine(espeak_ng):
    assert engines.resolve_engine("auto") == "espeak" and engines.resolve_engine("festival") == "festival"
    assert engines.voice_engine("kal") == "festival" and engines.voice_engine("en-gb-x-rp+f3") == "espeak"
    assert engines.voice_engine("en-us+zz") is None
    with pytest.raises(TTSError, match="'kal' is not a voice of the espeak engine"):
        engines.check_voices("espeak", ["en-us+m1", "kal"])


def test_voice_parameters_are_validated():
    with pytest.raises(TTSError):
        Voice("nope")
    with pytest.raises(TTSError):
        Voice("kal", rate=5.0)
    for bad in (dict(key="fr+m1"), dict(key="en-us+zz"), dict(key="en-us+"), dict(key="en-us", pitch=120),
                dict(key="en-us", rate=3.0, tract=0.8)):  # 656 words per minute: beyond eSpeak's 450
        with pytest.raises(TTSError):
            EspeakVoice(**bad)
    v = EspeakVoice("en-us+m3", rate=1.1, tract=1.05)
    assert v.accent == "en-us" and v.words_per_minute == 183 and v.to_json()["espeak_voice"] == "en-us+m3"


# ------------------------------------------------------------------------------- eSpeak NG


def test_espeak_gives_timings_that_cover_the_audio(espeak_ng):
    text = "The birch canoe slid on the smooth planks."
    slow = espeak.synthesize([text], EspeakVoice("en-us+m3", rate=0.9))[0]
    fast = espeak.synthesize([text], EspeakVoice("en-us+m3", rate=1.2))[0]
    for utt in (slow, fast):
        ph = utt.phones
        assert utt.sample_rate == 22050 and ph[0].name == "pau" and ph[-1].name == "pau"
        assert ph[0].start == 0.0 and all(abs(a.end - b.start) < 1e-9 for a, b in zip(ph, ph[1:]))
        assert all(p.end > p.start for p in ph)
        assert abs(ph[-1].end - utt.duration) < 1e-9
        assert [p.name for p in ph if p.name in ("b", "m", "p")] == ["b", "m", "p"]
        assert all(p.name in PHONE_RULES for p in ph)
        assert [p.word for p in ph if p.name == "b"] == ["birch"]
        assert {p.name for p in ph if p.stress} >= {"er", "uw", "ih", "ae"}  # birch canoe slid planks
        assert utt.tool.startswith("espeak-ng 1.") and utt.tool.endswith("voice en-us+m3")
        # the bilabial closures are quiet and the vowels loud: the timings are the audio's
        rms = {p.name: np.sqrt(np.mean(utt.wave[int(p.start * 22050): int(p.end * 22050)] ** 2)) for p in ph}
        assert rms["ae"] > 3 * rms["p"]
    assert fast.duration < 0.85 * slow.duration
    long_tract = espeak.synthesize([text], EspeakVoice("en-us+f2", tract=1.1))[0]
    assert long_tract.sample_rate == round(22050 * 1.1) and long_tract.phones[-1].end == long_tract.duration


def test_every_espeak_phoneme_of_the_pangrams_maps_to_a_viseme_phone(espeak_ng):
    """Every mnemonic eSpeak emits in every English accent has an entry in the table (no fallback)."""
    seen = set()
    for accent in ACCENTS:
        for text in PANGRAMS:
            _, _, events = espeak._synth_raw(text, EspeakVoice(accent))
            for kind, _, name, _, _ in events:
                if kind == "phoneme":
                    parts = arpabet(name, accent)
                    assert parts is not None, (accent, name, text)
                    assert all(p in PHONE_RULES for p in parts), (accent, name, parts)
                    seen.add(name.lstrip("',"))
    assert len(seen) >= 75  # 77 of the table's 80 mnemonics (not A~, O, l#)


def test_espeak_phones_from_events():
    events = [("phoneme", 100, "D", 0, 0), ("word", 200, "", 5, 3), ("phoneme", 200, "k", 0, 0),
              ("phoneme", 300, "'A@", 0, 0), ("phoneme", 500, "_:", 0, 0), ("phoneme", 600, "_", 0, 0)]
    ph = phones_from_events(events, 700, 1000.0, "The car", "en-us")
    assert [(p.name, p.start, p.end, p.stress, p.accented, p.word) for p in ph] == [
        ("pau", 0.0, 0.1, 0, 0, ""), ("dh", 0.1, 0.2, 0, 0, ""), ("k", 0.2, 0.3, 0, 0, "car"),
        ("aa", 0.3, 0.43, 1, 1, "car"), ("r", 0.43, 0.5, 0, 0, "car"), ("pau", 0.5, 0.7, 0, 0, "")]
    assert [p.name for p in phones_from_events(events, 700, 1000.0, "The car", "en-gb-x-rp")][3:5] == ["aa", "pau"]


def test_espeak_is_deterministic_whatever_came_before(espeak_ng):
    """Same text and voice, same samples: after another utterance, and a second later (eSpeak seeds
    the breath noise of breathy voices such as f2 from the clock)."""
    import time

    a = EspeakVoice("en-us+f2", pitch=60, pitch_range=70)
    first = espeak.synthesize(["A pot of tea helps to pass the evening."], a)[0]
    espeak.synthesize(["Glue the sheet to the dark blue background."], EspeakVoice("en+m8", rate=1.2))
    time.sleep(1.05)
    again = espeak.synthesize(["A pot of tea helps to pass the evening."], a)[0]
    assert np.array_equal(first.wave, again.wave)
    assert [(p.name, p.start) for p in first.phones] == [(p.name, p.start) for p in again.phones]


# -------------------------------------------------------------------------------- Festival


@pytest.mark.system("festival")
def test_festival_gives_timings_that_cover_the_audio():
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


# ------------------------------------------------------------------------------ the corpus


def test_tiny_corpus_passes_check_dataset(corpus):
    engine, root, summary = corpus
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
    assert synth["tts"]["engine"] == engine and synth["tts"]["version"]
    voices = [synth["speakers"][s]["voice"][f"{engine}_voice"] for s in m.subjects]
    assert voices == (["en-us+m3", "en-us+f2"] if engine == "espeak" else ["kal_diphone", "ked_diphone"])
    for s in m.subjects:
        style = synth["speaker_styles"][s]
        assert set(style) >= {"amplitude", "protrusion", "smoothness", "asymmetry", "timing_offset_ms", "brow_activity"}
        assert len(synth["speakers"][s]["identity"]) == 12
    assert synth["sentences"]["s001"] == "The birch canoe slid on the smooth planks."
    assert summary.sequences == 4 and summary.split_sizes["test-unseen"] == 1
    # templates differ per speaker (own face shape) and topology/regions are the ICT ones
    t1, t2 = layout.load_template("spk01"), layout.load_template("spk02")
    assert t1.shape == (14062, 3) and np.abs(t1 - t2).max() > 0.1
    topo = layout.load_topology(m)
    assert len(topo.regions["lip"]) == 1300 and len(topo.regions["upper_face"]) == 3946


def test_generated_sequences_close_on_bilabials_and_rest_in_silence(corpus):
    engine, root, _ = corpus
    layout = DatasetLayout(root)
    m = Manifest.load(root)
    shapes = m.source["synth"]["blendshapes"]
    n_bilabials = 0
    for name in layout.sequence_names():
        rec = json.loads((root / "synth" / "sequences" / f"{name}.json").read_text())
        assert rec["tool"].startswith({"espeak": "espeak-ng ", "festival": "festival "}[engine])
        verts = np.load(layout.vertices_path(name))
        wave, sr = sf.read(layout.wav_path(name))
        assert sr == 16000 and verts.dtype == np.float32
        assert abs(len(verts) / m.fps - len(wave) / sr) < 1.0 / m.fps
        assert rec["phones"][0][1] == 0.0 and abs(rec["phones"][-1][2] - len(wave) / sr) < 1e-3
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


def test_first_sentence_speaks_later_text_with_the_same_ids_and_files(corpus, tmp_path):
    """A corpus from sentence 2 on holds exactly the sequences a corpus from 1 made for sentence 2."""
    engine, root, _ = corpus
    out = tmp_path / "later"
    summary = generate_corpus(out, workers=1, tts=engine, speakers=2, sentences=1, fps=25.0, seed=4,
                              first_sentence=2)
    m = Manifest.load(out)
    assert m.source["synth"]["sentences"] == {"s002": "Glue the sheet to the dark blue background."}
    layout = DatasetLayout(out)
    assert layout.resolve_split("train", m) == ["spk01_s002"]
    assert layout.resolve_split("adapt-unseen", m) == ["spk02_s002"]
    assert summary.sequences == 2 and check_dataset(out).ok
    for name in ("spk01_s002", "spk02_s002"):
        for rel in (f"vertices_npy/{name}.npy", f"wav/{name}.wav"):
            assert (out / rel).read_bytes() == (root / rel).read_bytes(), rel
    assert not (out / "vertices_npy" / "spk01_s001.npy").exists()


def test_speech_only_corpus_holds_the_same_speech_and_phones_and_no_faces(corpus, tmp_path):
    """--speech-only writes the wav files and phone timings a full corpus holds, and nothing to train a face on."""
    from ptalker_cli.data.dataset import TalkingHeadDataset
    from ptalker_cli.data.layout import DatasetError
    from ptalker_cli.data.synth.labels import read_phones
    from ptalker_cli.train.phone_pretrain import PP, phone_clips

    engine, root, _ = corpus
    out = tmp_path / "speech"
    summary = generate_corpus(out, workers=1, tts=engine, speech_only=True, **TINY)
    assert summary.sequences == 4 and Manifest.load(out).source["synth"]["speech_only"] is True
    for name in ("spk01_s001", "spk02_s002"):
        assert (out / f"wav/{name}.wav").read_bytes() == (root / f"wav/{name}.wav").read_bytes()
        assert read_phones(out, name) == read_phones(root, name)
    assert not (out / "vertices_npy").exists() and not (out / "synth" / "weights").exists()
    with pytest.raises(DatasetError, match="holds speech only"):
        TalkingHeadDataset(out, "train")
    clips = phone_clips(out, "adapt-unseen", lambda n: n // 640, 25.0)  # spk02 speaks "The birch canoe ... planks"
    assert len(clips) == 1 and (clips[0][1] == PP).any()


def test_first_sentence_is_validated(tmp_path):
    from ptalker_cli.data.layout import DatasetError

    with pytest.raises(DatasetError, match="--first-sentence must be between 1 and 720"):
        generate_corpus(tmp_path / "a", speakers=1, sentences=1, first_sentence=721, tts="espeak")
    with pytest.raises(DatasetError, match="--sentences must be between 1 and 11 .*from number 710"):
        generate_corpus(tmp_path / "b", speakers=1, sentences=12, first_sentence=710, tts="espeak")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    import typer
    from typer.testing import CliRunner

    from ptalker_cli.cli.synth_cmd import synth

    app = typer.Typer()

    @app.callback()
    def _main():
        pass

    app.command("synth")(synth)
    res = CliRunner().invoke(app, ["synth", str(tmp_path / "c"), "--first-sentence", "721", "-q", "--tts", "espeak"])
    assert res.exit_code != 0 and "--first-sentence must be between 1 and 720" in str(res.exception)


def test_same_seed_gives_identical_files_and_the_cli_works(corpus, tmp_path):
    import typer
    from typer.testing import CliRunner

    from ptalker_cli.cli.synth_cmd import synth

    engine, root, _ = corpus
    app = typer.Typer()

    @app.callback()
    def _main():  # a group, so that "synth" is a sub-command as under "ptalker data"
        pass

    app.command("synth")(synth)
    out = tmp_path / "again"
    args = ["synth", str(out), "--speakers", "2", "--sentences", "2", "--fps", "25", "--seed", "4", "-j", "1", "-q",
            "--tts", engine]
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
