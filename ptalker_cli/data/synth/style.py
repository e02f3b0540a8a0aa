"""Per-speaker parameters: speaking style (ground truth for style disentanglement),
face shape (identity coefficients) and voice.

Everything of speaker ``i`` is drawn from ``numpy.random.default_rng([seed, 1, i])``, so a
speaker does not change when more speakers are generated with the same seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Sequence

import numpy as np

from .espeak import EspeakVoice
from .tts import VOICES, Voice

#: name -> (low, high, meaning) of the uniform ranges speaker styles are drawn from.
STYLE_RANGES: dict[str, tuple[float, float, str]] = {
    "amplitude": (0.7, 1.35, "mouth-opening scale (jawOpen, lowerDown, upperUp, stretch targets)"),
    "protrusion": (0.6, 1.5, "lip rounding / protrusion scale (pucker, funnel targets)"),
    "smoothness": (0.035, 0.085, "coarticulation time constant in seconds (larger = smoother)"),
    "asymmetry": (-0.25, 0.25, "left/right imbalance: _L weights x (1+a), _R weights x (1-a)"),
    "timing_offset_ms": (-40.0, 40.0, "motion lag behind the audio in ms (< 0: motion leads)"),
    "brow_activity": (0.1, 1.0, "probability and size of brow raises on pitch accents"),
    "blink_interval_s": (2.5, 5.5, "mean time between blinks in seconds"),
}


@dataclass(frozen=True)
class SpeakerStyle:
    """Speaking style in the PTalker sense; see :data:`STYLE_RANGES` for the meaning."""

    amplitude: float = 1.0
    protrusion: float = 1.0
    smoothness: float = 0.055
    asymmetry: float = 0.0
    timing_offset_ms: float = 0.0
    brow_activity: float = 0.5
    blink_interval_s: float = 4.0

    def __post_init__(self) -> None:
        if not self.smoothness > 0:
            raise ValueError("smoothness (coarticulation time constant) must be > 0")
        if not -0.9 <= self.asymmetry <= 0.9:
            raise ValueError("asymmetry must lie in [-0.9, 0.9]")
        if not self.blink_interval_s > 0.3:
            raise ValueError("blink_interval_s must be > 0.3")

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "SpeakerStyle":
        vals = {}
        for f in fields(cls):
            lo, hi, _ = STYLE_RANGES[f.name]
            vals[f.name] = round(float(rng.uniform(lo, hi)), 4)
        return cls(**vals)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SpeakerStyle":
        return cls(**{f.name: float(data[f.name]) for f in fields(cls) if f.name in data})


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: id, voice, speaking style and face shape."""

    name: str
    voice: Voice
    style: SpeakerStyle
    identity: tuple[float, ...]

    def to_json(self) -> dict:
        return {
            "voice": self.voice.to_json(),
            "style": self.style.to_json(),
            "identity": [round(float(c), 5) for c in self.identity],
        }


def _unit(value: float, name: str) -> float:
    lo, hi = STYLE_RANGES[name][:2]
    return (float(value) - lo) / (hi - lo)


def sample_voice(rng: np.random.Generator, key: str, style: "SpeakerStyle | None" = None) -> Voice | EspeakVoice:
    """Pitch, intonation range, rate and vocal-tract scale for a voice (Festival or eSpeak key).

    With ``style`` the speaking style is *audible*, as it is in people: a smoother
    speaker talks more slowly (rate from ``smoothness``), protruded lips lengthen the
    vocal tract and lower the formants (tract from ``protrusion``), and a wide-mouthed
    speaker has a livelier intonation (F0 range from ``amplitude``: Festival's diphone
    voices and every eSpeak voice). Asymmetry, timing offset, brow activity and blinks
    stay inaudible. Each mapping carries a little independent noise.
    """
    if style is None:
        rate = float(rng.uniform(0.85, 1.2))
        tract_u = float(rng.uniform(0.0, 1.0))
        range_u = float(rng.uniform(0.0, 1.0))
    else:
        rate = 1.2 - 0.35 * _unit(style.smoothness, "smoothness") + float(rng.uniform(-0.03, 0.03))
        tract_u = 1.0 - _unit(style.protrusion, "protrusion") + float(rng.uniform(-0.05, 0.05))
        range_u = _unit(style.amplitude, "amplitude") + float(rng.uniform(-0.05, 0.05))
    tract_u, range_u = min(max(tract_u, 0.0), 1.0), min(max(range_u, 0.0), 1.0)
    if key not in VOICES:  # eSpeak: pitch and range are its 0-100 settings
        return EspeakVoice(key, pitch=int(round(rng.uniform(25.0, 75.0))), pitch_range=int(round(20 + 70 * range_u)),
                           rate=round(rate, 4), tract=round(0.9 + 0.2 * tract_u, 4))
    if VOICES[key][1] == "diphone":
        tract = 0.92 + 0.20 * tract_u
        return Voice(key, f0_mean=round(float(rng.uniform(85.0, 150.0)), 2),
                     f0_std=round(10.0 + 18.0 * range_u, 2), rate=round(rate, 4), tract=round(tract, 4))
    tract = 0.88 + 0.22 * tract_u
    return Voice(key, rate=round(rate, 4), tract=round(tract, 4))


def sample_speaker(index: int, seed: int, voices: Sequence[str] = tuple(VOICES),
                   identity_modes: int = 12, name: str | None = None) -> Speaker:
    """Speaker ``index`` (0-based) of a corpus generated with ``seed``.

    Voices cycle through ``voices`` (speaker 0 the first voice, ...), so every voice is used;
    Festival keys (``kal``) and eSpeak keys (``en-us+m3``) are both accepted.
    Identity coefficients are N(0, 1) clipped to [-2, 2].
    """
    rng = np.random.default_rng([int(seed), 1, int(index)])
    key = voices[index % len(voices)]
    style = SpeakerStyle.sample(rng)
    voice = sample_voice(rng, key, style)
    identity = tuple(round(float(c), 5) for c in np.clip(rng.standard_normal(identity_modes), -2.0, 2.0))
    return Speaker(name or speaker_name(index), voice, style, identity)


def speaker_name(index: int) -> str:
    return f"spk{index + 1:02d}"
