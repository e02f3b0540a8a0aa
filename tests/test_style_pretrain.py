"""The audio style encoder's pooling / normalization switches and its speaker-ID pretraining."""

import json

import numpy as np
import pytest
import torch

from ptalker_cli.config import ModelConfig, preset
from ptalker_cli.errors import ConfigError
from ptalker_cli.mesh import tiny_topology
from ptalker_cli.model.network import build_model
from ptalker_cli.train.style_pretrain import pretrain_audio_style


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(preset("tiny", **overrides), tiny_topology())


def test_stats_pooling_is_the_mean_and_std_of_the_valid_frames_only():
    enc = _model(audio_style_pooling="stats").audio_style
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 7, 5, generator=g)
    mask = torch.tensor([[True] * 4 + [False] * 3, [True] * 7])
    garbage = hidden.clone()
    garbage[0, 4:] = 1e6  # padded frames must not matter
    pooled = enc.pool(garbage, mask)
    valid = hidden[0, :4].numpy()
    np.testing.assert_allclose(pooled[0, :5].numpy(), valid.mean(0), atol=1e-5)
    np.testing.assert_allclose(pooled[0, 5:].numpy(), valid.std(0), atol=1e-5)
    np.testing.assert_allclose(pooled[1, 5:].numpy(), hidden[1].numpy().std(0), atol=1e-5)
    empty = enc.pool(hidden, torch.zeros(2, 7, dtype=torch.bool))
    assert torch.equal(empty, torch.zeros(2, 10))
    maxed = _model().audio_style.pool(garbage, mask)
    np.testing.assert_allclose(maxed[0].numpy(), valid.max(0), atol=1e-6)


def test_autocorrelation_pooling_measures_how_fast_the_frames_change():
    from ptalker_cli.model.audio_encoders import AC_LAGS

    enc = _model(audio_style_pooling="stats-ac").audio_style
    t = torch.arange(40, dtype=torch.float32)
    slow, fast = torch.sin(2 * np.pi * t / 32), torch.sin(2 * np.pi * t / 8)  # a slow and a fast channel
    hidden = torch.stack([slow, fast], -1)[None].repeat(2, 1, 1)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False
    garbage = hidden.clone()
    garbage[1, 30:] = 1e3
    pooled = enc.pool(garbage, mask).view(2, 2 + len(AC_LAGS), 2)
    for b, n in ((0, 40), (1, 30)):
        x = hidden[b, :n].numpy()
        z = (x - x.mean(0)) / (x.std(0) + 1e-5)
        for i, k in enumerate(AC_LAGS):
            np.testing.assert_allclose(pooled[b, 2 + i].numpy(), (z[k:] * z[:-k]).mean(0), atol=1e-4)
    lag4 = 2 + AC_LAGS.index(4)
    assert pooled[0, lag4, 0] > 0.5 and pooled[0, lag4, 1] < -0.5  # 1/8 period of the slow, 1/2 of the fast
    short = enc.pool(hidden[:, :5], torch.ones(2, 5, dtype=torch.bool)).view(2, 6, 2)
    assert torch.equal(short[:, 2 + AC_LAGS.index(8)], torch.zeros(2, 2))


def test_layer_norm_keeps_the_style_code_out_of_saturation():
    wave = torch.randn(3, 16000) * 5.0  # loud input: large pre-tanh values without normalization
    with torch.no_grad():
        m = _model(audio_style_pooling="stats", audio_style_norm=True).eval()
        with torch.no_grad():
            m.audio_style.fc2.weight.mul_(100.0)
        s_a = m.audio_style(wave)[0]
        z = m.audio_style.fc2(torch.relu(m.audio_style.fc1(m.audio_style.pool(*_frames(m, wave)))))
    assert torch.tanh(z).abs().mean() > 0.9  # what the code would be without the LayerNorm
    assert s_a.abs().mean() < 0.8 and s_a.abs().max() < 0.999


def _frames(m, wave):
    outs = [b(wave, None) for b in m.audio_style.backbones]
    s = min(o[0].shape[1] for o in outs)
    return torch.cat([o[0][:, :s] for o in outs], -1), outs[0][1][:, :s]


def test_old_configs_load_with_max_pooling_and_no_norm():
    data = preset("tiny").to_dict()
    for key in ("audio_style_pooling", "audio_style_norm"):
        data.pop(key)
    cfg = ModelConfig.from_dict(data)
    assert (cfg.audio_style_pooling, cfg.audio_style_norm) == ("max", False)
    with pytest.raises(ConfigError, match="audio_style_pooling"):
        preset("tiny", audio_style_pooling="mean")
    assert preset("tiny", audio_style_pooling="stats-ac").audio_style_pooling == "stats-ac"
    s = preset("synthtalk")
    assert (s.audio_style_pooling, s.audio_style_norm, s.audio_style_speaker_head) == ("stats-ac", True, True)


def _tone_clips(n=6, seconds=0.6, sr=16000):
    """Two 'speakers': a low and a high voice (harmonic tones with noise), n clips each."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    clips = []
    for k, f0 in enumerate((120.0, 300.0)):
        for _ in range(n):
            f = f0 * rng.uniform(0.95, 1.05)
            w = sum(np.sin(2 * np.pi * h * f * t) / h for h in (1, 2, 3)) + 0.05 * rng.standard_normal(len(t))
            clips.append((0.3 * w.astype(np.float32), k))
    return clips


def test_pretraining_learns_the_speakers_and_touches_only_the_style_encoder():
    torch.set_num_threads(1)
    m = _model(audio_style_speaker_head=True, audio_style_pooling="stats", audio_style_norm=True)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    res = pretrain_audio_style(m, _tone_clips(), steps=40, lr=3e-3, batch_size=4, seconds=0.4, seed=0)
    assert res.steps == 40 and res.chance_loss == pytest.approx(np.log(3))
    assert res.last_loss < 0.5 * res.first_loss and res.accuracy >= 0.9
    changed = {n for n, p in m.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("audio_style.", "audio_style_speaker.")) for n in changed)
    assert any(n.startswith("audio_style.backbones") for n in changed)
    frozen_cnn = [n for n, p in m.named_parameters() if n.startswith("audio_style.") and not p.requires_grad]
    assert not set(frozen_cnn) & changed
    with torch.no_grad():  # the code now tells the two voices apart
        m.eval()
        clips = _tone_clips(n=2)
        codes = m.audio_style(torch.stack([torch.from_numpy(w) for w, _ in clips]))[0]
    low, high = codes[:2], codes[2:]
    within = max((low[0] - low[1]).norm(), (high[0] - high[1]).norm())
    assert (low.mean(0) - high.mean(0)).norm() > 2 * within


def test_pretraining_is_deterministic_by_seed():
    runs = []
    for _ in range(2):
        m = _model(audio_style_speaker_head=True)
        pretrain_audio_style(m, _tone_clips(n=2), steps=3, batch_size=2, seconds=0.3, seed=5)
        runs.append(torch.cat([p.flatten() for p in m.audio_style.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_pretraining_needs_a_speaker_head_and_two_speakers():
    with pytest.raises(ConfigError, match="speaker head"):
        pretrain_audio_style(_model(), _tone_clips(n=1), steps=1)
    with pytest.raises(ConfigError, match="two training speakers"):
        pretrain_audio_style(_model(audio_style_speaker_head=True), [c for c in _tone_clips(n=2) if c[1] == 0], 1)


def test_trainer_pretrains_before_the_main_run_and_not_on_resume(tmp_path):
    from ptalker_cli.data.testing import make_fake_dataset
    from ptalker_cli.train import TrainConfig
    from ptalker_cli.train.trainer import Trainer

    torch.set_num_threads(1)
    root = make_fake_dataset(tmp_path / "ds", frames=8)
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), preset="tiny", tensorboard=False, progress=False,
                      seed=0, epochs=1, max_steps=1, style_pretrain_steps=4, style_pretrain_seconds=0.2,
                      style_pretrain_batch=2, model={"audio_style_speaker_head": True}).validate()
    t = Trainer(cfg, quiet=True)
    t.setup()
    info = json.loads((tmp_path / "run" / "style_pretrain.json").read_text())
    assert info["steps"] == 4 and info["chance_loss"] == pytest.approx(np.log(2))
    t.fit()
    resumed = Trainer(cfg.replace(epochs=2, max_steps=2), quiet=True, resume=True)
    stamp = (tmp_path / "run" / "style_pretrain.json").stat().st_mtime_ns
    resumed.setup()
    assert (tmp_path / "run" / "style_pretrain.json").stat().st_mtime_ns == stamp
    bad = cfg.replace(out=str(tmp_path / "run2"), model={})
    with pytest.raises(ConfigError, match="speaker head"):
        Trainer(bad, quiet=True).setup()


def test_frozen_modules_do_not_change_in_the_main_run(tmp_path):
    from ptalker_cli.data.testing import make_fake_dataset
    from ptalker_cli.train import TrainConfig
    from ptalker_cli.train.trainer import Trainer

    torch.set_num_threads(1)
    root = make_fake_dataset(tmp_path / "ds", frames=8)
    cfg = TrainConfig(data=str(root), out=str(tmp_path / "run"), preset="tiny", tensorboard=False, progress=False,
                      seed=0, epochs=1, max_steps=3, style_pretrain_steps=3, style_pretrain_seconds=0.2,
                      style_pretrain_batch=2, freeze=("audio_style",),
                      model={"audio_style_speaker_head": True}).validate()
    t = Trainer(cfg, quiet=True)
    t.setup()
    after_pretraining = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    t.fit()
    params = dict(t.model.named_parameters())
    style = [n for n in params if n.startswith("audio_style.")]
    assert style and all(torch.equal(params[n], after_pretraining[n]) for n in style)
    assert any(not torch.equal(params[n], after_pretraining[n]) for n in params if n.startswith("decoder."))
    with pytest.raises(ConfigError, match="no module 'audio_styl'"):
        Trainer(cfg.replace(out=str(tmp_path / "run3"), freeze=("audio_styl",)), quiet=True).setup()


def test_voice_style_blends_the_training_styles_by_the_speaker_posterior():
    from ptalker_cli.errors import PtalkerError
    from ptalker_cli.inference import Animator

    m = _model(audio_style_speaker_head=True).eval()
    with torch.no_grad():  # make the head and the decoder matter
        m.audio_style_speaker.weight.normal_(0, 2.0)
        m.vertice_decoder.weight.normal_(0, 0.05)
    wave = _tone_clips(n=1, seconds=1.0)[1][0]
    post = m.speaker_posterior(torch.from_numpy(wave)[None])
    assert post.shape == (1, 3) and torch.allclose(post.sum(-1), torch.ones(1)) and post.max() < 0.999
    a = Animator(m)
    res = a.animate(wave, style="voice")
    blend = {s: float(post[0, i]) for i, s in enumerate(m.config.train_subjects)}
    ref = a.animate(wave, style=blend)
    np.testing.assert_allclose(res.motion.vertices, ref.motion.vertices, atol=1e-5)
    top = max(blend, key=blend.get)
    assert res.style.startswith(f"voice({top}:")
    other = a.animate(wave, style=m.config.train_subjects[0]).motion.vertices
    assert np.abs(other - res.motion.vertices).max() > 1e-4  # not just the first speaker's style
    with pytest.raises(PtalkerError, match="speaker head"):
        Animator(_model()).animate(wave, style="voice")
