"""Offline text-to-speech with exact phoneme timings, through Festival as an external program;
and the types every engine returns (:class:`Phone`, :class:`Utterance`, :class:`TTSError`).

SynthTalk's default engine is eSpeak NG, installed by pip (:mod:`.espeak`); Festival stays
selectable (``ptalker data synth --tts festival``) where it is installed (:mod:`.engines`).

The corpus generator runs ``festival -b script.scm`` as a subprocess: one process per
batch of sentences, which writes one WAV per sentence and prints every ``Segment`` of
the utterance (phone name, end time, syllable stress, pitch accent, word). The timings
are the engine's own, so they match the audio exactly (no forced alignment needed).

Nothing here imports or links speech-synthesis code: Festival (permissive X11-style
licence) and its voices are only executed as programs. Install them with::

    apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts

Voices (all US English, Festival's "radio" ARPAbet-like phone set):

=================  =========================  =====================================================
key                Festival voice             how pitch and rate are varied
=================  =========================  =====================================================
``kal``            ``kal_diphone`` (male)     ``int_lr_params`` target F0 mean/std, ``Duration_Stretch``
``ked``            ``ked_diphone`` (male)     same
``slt``            ``cmu_us_slt_arctic_hts``  HTS engine ``-r`` (speed); pitch only through ``tract``
                   (female)
=================  =========================  =====================================================

Every voice also has a ``tract`` factor: the waveform is re-read as if it had been
recorded at ``tract`` times its sample rate (then resampled to 16 kHz), which scales
pitch and formants by ``tract`` (a shorter or longer vocal tract: another-sounding
speaker) and all times by ``1 / tract``. The engine's rate and F0 settings are
pre-compensated, so ``rate`` and ``f0_mean`` are the final values.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import soundfile as sf

from ...errors import PtalkerError

#: Debian packages that provide the engine and the voices used here.
APT_PACKAGES = ("festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts")

#: voice key -> (Festival voice function, kind)
VOICES: dict[str, tuple[str, str]] = {
    "kal": ("voice_kal_diphone", "diphone"),
    "ked": ("voice_ked_diphone", "diphone"),
    "slt": ("voice_cmu_us_slt_arctic_hts", "hts"),
}

#: Festival voice names as listed by ``(voice.list)``
_VOICE_LIST_NAMES = {"kal": "kal_diphone", "ked": "ked_diphone", "slt": "cmu_us_slt_arctic_hts"}

_SEG_TAG = "@@SEG"
_UTT_TAG = "@@UTT"


class TTSError(PtalkerError):
    """The text-to-speech engine is missing or failed."""


def _install_hint() -> str:
    return "install it with: apt-get install " + " ".join(APT_PACKAGES)


@dataclass(frozen=True)
class Voice:
    """One synthetic voice: a Festival voice with a pitch and a speaking rate.

    Attributes:
        key: ``kal``, ``ked`` or ``slt`` (see :data:`VOICES`).
        f0_mean: diphone voices: target mean F0 in Hz.
        f0_std: diphone voices: target F0 standard deviation in Hz (intonation range).
        rate: speaking-rate factor (> 1 is faster), final.
        tract: pitch and formant scale (vocal-tract length), see the module docstring.
    """

    key: str
    f0_mean: float = 105.0
    f0_std: float = 14.0
    rate: float = 1.0
    tract: float = 1.0
    engine: ClassVar[str] = "festival"

    def __post_init__(self) -> None:
        if self.key not in VOICES:
            raise TTSError(f"unknown voice '{self.key}'; use one of {', '.join(VOICES)}")
        if not 0.3 <= self.rate <= 3.0:
            raise TTSError(f"speaking rate {self.rate} out of range [0.3, 3]")
        if not 0.7 <= self.tract <= 1.4:
            raise TTSError(f"tract factor {self.tract} out of range [0.7, 1.4]")

    def setup_scheme(self) -> str:
        fn, kind = VOICES[self.key]
        lines = [f"({fn})"]
        if kind == "diphone":
            lines.append(
                "(set! int_lr_params '((target_f0_mean %.3f) (target_f0_std %.3f) "
                "(model_f0_mean 170) (model_f0_std 34)))" % (self.f0_mean / self.tract, self.f0_std / self.tract)
            )
            lines.append("(Parameter.set 'Duration_Stretch %.4f)" % (self.tract / self.rate))
        else:
            lines.append(
                "(set! hts_engine_params (append hts_engine_params "
                "(list '(\"-r\" %.4f))))" % (self.rate / self.tract)
            )
        return "\n".join(lines)

    def to_json(self) -> dict:
        d = asdict(self)
        d["festival_voice"] = _VOICE_LIST_NAMES[self.key]
        if VOICES[self.key][1] != "diphone":
            d.pop("f0_mean")
            d.pop("f0_std")
        return d


@dataclass
class Phone:
    """One phone segment of an utterance (times in seconds from the start of the audio)."""

    name: str
    start: float
    end: float
    stress: int = 0  # lexical stress of the syllable (0 for pauses)
    accented: int = 0  # pitch accent on the syllable (Festival intonation)
    word: str = ""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Utterance:
    """Synthesised speech: float32 mono waveform, its rate, and the phone segments."""

    text: str
    wave: np.ndarray
    sample_rate: int
    phones: list[Phone] = field(default_factory=list)
    tool: str = ""

    @property
    def duration(self) -> float:
        return len(self.wave) / float(self.sample_rate)


def festival_path() -> str:
    path = shutil.which("festival")
    if path is None:
        raise TTSError("the 'festival' program is not installed (needed by ptalker data synth); " + _install_hint())
    return path


@lru_cache(maxsize=None)
def festival_version() -> str:
    out = subprocess.run([festival_path(), "--version"], capture_output=True, text=True, timeout=60)
    text = (out.stdout + out.stderr).strip()
    m = re.search(r"(\d+\.\d+(\.\d+)?)", text)
    return m.group(1) if m else text


@lru_cache(maxsize=None)
def available_voices() -> tuple[str, ...]:
    """Voice keys whose Festival voice is installed."""
    script = "(mapcar (lambda (v) (format t \"@@V %s\\n\" v)) (voice.list))\n"
    res = _run_festival(script, timeout=120)
    names = set(re.findall(r"^@@V (\S+)", res, flags=re.M))
    return tuple(k for k, v in _VOICE_LIST_NAMES.items() if v in names)


def check_tools(voices: Sequence[str] = tuple(VOICES)) -> None:
    """Raise :class:`TTSError` with an install hint unless Festival and ``voices`` are installed."""
    festival_path()
    have = available_voices()
    missing = [v for v in voices if v not in have]
    if missing:
        pkgs = {"kal": "festvox-kallpc16k", "ked": "festvox-kdlpc16k", "slt": "festvox-us-slt-hts"}
        raise TTSError(
            f"Festival voice(s) {', '.join(missing)} not installed; apt-get install "
            + " ".join(pkgs[v] for v in missing)
        )


def _run_festival(script: str, timeout: float = 600) -> str:
    exe = festival_path()
    with tempfile.TemporaryDirectory(prefix="ptalker-festival-") as tmp:
        path = Path(tmp) / "run.scm"
        path.write_text(script)
        env = dict(os.environ, LC_ALL="C")
        try:
            res = subprocess.run([exe, "-b", str(path)], capture_output=True, text=True, timeout=timeout, env=env,
                                 stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise TTSError(f"festival did not finish within {timeout:.0f} s") from None
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise TTSError(f"festival failed (exit {res.returncode}): {' | '.join(tail)}")
    return res.stdout


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def synthesize(texts: Sequence[str], voice: Voice, workdir: str | os.PathLike | None = None) -> list[Utterance]:
    """Synthesise ``texts`` with one Festival process; returns one :class:`Utterance` each.

    The phone times are Festival's segment end times (the start of a phone is the end of
    the previous one), in seconds of the returned waveform. The waveform is returned at
    the engine's rate times ``voice.tract`` (resample it before writing).
    """
    texts = list(texts)
    if not texts:
        return []
    own_tmp = None
    if workdir is None:
        own_tmp = tempfile.TemporaryDirectory(prefix="ptalker-tts-")
        workdir = own_tmp.name
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    feats = ["name", "end", "R:SylStructure.parent.stress", "R:SylStructure.parent.accented",
             "R:SylStructure.parent.parent.name"]
    fmt = _SEG_TAG + " %d" + " %s" * len(feats) + "\\n"
    lines = [voice.setup_scheme()]
    for i, text in enumerate(texts):
        wav = workdir / f"utt{i:04d}.wav"
        lines.append(f"(set! u (Utterance Text {_scheme_string(text)}))")
        lines.append("(utt.synth u)")
        lines.append(f"(utt.save.wave u {_scheme_string(str(wav))} 'riff)")
        lines.append(f'(format t "{_UTT_TAG} {i}\\n")')
        args = " ".join(f'(item.feat s "{f}")' for f in feats)
        lines.append(f'(mapcar (lambda (s) (format t "{fmt}" {i} {args})) (utt.relation.items u \'Segment))')
    try:
        out = _run_festival("\n".join(lines) + "\n", timeout=60 + 20 * len(texts))
        segs: dict[int, list[list[str]]] = {i: [] for i in range(len(texts))}
        done = set()
        for line in out.splitlines():
            if line.startswith(_SEG_TAG + " "):
                parts = line.split()
                segs[int(parts[1])].append(parts[2:])
            elif line.startswith(_UTT_TAG + " "):
                done.add(int(line.split()[1]))
        tool = f"festival {festival_version()} voice {_VOICE_LIST_NAMES[voice.key]}"
        result = []
        for i, text in enumerate(texts):
            wav_path = workdir / f"utt{i:04d}.wav"
            if i not in done or not wav_path.is_file() or not segs[i]:
                raise TTSError(f"festival produced no audio or segments for sentence {i + 1}: {text!r}")
            wave, sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
            wave = wave.mean(axis=1)
            sr = int(round(sr * voice.tract))  # re-read faster/slower: pitch, formants x tract
            phones = []
            start = 0.0
            for name, end, stress, acc, word in segs[i]:
                end_f = float(end) / voice.tract
                phones.append(Phone(name, start, max(end_f, start), _int(stress), _int(acc),
                                    "" if word == "0" else word))
                start = max(end_f, start)
            result.append(Utterance(text, wave.astype(np.float32), int(sr), phones, tool))
        return result
    finally:
        if own_tmp is not None:
            own_tmp.cleanup()


def _int(s: str) -> int:
    try:
        return int(float(s))
    except ValueError:
        return 0
