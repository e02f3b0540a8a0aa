"""Chunked speech encoding (model/speech_chunks.py): windows, exactness, frame counts, bounded windows."""

from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
import torch
from torch import nn

from ptalker_cli.config import logmel_encoder, preset, tiny_speech_encoder
from ptalker_cli.errors import PtalkerError
from ptalker_cli.mesh import tiny_topology
from ptalker_cli.model.audio_encoders import normalize_audio
from ptalker_cli.model.network import build_model
from ptalker_cli.model.speech_chunks import (
    DEFAULT_CHUNKING,
    ChunkingConfig,
    _CnnFrames,
    chunking_for,
    encoder_kind,
    receptive_field,
    windows,
)

SMALL = ChunkingConfig(2.0, 0.5, 0.5)  # 100 frames at 50 Hz: 50 kept, 25 of context each side
KINDS = ("hubert", "wav2vec2-group", "logmel")


def _encoder(kind: str, layers: int = 2):
    if kind == "logmel":
        return logmel_encoder(hidden=32, layers=max(layers, 1), heads=2)
    cfg = tiny_speech_encoder(kind.split("-")[0], layers=layers)
    if kind.endswith("-group"):  # wav2vec2-base style: GroupNorm over time in the first conv layer
        cfg = replace(cfg, hf_config={**cfg.hf_config, "feat_extract_norm": "group", "do_stable_layer_norm": False})
    return cfg


class _NoAttention(nn.Module):
    """The log-mel transformer's layers replaced by nothing (its positional conv stays)."""

    def forward(self, x, mask=None, src_key_padding_mask=None):
        return x


@lru_cache(maxsize=None)
def _model(kind: str, local: bool = False, fps: float = 25.0, style_rate: float = 0.0):
    """A tiny PTalker whose three speech encoders are of ``kind``; ``local``: no attention layers, so
    every encoder is local (positional conv ±8 frames) and chunking with that much context is exact."""
    enc = _encoder(kind, layers=0 if local else 2)
    cfg = preset("tiny", audio_content=enc, audio_style=(enc, enc), fps=fps, period=int(fps),
                 audio_style_rate_hz=style_rate, audio_style_pooling="stats-ac")
    torch.manual_seed(0)
    m = build_model(cfg, tiny_topology()).eval()
    if local and kind == "logmel":
        for e in [m.audio_encoder, *m.audio_style.backbones]:
            e.model.encoder.layers = _NoAttention()
    return m


def _speech(seconds: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000.0
    env = 0.5 + 0.5 * torch.sin(2 * torch.pi * 3.0 * t)  # syllable-rate envelope, so frames differ
    return (env * torch.randn(n, generator=g) * 0.1).unsqueeze(0)


def _encode(m, audio, chunking):
    return m.encode_speech(audio, chunking=chunking)


def test_windows_tile_the_frames_and_respect_the_size():
    for n in [1, 99, 100, 101, 149, 150, 151, 175, 176, 250, 251, 777, 1000]:
        for window, left, right in [(100, 25, 25), (100, 0, 0), (100, 40, 10), (60, 0, 30)]:
            spans = list(windows(n, window, left, right))
            assert spans[0][2] == 0 and spans[-1][3] == n
            for (a, b, ka, kb), nxt in zip(spans, spans[1:] + [None]):
                assert 0 <= a <= ka < kb <= b <= n and b - a <= window
                assert ka - a >= min(left, ka) and b - kb >= min(right, n - kb), (n, window, a, b, ka, kb)
                if nxt is not None:
                    assert nxt[2] == kb  # kept parts are contiguous: no gap, no overlap


def test_chunking_config_is_checked():
    assert ChunkingConfig(20, 4, 4).step_s == 12
    assert ChunkingConfig.full_context().is_full_context
    for bad in [(2.0, 0.6, 0.6), (10, -1, 0), (10, 0, float("inf")), (float("nan"), 0, 0)]:
        with pytest.raises(PtalkerError):
            ChunkingConfig(*bad)
    with pytest.raises(Exception):
        DEFAULT_CHUNKING["hubert"].window_s = 5  # frozen
    assert set(DEFAULT_CHUNKING) == {"hubert", "wav2vec2", "logmel"}


@pytest.mark.parametrize("kind, key", [("hubert", "hubert"), ("wav2vec2-group", "wav2vec2"), ("logmel", "logmel")])
def test_each_encoder_kind_gets_its_default_windows(kind, key):
    m = _model(kind)
    for enc in [m.audio_encoder, *m.audio_style.backbones]:
        assert encoder_kind(enc) == key
        assert chunking_for(encoder_kind(enc), None) is DEFAULT_CHUNKING[key]
    assert chunking_for(key, SMALL) is SMALL


@pytest.mark.parametrize("kind", KINDS)
def test_audio_shorter_than_a_window_gives_exactly_the_full_context_features(kind):
    m = _model(kind)
    audio = _speech(3.9)
    full = _encode(m, audio, ChunkingConfig.full_context())
    for chunking in (None, ChunkingConfig(4.0, 1.0, 1.0)):  # the kind's default (>= 20 s), a 4-s window
        got = _encode(m, audio, chunking)
        assert torch.equal(got["audio_content"], full["audio_content"])
        assert torch.equal(got["s_a"], full["s_a"])
        assert torch.equal(got["frame_lengths"], full["frame_lengths"])


@pytest.mark.parametrize("kind", KINDS)
def test_cnn_frames_of_a_slice_equal_the_full_cnn(kind):
    """Sample-exact boundaries: CNN frames [a, b) computed from the samples they read equal the
    whole recording's CNN frames (GroupNorm statistics included)."""
    m = _model(kind)
    enc = m.audio_encoder
    assert receptive_field(enc.kernels, enc.strides) == (400, 320)
    wave = normalize_audio(_speech(4.3, seed=1))
    full = enc.model.feature_extractor(wave).transpose(1, 2)[0]
    frames = _CnnFrames(enc, wave, window=50)
    assert frames.count == full.shape[0] == int(enc.num_frames(wave.shape[1]))
    for a, b in [(0, 1), (0, 50), (7, 93), (100, full.shape[0]), (full.shape[0] - 1, full.shape[0])]:
        torch.testing.assert_close(frames(a, b)[0], full[a:b], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fps, style_rate", [(25.0, 0.0), (30.0, 60.0)])
def test_local_encoders_chunked_equal_full_context_for_many_lengths(kind, fps, style_rate):
    """With the attention layers removed every encoder is local (±8 frames), so windows with
    25 frames of context must reproduce the full path: frame counts, stitching, the 30-fps and
    60-Hz resampling and s_a pooling, at lengths that hit every phase of the 320-sample hop."""
    m = _model(kind, local=True, fps=fps, style_rate=style_rate)
    lengths = [32_001, 36_800, 40_079, 48_719, 71_111] if fps == 25 else [32_319, 40_080, 47_999, 71_111]
    for n in lengths:
        audio = _speech(n / 16000, seed=n)[:, :n]
        full = _encode(m, audio, ChunkingConfig.full_context())
        got = _encode(m, audio, SMALL)
        assert got["audio_content"].shape == full["audio_content"].shape, n
        assert torch.equal(got["frame_lengths"], full["frame_lengths"])
        torch.testing.assert_close(got["audio_content"], full["audio_content"], rtol=1e-4, atol=1e-5,
                                   msg=lambda msg: f"{n} samples: {msg}")
        torch.testing.assert_close(got["s_a"], full["s_a"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_encoders_only_ever_see_one_window(kind):
    m = _model(kind)
    seen = {"transformer": [], "cnn": []}
    encoders = [m.audio_encoder, *m.audio_style.backbones]
    hooks = []
    for e in encoders:
        hooks.append(e.model.encoder.register_forward_pre_hook(
            lambda mod, args: seen["transformer"].append(args[0].shape[1])))
        hooks.append(e.model.feature_extractor.register_forward_pre_hook(
            lambda mod, args: seen["cnn"].append(args[0].shape[-1])))
    try:
        _encode(m, _speech(7.3), SMALL)
    finally:
        for h in hooks:
            h.remove()
    assert len(seen["transformer"]) >= 3 * 4  # every encoder ran several windows
    assert max(seen["transformer"]) <= 100  # 2 s at 50 Hz
    if kind != "wav2vec2-group":  # the GroupNorm CNN runs its layers one by one, not through forward
        assert max(seen["cnn"]) <= 320 * 99 + 400


@pytest.mark.parametrize("kind", KINDS)
def test_long_audio_stays_close_to_full_context(kind):
    """Real attention (random weights, so attention is spread widely: a harder case than a trained
    encoder) on 3 windows of audio: the chunked features stay close to the full-context ones."""
    m = _model(kind)
    audio = _speech(6.0, seed=3)
    full = _encode(m, audio, ChunkingConfig.full_context())
    got = _encode(m, audio, ChunkingConfig(2.0, 0.5, 0.5))
    blind = _encode(m, audio, ChunkingConfig(1.0, 0.0, 0.0))  # the same 1-s steps without context

    def rel(x):
        return float((x["audio_content"] - full["audio_content"]).norm() / full["audio_content"].norm())

    assert rel(got) < TOLERANCE[kind], rel(got)
    assert rel(got) < 0.7 * rel(blind), (rel(got), rel(blind))  # the context is what keeps it close
    cos = torch.nn.functional.cosine_similarity(got["s_a"], full["s_a"]).item()
    assert cos > 0.999, cos


#: relative L2 distance of the stitched content features to the full-context ones on 6 s of audio,
#: 2-s windows with 0.5 s of context (tiny random models; measured: hubert 0.0084, wav2vec2 with
#: GroupNorm 0.0012, log-mel 0.116 — its random post-norm attention is spread widely)
TOLERANCE = {"hubert": 0.02, "wav2vec2-group": 0.005, "logmel": 0.2}


def test_chunking_options_of_the_cli(wav_file, tmp_path):
    """--chunk-seconds reaches the speech encoders: 0 (never split) equals the default on 5 s of audio
    (shorter than the 20-s default window), a 2-s window changes the motion; a bad one is a one-line error."""
    from typer.testing import CliRunner

    from ptalker_cli.cli.app import app
    from ptalker_cli.model.speech_chunks import chunking_from_options

    assert chunking_from_options(None) is None and chunking_from_options(0).is_full_context
    assert chunking_from_options(10) == ChunkingConfig(10, 2, 2)
    assert chunking_from_options(3, 0.5) == ChunkingConfig(3, 0.5, 0.5)
    wav = wav_file(5.0)
    runner = CliRunner()
    outs = {}
    for label, extra in [("default", []), ("full", ["--chunk-seconds", "0"]),
                         ("2s", ["--chunk-seconds", "2"])]:
        out = tmp_path / f"{label}.npy"
        res = runner.invoke(app, ["animate", str(wav), "--model", "tiny", "-o", str(out), "--quiet", *extra])
        assert res.exit_code == 0, res.output
        outs[label] = np.load(out)
    assert np.array_equal(outs["default"], outs["full"])
    assert outs["2s"].shape == outs["full"].shape and not np.allclose(outs["2s"], outs["full"], atol=1e-6)
    bad = tmp_path / "bad.npy"
    for extra in (["--chunk-seconds", "1.2"], ["--chunk-seconds", "-3"], ["--chunk-seconds", "nan"]):
        res = runner.invoke(app, ["animate", str(wav), "--model", "tiny", "-o", str(bad), "--quiet", *extra])
        assert res.exit_code != 0 and "Traceback" not in res.output and not bad.exists()
        assert len(res.output.strip().splitlines()) == 1, res.output


def test_padded_batch_is_chunked_per_sequence():
    """A batch with one long and one short sequence: each is encoded at its own length (local
    encoders: equal to the full padded-batch path on the valid frames; zeros beyond them)."""
    m = _model("hubert", local=True)
    lengths = torch.tensor([71_111, 40_079])
    audio = torch.zeros(2, 71_111)
    audio[0] = _speech(71_111 / 16000, seed=5)[0, :71_111]
    audio[1, :40_079] = _speech(40_079 / 16000, seed=6)[0, :40_079]
    full = m.encode_speech(audio, lengths, chunking=ChunkingConfig.full_context())
    got = m.encode_speech(audio, lengths, chunking=SMALL)
    assert torch.equal(got["frame_lengths"], full["frame_lengths"])
    for i, frames in enumerate(full["frame_lengths"].tolist()):
        n = m.k * frames
        torch.testing.assert_close(got["audio_content"][i, :n], full["audio_content"][i, :n], rtol=1e-4, atol=1e-5)
        assert not got["audio_content"][i, n:].any()
    torch.testing.assert_close(got["s_a"], full["s_a"], rtol=1e-4, atol=1e-5)
