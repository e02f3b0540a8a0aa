"""The PTalker network: M̂ = D(E_a^c(audio), E_m^c(E_G(M)), s), s = s_a + s_m + s_p.

The modules (speech encoders, identity style, graph encoder, motion encoders, decoder, output
head, the speaker classifiers and CLUB estimators of the losses), the teacher-forced
:meth:`PTalker.forward` (causal: no ground-truth frame ``≥ t`` reaches the prediction of frame
``t``) and :meth:`PTalker.losses`. Inference lives in :mod:`.decoding` (bound here as
``generate`` / ``encode_speech`` / ``decode_motion``); the model folder in :mod:`.folder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import LossConfig, ModelConfig
from ..errors import ConfigError
from ..mesh import Topology
from . import decoding
from . import folder as model_folder
from . import losses as L
from .audio_encoders import AudioStyleEncoder, SpeechEncoder, SpeechLoader, build_speech_model, normalize_audio
from .decoder import MotionDecoder
from .graph_encoder import GraphAttentionEncoder
from .identity import IdentityStyleEncoder
from .motion_encoders import MotionContentEncoder, MotionStyleEncoder, shift_right


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
    viseme_logits: Tensor | None = None  # (B, T, viseme_classes), models with a viseme classifier


class PTalker(nn.Module):
    """The network (modules, teacher-forced forward, losses) with the inference engine bound as methods."""

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
        if config.content_right_context >= 0:  # (validate() allows it for log-mel encoders only)
            self.audio_encoder.model.encoder.right_context = config.content_right_context
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
        # auxiliary viseme classifier on the decoder's or the speech features (training only; LossConfig.viseme)
        self.viseme_head = nn.Linear(d, config.viseme_classes) if config.viseme_classes else None
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
        return self.codes_from_features(self.motion_features(disp_in), mask)

    def codes_from_features(self, g: Tensor, mask: Tensor | None):
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
        visemes = None
        if self.viseme_head is not None:
            visemes = self.viseme_head(a_frames if self.config.viseme_source == "audio" else hidden)
        return ForwardOutput(pred, frame_mask, a, a_mask, a_frames, c, tokens, style_frames, style_mask,
                             s_a, clip, s_p if self.config.num_subjects else None, logits, visemes)

    @staticmethod
    def _motion_terms(c: Tensor | None, running: Tensor | None) -> Tensor | None:
        """c + s_m (running), whichever of them the model has; None without motion encoders."""
        if c is None or running is None:
            return c if running is None else running
        return c + running

    def losses(self, out: ForwardOutput, vertices: Tensor, subject_index: Tensor,
               cfg: LossConfig = LossConfig(), visemes: Tensor | None = None) -> dict[str, Tensor]:
        """Every loss term, unweighted, plus ``"objective"`` (their weighted sum) and ``"total"``.

        ``visemes`` (B, T) per-frame viseme classes (-100 = none) for ``cfg.viseme``; the term
        needs a model with a viseme classifier and is left out without labels.

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
        add("lip_closure", cfg.lip_closure, lambda: L.lip_closure_loss(
            out.vertices, gt, L.lip_pairs(self.topology.name), mask, threshold=cfg.lip_closure_threshold,
            tolerance=cfg.lip_closure_tolerance))
        if cfg.viseme and out.viseme_logits is None:
            raise ConfigError("loss.viseme needs a model with a viseme classifier; set model.viseme_classes=15")
        if out.viseme_logits is not None and visemes is not None:
            add("viseme", cfg.viseme, lambda: L.viseme_loss(out.viseme_logits, visemes, mask))
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

    # ------------------------------------------------------------------ inference (decoding.py)
    generate = decoding.generate
    encode_speech = decoding.encode_speech
    decode_motion = decoding.decode_motion

    # ------------------------------------------------------------------ the model folder (folder.py)
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the model folder (``config.json`` and ``model.safetensors``, atomically) into ``folder``."""
        return model_folder.write_model_folder(folder, self.config, self.state_dict(), self.topology)

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "PTalker":
        """Load a model folder written by :meth:`save_pretrained` (strict: every weight must match)."""
        config, topology, templates, state = model_folder.read_model_folder(folder, map_location)
        model = cls(config, topology, templates)
        model_folder.load_weights(model, state, folder)
        return model.to(map_location).eval()


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


def build_model(config: ModelConfig, topology: Topology, subject_templates: np.ndarray | None = None,
                speech_loader: SpeechLoader | None = None) -> PTalker:
    """Build a fresh model: speech encoders from their pretrained checkpoints (or from ``hf_config``).

    ``speech_loader`` fetches the pretrained weights of a speech encoder without ``hf_config``
    (:func:`ptalker_cli.zoo.hub.load_pretrained_speech_model`; see
    :func:`.audio_encoders.build_speech_model`). The returned model's config has every speech
    encoder's ``hf_config`` filled in, so its checkpoint can be rebuilt offline by
    :meth:`PTalker.from_pretrained`.
    """
    models, filled = {}, {}
    for key, spec in _speech_specs(config).items():
        models[key], filled[key] = build_speech_model(spec, speech_loader)
    styles = tuple(filled.get(f"style{i}", s) for i, s in enumerate(config.audio_style))
    config = replace(config, audio_content=filled["content"], audio_style=styles)
    return PTalker(config, topology, subject_templates, models)
