"""Long speech for the benchmarks: the shipped real and synthetic clips, repeated with pauses."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ptalker_cli.audio import load_audio  # noqa: E402


def long_track(seconds: float, sr: int = 16000) -> np.ndarray:
    """``seconds`` of speech: examples/speech.wav and the ARCTIC clips in turn, 0.4 s of silence between."""
    clips = [load_audio(ROOT / "examples" / "speech.wav", sr)]
    clips += [load_audio(p, sr) for p in sorted((ROOT / "tests" / "data" / "arctic").glob("*.wav"))]
    gap = np.zeros(int(0.4 * sr), np.float32)
    parts, total, k = [], 0, 0
    while total < seconds * sr:
        parts += [clips[k % len(clips)], gap]
        total += len(clips[k % len(clips)]) + len(gap)
        k += 1
    return np.concatenate(parts)[: int(seconds * sr)]
