"""SynthTalk: a synthetic audio + 4D face corpus with known speaking styles.

``ptalker data synth OUT_DIR`` (:func:`generate_corpus`) speaks the Harvard sentences with
eSpeak NG (installed by pip) or Festival voices (:mod:`.engines`), maps the phone timings to visemes and
blendshape weight curves with coarticulation, and poses each speaker's own ICT-FaceKit
face. See docs/synthtalk.md. Heavy imports are lazy.
"""

from __future__ import annotations

__all__ = [
    "EspeakVoice",
    "SpeakerStyle",
    "SynthSummary",
    "TTSError",
    "Voice",
    "check_tools",
    "generate_corpus",
    "load_head",
    "load_sentences",
    "sample_speaker",
]

_LAZY = {
    "EspeakVoice": "espeak",
    "SpeakerStyle": "style",
    "sample_speaker": "style",
    "SynthSummary": "generator",
    "generate_corpus": "generator",
    "load_sentences": "generator",
    "TTSError": "tts",
    "Voice": "tts",
    "check_tools": "tts",
    "load_head": "head",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
