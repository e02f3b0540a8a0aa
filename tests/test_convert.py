"""Importing checkpoints of the authors' released code: ptalker_cli.zoo.convert and `ptalker convert`.

The test builds, in the test itself, a tiny model with the released code's module
names and structure (``wangryhen/PTalker`` ``PTalker.py``: nn.TransformerDecoder,
Onehot_Style_Encoder with its Attention block, AudioStyle, the motion encoders …) whose
speech models are small HuBERT / wav2vec2 of the real architecture, randomizes its
weights, saves its state dict with torch.save, converts it, loads the result strictly
and runs inference. Parts whose forward the conversion claims to reproduce exactly
(identity codes, teacher-forced decoder, audio content path) are compared numerically,
and so is the whole inference: the released ``predict_seen`` / ``predict_unseen`` /
``predict_with_ref_motion`` (copied below with the released module forwards: the
bidirectional motion style encoder, the 60-Hz wav2vec2 forward, the BIWI HuBERT forward)
against the converted model's ``generate``.
"""

from __future__ import annotations

import json
import math
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from ptalker_cli.cli.app import app
from ptalker_cli.config import BIWI_SUBJECTS, tiny_speech_encoder
from ptalker_cli.errors import ConfigError
from ptalker_cli.mesh import tiny_topology
from ptalker_cli.model.audio_encoders import normalize_audio
from ptalker_cli.model.decoding import StyleSpec
from ptalker_cli.zoo.convert import (
    FORWARD_DIFFERENCES,
    SWITCHES_FOR_EXACT_REPRODUCTION,
    convert_released,
    load_released_state,
    write_converted,
)

D = 16  # feature_dim
PERIOD = 25


# ----------------------------------------------------------------------------- released layout
class PPE(nn.Module):
    def __init__(self, d_model, period=25, max_seq_len=600):
        super().__init__()
        pe = torch.zeros(period, d_model)
        position = torch.arange(0, period, dtype=torch.float).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0).repeat(1, (max_seq_len // period) + 1, 1))

    def forward(self, x):
        return x + self.pe[:, : x.size(1), :]


def init_biased_mask(n_head, max_seq_len, period):  # released code, verbatim logic
    def get_slopes(n):
        def get_slopes_power_of_2(n):
            start = (2 ** (-2 ** -(math.log2(n) - 3)))
            return [start * start ** i for i in range(n)]

        if math.log2(n).is_integer():
            return get_slopes_power_of_2(n)
        closest = 2 ** math.floor(math.log2(n))
        return get_slopes_power_of_2(closest) + get_slopes(2 * closest)[0::2][:n - closest]

    slopes = torch.Tensor(get_slopes(n_head))
    bias = torch.arange(start=0, end=max_seq_len, step=period).unsqueeze(1).repeat(1, period).view(-1) // period
    bias = -torch.flip(bias, dims=[0])
    alibi = torch.zeros(max_seq_len, max_seq_len)
    for i in range(max_seq_len):
        alibi[i, :i + 1] = bias[-(i + 1):]
    alibi = slopes.unsqueeze(1).unsqueeze(1) * alibi.unsqueeze(0)
    mask = (torch.triu(torch.ones(max_seq_len, max_seq_len)) == 1).transpose(0, 1)
    mask = mask.float().masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, float(0.0))
    return mask.unsqueeze(0) + alibi


def enc_dec_mask(dataset, t, s):
    mask = torch.ones(t, s)
    if dataset == "BIWI":
        for i in range(t):
            mask[i, i * 2:i * 2 + 2] = 0
    else:
        for i in range(t):
            mask[i, i] = 0
    return mask == 1


class Attention(nn.Module):
    def __init__(self, embed_dim=4, num_heads=4):
        super().__init__()
        self.attention = nn.MultiheadAttention(embed_dim, num_heads, dropout=0.1)
        self.Wq, self.Wk, self.Wv = nn.Linear(1, embed_dim), nn.Linear(1, embed_dim), nn.Linear(1, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, 1)

    def forward(self, obj_vector, my_obj_vector):
        q = self.Wq(obj_vector.unsqueeze(-1))
        k = self.Wk(my_obj_vector.unsqueeze(-1))
        v = self.Wv(my_obj_vector.unsqueeze(-1))
        out, _ = self.attention(q, k, v)
        return self.head(self.norm(out)).squeeze(-1)


class OnehotStyleEncoder(nn.Module):
    def __init__(self, n, d):
        super().__init__()
        self.obj_vector = nn.Linear(n, d, bias=False)
        self.my_obj_vector = nn.Embedding(n, d)
        self.attention = Attention(4, 4)

    def forward(self, one_hot):
        p = self.obj_vector(one_hot)
        q = self.my_obj_vector(torch.argmax(one_hot, dim=1))
        return torch.relu(p + self.attention(p, q))


class FeatureProjection(nn.Module):
    def __init__(self, d, hidden, with_norm=True):
        super().__init__()
        if with_norm:
            self.layer_norm = nn.LayerNorm(d)
        self.projection = nn.Linear(d, hidden)


class ConvLN(nn.Module):
    def __init__(self, d, with_norm=True):
        super().__init__()
        self.conv = nn.Conv1d(d, d, 3, padding=1, bias=False)
        if with_norm:
            self.layer_norm = nn.LayerNorm(d)

    def forward(self, h):  # released Conv1DLN (style) / Conv1DIN (content)
        h = self.conv(h)
        if hasattr(self, "layer_norm"):
            h = self.layer_norm(h.transpose(-2, -1)).transpose(-2, -1)
        else:
            h = F.instance_norm(h)
        return F.relu(h)


class MotionEncoder(nn.Module):
    def __init__(self, d, convs, layers, style=True):
        super().__init__()
        self.motion_map = nn.Linear(d, d)
        self.conv_layers = nn.ModuleList(ConvLN(d, style) for _ in range(convs))
        self.feature_projection = FeatureProjection(d, 2 * d, with_norm=style)
        self.PE = PPE(2 * d, PERIOD)
        layer = nn.TransformerEncoderLayer(2 * d, 2, 3 * d, batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.feature_map = nn.Linear(2 * d, d)

    def forward(self, x):  # released Motion_StyleEncoder / Motion_ContentEncoder
        self.motion_map(x)  # dead code: computed and discarded
        h = x.transpose(1, 2)
        for conv_layer in self.conv_layers:
            h = conv_layer(h)
        h = h.transpose(1, 2)
        proj = self.feature_projection
        if hasattr(proj, "layer_norm"):
            h = proj.projection(proj.layer_norm(h))
        else:
            h = proj.projection(F.instance_norm(h.transpose(-2, -1)).transpose(-2, -1))
        h = self.transformer_encoder(self.PE(h))
        code = self.feature_map(h)
        if hasattr(proj, "layer_norm"):
            return torch.mean(code, dim=-2), code
        return code


class Classifier(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.fc = nn.Linear(i, o)


class Cons(nn.Module):
    def __init__(self):
        super().__init__()
        self.temperature = nn.Parameter(torch.tensor(0.07))


class AudioStyle(nn.Module):
    def __init__(self, w2v, hidden):
        super().__init__()
        self.wav2vec2_emo = w2v
        self.fc1 = nn.Linear(w2v.config.hidden_size, hidden)
        self.fc2 = nn.Linear(hidden, 128 if D == 128 else D)
        self.fc3 = nn.Linear(w2v.config.hidden_size, D)

    def forward(self, audio):  # released AudioStyle with the custom wav2vec.py forward (50 -> 60 Hz)
        w2v = self.wav2vec2_emo
        h = w2v.feature_extractor(audio).transpose(1, 2)
        h = h.transpose(1, 2)
        h = F.interpolate(h, size=int(h.shape[2] / float(50) * 60), align_corners=True, mode="linear")
        h = h.transpose(1, 2)
        h = w2v.feature_projection(h)
        h = h[0] if isinstance(h, tuple) else h
        emo = w2v.encoder(h)[0]
        pooled = nn.AdaptiveMaxPool1d(1)(emo.transpose(1, 2)).squeeze(-1)
        x = self.fc2(F.relu(self.fc1(pooled)))
        return torch.tanh(x), self.fc3(emo)


class ReleasedPTalker(nn.Module):
    """Module names and shapes of the released PTalker (tiny sizes; 6 BIWI identities)."""

    def __init__(self, v3, n=6, layers=2):
        super().__init__()
        from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

        self.audio_encoder = HubertModel(HubertConfig(**tiny_speech_encoder("hubert").hf_config))
        self.audio_feature_map = nn.Linear(self.audio_encoder.config.hidden_size, D)
        self.vertice_encoder = nn.Linear(v3, D)
        self.PPE = PPE(D, PERIOD)
        layer = nn.TransformerDecoderLayer(D, 4, 2 * D, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(layer, layers)
        self.vertice_decoder = nn.Linear(D, v3)
        self.onehot_style_encoder = OnehotStyleEncoder(n, D)
        w2v = Wav2Vec2Model(Wav2Vec2Config(**tiny_speech_encoder("wav2vec2").hf_config))
        self.AudioStyle = AudioStyle(w2v, 8)
        self.auxiliary_style_classifier = Classifier(128, 6)
        self.content_motion = MotionEncoder(D, 2, 1, style=False)
        self.style_motion = MotionEncoder(D, 2, 1, style=True)
        self.cons = Cons()
        self.style_classifier = Classifier(D, n)
        self.start_token = nn.Parameter(torch.zeros(1, 1, D))
        self.biased_mask = init_biased_mask(4, 600, PERIOD)

    # --- the released inference (PTalker.py predict_*), BIWI, batch size 1 ----------------
    def hubert(self, audio):  # hubert.py, dataset "BIWI", no frame_num
        enc = self.audio_encoder
        h = enc.feature_extractor(audio).transpose(1, 2)
        if h.shape[1] % 2 != 0:
            h = h[:, :-1]
        h = enc.feature_projection(h)
        h = h[0] if isinstance(h, tuple) else h
        return enc.encoder(h)[0]

    def _decode(self, vertice_input, hidden_states):
        n = vertice_input.shape[1]
        tgt_mask = self.biased_mask[:, :n, :n].clone().detach()
        memory_mask = enc_dec_mask("BIWI", n, hidden_states.shape[1])
        out = self.transformer_decoder(vertice_input, hidden_states, tgt_mask=tgt_mask, memory_mask=memory_mask)
        return self.vertice_decoder(out)

    def predict_seen(self, audio, template, one_hot):
        template = template.unsqueeze(1)
        style_emb = self.onehot_style_encoder(one_hot)
        style_audio, _ = self.AudioStyle(audio)
        hidden_states = self.hubert(audio)
        frame_num = hidden_states.shape[1] // 2
        hidden_states = self.audio_feature_map(hidden_states)
        for i in range(frame_num):
            if i == 0:
                vertice_emb = style_emb.unsqueeze(1)
                vertice_input = self.PPE(vertice_emb + style_audio)
            else:
                vertice_input = self.PPE(vertice_emb)
            vertice_out = self._decode(vertice_input, hidden_states)
            new_output = self.vertice_encoder(vertice_out[:, -1, :]).unsqueeze(1)
            if i == 0:
                new_output = new_output + style_emb + style_audio
            else:
                style_motion, _ = self.style_motion(vertice_input)
                new_output = new_output + style_emb + style_audio + style_motion
            vertice_emb = torch.cat((vertice_emb, new_output), dim=1)
        return vertice_out + template

    def predict_unseen(self, audio, template, one_hot):
        template = template.unsqueeze(1)
        self.onehot_style_encoder(one_hot)  # computed and ignored
        style_audio, _ = self.AudioStyle(audio)
        hidden_states = self.hubert(audio)
        init = self.start_token.expand(1, -1, -1)
        frame_num = hidden_states.shape[1] // 2
        hidden_states = self.audio_feature_map(hidden_states)
        for i in range(frame_num):
            if i == 0:
                vertice_emb = init.squeeze(1) + style_audio.unsqueeze(1)
            vertice_input = self.PPE(vertice_emb)
            vertice_out = self._decode(vertice_input, hidden_states)
            new_output = self.vertice_encoder(vertice_out[:, -1, :]).unsqueeze(1)
            if i == 0:
                new_output = new_output + style_audio
            else:
                style_motion, _ = self.style_motion(vertice_input)
                new_output = new_output + style_audio + style_motion
            vertice_emb = torch.cat((vertice_emb, new_output), dim=1)
        return vertice_out + template

    def predict_with_ref_motion(self, audio, template, ref_motion_seq):
        template = template.unsqueeze(1)
        style_audio, _ = self.AudioStyle(audio)
        vertice_emb = self.vertice_encoder(ref_motion_seq[:, 0, :]).unsqueeze(1)
        hidden_states = self.hubert(audio)
        frame_num = hidden_states.shape[1] // 2
        hidden_states = self.audio_feature_map(hidden_states)
        for i in range(frame_num):
            vertice_input = self.PPE(vertice_emb)
            vertice_out = self._decode(vertice_input, hidden_states)
            new_output = self.vertice_encoder(vertice_out[:, -1, :]).unsqueeze(1)
            if i == 0:
                new_output = new_output + style_audio.unsqueeze(1)
            else:
                style_motion, _ = self.style_motion(vertice_input)
                new_output = new_output + style_audio.unsqueeze(1) + style_motion.unsqueeze(1)
            vertice_emb = torch.cat((vertice_emb, new_output), dim=1)
        return vertice_out + template


def released_state(seed=0, old_weight_norm=False):
    torch.manual_seed(seed)
    topo = tiny_topology()
    model = ReleasedPTalker(3 * topo.num_vertices)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif name.startswith("vertice_decoder."):
                # a trained head's scale (displacements of a few % of the face). At 0.2 the random
                # autoregressive loop amplifies float32 rounding ~20x over 30 frames: the released code
                # itself then moves by 2e-5 when its audio features change by 1e-7 (relative)
                p.normal_(0.0, 0.02 if p.dim() > 1 else 0.005)
            else:
                p.normal_(0.0, 0.2 if p.dim() > 1 else 0.05)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if old_weight_norm:  # torch < 2.1 saved weight-normalised convs as weight_g / weight_v
        for prefix in ("audio_encoder.", "AudioStyle.wav2vec2_emo."):
            base = prefix + "encoder.pos_conv_embed.conv."
            state[base + "weight_g"] = state.pop(base + "parametrizations.weight.original0")
            state[base + "weight_v"] = state.pop(base + "parametrizations.weight.original1")
    return model.eval(), state, topo


def speech_like(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 140 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def hf_configs():
    return tiny_speech_encoder("hubert").hf_config, tiny_speech_encoder("wav2vec2").hf_config


@pytest.fixture(scope="module")
def converted():
    released, state, topo = released_state()
    content, style = hf_configs()
    model, report = convert_released(state, "biwi", topo, content_config=content, style_config=style,
                                     source="test")
    return released, state, topo, model, report


# ----------------------------------------------------------------------------- tests
def test_every_key_is_accounted_for(converted):
    _, state, _, model, report = converted
    accounted = set(report.mapped) | set(report.unused) | set(report.validated) | set(report.unmatched)
    for keys in report.folded.values():
        accounted |= set(keys)
    assert accounted == set(state)
    assert report.unmatched == [] and report.missing == []
    assert "onehot_style_encoder.attention.attention.in_proj_weight" in report.folded["identity.personalized.weight"]
    assert report.mapped["transformer_decoder.layers.1.multihead_attn.in_proj_weight"] == \
        "decoder.layers.1.multihead_attn.in_proj_weight"
    assert report.mapped["AudioStyle.fc3.weight"] == "audio_style.frame_proj.weight"
    assert report.mapped["audio_encoder.encoder.layers.0.attention.q_proj.weight"] == \
        "audio_encoder.model.encoder.layers.0.attention.q_proj.weight"
    assert report.mapped["style_motion.conv_layers.1.layer_norm.bias"] == "style_motion.convs.1.1.bias"
    assert "content_motion.feature_map.weight" in report.unused
    assert "style_motion.motion_map.weight" in report.unused
    assert "auxiliary_style_classifier.fc.weight" in report.unused
    assert report.unused["audio_encoder.masked_spec_embed"].startswith("SpecAugment")
    assert report.values["cons.temperature"] == pytest.approx(float(state["cons.temperature"]))
    assert set(report.validated) == {"PPE.pe", "style_motion.PE.pe", "content_motion.PE.pe"}
    assert all("equal" in v for v in report.validated.values())
    assert any(k.startswith("club_audio.") for k in report.initialized)
    cfg = model.config
    assert (cfg.feature_dim, cfg.decoder_layers, cfg.motion_encoder_layers, cfg.motion_conv_layers) == (D, 2, 1, 2)
    assert not cfg.use_graph_encoder and not cfg.use_motion_content and cfg.use_motion_style
    assert len(cfg.audio_style) == 1 and cfg.audio_style[0].model_id == "superb/wav2vec2-large-superb-er"
    assert cfg.train_subjects == BIWI_SUBJECTS and cfg.period == PERIOD
    assert json.loads(json.dumps(report.to_json()))["switches_for_exact_reproduction"]


def test_weights_are_copied_exactly(converted):
    _, state, _, model, _ = converted
    ours = model.state_dict()
    for theirs, mine in [("vertice_decoder.weight", "vertice_decoder.weight"), ("start_token", "start_token"),
                         ("style_motion.feature_map.weight", "style_motion.down.weight"),
                         ("AudioStyle.wav2vec2_emo.encoder.layers.1.final_layer_norm.bias",
                          "audio_style.backbones.0.model.encoder.layers.1.final_layer_norm.bias")]:
        assert torch.equal(ours[mine], state[theirs])
    assert torch.equal(ours["style_motion.proj.weight"], torch.eye(D))


def test_identity_codes_match_the_released_encoder(converted):
    released, _, _, model, _ = converted
    for i in range(6):
        onehot = torch.zeros(1, 6)
        onehot[0, i] = 1.0
        with torch.no_grad():
            expected = released.onehot_style_encoder(onehot)
            got = model.identity(onehot)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_teacher_forced_decoder_matches_released(converted):
    """The decoder over 2.5 periods (63 frames at period 25): the ALiBi penalty takes its 0-, 1- and 2-period
    steps and the PPE wraps around twice. Both masks are built the released way, not by our code: the
    self-attention bias is the released model's own ``init_biased_mask`` table (600 × 600, sliced as
    ``_decode`` slices it) and the memory mask is the released ``enc_dec_mask("BIWI", …)`` loop."""
    released, _, _, model, _ = converted
    torch.manual_seed(1)
    t = int(2.5 * PERIOD) + 1
    x = torch.randn(1, t, D)
    memory = torch.randn(1, 2 * t, D)
    tgt_mask = released.biased_mask[:, :t, :t].clone()
    mem_mask = enc_dec_mask("BIWI", t, 2 * t)
    assert tgt_mask[0, t - 1, 0] == -0.5 and tgt_mask[3, t - 1, t - 1 - PERIOD] == -0.00390625  # 2 and 1 steps
    with torch.no_grad():
        expected = released.transformer_decoder(released.PPE(x), memory, tgt_mask=tgt_mask, memory_mask=mem_mask)
        got = model.decoder(x, memory)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_audio_content_path_matches_released(converted):
    released, _, _, model, _ = converted
    torch.manual_seed(2)
    wave = torch.randn(1, 16000)
    wave = (wave - wave.mean()) / wave.std(unbiased=False)
    enc = released.audio_encoder
    with torch.no_grad():
        feats = enc.feature_extractor(wave).transpose(1, 2)
        if feats.shape[1] % 2:
            feats = feats[:, :-1]
        hidden = enc.encoder(enc.feature_projection(feats)).last_hidden_state
        expected = released.audio_feature_map(hidden)
        t = feats.shape[1] // 2
        got, _ = model.encode_audio(wave, torch.tensor([16000]), t)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_convert_save_load_strict_and_animate(tmp_path, converted):
    from ptalker_cli.inference import Animator, load_model

    _, _, _, model, report = converted
    out = write_converted(model, report, tmp_path / "released")
    assert (out / "conversion.json").exists()
    loaded = load_model(str(out), "cpu")  # PTalker.from_pretrained: strict
    mine = loaded.state_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(mine[k], v), k
    animator = Animator(loaded)
    res = animator.animate(speech_like(0.5), subject="F3")
    assert res.motion.vertices.shape == (12, 192, 3)
    assert np.isfinite(res.motion.vertices).all()
    assert res.motion.vertices.std(axis=0).max() > 0  # the output head moves the face
    blend = animator.animate(speech_like(0.3), style="F2:0.5,M3:0.5")
    assert blend.motion.num_frames == 7
    with pytest.raises(ConfigError, match="already holds a model"):
        write_converted(model, report, out)


def test_old_weight_norm_names_and_module_prefix_are_accepted():
    _, state, topo = released_state(seed=3, old_weight_norm=True)
    state = {"module." + k: v for k, v in state.items()}
    content, style = hf_configs()
    model, report = convert_released({"state_dict": state}, "biwi", topo, content_config=content,
                                     style_config=style)
    key = "audio_encoder.encoder.pos_conv_embed.conv.weight_g"
    assert report.mapped[key] == "audio_encoder.model.encoder.pos_conv_embed.conv.parametrizations.weight.original0"
    assert torch.equal(model.state_dict()[report.mapped[key]], state["module." + key])


def test_missing_weights_are_refused_unless_filled(monkeypatch):
    _, state, topo = released_state(seed=4)
    # what the released test.py does before loading: drop every weight-norm key
    state = {k: v for k, v in state.items() if "parametrizations" not in k}
    content, style = hf_configs()
    with pytest.raises(ConfigError, match=r"refusing to write a model with 4 missing weights.*--fill-speech"):
        convert_released(state, "biwi", topo, content_config=content, style_config=style)

    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    calls = []

    def fake_pretrained(model_cls, model_id, revision, **overrides):
        calls.append((model_id, revision))
        torch.manual_seed(9)
        cfg = content if model_cls is HubertModel else style
        conf = (HubertConfig if model_cls is HubertModel else Wav2Vec2Config)(**{**cfg, **overrides})
        return model_cls(conf)

    monkeypatch.setattr("ptalker_cli.zoo.hub.load_pretrained_speech_model", fake_pretrained)
    model, report = convert_released(state, "biwi", topo, content_config=content, style_config=style,
                                     fill_speech_from_pretrained=True)
    assert len(report.filled_from_pretrained) == 4 and not report.missing
    assert [c[0] for c in calls] == ["facebook/hubert-large-ls960-ft", "superb/wav2vec2-large-superb-er"]
    assert Wav2Vec2Model  # imported for the fake


def test_layout_errors_are_one_line():
    _, state, topo = released_state(seed=5)
    content, style = hf_configs()
    with pytest.raises(ConfigError, match="9 subjects were given"):
        convert_released(state, "biwi", topo, subjects=tuple("ABCDEFGHI"), content_config=content,
                         style_config=style)
    with pytest.raises(ConfigError, match="vertices"):
        convert_released(state, "biwi", tiny_topology(6, 6), content_config=content, style_config=style)
    bad = dict(state)
    del bad["vertice_encoder.weight"]
    with pytest.raises(ConfigError, match="lacks 'vertice_encoder.weight'"):
        convert_released(bad, "biwi", topo, content_config=content, style_config=style)
    with pytest.raises(ConfigError, match="unknown dataset"):
        convert_released(state, "mead", topo, content_config=content, style_config=style)


def test_load_released_state_uses_weights_only(tmp_path):
    _, state, _ = released_state(seed=6)
    path = tmp_path / "best.pth"
    torch.save(state, path)
    loaded = load_released_state(path)
    assert set(loaded) == set(state)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ConfigError, match=r"not a plain state dict: it pickles Python objects \(builtins.print\)"):
        load_released_state(tmp_path / "evil.pth")


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)


def _whole_model(p):
    torch.save(_Net(), p)


def _truncated(p):
    torch.save({"w": torch.zeros(64)}, p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("make, expected", [
    (_whole_model, r"is not a plain state dict: it pickles a whole model object \(test_convert._Net, "
                   r"torch.nn.modules.linear.Linear\); ptalker reads only tensors.*torch.save\(model.state_dict\(\)"),
    (lambda p: p.write_text("hello, not a checkpoint"), "is not a PyTorch checkpoint"),
    (lambda p: np.save(open(p, "wb"), np.zeros(3)), "is not a PyTorch checkpoint"),
    (lambda p: p.write_bytes(pickle.dumps({"a": 1})), "is not a torch.save checkpoint of tensors"),
    (_truncated, "is truncated or damaged"),
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.mkdir(), "is a folder, not a checkpoint file"),
])
def test_unloadable_checkpoints_say_what_the_file_is(tmp_path, make, expected):
    """Never PyTorch's advice to pass weights_only=False (it lets the file run code): what the file is, what to do."""
    path = tmp_path / "ckpt.pth"
    make(path)
    with pytest.raises(ConfigError) as info:
        load_released_state(path)
    message = str(info.value)
    assert re.search(expected, message), message
    assert "weights_only" not in message and "\n" not in message and str(path) in message

    res = CliRunner().invoke(app, ["convert", str(path), str(tmp_path / "out"), "--dataset", "biwi", "--template",
                                   "tiny"])
    assert res.exit_code == 1, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "weights_only" not in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_documented_differences_and_switches(converted):
    assert len(FORWARD_DIFFERENCES) >= 3
    joined = " ".join(SWITCHES_FOR_EXACT_REPRODUCTION)
    for name in ("inference_form", "audio_style_rate_hz", "motion_encoder_form"):
        assert name in joined
    cfg = converted[3].config
    assert (cfg.motion_encoder_form, cfg.inference_form, cfg.audio_style_rate_hz) == ("released", "released", 60.0)


# ----------------------------------------------------------------------------- released inference, exactly
def _speech(seconds: float, seed: int = 11) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    wave = torch.from_numpy(speech_like(seconds)) + 0.05 * torch.randn(int(seconds * 16000), generator=g)
    return wave.unsqueeze(0)


def test_audio_style_at_60_hz_matches_released(converted):
    released, _, _, model, _ = converted
    wave = normalize_audio(_speech(1.0))
    with torch.no_grad():
        expected, frames = released.AudioStyle(wave)
        got, got_frames, mask = model.audio_style(wave)
    assert got_frames.shape == frames.shape and frames.shape[1] == int(49 / 50 * 60)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_frames, frames, rtol=1e-5, atol=1e-5)


def test_released_motion_style_encoder_matches_and_ignores_padding(converted):
    released, _, _, model, _ = converted
    torch.manual_seed(12)
    x = torch.randn(1, 9, D)
    with torch.no_grad():
        clip, frames = released.style_motion(x)
        tokens, running, got = model.style_motion(x)
        # a padded batch: the valid frames give the same style as the sequence alone
        padded = torch.cat([x, torch.randn(1, 4, D)], dim=1).repeat(2, 1, 1)
        mask = torch.ones(2, 13, dtype=torch.bool)
        mask[0, 9:] = False
        _, _, batch_clip = model.style_motion(padded, mask)
    torch.testing.assert_close(got, clip, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tokens, frames, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(running, clip.unsqueeze(1).expand_as(running))
    torch.testing.assert_close(batch_clip[0], clip[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["seen", "unseen", "reference"])
def test_generate_matches_released_inference(converted, mode):
    released, _, topo, model, _ = converted
    wave = _speech(1.3)  # 64 HuBERT frames -> 32 motion frames at 25 fps
    wave_n = normalize_audio(wave)  # the released processor's normalisation
    tmpl = torch.from_numpy(topo.vertices).unsqueeze(0)  # (1, V, 3)
    subject = 3
    onehot = torch.zeros(1, 6)
    onehot[0, subject] = 1.0
    with torch.no_grad():
        if mode == "seen":
            expected = released.predict_seen(wave_n, tmpl.reshape(1, -1), onehot)
            spec = StyleSpec(subject_weights=onehot)
        elif mode == "unseen":
            expected = released.predict_unseen(wave_n, tmpl.reshape(1, -1), onehot)
            spec = StyleSpec()
        else:
            g = torch.Generator().manual_seed(13)
            ref = tmpl.unsqueeze(1) + 0.05 * torch.randn(1, 20, *tmpl.shape[1:], generator=g)  # absolute frames
            expected = released.predict_with_ref_motion(wave_n, tmpl.reshape(1, -1), ref.reshape(1, 20, -1))
            spec = StyleSpec(reference_style=model.reference_style(ref, tmpl), reference_motion=ref)
    got = model.generate(wave, tmpl, spec)
    t = expected.shape[1]
    assert t >= 30 and got.shape == (1, t, topo.num_vertices, 3)
    assert expected.std(dim=1).max() > 1e-2  # the face moves: the comparison is not trivial
    diff = (got.reshape(1, t, -1) - expected).abs().max().item()
    assert diff <= 1e-5, f"{mode}: max abs diff {diff:.3g}"


def test_released_inference_in_a_padded_batch_and_through_the_animator(converted):
    from ptalker_cli.inference import Animator
    from ptalker_cli.motion import Motion

    released, _, topo, model, _ = converted
    long, short = _speech(1.3), _speech(0.9, seed=14)
    batch = torch.cat([long, F.pad(short, (0, long.shape[1] - short.shape[1]))])
    lengths = torch.tensor([long.shape[1], short.shape[1]])
    tmpl = torch.from_numpy(topo.vertices).unsqueeze(0).repeat(2, 1, 1)
    weights = torch.zeros(2, 6)
    weights[0, 1] = 1.0  # row 0 seen, row 1 unseen (zeros)
    got = model.generate(batch, tmpl, StyleSpec(subject_weights=weights), audio_lengths=lengths)
    alone = model.generate(short, tmpl[:1], StyleSpec())
    n = alone.shape[1]
    torch.testing.assert_close(got[1, :n], alone[0], rtol=0, atol=1e-5)
    with torch.no_grad():
        expected = released.predict_seen(normalize_audio(long), tmpl[:1].reshape(1, -1), weights[:1])
    assert (got[0].reshape(got.shape[1], -1) - expected[0]).abs().max() <= 1e-5
    # the Animator passes the reference motion itself to the released loop
    ref = Motion((tmpl[0].unsqueeze(0) + 0.01).numpy(), 25.0, topo.name, {})
    res = Animator(model).animate(long[0].numpy(), style_from=ref)
    with torch.no_grad():
        expected = released.predict_with_ref_motion(normalize_audio(long), tmpl[:1].reshape(1, -1),
                                                    torch.from_numpy(ref.vertices).reshape(1, 1, -1))
    assert np.abs(res.motion.vertices.reshape(expected.shape[1], -1) - expected[0].numpy()).max() <= 1e-5


def test_configs_written_before_the_released_switches_still_load():
    from ptalker_cli.config import ModelConfig, preset

    data = preset("tiny").to_dict()
    for key in ("motion_encoder_form", "inference_form", "audio_style_rate_hz"):
        data.pop(key)
    cfg = ModelConfig.from_dict(data)
    assert (cfg.motion_encoder_form, cfg.inference_form, cfg.audio_style_rate_hz) == ("causal", "ptalker", 0.0)
    with pytest.raises(ConfigError, match="inference_form"):
        preset("tiny", inference_form="faceformer")


# ----------------------------------------------------------------------------- CLI
def test_convert_command_end_to_end(tmp_path):
    from ptalker_cli.data.testing import make_fake_dataset
    from ptalker_cli.model.network import PTalker

    _, state, topo = released_state(seed=7)
    ckpt = tmp_path / "BIWI_model.pth"
    torch.save(state, ckpt)
    data = make_fake_dataset(tmp_path / "data", subjects=BIWI_SUBJECTS + ("F1",), sentences=("e01",),
                             train_subjects=BIWI_SUBJECTS, frames=5)
    content, style = hf_configs()
    (tmp_path / "hubert.json").write_text(json.dumps(content))
    (tmp_path / "w2v2").mkdir()
    (tmp_path / "w2v2" / "config.json").write_text(json.dumps(style))
    from ptalker_cli.cli.app import app
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["convert", str(ckpt), str(out), "--dataset", "biwi", "--data", str(data),
                                   "--content-config", str(tmp_path / "hubert.json"),
                                   "--style-config", str(tmp_path / "w2v2"), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["output"] == str(out) and info["counts"]["missing"] == 0 and info["counts"]["unmatched"] == 0
    model = PTalker.from_pretrained(out)
    assert model.config.template_subjects[:6] == BIWI_SUBJECTS and "F1" in model.config.template_subjects
    np.testing.assert_allclose(model.subject_templates[6].numpy(), np.load(data / "templates" / "F1.npy"))
    res = CliRunner().invoke(app, ["convert", str(ckpt), str(out), "--dataset", "biwi", "--data", str(data),
                                   "--content-config", str(tmp_path / "hubert.json"),
                                   "--style-config", str(tmp_path / "w2v2")])
    assert res.exit_code != 0 and "already holds a model" in res.output
