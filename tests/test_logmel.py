"""The log-mel speech encoder used by models trained from scratch."""

import numpy as np
import pytest
import torch

from ptalker_cli.config import logmel_encoder, preset
from ptalker_cli.errors import ConfigError
from ptalker_cli.mesh import tiny_topology
from ptalker_cli.model.audio_encoders import SpeechEncoder, build_speech_model, conv_output_length
from ptalker_cli.model.decoding import StyleSpec
from ptalker_cli.model.logmel import mel_filterbank
from ptalker_cli.model.network import PTalker, build_model


def test_mel_filterbank_is_triangular_and_ordered():
    fb = mel_filterbank(40)
    assert fb.shape == (40, 257) and (fb >= 0).all()
    peaks = fb.argmax(1)
    assert (np.diff(peaks) >= 0).all() and peaks[0] < 5 and peaks[-1] > 200
    assert (fb.sum(1) > 0).all()


def test_frame_count_equals_the_hubert_rule_and_a_tone_lights_its_band():
    model, cfg = build_speech_model(logmel_encoder(32, 1, 2))
    enc = SpeechEncoder(model)
    sr = 16000
    t = np.arange(sr) / sr
    tone = torch.tensor(np.sin(2 * np.pi * 1000 * t), dtype=torch.float32)[None]
    feats = model.feature_extractor(tone)
    assert feats.shape[-1] == conv_output_length(sr) == 49
    band = feats[0].mean(-1).argmax().item()
    fb = mel_filterbank(80)
    freqs = np.linspace(0, 8000, 257)
    assert abs(freqs[fb[band].argmax()] - 1000) < 150
    hidden, mask = enc(tone, num_frames=24)  # aligned to 24 motion frames at 25 fps: 48 features
    assert hidden.shape == (1, 48, 32) and mask.all()
    assert cfg.hf_config["model_type"] == "logmel"


def test_model_with_logmel_encoders_trains_decodes_and_roundtrips(tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny", audio_content=logmel_encoder(32, 1, 2), audio_style=(logmel_encoder(16, 1, 2),))
    m = build_model(cfg, tiny_topology())
    audio = torch.randn(1, 640 * 20 + 400) * 0.1
    verts = m.template + 0.1 * torch.randn(1, 20, 192, 3)
    m.train()
    terms = m.losses(m(audio, verts, m.template[None], torch.tensor([0])), verts, torch.tensor([0]))
    terms["total"].backward()
    assert m.audio_encoder.model.feature_projection.projection.weight.grad is not None
    m.eval()
    with torch.no_grad():
        m.vertice_decoder.weight.normal_(0, 0.05)
    spec = StyleSpec(m.one_hot(torch.tensor([1])))
    fast = m.generate(audio, m.template[None], spec)
    slow = m.generate(audio, m.template[None], spec, use_cache=False)
    assert (fast - slow).abs().max() <= 1e-5
    m.save_pretrained(tmp_path / "m")
    loaded = PTalker.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.generate(audio, m.template[None], spec), fast)


@pytest.mark.parametrize("right_context", [0, 1, 2])
def test_right_context_bounds_how_far_ahead_a_content_feature_hears(right_context, tmp_path):
    """content_right_context = r: a feature depends on at most reach = 7 + layers·r future frames,
    and the bound is tight (the frame just before it does change); r = -1 hears everything."""
    torch.manual_seed(0)
    layers = 2
    enc = logmel_encoder(32, layers, 2)
    cfg = preset("tiny", audio_content=enc, audio_style=(logmel_encoder(16, 1, 2),),
                 content_right_context=right_context)
    reach = cfg.content_right_reach_frames
    assert reach == 7 + layers * right_context
    m = build_model(cfg, tiny_topology()).eval()
    wave = torch.randn(1, 320 * 120 + 80)
    changed = wave.clone()
    changed[:, 320 * 80:] = torch.randn(1, changed.shape[1] - 320 * 80)  # first touched log-mel frame: 79
    with torch.no_grad():
        a, _ = m.audio_encoder(wave)
        b, _ = m.audio_encoder(changed)
    differs = ((a - b).abs().amax(-1)[0] > 1e-6).nonzero().flatten()
    assert int(differs[0]) >= 79 - reach  # never earlier than the bound ...
    assert int(differs[0]) <= 79 - reach + 1  # ... and not much later: the mask is really that wide
    m.save_pretrained(tmp_path / "m")  # the setting is part of the model folder
    assert PTalker.from_pretrained(tmp_path / "m").config.content_right_context == right_context


def test_bidirectional_content_encoder_hears_the_whole_future():
    torch.manual_seed(0)
    cfg = preset("tiny", audio_content=logmel_encoder(32, 2, 2), audio_style=(logmel_encoder(16, 1, 2),))
    assert cfg.content_right_context == -1 and cfg.content_right_reach_frames is None
    m = build_model(cfg, tiny_topology()).eval()
    wave = torch.randn(1, 320 * 120 + 80)
    changed = wave.clone()
    changed[:, 320 * 80:] += 0.5 * torch.randn(1, changed.shape[1] - 320 * 80)
    with torch.no_grad():
        a, _ = m.audio_encoder(wave)
        b, _ = m.audio_encoder(changed)
    assert (a - b)[0, 0].abs().max() > 1e-6  # the first frame already hears frame 79


def test_right_context_needs_a_logmel_content_encoder():
    with pytest.raises(ConfigError, match="log-mel"):
        preset("tiny", content_right_context=1).validate()
    with pytest.raises(ConfigError, match="-1"):
        preset("tiny", audio_content=logmel_encoder(32, 1, 2), content_right_context=-2).validate()
