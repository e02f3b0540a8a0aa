"""Offline text-to-speech with phone timings through eSpeak NG, installed by pip.

The ``espeakng-loader`` wheel (``pip install "ptalker[tts]"``) bundles libespeak-ng 1.52 and its
voice data for Linux, macOS and Windows; nothing from the operating system is needed. The library
is called in this process through ctypes:

* ``espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data, espeakINITIALIZE_PHONEME_EVENTS)``;
* ``espeak_SetSynthCallback``: the callback receives the samples and the events, among them one
  ``espeakEVENT_PHONEME`` per phoneme with its mnemonic (``tS``, ``'3:``) and the sample where it
  starts, and ``espeakEVENT_WORD`` with the word's place in the text;
* ``espeak_SetVoiceByName("en-us+m3")`` (an accent plus a voice variant), ``espeak_SetParameter``
  for the rate (words per minute), pitch and intonation range, then ``espeak_Synth``.

The phone timings are the engine's own, so they match the audio exactly; the mnemonics become
ARPAbet phones through :mod:`.espeak_phones`. eSpeak marks lexical stress but no pitch accents:
a primary-stressed syllable counts as accented (brow raises, :mod:`.visemes`).

**Determinism.** libespeak-ng keeps state from one utterance to the next (static variables of
its wave generator), so the same sentence comes out slightly different depending on what was said
before; and the breath noise of the breathy variants comes from a generator seeded with the clock.
Every utterance is therefore made by a freshly loaded library (load, initialise, synthesise,
``espeak_Terminate``, unload: about 7 ms) with its generator seeded (``espeak_ng_SetRandSeed``, and
the C library's ``srand`` for the Klatt voices), so a text and a voice always give the same samples,
in any process, in any order, at any time. This needs the library to be unloaded for real: nothing
else in the process may hold libespeak-ng open. The library is not thread-safe: a lock serialises
the calls in a process; worker processes each load their own copy.

Voices: an English accent of eSpeak (:data:`ACCENTS`) plus a voice variant (:data:`VARIANTS`:
m1–m8 male, f1–f5 female, which change pitch, formants, breathiness), written ``accent+variant``.

Licence: eSpeak NG is GPL-3.0-or-later. It is an optional dependency that the user installs
separately (the ``tts`` extra); ptalker itself stays MIT and ships no eSpeak code or data.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import ClassVar, Sequence

import numpy as np

from .espeak_phones import FIRST_PART, arpabet, split_stress
from .tts import Phone, TTSError, Utterance

#: how to get the engine
PIP_HINT = 'pip install "ptalker[tts]"  (or: pip install espeakng-loader)'

#: English accents of eSpeak NG usable here (the phone table covers their phonemes)
ACCENTS: tuple[str, ...] = ("en-us", "en-us-nyc", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan",
                            "en-gb-x-gbcwmd", "en-029")
#: eSpeak's standard voice variants: male 1-8, female 1-5
VARIANTS: tuple[str, ...] = tuple(f"m{i}" for i in range(1, 9)) + tuple(f"f{i}" for i in range(1, 6))
#: the voices a corpus cycles through by default: mostly US English, male and female alternating
DEFAULT_VOICES: tuple[str, ...] = (
    "en-us+m3", "en-us+f2", "en-gb-x-rp+m1", "en-us+f4", "en-gb-scotland+m4", "en-us+f1",
    "en-us+m7", "en+f3", "en-us-nyc+m6", "en-us+f5", "en-029+m2", "en-us+m8",
)

BASE_WPM = 175  # eSpeak's default speaking rate
MIN_WPM, MAX_WPM = 80, 450  # eSpeak's range without the sonic speed-up library
RAND_SEED = 12345

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_RATE, _PITCH, _RANGE = 1, 3, 4


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class EspeakVoice:
    """One eSpeak NG voice with a pitch, an intonation range and a speaking rate.

    Attributes:
        key: ``accent+variant``, e.g. ``en-us+m3`` (or an accent alone), see :data:`ACCENTS`, :data:`VARIANTS`.
        pitch: eSpeak's pitch setting, 0-100 (50 = the variant's own pitch), before ``tract``.
        pitch_range: eSpeak's intonation range, 0-100 (0 = monotone, 50 = normal).
        rate: speaking-rate factor (> 1 is faster), final: eSpeak runs at 175 wpm × rate / tract.
        tract: pitch and formant scale (vocal-tract length): the waveform is re-read at ``tract``
            times its sample rate, as for the Festival voices (:mod:`.tts`).
    """

    key: str
    pitch: int = 50
    pitch_range: int = 50
    rate: float = 1.0
    tract: float = 1.0
    engine: ClassVar[str] = "espeak"

    def __post_init__(self) -> None:
        accent, _, variant = self.key.partition("+")
        if accent not in ACCENTS or (variant and variant not in VARIANTS) or self.key.endswith("+"):
            raise TTSError(f"unknown eSpeak voice '{self.key}'; use ACCENT or ACCENT+VARIANT with an accent of "
                           f"{', '.join(ACCENTS)} and a variant of {', '.join(VARIANTS)}")
        for name in ("pitch", "pitch_range"):
            if not 0 <= getattr(self, name) <= 100:
                raise TTSError(f"eSpeak {name} {getattr(self, name)} out of range [0, 100]")
        if not 0.7 <= self.tract <= 1.4:
            raise TTSError(f"tract factor {self.tract} out of range [0.7, 1.4]")
        if not MIN_WPM <= self.words_per_minute <= MAX_WPM:
            raise TTSError(f"speaking rate {self.rate} with tract {self.tract} needs {self.words_per_minute} words "
                           f"per minute; eSpeak allows {MIN_WPM}-{MAX_WPM}")

    @property
    def accent(self) -> str:
        return self.key.partition("+")[0]

    @property
    def words_per_minute(self) -> int:
        return int(round(BASE_WPM * self.rate / self.tract))

    def to_json(self) -> dict:
        d = asdict(self)
        d["espeak_voice"] = self.key
        d["words_per_minute"] = self.words_per_minute
        return d


# --------------------------------------------------------------------------- the library


def missing() -> str | None:
    """Why eSpeak NG cannot be used here, or None when it can."""
    try:
        import espeakng_loader
    except ImportError:
        return "eSpeak NG is not installed; " + PIP_HINT
    try:
        _ = espeakng_loader.get_data_path()
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except (OSError, RuntimeError) as exc:
        return f"the eSpeak NG library of espeakng-loader does not load ({exc}); reinstall it: {PIP_HINT}"
    _unload(lib)
    return None


def check_tools() -> None:
    """Raise :class:`TTSError` with the install hint unless eSpeak NG can be used."""
    reason = missing()
    if reason:
        raise TTSError(reason)


@lru_cache(maxsize=None)
def version() -> str:
    """libespeak-ng's version, e.g. ``1.52.0``."""
    with _LOCK:
        lib = _load()
        try:
            lib.espeak_Info.restype = ctypes.c_char_p
            lib.espeak_Info.argtypes = [ctypes.c_void_p]
            return lib.espeak_Info(None).decode()
        finally:
            _unload(lib)


def loader_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("espeakng-loader")
    except metadata.PackageNotFoundError:
        return "unknown"


_LOCK = threading.Lock()
_STATE: dict = {"samples": [], "events": []}


def _on_synth(wav, num_samples, events) -> int:
    if wav and num_samples > 0:
        _STATE["samples"].append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
    i = 0
    while events[i].type != _EVENT_LIST_TERMINATED:
        ev = events[i]
        if ev.type == _EVENT_PHONEME:
            name = bytes(ev.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
            _STATE["events"].append(("phoneme", int(ev.sample), name, 0, 0))
        elif ev.type == _EVENT_WORD:
            _STATE["events"].append(("word", int(ev.sample), "", int(ev.text_position), int(ev.length)))
        i += 1
    return 0


_CALLBACK = _CALLBACK_TYPE(_on_synth)


def _load():
    import espeakng_loader

    try:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
    except OSError as exc:
        raise TTSError(f"the eSpeak NG library does not load ({exc}); reinstall it: {PIP_HINT}") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK_TYPE]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    return lib


def _unload(lib) -> None:
    import _ctypes

    close = getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary", None)
    if close is not None:
        close(lib._handle)


def _seed_rand(lib) -> None:
    """Seed eSpeak's own generator (breathy voices; seeded from the clock at initialisation) and
    the C library's ``rand()`` (the Klatt voices)."""
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed(RAND_SEED)
    if sys.platform != "win32":
        ctypes.CDLL(None).srand(RAND_SEED)


def _synth_raw(text: str, voice: EspeakVoice) -> tuple[np.ndarray, int, list[tuple]]:
    """(int16 samples, engine sample rate, events) for one text, from a freshly loaded library."""
    import espeakng_loader

    with _LOCK:
        lib = _load()
        _STATE["samples"], _STATE["events"] = [], []
        try:
            rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(),
                                         _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_DONT_EXIT)
            if rate <= 0:
                raise TTSError(f"eSpeak NG did not initialise (its data folder {espeakng_loader.get_data_path()}); "
                               f"reinstall it: {PIP_HINT}")
            lib.espeak_SetSynthCallback(_CALLBACK)
            _seed_rand(lib)
            if lib.espeak_SetVoiceByName(voice.key.encode()) != 0:
                raise TTSError(f"eSpeak NG has no voice '{voice.key}'")
            for param, value in ((_RATE, voice.words_per_minute), (_PITCH, voice.pitch), (_RANGE, voice.pitch_range)):
                lib.espeak_SetParameter(param, int(value), 0)
            data = text.encode("utf-8")
            err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise TTSError(f"eSpeak NG failed on {text!r} (error {err})")
            samples = np.concatenate(_STATE["samples"]) if _STATE["samples"] else np.zeros(0, np.int16)
            return samples, int(rate), list(_STATE["events"])
        finally:
            lib.espeak_Terminate()
            _unload(lib)
            _STATE["samples"], _STATE["events"] = [], []


def phones_from_events(events: Sequence[tuple], num_samples: int, sample_rate: float, text: str,
                       accent: str) -> list[Phone]:
    """Phone segments covering [0, num_samples / sample_rate] from eSpeak's phoneme and word events.

    Each phoneme lasts until the next one starts (the last until the end of the audio); the
    audio before the first phoneme and every pause mnemonic become ``pau`` (neighbouring pauses
    merged); a mnemonic of two phones splits its time (:data:`.espeak_phones.FIRST_PART`).
    Unknown mnemonics keep their name (:mod:`.visemes` treats them as a neutral consonant).
    """
    marks: list[tuple[int, str, str]] = []  # (sample, mnemonic, word)
    word = ""
    for kind, sample, name, pos, length in events:
        if kind == "word":
            word = text[max(pos - 1, 0): max(pos - 1, 0) + length]
        else:
            marks.append((min(max(sample, 0), num_samples), name, word))
    phones: list[Phone] = []

    def add(name: str, a: float, b: float, stress: int = 0, accented: int = 0, word: str = "") -> None:
        if b <= a:
            return
        if name == "pau" and phones and phones[-1].name == "pau":
            phones[-1].end = b
            return
        phones.append(Phone(name, a, b, stress, accented, "" if name == "pau" else word))

    first = marks[0][0] if marks else num_samples
    add("pau", 0.0, first / sample_rate)
    for i, (sample, name, word) in enumerate(marks):
        end = marks[i + 1][0] if i + 1 < len(marks) else num_samples
        a, b = sample / sample_rate, end / sample_rate
        base, stress, primary = split_stress(name)
        parts = arpabet(name, accent) or (base,)
        if parts == ("pau",):
            add("pau", a, b)
            continue
        cut = a + (b - a) * (FIRST_PART if len(parts) == 2 else 1.0)
        for k, part in enumerate(parts):  # the stress belongs to the first (the vowel) of two phones
            add(part, a if k == 0 else cut, cut if k == 0 else b, stress if k == 0 else 0,
                int(primary) if k == 0 else 0, word)
    if phones and phones[-1].end < num_samples / sample_rate:
        add("pau", phones[-1].end, num_samples / sample_rate)
    return phones


def synthesize(texts: Sequence[str], voice: EspeakVoice, workdir=None) -> list[Utterance]:
    """Synthesise ``texts`` with eSpeak NG; one :class:`Utterance` each (``workdir`` is not used).

    The waveform is returned at the engine's rate (22,050 Hz) times ``voice.tract``; the phone
    times are in seconds of that waveform.
    """
    out = []
    tool = f"espeak-ng {version()} voice {voice.key}"
    for text in texts:
        samples, rate, events = _synth_raw(text, voice)
        if not len(samples) or not any(e[0] == "phoneme" for e in events):
            raise TTSError(f"eSpeak NG produced no audio or phonemes for {text!r}")
        sr = int(round(rate * voice.tract))  # re-read faster / slower: pitch and formants x tract
        phones = phones_from_events(events, len(samples), float(sr), text, voice.accent)
        wave = samples.astype(np.float32) / 32768.0
        out.append(Utterance(text, wave, sr, phones, tool))
    return out
