"""The embedded default model: it ships, loads offline, animates, and its mouth follows real speech."""

from pathlib import Path

import numpy as np
import pytest

from ptalker_cli.eval.lipsync import lipsync_report, mouth_opening, speech_envelope
from ptalker_cli.inference import DEFAULT_MODEL, Animator, load_model

ROOT = Path(__file__).resolve().parent.parent
REAL_SPEECH = ROOT / "tests" / "data" / "arctic"  # two CMU ARCTIC utterances (awb, slt); see PROVENANCE.md there
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
    """Recorded human speech shipped in tests/data/arctic (a male Scottish and a female US
    speaker), joined with 0.7-s pauses: the mouth opens with the sound and rests in the pauses."""
    from ptalker_cli.audio import load_audio

    files = sorted(REAL_SPEECH.glob("*.wav"))
    assert [f.name for f in files] == ["cmu_us_awb_arctic_a0007.wav", "cmu_us_slt_arctic_a0009.wav"]
    sr = 16000
    gap = np.zeros(int(0.7 * sr), dtype=np.float32)
    clips = [load_audio(f) for f in files]
    wave = np.concatenate([gap] + [x for c in clips for x in (c, gap)])
    motion = Animator(default_model).animate(wave).motion
    opening = mouth_opening(motion.vertices, UPPER_LIP, LOWER_LIP)
    envelope = speech_envelope(wave, motion.num_frames, motion.fps)
    rep = lipsync_report(opening, envelope)
    # measured for the shipped model: best r 0.757 (at lag 0), opening 0.73 cm in speech vs
    # 0.10 cm in pauses; per clip (with half a pause on each side) awb 0.725, slt 0.749.
    # The same output time-reversed gives 0.426 (clips 0.496, 0.282), a constant mouth 0.
    assert rep.best_correlation > 0.6, rep
    assert rep.opening_pause < rep.opening_speech - 0.4, rep
    start = len(gap)
    for f, clip in zip(files, clips):
        a, b = (int((s / sr) * motion.fps) for s in (start - len(gap) // 2, start + len(clip) + len(gap) // 2))
        clip_rep = lipsync_report(opening[a:b], envelope[a:b])
        assert clip_rep.best_correlation > 0.55, (f.name, clip_rep)
        start += len(clip) + len(gap)


@pytest.mark.system("festival")
def test_audio_style_code_describes_the_voice_not_the_words(default_model):
    """Unseen voices (Festival, as SynthTalk makes them), four sentences each: the code of a voice
    stays put across sentences and moves between a short and a long vocal tract (SynthTalk's
    protrusion cue). Measured for the shipped model: mean distance between the two tracts
    2.0-2.6 times that within one, every utterance nearest its own voice's centroid."""
    import soxr
    import torch

    from ptalker_cli.data.synth.tts import Voice, synthesize

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
