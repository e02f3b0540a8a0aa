"""The PTalker model: M̂ = D(E_a^c(audio), E_m^c(E_G(M)), s), s = s_a + s_m + s_p.

Training uses :meth:`PTalker.forward` (teacher forcing, causal: no ground-truth
frame ``≥ t`` reaches the prediction of frame ``t``) and :meth:`PTalker.losses`;
inference uses :meth:`PTalker.generate` (incremental decoding with a key/value
cache, a first pass and styled refinement passes, see docs/inference.md).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LossConfig, ModelConfig
from ..errors import ConfigError
from ..mesh import Topology
from . import losses as L
from .audio_encoders import AudioStyleEncoder, SpeechEncoder, build_speech_model
from .decoder import MotionDecoder
from .identity import IdentityStyleEncoder
from .motion_encoders import MotionContentEncoder, MotionStyleEncoder

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class ForwardOutput:
    """What a teacher-forced pass produces: the prediction and the features the losses use."""

    vertices: Tensor  # (B, T, V, 3) absolute positions
    frame_mask: Tensor  # (B, T) valid frames (after aligning to the audio)
    audio_content: Tensor  # (B, k·T, d) a_{1:S}
    audio_content_mask: Tensor  # (B, k·T)
    audio_frames: Tensor  # (B, T, d) a pooled to motion frames
    motion_content: Tensor | None = None  # (B, T, d) c_{1:T}
    motion_style_tokens: Tensor | None = None  # (B, T, d)
    audio_style_frames: Tensor | None = None  # (B, S', d)
    audio_style_mask: Tensor | None = None
    s_a: Tensor | None = None
    s_m: Tensor | None = None  # clip style (B, d), for the losses
    s_p: Tensor | None = None
    adv_logits: list[Tensor] = field(default_factory=list)


@dataclass
class StyleSpec:
    """How to style a generation.

    ``subject_weights`` (B, N): a one-hot (seen subject), a blend over training
    subjects, or None / zeros (unseen subject: style from audio alone).
    ``reference_style`` (B, d): a motion style code from a reference motion.
    ``strength`` scales the personal parts (s_p and s_m) of the style code.
    ``reference_motion`` (B, T, V, 3): the reference motion itself (absolute vertices); only
    ``inference_form="released"`` uses it (its first frame starts the decoder, spec §3.3).
    """

    subject_weights: Tensor | None = None
    reference_style: Tensor | None = None
    strength: float = 1.0
    reference_motion: Tensor | None = None


def shift_right(disp: Tensor) -> Tensor:
    """(B, T, ...) → the same with a zero frame first and the last frame dropped."""
    return torch.cat([torch.zeros_like(disp[:, :1]), disp[:, :-1]], dim=1)


def normalize_audio(wave: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Per-utterance zero mean / unit variance over the valid samples (the feature extractor's do_normalize)."""
    if lengths is None:
        mean = wave.mean(-1, keepdim=True)
        var = wave.var(-1, unbiased=False, keepdim=True)
        return (wave - mean) / torch.sqrt(var + 1e-7)
    mask = (torch.arange(wave.shape[1], device=wave.device).unsqueeze(0) < lengths.unsqueeze(1)).to(wave.dtype)
    n = mask.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (wave * mask).sum(-1, keepdim=True) / n
    var = (((wave - mean) * mask) ** 2).sum(-1, keepdim=True) / n
    return (wave - mean) / torch.sqrt(var + 1e-7) * mask


class PTalker(nn.Module):
    def __init__(self, config: ModelConfig, topology: Topology, subject_templates: np.ndarray | None = None,
                 speech_models: dict[str, nn.Module] | None = None):
        """Build the model. ``speech_models`` are pre-built transformers models (see :func:`build_model`)."""
        super().__init__()
        config.validate()
        if topology.num_vertices != config.num_vertices:
            raise ConfigError(
                f"topology '{topology.name}' has {topology.num_vertices} vertices but the config expects "
                f"{config.num_vertices}"
            )
        self.config = config
        self.topology = topology
        d, v3, n = config.feature_dim, 3 * config.num_vertices, config.num_subjects
        self.k = config.audio_frames_per_motion_frame
        if speech_models is None:
            speech_models = {}
            for key, spec in self._speech_specs().items():
                if spec.hf_config is None:
                    raise ConfigError(f"speech encoder '{key}' has no hf_config; build the model with build_model()")
                speech_models[key] = build_speech_model(spec)[0]

        # buffers that make a checkpoint self-describing (saved in model.safetensors)
        n_templates = max(len(config.template_subjects), 1)
        templates = subject_templates if subject_templates is not None else np.repeat(
            topology.vertices[None], n_templates, axis=0)
        if len(templates) != n_templates:
            raise ConfigError(f"{len(templates)} subject templates given for {n_templates} template_subjects")
        self.register_buffer("template", torch.from_numpy(topology.vertices.copy()))
        self.register_buffer("faces", torch.from_numpy(topology.faces.copy()))
        self.register_buffer("subject_templates", torch.as_tensor(np.asarray(templates, dtype=np.float32)))
        self.register_buffer("lip_index", torch.from_numpy(topology.region("lip").copy()))
        self.register_buffer("upper_index", torch.from_numpy(topology.region("upper_face").copy()))

        # E_a^c
        self.audio_encoder = SpeechEncoder(speech_models["content"], config.audio_content.freeze_feature_encoder)
        self.audio_encoder.set_motion_fps(config.fps)
        self.audio_feature_map = nn.Linear(self.audio_encoder.hidden_size, d)
        # E_a^s
        self.audio_style = None
        if config.use_audio_style and config.audio_style:
            backbones = [
                SpeechEncoder(speech_models[f"style{i}"], spec.freeze_feature_encoder)
                for i, spec in enumerate(config.audio_style)
            ]
            self.audio_style = AudioStyleEncoder(backbones, d, config.audio_style_hidden, config.dropout,
                                                 config.audio_style_rate_hz, config.audio_style_pooling,
                                                 config.audio_style_norm)
        # E_p^s (FaceFormer: one-hot linear style when use_identity_style is off)
        self.identity = IdentityStyleEncoder(
            n, d, config.decoder_heads, attention=config.use_identity_style and config.identity_attention,
            dropout=config.dropout)
        # motion path: the decoder's autoregressive input, E_G and the motion encoders
        self.vertice_encoder = nn.Linear(v3, d)
        if config.use_graph_encoder and (config.use_motion_content or config.use_motion_style):
            from .graph_encoder import GraphAttentionEncoder
        self.graph_encoder = (
            GraphAttentionEncoder(topology.edges, config.num_vertices, d, config.gat_channels, config.gat_heads)
            if config.use_graph_encoder and (config.use_motion_content or config.use_motion_style) else None
        )
        args = (d, config.motion_encoder_layers, config.motion_encoder_heads, config.motion_conv_layers,
                config.period, config.dropout, config.motion_encoder_form != "released")
        self.content_motion = MotionContentEncoder(*args) if config.use_motion_content else None
        self.style_motion = MotionStyleEncoder(*args) if config.use_motion_style else None
        # D and the zero-initialized output head
        self.start_token = nn.Parameter(torch.zeros(1, 1, d))
        self.decoder = MotionDecoder(d, config.decoder_heads, config.decoder_ffn_dim, config.decoder_layers,
                                     config.period, config.dropout, self.k)
        self.vertice_decoder = nn.Linear(d, v3)
        nn.init.zeros_(self.vertice_decoder.weight)
        nn.init.zeros_(self.vertice_decoder.bias)
        # adversarial speaker classifiers (behind gradient reversal) and CLUB estimators
        self.style_classifier = nn.Linear(d, max(n, 1))
        self.motion_style_classifier = nn.Linear(d, max(n, 1)) if self.content_motion is not None else None
        self.audio_style_speaker = (nn.Linear(d, max(n, 1))
                                    if config.audio_style_speaker_head and self.audio_style is not None else None)
        self.club_audio = L.CLUBEstimator(d, d, config.club_hidden) if self.audio_style is not None else None
        self.club_motion = (L.CLUBEstimator(d, d, config.club_hidden)
                            if self.content_motion is not None and self.style_motion is not None else None)

    # ------------------------------------------------------------------ helpers
    def _speech_specs(self) -> dict[str, Any]:
        return _speech_specs(self.config)

    @property
    def device(self) -> torch.device:
        return self.template.device

    def subject_index(self, name: str) -> int:
        return self.config.train_subjects.index(name)

    def one_hot(self, index: Tensor) -> Tensor:
        """(B,) subject indices (−1 = unseen) → (B, N) one-hot rows (zeros for −1)."""
        n = max(self.config.num_subjects, 1)
        out = torch.zeros(index.shape[0], n, device=index.device)
        seen = index >= 0
        out[seen, index[seen]] = 1.0
        return out

    def num_motion_frames(self, num_samples: int) -> int:
        """Motion frames produced for ``num_samples`` 16-kHz samples."""
        s = int(self.audio_encoder.num_frames(int(num_samples)))
        if s <= 0:
            return 0
        return s // self.k if self.audio_encoder.exact else int(s / 50.0 * self.config.fps)

    def encode_audio(self, wave: Tensor, wave_lengths: Tensor | None, num_frames: int,
                     frame_lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        hidden, mask = self.audio_encoder(wave, wave_lengths, frame_lengths, num_frames)
        return self.audio_feature_map(hidden), mask

    def audio_style_code(self, wave: Tensor, wave_lengths: Tensor | None):
        if self.audio_style is None:
            return None, None, None
        return self.audio_style(wave, wave_lengths)

    @property
    def has_speaker_head(self) -> bool:
        """Whether :meth:`speaker_posterior` works: a speaker head on s_a and training speakers."""
        return self.audio_style_speaker is not None and self.config.num_subjects > 0

    @torch.no_grad()
    def speaker_posterior(self, wave: Tensor, wave_lengths: Tensor | None = None) -> Tensor | None:
        """(B, N) probabilities over the training speakers from the voice alone: the speaker
        head (``audio_style_speaker_head``) on s_a; None when the model has no such head."""
        if not self.has_speaker_head:
            return None
        s_a = self.audio_style_code(normalize_audio(wave, wave_lengths), wave_lengths)[0]
        return torch.softmax(self.audio_style_speaker(s_a).float(), dim=-1)

    def motion_features(self, disp_in: Tensor) -> Tensor:
        """Features of (shifted) displacement frames for the motion encoders: E_G, or the linear embedding."""
        if self.graph_encoder is not None:
            return self.graph_encoder(disp_in)
        return self.vertice_encoder(disp_in.flatten(-2))

    def motion_codes(self, disp_in: Tensor, mask: Tensor | None = None):
        """Motion content c (B,T,d) and running / clip motion style from shifted displacements."""
        if self.content_motion is None and self.style_motion is None:
            return None, None, None, None
        return self._codes_from_features(self.motion_features(disp_in), mask)

    def _codes_from_features(self, g: Tensor, mask: Tensor | None):
        c = self.content_motion(g, mask) if self.content_motion is not None else None
        tokens = running = clip = None
        if self.style_motion is not None:
            tokens, running, clip = self.style_motion(g, mask)
        return c, tokens, running, clip

    def reference_style(self, motion: Tensor, template: Tensor) -> Tensor:
        """Motion style code (B, d) of a reference motion (B, T, V, 3) over its whole length."""
        if self.style_motion is None:
            raise ConfigError("this model has no motion style encoder; --style-from needs one")
        disp = motion - template.unsqueeze(1)
        return self.style_motion(self.motion_features(disp))[2]

    # ------------------------------------------------------------------ training
    def forward(self, audio: Tensor, vertices: Tensor, template: Tensor, subject_index: Tensor,
                audio_lengths: Tensor | None = None, frame_mask: Tensor | None = None,
                inputs: Tensor | None = None) -> ForwardOutput:
        """Teacher-forced pass.

        audio (B, L) raw 16-kHz waveforms (normalized here per utterance), vertices
        (B, T, V, 3) ground truth, template (B, V, 3), subject_index (B,) with −1 for
        subjects outside the training identities. Frames the audio does not cover are
        dropped from ``frame_mask`` (the research code truncates likewise).

        ``inputs`` (B, T, V, 3), default ``vertices``: the frames fed back (shifted by one)
        to the decoder and the motion encoders. Scheduled sampling passes a mix of ground
        truth and the model's own predictions here; the prediction of frame ``t`` only
        ever depends on ``inputs[:, :t]``.
        """
        b, t = vertices.shape[:2]
        device = vertices.device
        if frame_mask is None:
            frame_mask = torch.ones(b, t, dtype=torch.bool, device=device)
        if audio_lengths is None:
            audio_lengths = torch.full((b,), audio.shape[1], dtype=torch.long, device=device)
        covered = torch.tensor([self.num_motion_frames(int(n)) for n in audio_lengths], device=device)
        frame_lengths = torch.minimum(frame_mask.sum(1), covered)
        frame_mask = torch.arange(t, device=device).unsqueeze(0) < frame_lengths.unsqueeze(1)
        wave = normalize_audio(audio, audio_lengths)

        a, a_mask = self.encode_audio(wave, audio_lengths, t, frame_lengths)
        s_a, style_frames, style_mask = self.audio_style_code(wave, audio_lengths)
        weights = self.one_hot(subject_index)
        if self.training and self.config.identity_dropout > 0:
            keep = (torch.rand(b, 1, device=device) >= self.config.identity_dropout).to(weights.dtype)
            weights = weights * keep
        s_p = self.identity(weights)

        source = vertices if inputs is None else inputs
        disp = (source - template.unsqueeze(1)) * frame_mask[..., None, None]
        disp_in = shift_right(disp)
        c, tokens, running, clip = self.motion_codes(disp_in, frame_mask)
        motion_in = self._motion_terms(c, running)
        if self.training and self.config.motion_dropout > 0 and motion_in is not None:
            keep = (torch.rand(b, 1, 1, device=device) >= self.config.motion_dropout).to(motion_in.dtype)
            motion_in = motion_in * keep

        x = self.vertice_encoder(disp_in.flatten(-2)) + self.start_token + s_p.unsqueeze(1)
        if s_a is not None:
            x = x + s_a.unsqueeze(1)
        if motion_in is not None:
            x = x + motion_in
        hidden = self.decoder(x, a)
        pred = self.vertice_decoder(hidden).view(b, t, -1, 3) + template.unsqueeze(1)

        a_frames = a.view(b, t, self.k, -1).mean(2)
        logits = [self.style_classifier(L.grad_reverse(L.masked_time_mean(a, a_mask)[0], 1.0))]
        if self.motion_style_classifier is not None and c is not None:
            logits.append(self.motion_style_classifier(L.grad_reverse(L.masked_time_mean(c, frame_mask)[0], 1.0)))
        return ForwardOutput(pred, frame_mask, a, a_mask, a_frames, c, tokens, style_frames, style_mask,
                             s_a, clip, s_p if self.config.num_subjects else None, logits)

    @staticmethod
    def _motion_terms(c: Tensor | None, running: Tensor | None) -> Tensor | None:
        """c + s_m (running), whichever of them the model has; None without motion encoders."""
        if c is None or running is None:
            return c if running is None else running
        return c + running

    def losses(self, out: ForwardOutput, vertices: Tensor, subject_index: Tensor,
               cfg: LossConfig = LossConfig()) -> dict[str, Tensor]:
        """Every loss term, unweighted, plus ``"objective"`` (their weighted sum) and ``"total"``.

        ``total`` = objective + the CLUB estimators' fitting loss: back-propagate it.
        Terms with weight 0 are not computed.
        """
        mask = out.frame_mask
        gt = vertices
        terms: dict[str, Tensor] = {}
        weights: dict[str, float] = {}

        def add(name: str, weight: float, fn):
            if weight:
                terms[name] = fn()
                weights[name] = weight

        add("rec", cfg.rec, lambda: L.reconstruction_loss(out.vertices, gt, mask, form=cfg.form))
        if self.audio_style_speaker is not None and out.s_a is not None and self.config.num_subjects:
            add("speaker_id", cfg.speaker_id,
                lambda: L.adversarial_loss(self.audio_style_speaker(out.s_a), subject_index))
        add("mouth", cfg.mouth, lambda: L.mouth_loss(out.vertices, gt, self.lip_index, mask, form=cfg.form))
        add("vel", cfg.vel, lambda: L.velocity_loss(out.vertices, gt, mask, form=cfg.form))
        if self.config.num_subjects:
            # gradient reversal is inside forward (alpha 1); scale it by grl_alpha here
            add("adv", cfg.adv, lambda: cfg.grl_alpha * sum(L.adversarial_loss(lg, subject_index)
                                                            for lg in out.adv_logits) / len(out.adv_logits))
            add("cos", cfg.cos, lambda: L.style_cosine_loss(out.s_a, out.s_m, out.s_p))
        pairs = []
        if out.audio_style_frames is not None:
            pairs.append((out.audio_content, out.audio_style_frames, out.audio_content_mask, out.audio_style_mask,
                          self.club_audio))
        if out.motion_content is not None and out.motion_style_tokens is not None:
            pairs.append((out.motion_content, out.motion_style_tokens, mask, mask, self.club_motion))
        if pairs:
            add("orth", cfg.orth, lambda: sum(L.orthogonality_loss(c, s, form=cfg.orth_form, content_mask=cm,
                                                                   style_mask=sm) for c, s, cm, sm, _ in pairs))
            add("info", cfg.info, lambda: sum(L.infonce_loss(c, s, cfg.info_temperature, cm, sm)
                                              for c, s, cm, sm, _ in pairs))
            if cfg.club:
                bound, fit = zip(*(_club_terms(club, c, s, cm, sm) for c, s, cm, sm, club in pairs))
                terms["club"], weights["club"] = sum(bound), cfg.club
                terms["club_fit"], weights["club_fit"] = sum(fit), 1.0
        if out.motion_content is not None:
            add("topk", cfg.topk, lambda: L.topk_contrastive_loss(
                out.audio_frames, out.motion_content, mask, k_ratio=cfg.topk_ratio, alpha=cfg.topk_alpha,
                beta=cfg.topk_beta, lam=cfg.topk_lambda, temperature=cfg.topk_temperature))
            add("kl", cfg.kl, lambda: L.kl_loss(out.audio_frames, out.motion_content, mask, eps=cfg.kl_eps))
        objective = sum(weights[k] * v for k, v in terms.items() if k != "club_fit")
        terms["objective"] = objective
        # what is back-propagated: the objective plus the CLUB estimators' own fitting loss
        # (it only reaches the estimators' parameters: their inputs are detached)
        terms["total"] = objective + terms["club_fit"] if "club_fit" in terms else objective
        return terms

    # ------------------------------------------------------------------ inference
    @torch.inference_mode()
    def generate(self, audio: Tensor, template: Tensor, style: StyleSpec | None = None,
                 audio_lengths: Tensor | None = None, use_cache: bool = True,
                 refine_passes: int | None = None) -> Tensor:
        """Animate (B, L) 16-kHz waveforms → (B, T, V, 3) vertices, T = the audio's motion frames.

        Pass 1 decodes with the identity/audio (and reference) style; each refinement
        pass re-encodes the previous pass's motion with E_G and the motion encoders
        (causal, batched over all frames) and decodes again with the motion content
        and running motion style. Each pass is linear in length with the KV cache.
        ``use_cache=False`` recomputes the whole prefix every step (slow reference).
        """
        feats = self.encode_speech(audio, audio_lengths)
        return self.decode_motion(feats, template, style, use_cache, refine_passes)

    @torch.inference_mode()
    def encode_speech(self, audio: Tensor, audio_lengths: Tensor | None = None) -> dict[str, Tensor | None]:
        """The speech encoders' part of :meth:`generate`: content features a, audio style s_a."""
        b = audio.shape[0]
        if audio_lengths is None:
            audio_lengths = torch.full((b,), audio.shape[1], dtype=torch.long, device=audio.device)
        t = self.num_motion_frames(int(audio_lengths.max()))
        if t <= 0:
            raise ValueError("audio too short to produce a motion frame")
        frame_lengths = torch.tensor([self.num_motion_frames(int(n)) for n in audio_lengths], device=audio.device)
        wave = normalize_audio(audio, audio_lengths)
        a, _ = self.encode_audio(wave, audio_lengths, t, frame_lengths)
        s_a = self.audio_style_code(wave, audio_lengths)[0]
        return {"audio_content": a, "s_a": s_a, "frame_lengths": frame_lengths}

    @torch.inference_mode()
    def decode_motion(self, feats: dict[str, Tensor | None], template: Tensor, style: StyleSpec | None = None,
                      use_cache: bool = True, refine_passes: int | None = None) -> Tensor:
        """Everything after the speech encoders: decoder passes, E_G, motion encoders, output head."""
        style = style or StyleSpec()
        if self.config.inference_form == "released":  # the released predict_* loops (use_cache/refine ignored)
            from .released import released_decode_motion

            return released_decode_motion(self, feats, template, style)
        a, s_a, frame_lengths = feats["audio_content"], feats["s_a"], feats["frame_lengths"]
        b, t = a.shape[0], a.shape[1] // self.k
        weights = style.subject_weights
        if weights is None:
            weights = torch.zeros(b, max(self.config.num_subjects, 1), device=a.device)
        s_p = self.identity(weights.to(a.device, a.dtype))
        cond = self.start_token + style.strength * s_p.unsqueeze(1)
        if s_a is not None:
            cond = cond + s_a.unsqueeze(1)
        ref = style.reference_style
        if ref is not None and self.style_motion is not None:
            cond = cond + style.strength * ref.unsqueeze(1)
        passes = self.config.refine_passes if refine_passes is None else refine_passes
        if self.content_motion is None and self.style_motion is None:
            passes = 0
        hidden = self._decode(cond.expand(b, t, -1), a, use_cache)
        frame_mask = torch.arange(t, device=a.device).unsqueeze(0) < frame_lengths.unsqueeze(1)
        for _ in range(passes):
            c, _, running, _ = self._refine_codes(hidden, frame_mask)
            extra = cond.expand(b, t, -1)
            if c is not None:
                extra = extra + c
            if running is not None and ref is None:
                extra = extra + style.strength * running
            hidden = self._decode(extra, a, use_cache)
        # output head with the template folded into its bias: one pass over the (T, 3V) output
        head = self.vertice_decoder
        bias = head.bias.unsqueeze(0) + template.reshape(b, 1, -1)  # (B, 1, 3V)
        return torch.baddbmm(bias, hidden, head.weight.t().expand(b, -1, -1)).view(b, t, -1, 3)

    def _refine_codes(self, hidden: Tensor, frame_mask: Tensor):
        """The motion codes of the motion a pass decoded (its frames shifted by one).

        On the fused CPU path the shifted displacements are produced directly in the
        graph encoder's vertex-major layout — W (3V × d) @ [0, h_0 … h_{T−2}] — which
        saves the (T, 3V) output, the shift and the transpose; the result is the same.
        """
        b, t, d = hidden.shape
        g_enc = self.graph_encoder
        if g_enc is not None and b == 1 and g_enc.native_vertex_major_ok(hidden):
            h_prev = torch.cat([hidden.new_zeros(1, d), hidden[0, :-1]]).t()  # (d, T)
            head = self.vertice_decoder
            n = head.weight.shape[0] * t
            ws = self.__dict__.get("_refine_workspace")
            if ws is None or ws.numel() < n or ws.dtype != hidden.dtype:
                ws = torch.empty(n, dtype=hidden.dtype)  # reused: first-touch page faults cost as much as the product
                self.__dict__["_refine_workspace"] = ws
            disp_vm = ws[:n].view(-1, t)
            torch.addmm(head.bias.unsqueeze(1), head.weight, h_prev, out=disp_vm)  # (3V, T) = (V, 3, T)
            disp_vm[:, 0] = 0.0  # frame −1 is a zero displacement
            g = g_enc.encode_vertex_major(disp_vm.view(-1, 3, t)).unsqueeze(0)
            return self._codes_from_features(g, frame_mask)
        disp = self.vertice_decoder(hidden).view(b, t, -1, 3)
        return self.motion_codes(shift_right(disp), frame_mask)

    def _decode(self, extra: Tensor, memory: Tensor, use_cache: bool) -> Tensor:
        """Autoregressive decoding: token_t = embed(previous frame) + extra_t.

        With the cache, embed(head(h)) is folded into one d×d map (both are linear), so
        each step costs O(t·d) attention plus O(d²) — no V-sized work in the loop.
        """
        b, t, d = extra.shape
        w_fold = self.vertice_encoder.weight @ self.vertice_decoder.weight  # (d, d)
        b_fold = self.vertice_encoder.weight @ self.vertice_decoder.bias + self.vertice_encoder.bias
        first = self.vertice_encoder.bias  # embedding of a zero displacement
        if not use_cache:
            tokens = (first + extra[:, :1]).clone()
            outs = []
            for i in range(t):
                h = self.decoder(tokens, memory)[:, -1:]
                outs.append(h)
                if i + 1 < t:
                    frame = self.vertice_decoder(h)
                    tokens = torch.cat([tokens, self.vertice_encoder(frame) + extra[:, i + 1: i + 2]], dim=1)
            return torch.cat(outs, dim=1)
        state = self.decoder.prepare(memory)
        token = first + extra[:, :1]
        if not (torch.is_grad_enabled() and (w_fold.requires_grad or extra.requires_grad or any(
                p.requires_grad for p in self.decoder.parameters()) or memory.requires_grad)):
            # the whole pass in one fused C call (CPU float32, eval, no autograd); None when
            # it does not apply (or PTALKER_NO_NATIVE=1 / no compiler): the loop below
            from .native_decoder import decode_pass as native_decode_pass

            out = native_decode_pass(self.decoder, state, token, extra, w_fold, b_fold)
            if out is not None:
                return out
        out = extra.new_empty(b, t, d)
        with _single_thread(memory.device):
            for i in range(t):
                h = self.decoder.step(token, state)
                out[:, i: i + 1] = h
                if i + 1 < t:
                    token = F.linear(h, w_fold, b_fold) + extra[:, i + 1: i + 2]
        return out

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) into ``folder``."""
        from safetensors.torch import save_file

        from ..fileio import atomic_path

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {"format": "pt", "topology": self.topology.name, "units": self.topology.units}
        with atomic_path(folder / WEIGHTS_NAME) as tmp:
            save_file(state, str(tmp), metadata=meta)
        with atomic_path(folder / CONFIG_NAME) as tmp:
            tmp.write_text(self.config.to_json())
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "PTalker":
        """Load a model saved by :meth:`save_pretrained` (strict: every weight must match)."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
        if not cfg_path.exists() or not w_path.exists():
            raise ConfigError(f"{folder} is not a ptalker model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        config = ModelConfig.load(cfg_path)
        try:
            with safe_open(str(w_path), "pt") as fh:
                meta = fh.metadata() or {}
            state = load_file(str(w_path), device=str(map_location))
        except Exception as exc:
            raise ConfigError(f"cannot read {w_path}: {exc}") from None
        try:
            regions = {"lip": state["lip_index"].cpu().numpy(), "upper_face": state["upper_index"].cpu().numpy()}
            topo = Topology(meta.get("topology", config.topology), state["template"].cpu().numpy(),
                            state["faces"].cpu().numpy(), regions, meta.get("units", "normalized"))
            model = cls(config, topo, state["subject_templates"].cpu().numpy())
        except KeyError as exc:
            raise ConfigError(f"{w_path} lacks the tensor {exc}; the checkpoint is incomplete") from None
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(
                f"{w_path} does not match its config: {len(missing)} missing and {len(unexpected)} unexpected "
                f"tensors (e.g. {(list(missing) + list(unexpected))[:3]})"
            )
        return model.to(map_location).eval()


@contextlib.contextmanager
def _single_thread(device: torch.device):
    """Run the per-step loop on one CPU thread.

    Each step is a few hundred tiny operations; with several intra-op threads every
    one of them pays a synchronization, and on a busy machine a thread that was
    descheduled stalls the whole step (measured here: 3.9 ms per step on one thread
    against 89 ms on two under load). GPU runs are unaffected.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_topology(folder: str | Path, subject: str | None = None) -> Topology:
    """The topology of a saved model (its template, or ``subject``'s), read without building the model."""
    from safetensors import safe_open

    folder = Path(folder)
    config = ModelConfig.load(folder / CONFIG_NAME)
    try:
        with safe_open(str(folder / WEIGHTS_NAME), "pt") as fh:
            meta = fh.metadata() or {}
            vertices = fh.get_tensor("template").numpy()
            if subject is not None and subject in config.template_subjects:
                vertices = fh.get_tensor("subject_templates")[config.template_subjects.index(subject)].numpy()
            faces = fh.get_tensor("faces").numpy()
            regions = {"lip": fh.get_tensor("lip_index").numpy(), "upper_face": fh.get_tensor("upper_index").numpy()}
    except Exception as exc:
        raise ConfigError(f"cannot read the mesh of model {folder}: {exc}") from None
    return Topology(meta.get("topology", config.topology), vertices, faces, regions, meta.get("units", "normalized"))


def _valid_pairs(c: Tensor, s: Tensor, cm: Tensor | None, sm: Tensor | None) -> tuple[Tensor, Tensor]:
    """Frame-level (content, style) pairs: style pooled to the content's length, valid frames only."""
    s = L.pool_to_length(s, c.shape[1], sm)
    if cm is None:
        return c.reshape(-1, c.shape[-1]), s.reshape(-1, s.shape[-1])
    return c[cm], s[cm]


def _club_terms(club, c, s, cm, sm) -> tuple[Tensor, Tensor]:
    """CLUB bound with the estimator's parameters held fixed, and the estimator's own fitting loss."""
    x, y = _valid_pairs(c, s, cm, sm)
    frozen = {k: v.detach() for k, v in club.named_parameters()}
    bound = torch.func.functional_call(club, frozen, (x, y))
    fit = club.learning_loss(x.detach(), y.detach())
    return bound, fit


def _speech_specs(config: ModelConfig) -> dict[str, Any]:
    specs = {"content": config.audio_content}
    if config.use_audio_style:
        specs.update({f"style{i}": s for i, s in enumerate(config.audio_style)})
    return specs


def build_model(config: ModelConfig, topology: Topology, subject_templates: np.ndarray | None = None) -> PTalker:
    """Build a fresh model: speech encoders from their pretrained checkpoints (or from ``hf_config``).

    The returned model's config has every speech encoder's ``hf_config`` filled in, so
    its checkpoint can be rebuilt offline by :meth:`PTalker.from_pretrained`.
    """
    models, filled = {}, {}
    for key, spec in _speech_specs(config).items():
        models[key], filled[key] = build_speech_model(spec)
    styles = tuple(filled.get(f"style{i}", s) for i, s in enumerate(config.audio_style))
    config = replace(config, audio_content=filled["content"], audio_style=styles)
    return PTalker(config, topology, subject_templates, models)
