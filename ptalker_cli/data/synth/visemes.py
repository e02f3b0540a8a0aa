"""Phonemes → visemes → blendshape weight curves, with coarticulation; blinks and brows.

Mouth
-----
Every phone maps to one viseme (diphthongs to two, splitting the phone's time). A
viseme has target weights for the mouth blendshapes and a *dominance* for each of three
channel groups (jaw, lips, rounding). The curves are Cohen–Massaro style coarticulation:

    wₖ(t) = Σᵢ Dᵢₖ(t)·Tᵢₖ / Σᵢ Dᵢₖ(t),  Dᵢₖ(t) = αᵢₖ · exp(−(dᵢ(t) / (τ·gₖ))^1.5)

with Tᵢₖ the target of segment i, dᵢ(t) the distance of t to the central 40 % of the
segment (0 inside it), τ the speaker's smoothness (coarticulation time constant) and
gₖ a per-group factor (rounding reaches further: anticipatory rounding). Consonants whose
articulation is inside the mouth (t d n l k g h) have a low dominance, so they take the
shape of their neighbours; bilabials, labiodentals and rounded sounds dominate the lips.
The curves are smooth functions of time (no frame-exact steps).

Two constraints are then applied on the mesh's own lip-gap model (the vertical distance
between the upper and lower inner lip on the midline is linear in the weights):

* **closure** on p/b/m: over the middle of the bilabial (at least one frame, even for a
  short one) the lip-opening shapes are released and ``mouthClose`` is solved so that the
  lips touch (gap −0.02 cm, lightly pressed) whatever the jaw does; raised-cosine ramps
  of ≈ 50 ms lead in and out;
* **silence**: in pauses the same solve brings the gap to 0 (closed mouth at rest, also
  for face shapes whose neutral lips are slightly apart).

Style (see :mod:`.style`): ``amplitude`` scales the opening targets, ``protrusion`` the
rounding targets, ``smoothness`` is τ, ``asymmetry`` scales _L/_R weights by (1 ± a),
``timing_offset_ms`` shifts the motion against the audio.

Upper face
----------
Blinks at random intervals (mean ``blink_interval_s``, 150–250 ms, both eyes); brow
raises (browInnerUp, browOuterUp) on pitch-accented syllables, more often and larger for
a higher ``brow_activity`` and for louder syllables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from .style import SpeakerStyle

MOUTH_SHAPES: tuple[str, ...] = (
    "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthStretch_L", "mouthStretch_R",
    "mouthRollLower", "mouthRollUpper", "mouthPress_L", "mouthPress_R", "mouthLowerDown_L",
    "mouthLowerDown_R", "mouthUpperUp_L", "mouthUpperUp_R", "mouthSmile_L", "mouthSmile_R",
)
UPPER_SHAPES: tuple[str, ...] = (
    "eyeBlink_L", "eyeBlink_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
)
SHAPES: tuple[str, ...] = MOUTH_SHAPES + UPPER_SHAPES

GROUPS = ("jaw", "lips", "round")
_GROUP_OF = {"jawOpen": "jaw", "mouthFunnel": "round", "mouthPucker": "round"}
#: time-constant factor per group (rounding is anticipated further ahead)
GROUP_TAU = {"jaw": 1.0, "lips": 0.8, "round": 1.6}
AMPLITUDE_SHAPES = ("jawOpen", "mouthLowerDown_L", "mouthLowerDown_R", "mouthUpperUp_L", "mouthUpperUp_R",
                    "mouthStretch_L", "mouthStretch_R")
PROTRUSION_SHAPES = ("mouthFunnel", "mouthPucker")
#: shapes released (scaled by 1 - closure) while the lips are held closed
_RELEASED_AT_CLOSURE = ("mouthLowerDown_L", "mouthLowerDown_R", "mouthUpperUp_L", "mouthUpperUp_R", "mouthFunnel")

BILABIAL_GAP_CM = -0.02
SILENCE_GAP_CM = 0.0
CLOSURE_RAMP_S = 0.05
_CORE = 0.4  # central fraction of a segment where its target holds fully


def group_of(shape: str) -> str:
    return _GROUP_OF.get(shape, "lips")


@dataclass(frozen=True)
class Viseme:
    name: str
    description: str
    targets: Mapping[str, float]  # "mouthStretch" means both _L and _R
    dominance: tuple[float, float, float]  # jaw, lips, round
    closure: bool = False

    def target_vector(self) -> np.ndarray:
        out = np.zeros(len(MOUTH_SHAPES))
        for key, val in self.targets.items():
            names = [key] if key in MOUTH_SHAPES else [key + "_L", key + "_R"]
            for n in names:
                out[MOUTH_SHAPES.index(n)] = val
        return out


_V = Viseme
#: The 15 visemes (the Oculus / MPEG-4-like set) with their mouth targets.
VISEMES: dict[str, Viseme] = {v.name: v for v in [
    _V("sil", "silence: lips closed at rest", {}, (1.0, 1.0, 1.0)),
    _V("PP", "p b m: lips pressed together, jaw nearly closed",
       {"jawOpen": 0.03, "mouthPress": 0.35, "mouthRollLower": 0.12, "mouthRollUpper": 0.08}, (1.5, 3.0, 0.6), True),
    _V("FF", "f v: lower lip under the upper teeth",
       {"jawOpen": 0.07, "mouthRollLower": 0.55, "mouthUpperUp": 0.2}, (0.5, 2.5, 0.5)),
    _V("TH", "th dh: tongue between the teeth",
       {"jawOpen": 0.12, "mouthLowerDown": 0.12, "mouthUpperUp": 0.08}, (0.5, 0.8, 0.3)),
    _V("DD", "t d: tongue tip on the ridge, lips relaxed",
       {"jawOpen": 0.1, "mouthStretch": 0.1, "mouthUpperUp": 0.08, "mouthLowerDown": 0.08}, (0.35, 0.4, 0.2)),
    _V("kk", "k g ng: back of the tongue, lips relaxed",
       {"jawOpen": 0.14, "mouthStretch": 0.08, "mouthLowerDown": 0.08}, (0.35, 0.4, 0.2)),
    _V("CH", "ch jh sh zh: lips forward and flared",
       {"jawOpen": 0.08, "mouthFunnel": 0.45, "mouthPucker": 0.2, "mouthUpperUp": 0.15, "mouthLowerDown": 0.15},
       (0.6, 1.0, 1.5)),
    _V("SS", "s z: teeth close, lips spread",
       {"jawOpen": 0.04, "mouthStretch": 0.3, "mouthSmile": 0.1, "mouthUpperUp": 0.12, "mouthLowerDown": 0.12},
       (0.8, 1.0, 0.4)),
    _V("nn", "n l: tongue tip, lips relaxed", {"jawOpen": 0.12, "mouthLowerDown": 0.08}, (0.35, 0.4, 0.2)),
    _V("RR", "r er: lips slightly rounded", {"jawOpen": 0.12, "mouthFunnel": 0.3, "mouthPucker": 0.25},
       (0.5, 0.8, 1.2)),
    _V("aa", "open vowels aa ae ah (ay aw onset): jaw open",
       {"jawOpen": 0.4, "mouthLowerDown": 0.3, "mouthUpperUp": 0.12, "mouthStretch": 0.08}, (1.0, 1.0, 1.0)),
    _V("E", "mid front vowels eh ey: half open, spread",
       {"jawOpen": 0.26, "mouthStretch": 0.22, "mouthLowerDown": 0.22, "mouthUpperUp": 0.1, "mouthSmile": 0.08},
       (1.0, 1.0, 1.0)),
    _V("I", "close front vowels ih iy, y: spread lips",
       {"jawOpen": 0.1, "mouthStretch": 0.32, "mouthSmile": 0.22, "mouthUpperUp": 0.1, "mouthLowerDown": 0.12},
       (1.0, 1.0, 1.0)),
    _V("O", "rounded open vowels ao ow oy: jaw open, lips funnelled",
       {"jawOpen": 0.3, "mouthFunnel": 0.55, "mouthPucker": 0.25}, (1.0, 1.0, 1.5)),
    _V("U", "rounded close vowels uw uh, w: lips puckered",
       {"jawOpen": 0.08, "mouthPucker": 0.75, "mouthFunnel": 0.3}, (0.9, 1.0, 1.6)),
]}
VOWEL_VISEMES = frozenset({"aa", "E", "I", "O", "U"})


@dataclass(frozen=True)
class PhoneRule:
    """How a phone becomes visemes: [(viseme, fraction of the phone's time, strength)], dominance factor."""

    parts: tuple[tuple[str, float, float], ...]
    dominance: float = 1.0


def _r(*parts, dom=1.0):
    return PhoneRule(tuple(parts), dom)


_ONE = 1.0
#: Festival "radio" / ARPAbet phones (lower case, no stress digits) -> visemes.
PHONE_RULES: dict[str, PhoneRule] = {
    **{p: _r(("sil", _ONE, _ONE)) for p in ("pau", "h#", "sil", "sp", "brth", "#", "_")},
    **{p: _r(("PP", _ONE, _ONE)) for p in ("p", "b", "m", "em")},
    **{p: _r(("FF", _ONE, _ONE)) for p in ("f", "v")},
    **{p: _r(("TH", _ONE, _ONE)) for p in ("th", "dh")},
    **{p: _r(("DD", _ONE, _ONE)) for p in ("t", "d", "dx")},
    **{p: _r(("kk", _ONE, _ONE)) for p in ("k", "g", "ng")},
    **{p: _r(("CH", _ONE, _ONE)) for p in ("ch", "jh", "sh", "zh")},
    **{p: _r(("SS", _ONE, _ONE)) for p in ("s", "z")},
    **{p: _r(("nn", _ONE, _ONE)) for p in ("n", "l", "el", "en", "nx")},
    **{p: _r(("RR", _ONE, _ONE)) for p in ("r", "er", "axr")},
    "aa": _r(("aa", 1.0, 1.0)),
    "ae": _r(("aa", 1.0, 1.0)),
    "ah": _r(("aa", 1.0, 0.8)),
    "ax": _r(("aa", 1.0, 0.5), dom=0.7),
    "ix": _r(("I", 1.0, 0.6), dom=0.7),
    "ay": _r(("aa", 0.55, 1.0), ("I", 0.45, 0.9)),
    "aw": _r(("aa", 0.5, 1.0), ("U", 0.5, 0.8)),
    "eh": _r(("E", 1.0, 1.0)),
    "ey": _r(("E", 0.6, 1.0), ("I", 0.4, 0.9)),
    "ih": _r(("I", 1.0, 0.9)),
    "iy": _r(("I", 1.0, 1.0)),
    "y": _r(("I", 1.0, 0.8), dom=0.6),
    "ao": _r(("O", 1.0, 1.0)),
    "ow": _r(("O", 0.6, 1.0), ("U", 0.4, 0.9)),
    "oy": _r(("O", 0.55, 1.0), ("I", 0.45, 0.9)),
    "uw": _r(("U", 1.0, 1.0)),
    "uh": _r(("U", 1.0, 0.7)),
    "w": _r(("U", 1.0, 1.0)),
    "hh": _r(("aa", 1.0, 0.4), dom=0.3),
}
#: IPA symbols accepted as well (convenience for hand-written sequences).
IPA_TO_ARPABET = {
    "ɑ": "aa", "a": "aa", "æ": "ae", "ʌ": "ah", "ə": "ax", "ɔ": "ao", "ɛ": "eh", "e": "ey", "ɪ": "ih", "i": "iy",
    "o": "ow", "ʊ": "uh", "u": "uw", "ɚ": "er", "ɝ": "er", "aɪ": "ay", "aʊ": "aw", "eɪ": "ey", "oʊ": "ow",
    "ɔɪ": "oy", "θ": "th", "ð": "dh", "ʃ": "sh", "ʒ": "zh", "tʃ": "ch", "dʒ": "jh", "ŋ": "ng", "ɹ": "r",
    "j": "y", "h": "hh", "ɾ": "dx",
}


def normalize_phone(phone: str) -> str:
    p = phone.strip()
    if p in IPA_TO_ARPABET:
        return IPA_TO_ARPABET[p]
    return p.lower().rstrip("012")


def phone_visemes(phone: str) -> list[str]:
    """Viseme names of a phone (ARPAbet / Festival radio / IPA); unknown phones -> ``nn``."""
    rule = PHONE_RULES.get(normalize_phone(phone))
    return ["nn"] if rule is None else [v for v, _, _ in rule.parts]


@dataclass
class VisemeSegment:
    viseme: str
    start: float
    end: float
    strength: float = 1.0
    dominance: float = 1.0
    stress: int = 0
    phone: str = ""

    @property
    def center(self) -> float:
        return 0.5 * (self.start + self.end)


def viseme_segments(phones: Iterable) -> list[VisemeSegment]:
    """Phones (objects with name, start, end and optionally stress) -> viseme segments."""
    out: list[VisemeSegment] = []
    for ph in phones:
        name = ph.name if hasattr(ph, "name") else ph[0]
        start = float(ph.start if hasattr(ph, "start") else ph[1])
        end = float(ph.end if hasattr(ph, "end") else ph[2])
        stress = int(getattr(ph, "stress", 0) or 0)
        rule = PHONE_RULES.get(normalize_phone(name), _r(("nn", 1.0, 1.0), dom=0.5))
        t = start
        total = sum(f for _, f, _ in rule.parts)
        for vis, frac, strength in rule.parts:
            t1 = t + (end - start) * frac / total
            out.append(VisemeSegment(vis, t, t1, strength, rule.dominance, stress, name))
            t = t1
    return out


@dataclass
class Curves:
    """Weight curves (T, K) at ``times`` for ``names`` (a view of mouth + upper shapes)."""

    times: np.ndarray
    names: tuple[str, ...]
    weights: np.ndarray
    info: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.weights[:, self.names.index(name)]


def coarticulate(segments: Sequence[VisemeSegment], times: np.ndarray, style: SpeakerStyle) -> np.ndarray:
    """Blend the viseme targets with dominance functions; (T, len(MOUTH_SHAPES)) before constraints."""
    times = np.asarray(times, dtype=np.float64)
    if not segments:
        return np.zeros((len(times), len(MOUTH_SHAPES)))
    K = len(MOUTH_SHAPES)
    n = len(segments)
    targets = np.zeros((n, K))
    alpha = np.zeros((n, K))
    amp_idx = [MOUTH_SHAPES.index(s) for s in AMPLITUDE_SHAPES]
    pro_idx = [MOUTH_SHAPES.index(s) for s in PROTRUSION_SHAPES]
    gidx = np.array([GROUPS.index(group_of(s)) for s in MOUTH_SHAPES])
    for i, seg in enumerate(segments):
        vis = VISEMES[seg.viseme]
        tv = vis.target_vector() * seg.strength
        if seg.viseme in VOWEL_VISEMES:  # stressed vowels open a little more
            tv[amp_idx] *= 1.1 if seg.stress > 0 else 0.85
        tv[amp_idx] *= style.amplitude
        tv[pro_idx] *= style.protrusion
        targets[i] = tv
        alpha[i] = np.asarray(vis.dominance)[gidx] * seg.dominance
    starts = np.array([s.start for s in segments])
    ends = np.array([s.end for s in segments])
    centers = 0.5 * (starts + ends)
    half_core = 0.5 * _CORE * (ends - starts)
    t_eff = times - style.timing_offset_ms / 1000.0  # motion lags the audio by the offset
    dist = np.maximum(0.0, np.abs(t_eff[:, None] - centers[None, :]) - half_core[None, :])  # (T, n)
    tau = np.array([GROUP_TAU[group_of(s)] for s in MOUTH_SHAPES]) * style.smoothness  # (K,)
    dom = alpha[None, :, :] * np.exp(-((dist[:, :, None] / tau[None, None, :]) ** 1.5))  # (T, n, K)
    num = (dom * targets[None]).sum(axis=1)
    den = dom.sum(axis=1) + 1e-9
    return num / den


def _envelope(times: np.ndarray, intervals: Sequence[tuple[float, float]], ramp: float) -> np.ndarray:
    """1 on each [a, b], raised-cosine ramps of ``ramp`` seconds outside, max over intervals."""
    env = np.zeros(len(times))
    for a, b in intervals:
        with np.errstate(invalid="ignore"):
            d = np.maximum(0.0, np.maximum(a - times, times - b))
        e = np.where(d < ramp, 0.5 * (1.0 + np.cos(np.pi * np.minimum(d, ramp) / ramp)), 0.0)
        env = np.maximum(env, e)
    return env


def closure_intervals(segments: Sequence[VisemeSegment], times: np.ndarray, offset_s: float,
                      kind: str = "bilabial") -> list[tuple[float, float]]:
    """Time intervals (motion time) where the lips must be closed.

    ``bilabial``: the central 60 % of every p/b/m; when no frame time falls inside it (a
    short bilabial at a low frame rate), the frame nearest to its centre.
    ``silence``: pauses, shrunk by the closure ramp at each end.
    """
    times = np.asarray(times)
    out = []
    for i, seg in enumerate(segments):
        a, b = seg.start + offset_s, seg.end + offset_s
        if kind == "bilabial" and VISEMES[seg.viseme].closure:
            d = b - a
            a2, b2 = a + 0.2 * d, b - 0.2 * d
            if len(times) and not np.any((times >= a2) & (times <= b2)):
                j = int(np.argmin(np.abs(times - 0.5 * (a + b))))
                a2 = b2 = float(times[j])
            out.append((a2, b2))
        elif kind == "silence" and seg.viseme == "sil":
            # shrink only on the sides that touch speech; the utterance's ends stay closed
            a2 = a + CLOSURE_RAMP_S if i > 0 else -np.inf
            b2 = b - CLOSURE_RAMP_S if i < len(segments) - 1 else np.inf
            if b2 >= a2:
                out.append((a2, b2))
    return out


def apply_closures(weights: np.ndarray, times: np.ndarray, segments: Sequence[VisemeSegment],
                   gap_model, offset_s: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Silence then bilabial closure on (T, MOUTH_SHAPES) weights; returns (weights, bilabial envelope)."""
    w = weights.copy()
    close = MOUTH_SHAPES.index("mouthClose")
    d_close = gap_model.sensitivity["mouthClose"]
    rel = [MOUTH_SHAPES.index(s) for s in _RELEASED_AT_CLOSURE]
    env_b = np.zeros(len(times))
    for kind, target in (("silence", SILENCE_GAP_CM), ("bilabial", BILABIAL_GAP_CM)):
        env = _envelope(times, closure_intervals(segments, times, offset_s, kind), CLOSURE_RAMP_S)
        if kind == "bilabial":
            env_b = env
        if not env.any():
            continue
        w[:, rel] *= (1.0 - env)[:, None]
        other = w.copy()
        other[:, close] = 0.0
        gap = gap_model.gap(other, MOUTH_SHAPES)
        need = np.clip((gap - target) / -d_close, 0.0, 1.0)
        w[:, close] = np.maximum(w[:, close] * (1.0 - env), env * need)
    return w, env_b


def mouth_curves(phones: Iterable, times: np.ndarray, style: SpeakerStyle, gap_model) -> Curves:
    """Mouth blendshape weights (T, 16) for a phone sequence, sampled at ``times`` (s)."""
    times = np.asarray(times, dtype=np.float64)
    segs = viseme_segments(phones)
    w = coarticulate(segs, times, style)
    a = float(style.asymmetry)
    for k, s in enumerate(MOUTH_SHAPES):
        if s.endswith("_L"):
            w[:, k] *= 1.0 + a
        elif s.endswith("_R"):
            w[:, k] *= 1.0 - a
    w = np.clip(w, 0.0, 1.0)
    w, env_b = apply_closures(w, times, segs, gap_model, style.timing_offset_ms / 1000.0)
    w = np.clip(w, 0.0, 1.0)
    return Curves(times, MOUTH_SHAPES, w, {"bilabial_envelope": env_b, "segments": segs})


# --------------------------------------------------------------------------- upper face


def phone_energy(wave: np.ndarray, sample_rate: int, phones: Sequence) -> np.ndarray:
    """RMS level of each phone's audio, divided by the sentence's maximum (0..1)."""
    e = np.zeros(len(phones))
    for i, ph in enumerate(phones):
        a, b = int(ph.start * sample_rate), int(ph.end * sample_rate)
        x = wave[a:max(b, a + 1)]
        e[i] = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    m = e.max() if len(e) else 0.0
    return e / m if m > 0 else e


def blink_curve(times: np.ndarray, duration: float, rng: np.random.Generator,
                interval: float) -> tuple[np.ndarray, list]:
    """Blinks: intervals interval·U(0.5, 1.5), lengths 150–250 ms, 40 % closing / 60 % opening."""
    w = np.zeros(len(times))
    events = []
    t0 = float(rng.uniform(0.2, max(0.3, interval)))
    while t0 < duration:
        length = float(rng.uniform(0.15, 0.25))
        peak = float(rng.uniform(0.85, 1.0))
        u = (times - t0) / length
        closing = (u >= 0) & (u < 0.4)
        opening = (u >= 0.4) & (u <= 1.0)
        w[closing] = np.maximum(w[closing], peak * np.sin(0.5 * np.pi * u[closing] / 0.4) ** 2)
        w[opening] = np.maximum(w[opening], peak * np.cos(0.5 * np.pi * (u[opening] - 0.4) / 0.6) ** 2)
        events.append((round(t0, 4), round(length, 4)))
        t0 += interval * float(rng.uniform(0.5, 1.5))
    return w, events


def brow_curve(times: np.ndarray, phones: Sequence, energy: np.ndarray, style: SpeakerStyle,
               rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Brow raises on pitch-accented vowels (stressed vowels if the engine marks no accent)."""
    vowels = [i for i, p in enumerate(phones) if any(v in VOWEL_VISEMES for v in phone_visemes(p.name))]
    cands = [i for i in vowels if getattr(phones[i], "accented", 0)]
    if not cands:
        cands = [i for i in vowels if getattr(phones[i], "stress", 0)]
    off = style.timing_offset_ms / 1000.0
    w = np.zeros(len(times))
    events = []
    for i in cands:
        draw, size, width = rng.random(), rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.2)
        if draw >= style.brow_activity:
            continue
        ph = phones[i]
        amp = 0.7 * style.brow_activity * (0.4 + 0.6 * float(energy[i])) * size
        c = 0.5 * (ph.start + ph.end) + off - 0.04
        w += amp * np.exp(-0.5 * ((times - c) / (0.13 * width)) ** 2)
        events.append((round(c, 4), round(float(amp), 4)))
    return np.clip(w, 0.0, 1.0), events


def upper_face_curves(times: np.ndarray, duration: float, phones: Sequence, energy: np.ndarray,
                      style: SpeakerStyle, rng: np.random.Generator) -> Curves:
    blink, blinks = blink_curve(times, duration, rng, style.blink_interval_s)
    brow, brows = brow_curve(times, phones, energy, style, rng)
    cols = {
        "eyeBlink_L": blink, "eyeBlink_R": blink,
        "browInnerUp_L": brow, "browInnerUp_R": brow,
        "browOuterUp_L": 0.6 * brow, "browOuterUp_R": 0.6 * brow,
    }
    w = np.stack([cols[n] for n in UPPER_SHAPES], axis=1)
    return Curves(np.asarray(times), UPPER_SHAPES, w, {"blinks": blinks, "brow_raises": brows})


def viseme_table() -> list[tuple[str, str, str, str]]:
    """(viseme, phones, description, targets) rows for the docs."""
    rows = []
    for name, vis in VISEMES.items():
        phones = sorted(p for p, r in PHONE_RULES.items() if any(v == name for v, _, _ in r.parts))
        tg = ", ".join(f"{k} {v:g}" for k, v in vis.targets.items()) or "all 0 (rest)"
        rows.append((name, " ".join(phones), vis.description, tg))
    return rows
