"""SynthTalk motion synthesis on hand-made phone sequences (no TTS needed):
viseme mapping, coarticulation smoothness, bilabial closure and silence on the mesh,
speaking-style parameters, determinism."""

import numpy as np
import pytest

from ptalker_cli.data.synth.head import load_head
from ptalker_cli.data.synth.style import STYLE_RANGES, SpeakerStyle, sample_speaker
from ptalker_cli.data.synth.tts import Phone
from ptalker_cli.data.synth.visemes import (
    MOUTH_SHAPES,
    PHONE_RULES,
    VISEMES,
    mouth_curves,
    phone_visemes,
    upper_face_curves,
    viseme_segments,
)

VOWELS_STRESSED = {"aa", "ae", "iy", "uw", "ow", "eh", "ao"}


def phones(spec):
    """[(name, seconds), ...] -> contiguous Phone list starting at 0."""
    t, out = 0.0, []
    for name, d in spec:
        out.append(Phone(name, t, t + d, 1 if name in VOWELS_STRESSED else 0, 1 if name in VOWELS_STRESSED else 0))
        t += d
    return out


# "pau | b aa p iy m uw w ae t | pau" with a very short /p/ (30 ms, shorter than a 25 fps frame)
SEQ = [("pau", 0.3), ("b", 0.06), ("aa", 0.15), ("p", 0.03), ("iy", 0.12), ("m", 0.05), ("uw", 0.15),
       ("w", 0.05), ("ae", 0.2), ("t", 0.05), ("pau", 0.3)]


@pytest.fixture(scope="module")
def head():
    return load_head()


@pytest.fixture(scope="module")
def face(head):
    tmpl = head.template(np.zeros(head.num_identity_modes))
    return tmpl, head.gap_model(tmpl)


def frame_times(duration, fps):
    return np.arange(int(round(duration * fps))) / fps


def curves(face, style=SpeakerStyle(), fps=25.0, spec=SEQ):
    ph = phones(spec)
    return ph, mouth_curves(ph, frame_times(ph[-1].end, fps), style, face[1])


def test_head_assets_match_the_ict_topology(head):
    assert head.num_vertices == 14062 and head.num_identity_modes == 12
    assert head.shape_offsets.shape == (22, 14062, 3)
    assert set(MOUTH_SHAPES) <= set(head.shape_names)
    assert {"lip", "upper_face"} <= set(head.regions)


def test_viseme_mapping():
    for p in ("p", "b", "m", "P", "B1", "em"):
        assert phone_visemes(p) == ["PP"] and VISEMES["PP"].closure
    for p in ("uw", "uh", "w", "ao", "UW1", "u", "ʊ"):
        v = VISEMES[phone_visemes(p)[0]]
        rounding = v.targets.get("mouthPucker", 0) + v.targets.get("mouthFunnel", 0)
        assert rounding >= 0.6, p
    assert phone_visemes("ow")[-1] == "U" and phone_visemes("ow")[0] == "O"  # diphthong split
    for p in ("aa", "ae", "ah", "AA1", "ɑ", "æ"):
        assert phone_visemes(p)[0] == "aa"
    assert VISEMES["aa"].targets["jawOpen"] >= 0.35
    assert VISEMES["aa"].targets["jawOpen"] > max(VISEMES[v].targets.get("jawOpen", 0) for v in ("I", "U", "PP", "SS"))
    for p in ("f", "v"):
        assert phone_visemes(p) == ["FF"]
    assert phone_visemes("pau") == ["sil"] and VISEMES["sil"].targets == {}
    assert phone_visemes("xx?") == ["nn"]  # unknown symbols fall back to a neutral consonant
    assert len(VISEMES) == 15
    for rule in PHONE_RULES.values():
        assert all(v in VISEMES for v, _, _ in rule.parts)
    segs = viseme_segments(phones([("ay", 0.2)]))
    assert [s.viseme for s in segs] == ["aa", "I"] and segs[0].end == pytest.approx(segs[1].start)


def test_curves_follow_the_visemes(face):
    ph, c = curves(face, fps=100.0)
    t = c.times

    def mean_in(phone, shape):
        p = next(x for x in ph if x.name == phone)
        m = (t >= p.start + 0.3 * p.duration) & (t <= p.end - 0.3 * p.duration)
        return c[shape][m].mean()

    assert mean_in("ae", "jawOpen") > 0.25 and mean_in("aa", "jawOpen") > 0.2
    assert mean_in("ae", "jawOpen") > 2 * mean_in("iy", "jawOpen")
    assert mean_in("uw", "mouthPucker") > 0.4 and mean_in("uw", "mouthPucker") > 3 * mean_in("iy", "mouthPucker")
    assert mean_in("iy", "mouthStretch_L") > mean_in("uw", "mouthStretch_L")


@pytest.mark.parametrize("smoothness", [STYLE_RANGES["smoothness"][0], STYLE_RANGES["smoothness"][1]])
def test_coarticulation_is_smooth_without_steps(face, smoothness):
    style = SpeakerStyle(smoothness=smoothness, amplitude=STYLE_RANGES["amplitude"][1])
    d100 = np.abs(np.diff(curves(face, style, 100.0)[1].weights, axis=0)).max()
    d200 = np.abs(np.diff(curves(face, style, 200.0)[1].weights, axis=0)).max()
    assert d100 <= 0.2  # no weight moves more than 0.2 in 10 ms
    # a step would change by the same amount at any sampling rate; a smooth curve halves
    assert d200 <= 0.6 * d100
    # the raw targets jump by much more than a frame's change: coarticulation did the smoothing
    assert d100 < 0.5 * VISEMES["aa"].targets["jawOpen"] * style.amplitude


def test_smoother_style_changes_less_per_frame(face):
    lo, hi = STYLE_RANGES["smoothness"][:2]
    d_sharp = np.abs(np.diff(curves(face, SpeakerStyle(smoothness=lo), 25.0)[1].weights, axis=0)).max()
    d_smooth = np.abs(np.diff(curves(face, SpeakerStyle(smoothness=hi), 25.0)[1].weights, axis=0)).max()
    assert d_smooth < 0.7 * d_sharp


def _bilabial_min_gaps(head, tmpl, ph, c, offset_s):
    verts = head.pose(tmpl, c.weights, c.names)
    gap = head.lip_gap(verts)
    out = {}
    dt = c.times[1] - c.times[0]
    for p in ph:
        if p.name in ("p", "b", "m"):
            m = (c.times >= p.start + offset_s - dt / 2) & (c.times <= p.end + offset_s + dt / 2)
            out[(p.name, p.start)] = gap[m].min()
    return out, gap


@pytest.mark.parametrize("fps", [25.0, 30.0])
@pytest.mark.parametrize("speaker", [0, 1, 2, 3])
def test_lips_close_on_every_bilabial_on_the_mesh(head, fps, speaker):
    spk = sample_speaker(speaker, seed=11)
    tmpl = head.template(spk.identity)
    ph, c = curves((tmpl, head.gap_model(tmpl)), spk.style, fps)
    gaps, gap = _bilabial_min_gaps(head, tmpl, ph, c, spk.style.timing_offset_ms / 1000)
    assert len(gaps) == 3
    for key, g in gaps.items():
        assert g <= 0.0, f"lips not closed on {key}: gap {g:.3f} cm"  # touching (<= 0 cm)
    assert gap.max() > 0.8  # and open on the vowels
    # at the closure frames the jaw is nearly closed and the lips press
    hold = c.info["bilabial_envelope"] >= 1.0
    assert hold.sum() >= 3
    assert c["jawOpen"][hold].min() < 0.1 and c["jawOpen"][hold].max() < 0.3
    assert (c["mouthPress_L"] + c["mouthPress_R"])[hold].min() > 0.1


@pytest.mark.parametrize("speaker", range(6))
def test_silence_keeps_the_mouth_closed(head, speaker):
    spk = sample_speaker(speaker, seed=5)
    tmpl = head.template(spk.identity)
    ph, c = curves((tmpl, head.gap_model(tmpl)), spk.style, 25.0)
    gap = head.lip_gap(head.pose(tmpl, c.weights, c.names))
    rest = (c.times < 0.2) | (c.times > ph[-1].end - 0.2)
    assert np.abs(gap[rest]).max() < 0.01  # lips touching (within 0.1 mm)
    opening = [MOUTH_SHAPES.index(s) for s in ("jawOpen", "mouthFunnel", "mouthLowerDown_L", "mouthUpperUp_L")]
    assert np.abs(c.weights[rest][:, opening]).max() < 0.01


def test_amplitude_and_protrusion_take_effect(head, face):
    tmpl, gm = face
    _, small = curves(face, SpeakerStyle(amplitude=0.7))
    _, big = curves(face, SpeakerStyle(amplitude=1.35))
    assert big["jawOpen"].mean() > 1.5 * small["jawOpen"].mean()
    g_small = head.lip_gap(head.pose(tmpl, small.weights, small.names))
    g_big = head.lip_gap(head.pose(tmpl, big.weights, big.names))
    assert g_big.mean() > 1.3 * g_small.mean()
    _, flat = curves(face, SpeakerStyle(protrusion=0.6))
    _, round_ = curves(face, SpeakerStyle(protrusion=1.5))
    assert round_["mouthPucker"].mean() > 2 * flat["mouthPucker"].mean()
    # protrusion on the mesh: the upper-lip midline vertex moves forward (+z) more
    z = lambda c: head.pose(tmpl, c.weights, c.names)[:, 5533, 2].max()  # noqa: E731
    assert z(round_) > z(flat) + 0.1


def test_asymmetry_makes_left_and_right_differ(head, face):
    tmpl, _ = face
    _, sym = curves(face, SpeakerStyle(asymmetry=0.0))
    _, asym = curves(face, SpeakerStyle(asymmetry=0.25))
    assert np.allclose(sym["mouthStretch_L"], sym["mouthStretch_R"])
    assert asym["mouthStretch_L"].sum() > 1.5 * asym["mouthStretch_R"].sum()
    # on the mesh: mirror-image mouth corners (landmarks 54 / 48) move by different amounts
    left, right = 6213, 5708
    for c, expect_equal in ((sym, True), (asym, False)):
        d = head.pose(tmpl, c.weights, c.names) - tmpl
        dl, dr = np.linalg.norm(d[:, left], axis=1).sum(), np.linalg.norm(d[:, right], axis=1).sum()
        assert np.isclose(dl, dr, rtol=1e-3) == expect_equal


def test_timing_offset_shifts_the_motion(face):
    _, c0 = curves(face, SpeakerStyle(timing_offset_ms=0.0), 200.0)
    _, c1 = curves(face, SpeakerStyle(timing_offset_ms=40.0), 200.0)
    a, b = c0["jawOpen"], c1["jawOpen"]
    lags = np.arange(-20, 21)
    corr = [np.dot(a[30:-30], np.roll(b, -lag)[30:-30]) for lag in lags]
    assert lags[int(np.argmax(corr))] == 8  # 40 ms at 200 fps: motion lags the audio


def test_blinks_and_brows(face):
    ph = phones(SEQ * 4)
    dur = ph[-1].end
    t = frame_times(dur, 100.0)
    energy = np.ones(len(ph))
    up = upper_face_curves(t, dur, ph, energy, SpeakerStyle(brow_activity=1.0, blink_interval_s=2.5),
                           np.random.default_rng(0))
    assert np.array_equal(up["eyeBlink_L"], up["eyeBlink_R"])
    assert up["eyeBlink_L"].max() > 0.8 and len(up.info["blinks"]) >= 2
    for t0, length in up.info["blinks"]:
        assert 0.15 <= length <= 0.25
    assert up["browInnerUp_L"].max() > 0.2 and up.info["brow_raises"]
    quiet = upper_face_curves(t, dur, ph, energy, SpeakerStyle(brow_activity=0.0), np.random.default_rng(0))
    assert quiet["browInnerUp_L"].max() == 0.0


def test_speakers_are_deterministic_and_distinct(face):
    a, b = sample_speaker(3, seed=7), sample_speaker(3, seed=7)
    assert a == b
    assert sample_speaker(3, seed=8) != a and sample_speaker(4, seed=7).style != a.style
    assert all(-2.0 <= c <= 2.0 for c in a.identity)
    for key, (lo, hi, _) in STYLE_RANGES.items():
        assert lo <= getattr(a.style, key) <= hi
    _, c1 = curves(face, a.style)
    _, c2 = curves(face, b.style)
    assert np.array_equal(c1.weights, c2.weights)
