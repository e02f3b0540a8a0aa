"""Lip-sync checks that need no ground-truth motion: mouth opening against the speech envelope.

For any recording (real speech included) a talking head should open its mouth when
there is sound and close it in pauses. These helpers measure exactly that:

* :func:`speech_envelope` — RMS level of the audio in each motion frame's window;
* :func:`mouth_opening` — vertical distance between an upper- and a lower-lip vertex;
* :func:`lipsync_report` — Pearson correlation of the two (best over small lags, since
  a face leads its sound by a frame or two) and the mouth opening in pauses vs speech.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def speech_envelope(wave: np.ndarray, num_frames: int, fps: float, sample_rate: int = 16000) -> np.ndarray:
    """(T,) RMS of the samples that fall in each motion frame."""
    hop = sample_rate / float(fps)
    out = np.zeros(num_frames, dtype=np.float64)
    for t in range(num_frames):
        seg = wave[int(round(t * hop)): int(round((t + 1) * hop))]
        out[t] = float(np.sqrt(np.mean(seg.astype(np.float64) ** 2))) if len(seg) else 0.0
    return out


def mouth_opening(vertices: np.ndarray, upper: int, lower: int, axis: int = 1) -> np.ndarray:
    """(T,) coordinate difference upper − lower along ``axis`` (the up axis) for each frame."""
    v = np.asarray(vertices)
    return (v[:, upper, axis] - v[:, lower, axis]).astype(np.float64)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else 0.0


@dataclass
class LipSyncReport:
    frames: int
    correlation: float  # Pearson r at lag 0
    best_correlation: float  # best r over lags in [-max_lag, max_lag]
    best_lag_frames: int  # > 0: the mouth leads the sound
    opening_speech: float  # mean opening in speech frames
    opening_pause: float  # mean opening in pause frames
    pause_frames: int
    speech_frames: int

    def to_dict(self) -> dict:
        return asdict(self)


def lipsync_report(opening: np.ndarray, envelope: np.ndarray, max_lag: int = 3,
                   pause_db: float = -40.0) -> LipSyncReport:
    """Correlate mouth opening with the speech envelope; compare opening in pauses and speech.

    A frame is a pause when its level is ``pause_db`` below the loudest frame.
    """
    n = min(len(opening), len(envelope))
    opening, envelope = np.asarray(opening[:n], float), np.asarray(envelope[:n], float)
    best, best_lag = -2.0, 0
    for lag in range(-max_lag, max_lag + 1):  # lag > 0 compares opening[t] with envelope[t + lag]
        a = opening[: n - lag] if lag >= 0 else opening[-lag:]
        b = envelope[lag:] if lag >= 0 else envelope[: n + lag]
        r = _pearson(a, b)
        if r > best:
            best, best_lag = r, lag
    level = 20 * np.log10(np.maximum(envelope, 1e-9) / max(envelope.max(), 1e-9))
    pause = level < pause_db
    return LipSyncReport(
        frames=n,
        correlation=_pearson(opening, envelope),
        best_correlation=best,
        best_lag_frames=best_lag,
        opening_speech=float(opening[~pause].mean()) if (~pause).any() else float("nan"),
        opening_pause=float(opening[pause].mean()) if pause.any() else float("nan"),
        pause_frames=int(pause.sum()),
        speech_frames=int((~pause).sum()),
    )
