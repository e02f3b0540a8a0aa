"""Tests for ptalker_cli.audio."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from ptalker_cli.audio import (
    SAMPLE_RATE,
    SilentAudioWarning,
    audio_info,
    is_silent,
    load_audio,
    normalize_waveform,
)
from ptalker_cli.errors import AudioError, PtalkerError


def _sine(freq, sr, seconds, amp=0.5, channels=1):
    t = np.arange(int(round(sr * seconds))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


def _peak_freq(x, sr):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sr)[int(np.argmax(spec))]


def _check_sine(y, freq, amp, seconds, sr=SAMPLE_RATE, amp_tol=0.02):
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - seconds * sr) <= 1
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert abs(_peak_freq(y, sr) - freq) <= 2.0
    mid = y[len(y) // 10 : -len(y) // 10]  # ignore resampler edge effects
    assert abs(np.abs(mid).max() - amp) <= amp_tol
    assert abs(np.sqrt(np.mean(mid.astype(np.float64) ** 2)) - amp / np.sqrt(2)) <= amp_tol


def _assert_one_line_error(excinfo, path):
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, PtalkerError)
    assert path.name in msg
    assert "\n" not in msg and msg.strip() == msg and msg


def test_stereo_44k_to_mono_16k(tmp_path):
    path = tmp_path / "stereo.wav"
    sf.write(path, _sine(440, 44100, 1.0, amp=0.5, channels=2), 44100, subtype="PCM_16")
    y = load_audio(path)
    _check_sine(y, 440, 0.5, 1.0)
    assert SAMPLE_RATE == 16000


def test_stereo_downmix_averages_channels(tmp_path):
    path = tmp_path / "lr.wav"
    left = _sine(300, 16000, 0.5, amp=0.8)
    data = np.stack([left, np.zeros_like(left)], axis=1)
    sf.write(path, data, 16000, subtype="FLOAT")
    y = load_audio(path)
    np.testing.assert_allclose(y, left / 2, atol=1e-6)


def test_int16_8k_wav(tmp_path):
    path = tmp_path / "int16.wav"
    x = (_sine(200, 8000, 0.5, amp=0.25) * 32767).astype(np.int16)
    sf.write(path, x, 8000, subtype="PCM_16")
    y = load_audio(path)
    _check_sine(y, 200, 0.25, 0.5)


def test_flac(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, _sine(1000, 22050, 0.5, amp=0.3), 22050)
    _check_sine(load_audio(path), 1000, 0.3, 0.5)


def test_ogg_vorbis(tmp_path):
    path = tmp_path / "a.ogg"
    sf.write(path, _sine(500, 48000, 1.0, amp=0.4), 48000, format="OGG", subtype="VORBIS")
    y = load_audio(path)
    assert abs(len(y) - 16000) <= 1
    assert abs(_peak_freq(y, 16000) - 500) <= 2.0
    mid = y[2000:-2000]
    assert abs(np.abs(mid).max() - 0.4) <= 0.05  # lossy codec


def test_four_channels(tmp_path):
    path = tmp_path / "quad.wav"
    sf.write(path, _sine(250, 32000, 0.5, amp=0.6, channels=4), 32000, subtype="PCM_24")
    info = audio_info(path)
    assert info.channels == 4 and info.sample_rate == 32000
    assert abs(info.duration - 0.5) < 1e-6
    _check_sine(load_audio(path), 250, 0.6, 0.5)


def test_other_sample_rate_argument(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _sine(440, 16000, 0.5), 16000)
    y = load_audio(path, sample_rate=24000)
    _check_sine(y, 440, 0.5, 0.5, sr=24000)


def test_float_over_full_scale_is_scaled(tmp_path):
    path = tmp_path / "loud.wav"
    sf.write(path, _sine(440, 16000, 0.5, amp=2.0), 16000, subtype="FLOAT")
    y = load_audio(path)
    assert np.abs(y).max() <= 1.0
    assert np.abs(y).max() > 0.99


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioError) as ei:
        load_audio(path)
    _assert_one_line_error(ei, path)
    assert "not found" in str(ei.value)


def test_directory(tmp_path):
    path = tmp_path / "dir.wav"
    path.mkdir()
    with pytest.raises(AudioError) as ei:
        load_audio(path)
    _assert_one_line_error(ei, path)
    assert "directory" in str(ei.value)


@pytest.mark.parametrize("content", [b"this is not audio\nat all\n", b""])
def test_not_audio(tmp_path, content):
    path = tmp_path / "fake.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as ei:
        load_audio(path)
    _assert_one_line_error(ei, path)
    assert "cannot read" in str(ei.value)
    with pytest.raises(AudioError):
        audio_info(path)


def test_empty(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError) as ei:
        load_audio(path)
    _assert_one_line_error(ei, path)
    assert "empty" in str(ei.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite(tmp_path, bad):
    path = tmp_path / "nan.wav"
    x = _sine(440, 16000, 0.5)
    x[100] = bad
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError) as ei:
        load_audio(path)
    _assert_one_line_error(ei, path)
    assert "NaN" in str(ei.value)


def test_too_short(tmp_path):
    path = tmp_path / "short.wav"
    sf.write(path, _sine(440, 16000, 0.05), 16000)
    with pytest.raises(AudioError) as ei:
        load_audio(path)
    _assert_one_line_error(ei, path)
    msg = str(ei.value)
    assert "too short" in msg and "0.050" in msg and "0.1" in msg
    # a lower minimum accepts it
    assert abs(len(load_audio(path, min_duration=0.01)) - 800) <= 1


def test_silence_warns_and_returns_zeros(tmp_path):
    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros((44100, 2), dtype=np.int16), 44100, subtype="PCM_16")
    with pytest.warns(SilentAudioWarning, match="silence.wav"):
        y = load_audio(path)
    assert issubclass(SilentAudioWarning, UserWarning)
    assert abs(len(y) - 16000) <= 1
    assert np.all(y == 0)


def test_speech_level_does_not_warn(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _sine(440, 16000, 0.5, amp=0.01), 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SilentAudioWarning)
        load_audio(path)


def test_is_silent():
    assert is_silent(np.zeros(100, dtype=np.float32))
    assert is_silent(np.full(100, 1e-4, dtype=np.float32))  # -80 dBFS
    assert not is_silent(np.full(100, 1e-2, dtype=np.float32))  # -40 dBFS
    assert is_silent(np.full(100, 1e-2), threshold_db=-30)  # -40 < -30
    assert is_silent(np.array([], dtype=np.float32))


def test_normalize_waveform():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16000) * 0.3 + 0.1).astype(np.float32)
    y = normalize_waveform(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert abs(float(y.mean())) < 1e-5
    assert abs(float(y.std()) - 1.0) < 1e-3
    expected = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("x", [np.zeros(1000), np.full(1000, 0.5), np.zeros(0)])
def test_normalize_waveform_silence_is_finite(x):
    y = normalize_waveform(x.astype(np.float32))
    assert np.isfinite(y).all()
    assert np.all(y == 0)
