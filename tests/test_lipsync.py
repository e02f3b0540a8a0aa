import numpy as np

from ptalker_cli.eval.lipsync import lipsync_report, mouth_opening, speech_envelope


def test_envelope_and_opening_by_hand():
    wave = np.concatenate([np.zeros(640), np.full(640, 0.5), np.full(640, -0.5)]).astype(np.float32)
    env = speech_envelope(wave, 3, fps=25.0)
    np.testing.assert_allclose(env, [0.0, 0.5, 0.5])
    verts = np.zeros((2, 3, 3))
    verts[1, 0, 1], verts[1, 2, 1] = 1.0, -0.5
    np.testing.assert_allclose(mouth_opening(verts, upper=0, lower=2), [0.0, 1.5])


def test_report_sees_correlation_lag_and_pauses():
    rng = np.random.default_rng(0)
    env = np.abs(rng.standard_normal(200)) + 0.1
    env[50:70] = 0.0  # a pause
    opening = np.roll(env, -2) * 0.3  # the mouth leads the sound by two frames
    rep = lipsync_report(opening, env)
    assert rep.best_lag_frames == 2 and rep.best_correlation > 0.99
    assert rep.correlation < rep.best_correlation
    assert rep.pause_frames >= 18 and rep.opening_pause < rep.opening_speech
    flat = lipsync_report(np.ones(200), env)
    assert flat.correlation == 0.0
