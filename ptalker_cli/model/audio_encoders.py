"""Speech encoders: the audio content encoder E_a^c and the audio style encoder E_a^s.

Both wrap ``transformers`` models through their public sub-modules
(``feature_extractor`` → ``feature_projection`` → ``encoder``), the stable path
shared by HuBERT and wav2vec2, so that features can be aligned to the motion frame
rate between the CNN front end and the transformer (FaceFormer's practice):

* 2 speech frames per motion frame at 25 fps (50 Hz / 25 fps): trimmed or padded to 2T;
* otherwise the CNN features are linearly resampled to T frames (e.g. 30 fps).

Pretrained speech weights are not fetched here (the model layer does not download):
:func:`build_speech_model` takes a ``load_pretrained`` function, e.g.
:func:`ptalker_cli.zoo.hub.load_pretrained_speech_model`, passed in by whoever builds a model
from pretrained encoders (training, conversion).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import AUDIO_STYLE_POOLINGS, AudioEncoderConfig
from ..errors import ConfigError

SPEECH_HZ = 50.0  # HuBERT / wav2vec2 frame rate at 16 kHz

#: ``load_pretrained(model_cls, model_id, revision, **config_overrides) -> model``: a pretrained
#: HuBERT / wav2vec2 (``model_cls``) from a hub id or folder (see :func:`build_speech_model`)
SpeechLoader = Callable[..., nn.Module]


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


def conv_output_length(num_samples: Tensor | int, kernels=(10, 3, 3, 3, 3, 2, 2), strides=(5, 2, 2, 2, 2, 2, 2)):
    """Frames produced by the CNN front end for ``num_samples`` 16-kHz samples."""
    n = num_samples
    for k, s in zip(kernels, strides):
        n = (n - k) // s + 1
    return n


def build_speech_model(spec: AudioEncoderConfig, load_pretrained: SpeechLoader | None = None
                       ) -> tuple[nn.Module, AudioEncoderConfig]:
    """Build a HuBERT/wav2vec2 ``transformers`` model and return it with a spec whose ``hf_config`` is filled.

    With ``hf_config`` present the model is built from it with random weights (the
    checkpoint's own weights are loaded afterwards, or training starts from scratch);
    otherwise ``load_pretrained`` (:data:`SpeechLoader`) fetches the pretrained weights of
    ``spec.model_id`` at the pinned revision (a ConfigError when none is given).
    """
    if spec.kind == "logmel":  # trained from scratch; no transformers model behind it
        from .logmel import build_logmel

        model, cfg = build_logmel(spec.hf_config)
        return model, replace(spec, hf_config=cfg)
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    classes = {"hubert": (HubertConfig, HubertModel), "wav2vec2": (Wav2Vec2Config, Wav2Vec2Model)}
    if spec.kind not in classes:
        raise ConfigError(f"unknown speech encoder kind '{spec.kind}'; use 'hubert', 'wav2vec2' or 'logmel'")
    config_cls, model_cls = classes[spec.kind]
    overrides = dict(apply_spec_augment=spec.apply_spec_augment, layerdrop=spec.layerdrop, mask_time_prob=0.0)
    if spec.apply_spec_augment:
        overrides.pop("mask_time_prob")
    if spec.hf_config is not None:
        hf = config_cls(**{**spec.hf_config, **overrides})
        model = model_cls(hf)
    else:
        if not spec.model_id:
            raise ConfigError("a speech encoder needs a model_id or an hf_config")
        if load_pretrained is None:
            raise ConfigError(f"speech encoder '{spec.model_id}' has no hf_config: building it needs its pretrained "
                              "weights; pass load_pretrained (e.g. ptalker_cli.zoo.hub.load_pretrained_speech_model)")
        model = load_pretrained(model_cls, spec.model_id, spec.revision, **overrides)
    hf_dict = model.config.to_diff_dict() if hasattr(model.config, "to_diff_dict") else model.config.to_dict()
    for key in ("_name_or_path", "transformers_version", "architectures", "id2label", "label2id",
                "torch_dtype", "dtype"):
        hf_dict.pop(key, None)
    hf_dict.update({k: v for k, v in overrides.items()})
    hf_dict["model_type"] = spec.kind
    return model, replace(spec, hf_config=_jsonable(hf_dict))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


class SpeechEncoder(nn.Module):
    """A HuBERT/wav2vec2 model run in stages with the features aligned to motion frames."""

    def __init__(self, model: nn.Module, freeze_feature_encoder: bool = True):
        super().__init__()
        self.model = model
        cfg = model.config
        self.kernels, self.strides = tuple(cfg.conv_kernel), tuple(cfg.conv_stride)
        self.hidden_size = cfg.hidden_size
        if freeze_feature_encoder:
            for p in self.model.feature_extractor.parameters():
                p.requires_grad_(False)

    def num_frames(self, num_samples):
        return conv_output_length(num_samples, self.kernels, self.strides)

    def forward(
        self,
        wave: Tensor,
        wave_lengths: Tensor | None = None,
        frame_lengths: Tensor | None = None,
        num_frames: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encode (B, L) normalized 16-kHz waveforms.

        Without ``num_frames`` the native 50-Hz frames are returned. With it, the
        features are aligned to ``num_frames`` motion frames (``frame_lengths`` valid per
        sequence): ``k`` = 50/fps features per frame when that is a whole number
        (trimmed or zero-padded to k·T), otherwise the CNN features are linearly
        resampled to one per motion frame before the transformer. Returns the features
        (B, S, H) and their validity mask (B, S).
        """
        b = wave.shape[0]
        if wave_lengths is None:
            wave_lengths = torch.full((b,), wave.shape[1], dtype=torch.long, device=wave.device)
        feats = self.model.feature_extractor(wave).transpose(1, 2)  # (B, S, C)
        lengths = self.num_frames(wave_lengths).clamp(min=0)
        if num_frames is not None:
            if frame_lengths is None:
                frame_lengths = torch.full((b,), num_frames, dtype=torch.long, device=wave.device)
            feats, lengths = self._align(feats, lengths, frame_lengths, num_frames)
        elif self.rate_hz > 0:
            feats, lengths = self._resample(feats, lengths, self.rate_hz)
        s = feats.shape[1]
        mask = torch.arange(s, device=wave.device).unsqueeze(0) < lengths.unsqueeze(1)
        return self.transform(feats, mask), mask

    def transform(self, feats: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, S, C) CNN features (aligned) → (B, S, H) hidden states: projection, then the transformer
        (``mask``: valid frames; None or all valid = no attention mask)."""
        proj = self.model.feature_projection(feats)
        hidden = proj[0] if isinstance(proj, tuple) else proj
        attn = mask if mask is not None and not bool(mask.all()) else None  # bool, as HF computes it itself
        out = self.model.encoder(hidden, attention_mask=attn)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state

    def _align(self, feats: Tensor, lengths: Tensor, frame_lengths: Tensor, num_frames: int):
        b, s, c = feats.shape
        k = self.k
        target = k * num_frames
        if self.exact:
            feats = feats[:, :target] if s >= target else F.pad(feats, (0, 0, 0, target - s))
            return feats, torch.minimum(lengths, k * frame_lengths)
        out = feats.new_zeros(b, target, c)
        for i in range(b):
            n, frames = int(lengths[i]), int(frame_lengths[i])
            if n >= 1 and frames >= 1:
                seg = feats[i : i + 1, :n].transpose(1, 2)
                out[i, :frames] = F.interpolate(seg, size=frames, mode="linear", align_corners=True)[0].T
        return out, torch.where(lengths > 0, frame_lengths, torch.zeros_like(frame_lengths))

    def _resample(self, feats: Tensor, lengths: Tensor, rate_hz: float):
        """Linear resampling (align_corners) of each sequence's n CNN frames to int(n/50·rate) frames: the
        released wav2vec2 forward (50 → 60 Hz before the transformer)."""
        b, _, c = feats.shape
        sizes = [int(int(n) / SPEECH_HZ * rate_hz) if int(n) > 0 else 0 for n in lengths]
        out = feats.new_zeros(b, max(max(sizes), 1), c)
        for i, (n, size) in enumerate(zip(lengths.tolist(), sizes)):
            if size > 0:
                seg = feats[i: i + 1, : int(n)].transpose(1, 2)
                out[i, :size] = F.interpolate(seg, size=size, mode="linear", align_corners=True)[0].T
        return out, torch.tensor(sizes, dtype=torch.long, device=feats.device)

    #: speech frames per motion frame and whether that ratio is exact (set by set_motion_fps)
    k = 2
    exact = True
    #: without num_frames: resample the CNN features to this rate before the transformer (0 = native 50 Hz)
    rate_hz = 0.0

    def set_motion_fps(self, fps: float) -> None:
        ratio = SPEECH_HZ / float(fps)
        self.exact = ratio >= 1 and abs(ratio - round(ratio)) < 1e-6
        self.k = int(round(ratio)) if self.exact else 1


#: lags (50-Hz frames: 40, 80, 160, 320 ms) of the autocorrelation in "stats-ac" pooling
AC_LAGS = (2, 4, 8, 16)
#: pooling of E_a^s -> how many values per backbone channel it gives (names: config.AUDIO_STYLE_POOLINGS)
POOLINGS = {"max": 1, "stats": 2, "stats-ac": 2 + len(AC_LAGS)}
assert set(POOLINGS) == set(AUDIO_STYLE_POOLINGS)


class AudioStyleEncoder(nn.Module):
    """E_a^s: one or two wav2vec2 sub-networks (speaker ID, emotion) → s_a and a per-frame style sequence.

    Each backbone's hidden states are pooled over valid frames: max-pooled
    (``pooling="max"``, released code) or as mean and standard deviation
    (``pooling="stats"``, x-vector statistics pooling), optionally with each channel's
    autocorrelation at lags of 40–320 ms (``pooling="stats-ac"``: how fast the features
    change, which carries the speaking rate); the pooled vectors are
    concatenated and mapped by an MLP (→ hidden → d, [LayerNorm,] tanh) to ``s_a``
    (released code: 1024→256→128 on a single emotion model, no LayerNorm). The
    per-frame style sequence (used by the orthogonality / MI losses) is a linear map
    of the concatenated hidden states.
    """

    def __init__(self, backbones: list[SpeechEncoder], dim: int, hidden: int, dropout: float = 0.1,
                 rate_hz: float = 0.0, pooling: str = "max", norm: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
        self.pooling = pooling
        self.backbones = nn.ModuleList(backbones)
        for backbone in backbones:  # ModelConfig.audio_style_rate_hz (released: 60)
            backbone.rate_hz = float(rate_hz)
        width = sum(b.hidden_size for b in backbones)
        self.fc1 = nn.Linear(width * POOLINGS[pooling], hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim) if norm else None
        self.frame_proj = nn.Linear(width, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, wave: Tensor, wave_lengths: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        outs = [b(wave, wave_lengths) for b in self.backbones]
        s = min(o[0].shape[1] for o in outs)
        hidden = torch.cat([o[0][:, :s] for o in outs], dim=-1)
        mask = outs[0][1][:, :s]
        return self.code(hidden, mask), self.frame_proj(hidden), mask

    def code(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """s_a from the backbones' concatenated (B, S, W) hidden states and their (B, S) valid mask."""
        z = self.fc2(self.drop(F.relu(self.fc1(self.pool(hidden, mask)))))
        return torch.tanh(self.norm(z) if self.norm is not None else z)

    def pool(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """(B, S, W) frames, (B, S) valid mask → (B, W) max, (B, 2W) [mean, std] or (B, 6W) [mean, std,
        autocorrelation at AC_LAGS]; zeros where there are no valid frames (or too few for a lag)."""
        any_valid = mask.any(1, keepdim=True)
        if self.pooling == "max":
            neg = torch.finfo(hidden.dtype).min
            pooled = hidden.masked_fill(~mask.unsqueeze(-1), neg).amax(dim=1)
            return torch.where(any_valid, pooled, torch.zeros_like(pooled))
        w = mask.unsqueeze(-1).to(hidden.dtype)
        n = w.sum(1).clamp_min(1.0)
        mean = (hidden * w).sum(1) / n
        var = (((hidden - mean.unsqueeze(1)) * w) ** 2).sum(1) / n
        std = var.clamp_min(1e-8).sqrt()
        out = [mean, std * any_valid.to(hidden.dtype)]
        if self.pooling == "stats-ac":
            # per-channel autocorrelation at a few lags: how fast the features change, i.e.
            # the speaking rate, which mean and std cannot tell
            z = (hidden - mean.unsqueeze(1)) / (std.unsqueeze(1) + 1e-5) * w
            for k in AC_LAGS:
                if z.shape[1] <= k:
                    out.append(torch.zeros_like(mean))
                    continue
                pairs = (w[:, k:] * w[:, :-k]).sum(1).clamp_min(1.0)
                out.append((z[:, k:] * z[:, :-k]).sum(1) / pairs)
        return torch.cat(out, dim=-1)
