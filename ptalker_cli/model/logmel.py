"""A log-mel speech encoder trained from scratch (kind ``"logmel"``).

Pretrained HuBERT / wav2vec2 checkpoints cannot always be had (offline machines, the
embedded default model); this encoder is the light alternative. It exposes the same
three stages as the ``transformers`` speech models, so :class:`SpeechEncoder` drives
it unchanged and the alignment to motion frames is identical:

* ``feature_extractor``: 80-band log-mel spectrum, 25-ms Hann windows every 20 ms
  (400 / 320 samples at 16 kHz — exactly the frame count of HuBERT's CNN,
  ``⌊(L − 400) / 320⌋ + 1``); no parameters;
* ``feature_projection``: LayerNorm → Linear(n_mels, hidden) → dropout;
* ``encoder``: a convolutional positional embedding (as in wav2vec2) and a pre-norm
  transformer with a key-padding mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LOGMEL_POS_KERNEL

WINDOW, HOP, N_FFT, SAMPLE_RATE = 400, 320, 512, 16000


def right_context_mask(frames: int, right_context: int, device=None) -> Tensor:
    """(S, S) bool attention mask, True = frame j is hidden from frame i (j > i + right_context)."""
    i = torch.arange(frames, device=device)
    return i.unsqueeze(0) > i.unsqueeze(1) + right_context


def mel_filterbank(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                   f_min: float = 0.0, f_max: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, Slaney-normalized by area."""
    f_max = f_max or sample_rate / 2

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    lower = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    upper = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    fb = np.maximum(0.0, np.minimum(lower, upper))
    fb *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return fb.astype(np.float32)


class LogMelFeatures(nn.Module):
    def __init__(self, n_mels: int):
        super().__init__()
        self.register_buffer("window", torch.hann_window(WINDOW, periodic=True), persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filterbank(n_mels)), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:  # (B, L) -> (B, n_mels, S)
        wave = wave.float()
        if wave.shape[1] < WINDOW:
            return wave.new_zeros(wave.shape[0], self.filters.shape[0], 0)
        frames = wave.unfold(1, WINDOW, HOP) * self.window  # (B, S, 400)
        power = torch.fft.rfft(frames, n=N_FFT).abs().pow(2)  # (B, S, 257)
        mel = power @ self.filters.T
        return torch.log(mel + 1e-6).transpose(1, 2)


class LogMelProjection(nn.Module):
    def __init__(self, n_mels: int, hidden: int, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(n_mels)
        self.projection = nn.Linear(n_mels, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, feats: Tensor) -> Tensor:
        return self.dropout(self.projection(self.layer_norm(feats)))


class LogMelTransformer(nn.Module):
    #: frames each layer may attend ahead (None = all); set from ModelConfig.content_right_context
    right_context: int | None = None

    def __init__(self, hidden: int, layers: int, heads: int, ffn: int, dropout: float,
                 pos_kernel: int = LOGMEL_POS_KERNEL):
        super().__init__()
        groups = math.gcd(hidden, 16)
        self.pos_conv = nn.Conv1d(hidden, hidden, pos_kernel, padding=pos_kernel // 2, groups=groups)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.layer_norm = nn.LayerNorm(hidden)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> tuple[Tensor]:
        if attention_mask is not None:
            hidden = hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)
        pos = F.gelu(self.pos_conv(hidden.transpose(1, 2))[..., : hidden.shape[1]]).transpose(1, 2)
        pad = None if attention_mask is None else ~attention_mask.bool()
        causal = None if self.right_context is None else right_context_mask(hidden.shape[1], self.right_context,
                                                                             hidden.device)
        out = self.layers(hidden + pos, mask=causal, src_key_padding_mask=pad)
        return (self.layer_norm(out),)


@dataclass
class LogMelConfig:
    n_mels: int = 80
    hidden_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 256
    dropout: float = 0.1
    conv_kernel: tuple = (WINDOW,)
    conv_stride: tuple = (HOP,)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("n_mels", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                              "intermediate_size", "dropout")}


class LogMelSpeechModel(nn.Module):
    """Log-mel front end + small transformer, with the stage names of the HF speech models."""

    def __init__(self, config: LogMelConfig):
        super().__init__()
        self.config = config
        self.feature_extractor = LogMelFeatures(config.n_mels)
        self.feature_projection = LogMelProjection(config.n_mels, config.hidden_size, config.dropout)
        self.encoder = LogMelTransformer(config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
                                         config.intermediate_size, config.dropout)


def build_logmel(hf_config: dict[str, Any] | None) -> tuple[LogMelSpeechModel, dict[str, Any]]:
    allowed = {"n_mels", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "dropout"}
    cfg = LogMelConfig(**{k: v for k, v in (hf_config or {}).items() if k in allowed})
    return LogMelSpeechModel(cfg), {**cfg.to_dict(), "model_type": "logmel"}
