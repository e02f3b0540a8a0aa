"""The text-to-speech engines of SynthTalk and how one is chosen.

=============  ==========================================  ===============================================
engine         installed with                              voices
=============  ==========================================  ===============================================
``espeak``     ``pip install "ptalker[tts]"`` (any OS)      English accents × variants (:mod:`.espeak`)
``festival``   ``apt-get install festival festvox-…``       ``kal``, ``ked``, ``slt`` (:mod:`.tts`)
=============  ==========================================  ===============================================

``auto`` (the default of ``ptalker data synth --tts``) takes eSpeak NG when it is installed,
else Festival, else stops with a one-line error that says how to install either. Both give
the engine's own phone timings; a voice object knows its engine (``voice.engine``), so
:func:`synthesize` dispatches on it.
"""

from __future__ import annotations

from typing import Sequence

from . import espeak, tts
from .tts import TTSError, Utterance

ENGINES: tuple[str, ...] = ("espeak", "festival")
AUTO = "auto"


def install_hint() -> str:
    return (f"install eSpeak NG with: {espeak.PIP_HINT}; or Festival with: apt-get install "
            + " ".join(tts.APT_PACKAGES))


def missing(engine: str) -> str | None:
    """Why ``engine`` (with all its default voices) cannot be used here, or None."""
    if engine == "espeak":
        return espeak.missing()
    if engine == "festival":
        try:
            tts.check_tools()
        except TTSError as exc:
            return str(exc)
        return None
    raise TTSError(f"unknown text-to-speech engine '{engine}'; use {AUTO}, {', '.join(ENGINES)}")


def resolve_engine(name: str | None = AUTO) -> str:
    """``auto`` -> the first installed engine of :data:`ENGINES`; a named engine is returned as is."""
    name = (name or AUTO).strip().lower()
    if name == AUTO:
        for engine in ENGINES:
            if missing(engine) is None:
                return engine
        raise TTSError("no text-to-speech engine for SynthTalk; " + install_hint())
    if name not in ENGINES:
        raise TTSError(f"unknown text-to-speech engine '{name}'; use {AUTO}, {', '.join(ENGINES)}")
    return name


def default_voices(engine: str) -> tuple[str, ...]:
    return espeak.DEFAULT_VOICES if engine == "espeak" else tuple(tts.VOICES)


def voice_engine(key: str) -> str | None:
    """The engine a voice key belongs to (``kal`` -> festival, ``en-us+m3`` -> espeak), or None."""
    if key in tts.VOICES:
        return "festival"
    try:
        espeak.EspeakVoice(key)
    except TTSError:
        return None
    return "espeak"


def check_voices(engine: str, voices: Sequence[str]) -> None:
    """Raise :class:`TTSError` unless every voice is one of ``engine``'s and the engine is installed."""
    for key in voices:
        if voice_engine(key) != engine:
            example = ", ".join(default_voices(engine)[:3])
            raise TTSError(f"'{key}' is not a voice of the {engine} engine (e.g. {example})")
    if engine == "festival":
        tts.check_tools(voices)
    else:
        espeak.check_tools()


def describe(engine: str) -> dict:
    """What made the audio, for the corpus manifest."""
    if engine == "espeak":
        return {"engine": "espeak", "version": espeak.version(),
                "invoked_as": f"libespeak-ng in-process through ctypes (espeakng-loader {espeak.loader_version()})"}
    return {"engine": "festival", "version": tts.festival_version(), "invoked_as": "external program (festival -b)"}


def synthesize(texts: Sequence[str], voice, workdir=None) -> list[Utterance]:
    """Synthesise ``texts`` with the engine of ``voice`` (a :class:`.tts.Voice` or :class:`.espeak.EspeakVoice`)."""
    module = espeak if voice.engine == "espeak" else tts
    return module.synthesize(texts, voice, workdir)
