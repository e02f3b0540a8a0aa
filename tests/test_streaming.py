"""The streaming engine (ptalker_cli/model/streaming.py): chunks of any size, bounded state, equal to
the offline path with the same windowing (ptalker_cli/model/stream_offline.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptalker_cli.audio import load_audio
from ptalker_cli.errors import PtalkerError
from ptalker_cli.inference import Animator, tiny_model
from ptalker_cli.model.stream_offline import offline_windowed
from ptalker_cli.model.streaming import Streamer, StreamSettings

ARCTIC = sorted((Path(__file__).parent / "data" / "arctic").glob("*.wav"))
#: short windows so that a 2-s clip crosses every boundary: speech windows, the attention window
#: (10 frames), the audio style freeze (1 s)
SETTINGS = StreamSettings(lookahead_s=0.2, left_s=0.5, hop_frames=3, kv_window_s=0.4, style_s=1.0)


@pytest.fixture(scope="module")
def model():
    m = tiny_model()
    # the fused GAT kernel's round-off depends on how many frames it gets at once (≈2e-5 here);
    # the PyTorch GAT computes each frame the same way whatever the batch
    m.graph_encoder.backend = "torch"
    return m


@pytest.fixture(scope="module")
def wave():
    return load_audio(ARCTIC[0], 16000)[: 2 * 16000 + 1234]


@pytest.fixture(scope="module")
def offline(model, wave):
    return offline_windowed(model, wave, model.template.numpy(), None, SETTINGS)


def _stream(model, wave, chunk, settings=SETTINGS):
    s = Streamer(model, model.template.numpy(), None, settings)
    outs = [s.push(wave[i: i + chunk]) for i in range(0, len(wave), chunk)]
    outs.append(s.finish())
    return np.concatenate(outs), s


@pytest.mark.parametrize("chunk", [1, 7, 333, 1601, 10 ** 6])
def test_streamed_equals_offline_with_the_same_windowing(model, wave, offline, chunk):
    out, s = _stream(model, wave, chunk)
    assert out.shape == offline.shape == (model.num_motion_frames(len(wave)), model.config.num_vertices, 3)
    assert s.frames_out == len(out)
    np.testing.assert_allclose(out, offline, rtol=0, atol=1e-5)


def test_frames_leave_with_the_lookahead_only(model, wave):
    """A frame is out once its audio plus the look-ahead (and the rest of its hop) has arrived."""
    s = Streamer(model, model.template.numpy(), None, SETTINGS)
    got = 0
    grid = s.grid
    for i in range(0, len(wave), 160):
        got += len(s.push(wave[i: i + 160]))
        received = min(i + 160, len(wave))
        # every hop whose window is covered has been decoded ...
        ready = 0
        while grid.samples_for(grid.k * (ready + grid.hop) + grid.right) <= received:
            ready += grid.hop
        assert got == ready
    # ... and the look-ahead is 0.2 s (10 speech frames of 20 ms) past the frame, plus the hop
    assert grid.right == 10
    assert grid.samples_for(grid.k * 3 + grid.right) - 3 * 640 == 10 * 320 + 80


def test_state_stays_bounded_on_a_long_stream(model):
    """Caches, the audio buffer and the style audio stay bounded however long the stream runs."""
    rng = np.random.default_rng(0)
    s = Streamer(model, model.template.numpy(), None, SETTINGS)
    sizes = []
    for _ in range(8):  # 8 s of noise in 1-s chunks: 200 frames, 20 attention windows
        s.push(rng.standard_normal(16000).astype(np.float32) * 0.1)
        caches = [c for p in s.passes for c in p.caches]
        caches += [c for st in s.content for c in st.tr.caches] + [c for st in s.style_states for c in st.tr.caches]
        sizes.append((max(c.k.shape[2] for c in caches), s.buffer.size))
    assert s.frames_out >= 190
    assert all(cap <= 2 * (s.grid.kv + s.grid.hop) for cap, _ in sizes)
    # audio kept: the left context, the hop, the look-ahead and one chunk
    assert max(n for _, n in sizes) <= 16000 + (25 + 6 + 10 + 2) * 320 + 400
    assert s.style_audio.size == 16000


def test_bad_settings_and_ended_stream_are_one_line_errors(model):
    with pytest.raises(PtalkerError, match="hop_frames"):
        StreamSettings(hop_frames=0)
    with pytest.raises(PtalkerError, match="lookahead_s"):
        StreamSettings(lookahead_s=float("nan"))
    s = Streamer(model, model.template.numpy())
    with pytest.raises(PtalkerError, match="finite"):
        s.push(np.array([0.0, np.inf], dtype=np.float32))
    s.finish()
    with pytest.raises(PtalkerError, match="ended"):
        s.push(np.zeros(10, dtype=np.float32))


def test_animator_stream_takes_subject_and_style(model, wave):
    anim = Animator(model)
    with pytest.raises(PtalkerError, match="unknown subject"):
        anim.stream(subject="nobody")
    with pytest.raises(PtalkerError, match="whole recording"):
        anim.stream(style="voice")
    subj = model.config.train_subjects[1]
    s = anim.stream(subject=subj, settings=SETTINGS)
    assert s.subject == subj and s.topology.num_vertices == model.config.num_vertices
    out = np.concatenate([s.push(wave), s.finish()])
    other = np.concatenate([(s2 := anim.stream(subject=model.config.train_subjects[0], settings=SETTINGS)).push(wave),
                            s2.finish()])
    assert out.shape == other.shape and np.abs(out - other).max() > 1e-4  # the style reaches the frames


@pytest.mark.system("native")
def test_streamed_equals_offline_with_the_fused_graph_kernel():
    """With the fused C graph-attention kernel (the default where it builds), equal to its batch-size round-off."""
    m = tiny_model()
    wave = load_audio(ARCTIC[1], 16000)[:24000]
    off = offline_windowed(m, wave, m.template.numpy(), None, SETTINGS)
    out, _ = _stream(m, wave, 1000)
    np.testing.assert_allclose(out, off, rtol=0, atol=1e-4)


@pytest.mark.parametrize("right_context", [1, -1])
def test_content_encoder_with_short_right_context_needs_no_more_look_ahead(wave, right_context, monkeypatch):
    """A content encoder restricted to a right context (model.content_right_context) hears at most its
    reach ahead: streamed with exactly that look-ahead it decodes what it decodes hearing the whole
    recording; a bidirectional encoder does not. (Each window's waveform is normalized on its own, the
    one other thing a short window changes; that is switched off here, and measured on the default
    model in docs/streaming.md.)"""
    import torch

    import ptalker_cli.model.streaming as streaming
    from ptalker_cli.config import logmel_encoder, preset
    from ptalker_cli.mesh import tiny_topology
    from ptalker_cli.model.network import build_model

    monkeypatch.setattr(streaming, "normalize_audio", lambda w, lengths=None: w)
    torch.manual_seed(0)
    # (no audio style encoder: a stream takes s_a from the audio received so far)
    cfg = preset("tiny", audio_content=logmel_encoder(32, 2, 2), use_audio_style=False,
                 content_right_context=right_context)
    m = build_model(cfg, tiny_topology()).eval()
    m.graph_encoder.backend = "torch"
    with torch.no_grad():
        m.vertice_decoder.weight.normal_(0, 0.05)
    reach_s = (cfg.content_right_reach_frames or 9) * 0.02  # (bidirectional: the reach of right_context 1)
    outs = []
    for lookahead in (reach_s, 10.0):
        stream = Animator(m).stream(settings=StreamSettings(lookahead_s=lookahead, left_s=10.0, hop_frames=3,
                                                            kv_window_s=10.0, style_s=10.0))
        outs.append(np.concatenate([stream.push(wave[i: i + 333]) for i in range(0, len(wave), 333)]
                                   + [stream.finish()]))
    err = float(np.abs(outs[0] - outs[1]).max())
    if right_context >= 0:
        assert err < 1e-5, err
    else:
        assert err > 1e-2, err
