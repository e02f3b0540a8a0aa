import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny():
    from ptalker_cli.inference import tiny_model

    return tiny_model()


def speech_like(seconds: float, sr: int = 16000, seed: int = 0) -> np.ndarray:
    """A deterministic voiced-ish signal: harmonics with a syllable-rate envelope and pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    wave = 0.3 * voiced * env + 0.01 * rng.standard_normal(t.shape)
    return wave.astype(np.float32)


@pytest.fixture
def wav_file(tmp_path):
    def make(seconds: float = 1.0, name: str = "speech.wav", sr: int = 16000, seed: int = 0):
        path = tmp_path / name
        sf.write(path, speech_like(seconds, sr, seed), sr)
        return path

    return make


@pytest.fixture(autouse=True)
def _quiet_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield
