"""The embedded default model: it ships, loads offline, animates, and its mouth follows real speech."""

import json
from pathlib import Path

import numpy as np
import pytest

from ptalker_cli.eval.lipsync import lipsync_report, mouth_opening, speech_envelope
from ptalker_cli.inference import DEFAULT_MODEL, Animator, load_model

ROOT = Path(__file__).resolve().parent.parent
ALSA_VOICE = Path("/usr/share/sounds/alsa")  # human voice recordings of alsa-utils (GPL-2), installed by CI
UPPER_LIP, LOWER_LIP = 5533, 5517


@pytest.fixture(scope="module")
def default_model():
    return load_model(DEFAULT_MODEL, offline=True)


def test_default_model_is_the_embedded_one_and_small(default_model):
    from ptalker_cli.zoo.registry import load_registry

    entry = {e.name: e for e in load_registry()}[DEFAULT_MODEL]
    assert entry.kind == "embedded" and all(f.sha256 for f in entry.files)
    size = sum((ROOT / "weights" / entry.path / f.name).stat().st_size for f in entry.files)
    assert size <= 50 * 2**20
    assert default_model.config.topology == "ict" and default_model.config.num_vertices == 14062
    assert (ROOT / "weights" / entry.path / "README.md").exists()  # the model card


def test_animates_the_example_without_subject(default_model):
    res = Animator(default_model).animate(ROOT / "examples" / "speech.wav")
    assert res.subject == default_model.config.train_subjects[0]
    v = res.motion.vertices
    assert v.shape == (138, 14062, 3) and np.isfinite(v).all()
    opening = mouth_opening(v, UPPER_LIP, LOWER_LIP)
    assert opening.max() - opening.min() > 0.3  # centimetres: the mouth really opens and closes


def test_mouth_follows_real_speech(default_model):
    from ptalker_cli.audio import load_audio

    files = sorted(p for p in ALSA_VOICE.glob("*.wav") if "Noise" not in p.name)
    assert len(files) >= 6, "install alsa-utils (Debian) for its recorded test voice: apt-get install alsa-utils"
    gap = np.zeros(int(0.7 * 16000), dtype=np.float32)
    wave = np.concatenate([gap] + [x for f in files for x in (load_audio(f), gap)])
    motion = Animator(default_model).animate(wave).motion
    rep = lipsync_report(mouth_opening(motion.vertices, UPPER_LIP, LOWER_LIP),
                         speech_envelope(wave, motion.num_frames, motion.fps))
    # measured for the shipped model: best r 0.805, opening 1.00 cm in speech vs 0.14 cm in pauses
    assert rep.best_correlation > 0.5, rep
    assert rep.opening_pause < rep.opening_speech - 0.4, rep


def test_audio_style_code_describes_the_voice_not_the_words(default_model):
    """Unseen voices (Festival, as SynthTalk makes them), four sentences each: the code of a voice
    stays put across sentences and moves between a short and a long vocal tract (SynthTalk's
    protrusion cue). Measured for the shipped model: mean distance between the two tracts
    2.0-2.6 times that within one, every utterance nearest its own voice's centroid."""
    import soxr
    import torch

    from ptalker_cli.data.synth.tts import TTSError, Voice, check_tools, synthesize

    try:
        check_tools()
    except TTSError as exc:
        pytest.fail(f"needs the Festival TTS tools (.ci/apt-packages.txt): {exc}", pytrace=False)
    texts = ["A quiet evening follows a busy day.", "Open the window and let the cool air in.",
             "My brother painted the old fence blue.", "Nobody heard the small boat arrive at noon."]
    n = len(texts)
    for voices in ((Voice("ked", f0_mean=118.0, f0_std=18.0, tract=0.92), Voice("ked", f0_mean=118.0, f0_std=18.0,
                                                                                 tract=1.12)),
                   (Voice("slt", tract=0.88), Voice("slt", tract=1.10))):
        codes = []
        for voice in voices:
            for utt in synthesize(texts, voice):
                wave = soxr.resample(utt.wave.astype(np.float64), utt.sample_rate, 16000).astype(np.float32)
                with torch.inference_mode():
                    codes.append(default_model.encode_speech(torch.from_numpy(wave)[None])["s_a"][0].float().numpy())
        c = np.stack(codes)
        label = np.repeat([0, 1], n)
        d = np.linalg.norm(c[:, None] - c[None], axis=-1)
        same = d[(label[:, None] == label[None]) & ~np.eye(2 * n, dtype=bool)].mean()
        between = d[label[:, None] != label[None]].mean()
        assert between > 1.5 * same, (voices[0].key, between, same)
        for i in range(2 * n):  # leave-one-out nearest centroid
            cents = [c[(label == k) & (np.arange(2 * n) != i)].mean(0) for k in (0, 1)]
            assert np.argmin([np.linalg.norm(c[i] - x) for x in cents]) == label[i], (voices[0].key, i)
