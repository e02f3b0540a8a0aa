"""Audio loading for the speech encoder.

:func:`load_audio` reads anything libsndfile reads (WAV, FLAC, OGG/Vorbis, AIFF, ...),
with any channel count and sample rate, and returns a float32 mono waveform in
``[-1, 1]`` at the requested rate (16 kHz by default, as HuBERT/wav2vec2 expect),
resampled with soxr's high-quality resampler.

Problems with the file are reported as :class:`~ptalker_cli.errors.AudioError` with a
one-line message naming the file, the problem and what to do.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioError

__all__ = [
    "SAMPLE_RATE",
    "AudioInfo",
    "SilentAudioWarning",
    "audio_info",
    "is_silent",
    "load_audio",
    "normalize_waveform",
    "peak_db",
]

#: Sample rate expected by the speech encoders (HuBERT / wav2vec2).
SAMPLE_RATE = 16000

#: Default peak level (dBFS) below which a waveform counts as silent.
SILENCE_THRESHOLD_DB = -60.0

_NORM_EPS = 1e-7  # same epsilon as transformers' Wav2Vec2FeatureExtractor


class SilentAudioWarning(UserWarning):
    """The audio file contains only silence; the animation will barely move."""


@dataclass(frozen=True)
class AudioInfo:
    """Header information about an audio file (no samples are decoded)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate if self.sample_rate > 0 else 0.0


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioError(f"audio file not found: {p}; check the path and try again")
    if p.is_dir():
        raise AudioError(
            f"audio path is a directory, not a file: {p}; pass the path of an audio file "
            "(WAV, FLAC or OGG)"
        )
    return p


def _unreadable(p: Path, exc: BaseException) -> AudioError:
    # LibsndfileError's str() repeats the path; its error_string is just the reason.
    detail = _one_line(getattr(exc, "error_string", None) or exc).rstrip(".") or type(exc).__name__
    return AudioError(
        f"cannot read audio file {p} ({detail}); make sure it is a WAV, FLAC or OGG "
        "file that is not corrupted, or convert it (e.g. ffmpeg -i INPUT -ac 1 -ar 16000 out.wav)"
    )


_READ_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError, EOFError)


def audio_info(path: str | os.PathLike[str]) -> AudioInfo:
    """Read the header of an audio file; raises :class:`AudioError` if it is not audio."""
    p = _check_path(path)
    try:
        info = sf.info(str(p))
    except _READ_ERRORS as exc:
        raise _unreadable(p, exc) from exc
    return AudioInfo(
        path=p,
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def peak_db(wave: np.ndarray) -> float:
    """Peak level of ``wave`` in dBFS (``-inf`` for empty or all-zero input)."""
    x = np.asarray(wave, dtype=np.float64)
    if x.size == 0:
        return float("-inf")
    peak = float(np.max(np.abs(x)))
    return 20.0 * float(np.log10(peak)) if peak > 0 else float("-inf")


def is_silent(wave: np.ndarray, threshold_db: float = SILENCE_THRESHOLD_DB) -> bool:
    """True if no sample of ``wave`` reaches ``threshold_db`` dBFS (or it is empty).

    The test is on the peak, so a recording with any audible sound is not silent.
    """
    return peak_db(wave) < threshold_db


def normalize_waveform(wave: np.ndarray) -> np.ndarray:
    """Zero-mean / unit-variance normalisation of one utterance.

    Matches the HuBERT/wav2vec2 feature extractor with ``do_normalize=True``:
    ``(x - mean) / sqrt(var + 1e-7)``. Silence (constant input) gives zeros, not NaN.
    Returns float32 with the same shape.
    """
    x = np.asarray(wave, dtype=np.float32)
    if x.size == 0:
        return x.copy()
    x64 = x.astype(np.float64)
    mean = x64.mean()
    var = x64.var()
    return ((x64 - mean) / np.sqrt(var + _NORM_EPS)).astype(np.float32)


def load_audio(
    path: str | os.PathLike[str],
    sample_rate: int = SAMPLE_RATE,
    *,
    min_duration: float = 0.1,
) -> np.ndarray:
    """Load an audio file as float32 mono in ``[-1, 1]`` at ``sample_rate`` Hz.

    Multi-channel audio is downmixed by averaging the channels; integer formats are
    scaled to ``[-1, 1]``; float files that exceed full scale are scaled down by their
    peak. Resampling uses soxr (``quality="HQ"``).

    Raises :class:`AudioError` if the file is missing, a directory, not readable as
    audio, empty, contains NaN/inf samples, or is shorter than ``min_duration``
    seconds. All-silent audio is returned as is, with a :class:`SilentAudioWarning`.
    """
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    p = _check_path(path)

    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except _READ_ERRORS as exc:
        raise _unreadable(p, exc) from exc

    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(
            f"audio file {p} is empty (0 samples); record or export some speech into it "
            "and try again"
        )
    if not np.isfinite(data).all():
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise AudioError(
            f"audio file {p} contains {bad} NaN or infinite sample(s); re-export it "
            "(e.g. as 16-bit PCM WAV) from a tool that writes valid audio"
        )
    duration = data.shape[0] / float(sr)
    if duration < min_duration:
        raise AudioError(
            f"audio file {p} is too short ({duration:.3f} s, minimum {min_duration:g} s); "
            "use a longer recording"
        )

    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32) if data.shape[1] > 1 else data[:, 0]
    peak = float(np.max(np.abs(mono)))
    if peak > 1.0:  # only possible for float formats
        mono = mono / peak

    if sr != sample_rate:
        mono = soxr.resample(mono, sr, sample_rate, quality="HQ")
    wave = np.clip(np.ascontiguousarray(mono, dtype=np.float32), -1.0, 1.0)

    if is_silent(wave):
        warnings.warn(
            f"audio file {p} is silent (below {SILENCE_THRESHOLD_DB:g} dBFS); the face will "
            "barely move — check that the right file and input level were used",
            SilentAudioWarning,
            stacklevel=2,
        )
    return wave
