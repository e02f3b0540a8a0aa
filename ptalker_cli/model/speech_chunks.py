"""Chunked speech encoding: long audio through the speech encoders one window at a time.

HuBERT, wav2vec2 and the log-mel encoder end in a transformer whose self-attention is
quadratic in length (and, for wav2vec2-style CNN front ends, the first CNN layer alone holds
512 values per 5 samples). Run on a whole long recording they cost time and memory without
bound. Here the encoders run on windows of at most ``window_s`` seconds; each window keeps
only the frames of its centre, with ``left_s`` seconds of context before and ``right_s``
after (less at the ends of the recording), and the centres are stitched:

* the CNN front end (receptive field R = 400 samples, stride J = 320 for all three kinds) is
  run on exactly the samples the window's frames read, ``[J·a, J·(b−1) + R)``, so every CNN
  frame equals the full-length one (float round-off) and the frame counts equal the
  full-context path for every length;
* a wav2vec2-base-style CNN whose first layer is a GroupNorm over time
  (``feat_extract_norm="group"``) gets that layer's per-channel mean and variance of the whole
  recording in a first pass over windows, so it too stays exact;
* where motion frames are not a whole number of speech frames (30 fps; or E_a^s resampled to
  ``audio_style_rate_hz``), the linear resampling of the full path is computed per window with
  the global positions;
* only the transformer sees a window instead of the whole recording: that is the one
  approximation. Audio whose frames fit in one window takes the full-context path unchanged.

Cost is linear in length and memory is bounded by one window, apart from the output features
(T × C). The audio style code s_a pools the stitched per-frame features of E_a^s exactly as the
full path pools its features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch
from torch import Tensor

from ..errors import PtalkerError
from .audio_encoders import SPEECH_HZ, SpeechEncoder
from .logmel import LogMelSpeechModel

if TYPE_CHECKING:  # pragma: no cover
    from .network import PTalker


@dataclass(frozen=True)
class ChunkingConfig:
    """How the speech encoders split long audio (seconds).

    ``window_s``: the longest span one encoder call sees, context included (``math.inf``:
    never split, the full-context path). ``left_s`` / ``right_s``: context before / after
    the frames a window keeps; the window advances by ``window_s − left_s − right_s``.
    Audio no longer than ``window_s`` is encoded in one full-context pass.
    """

    window_s: float
    left_s: float
    right_s: float

    def __post_init__(self) -> None:
        values = (self.window_s, self.left_s, self.right_s)
        if any(not isinstance(v, (int, float)) or math.isnan(v) for v in values):
            raise PtalkerError(f"chunking needs numbers of seconds, got {values}")
        if self.left_s < 0 or self.right_s < 0 or math.isinf(self.left_s) or math.isinf(self.right_s):
            raise PtalkerError(f"chunk context must be finite and >= 0 s (left {self.left_s}, right {self.right_s})")
        if self.window_s - self.left_s - self.right_s < 1.0:
            raise PtalkerError(f"a chunk window of {self.window_s:g} s leaves less than 1 s between its "
                               f"{self.left_s:g} s left and {self.right_s:g} s right context")

    @property
    def step_s(self) -> float:
        """Seconds each window advances (the centre part it keeps)."""
        return self.window_s - self.left_s - self.right_s

    @classmethod
    def full_context(cls) -> "ChunkingConfig":
        """Never split: the encoders see the whole recording (quadratic cost, unbounded memory)."""
        return cls(math.inf, 0.0, 0.0)

    @property
    def is_full_context(self) -> bool:
        return math.isinf(self.window_s)


#: Default windows per encoder kind. HuBERT / wav2vec2 were pretrained on crops of ≤ 15.6 s and
#: fine-tuned on sentences of LibriSpeech length; 20-s windows keep 12 s with 4 s of context each
#: side. The log-mel encoder is small (the attention of a 30-s window is 1500² per head).
#: The measured effect of these windows is in docs/performance.md ("Chunked speech encoding").
DEFAULT_CHUNKING: dict[str, ChunkingConfig] = {
    "hubert": ChunkingConfig(20.0, 4.0, 4.0),
    "wav2vec2": ChunkingConfig(20.0, 4.0, 4.0),
    "logmel": ChunkingConfig(30.0, 5.0, 5.0),
}


def chunking_for(kind: str, chunking: ChunkingConfig | None) -> ChunkingConfig:
    """``chunking`` when given, else the default of the encoder ``kind`` (:data:`DEFAULT_CHUNKING`)."""
    if chunking is not None:
        return chunking
    return DEFAULT_CHUNKING.get(kind, DEFAULT_CHUNKING["hubert"])


def chunking_from_options(window_s: float | None, context_s: float | None = None) -> ChunkingConfig | None:
    """The CLI's ``--chunk-seconds`` / ``--chunk-context``: None = the kinds' defaults, 0 = never split;
    the context (each side) defaults to a fifth of the window."""
    if window_s is None:
        if context_s is not None:
            raise PtalkerError("a chunk context needs a chunk window")
        return None
    if window_s == 0:
        return ChunkingConfig.full_context()
    if not window_s > 0:
        raise PtalkerError(f"--chunk-seconds must be > 0 (or 0: never split), got {window_s}")
    context = window_s / 5 if context_s is None else context_s
    return ChunkingConfig(float(window_s), float(context), float(context))


def encoder_kind(encoder: SpeechEncoder) -> str:
    """``hubert``, ``wav2vec2`` or ``logmel``: the key of :data:`DEFAULT_CHUNKING`."""
    if isinstance(encoder.model, LogMelSpeechModel):  # its config is a plain dataclass
        return "logmel"
    return str(getattr(encoder.model.config, "model_type", "hubert"))


# ---------------------------------------------------------------------------------------------- windows
def windows(n: int, window: int, left: int, right: int) -> Iterator[tuple[int, int, int, int]]:
    """Cover frames [0, n) with (start, end, keep_start, keep_end): every window spans at most
    ``window`` frames; the kept parts tile [0, n); a kept frame has ``left`` frames of context
    before it and ``right`` after it, except within that distance of the ends."""
    if n <= window:
        yield 0, n, 0, n
        return
    step = window - left - right
    pos = window - right
    yield 0, window, 0, pos
    while pos < n:
        if n - pos <= window - left:  # the rest fits in the last window, with at least `left` before it
            yield n - window, n, pos, n
            return
        yield pos - left, pos + step + right, pos, pos + step
        pos += step


def receptive_field(kernels, strides) -> tuple[int, int]:
    """(samples one CNN frame reads, samples between frames) of a conv stack without padding."""
    span, jump = 1, 1
    for k, s in zip(kernels, strides):
        span += (k - 1) * jump
        jump *= s
    return span, jump


class _CnnFrames:
    """CNN frames [a, b) of one (1, L) waveform, computed from exactly the samples they read."""

    def __init__(self, encoder: SpeechEncoder, wave: Tensor, window: int):
        self.encoder, self.wave = encoder, wave
        self.span, self.jump = receptive_field(encoder.kernels, encoder.strides)
        self.count = int(encoder.num_frames(wave.shape[1]))
        self.group_stats = None
        if getattr(encoder.model.config, "feat_extract_norm", None) == "group":
            self.group_stats = self._group_norm_stats(window)

    def _group_norm_stats(self, window: int) -> tuple[Tensor, Tensor]:
        """Per-channel mean and variance over time of the first conv layer's output, as its
        GroupNorm computes them on the whole recording (accumulated in float64 over windows)."""
        first = self.encoder.model.feature_extractor.conv_layers[0]
        k, s = first.conv.kernel_size[0], first.conv.stride[0]
        n = (self.wave.shape[1] - k) // s + 1
        step = max(window * self.jump // s, 1)
        total = sq = None
        for a in range(0, max(n, 0), step):
            b = min(a + step, n)
            h = first.conv(self.wave[:, None, s * a: s * (b - 1) + k])[0].double()  # (C, b − a)
            part, part_sq = h.sum(1), (h * h).sum(1)
            total = part if total is None else total + part
            sq = part_sq if sq is None else sq + part_sq
        mean = total / n
        var = (sq / n - mean * mean).clamp_min(0.0)
        return mean.float(), var.float()

    def _cnn(self, piece: Tensor) -> Tensor:
        if self.group_stats is None:
            return self.encoder.model.feature_extractor(piece)
        layers = self.encoder.model.feature_extractor.conv_layers
        first = layers[0]
        mean, var = self.group_stats
        h = first.conv(piece[:, None])
        norm = first.layer_norm
        h = (h - mean[:, None]) / torch.sqrt(var[:, None] + norm.eps) * norm.weight[:, None] + norm.bias[:, None]
        h = first.activation(h)
        for layer in layers[1:]:
            h = layer(h)
        return h

    def __call__(self, a: int, b: int) -> Tensor:
        """(1, b − a, C) CNN features of frames a..b−1 (0 <= a < b <= count)."""
        piece = self.wave[:, self.jump * a: self.jump * (b - 1) + self.span]
        return self._cnn(piece).transpose(1, 2)


class _AlignedFrames:
    """The transformer's input frames [i0, i1): CNN frames as they are (``size`` = the first
    ``size`` CNN frames), or linearly resampled from all ``count`` CNN frames to ``size``
    (align_corners, the full path's F.interpolate) with the global positions."""

    def __init__(self, cnn: _CnnFrames, size: int, resample: bool):
        self.cnn, self.size, self.resample = cnn, size, resample
        n = cnn.count
        # float32 like F.interpolate's CPU kernel (scale and source positions in float)
        self.scale = torch.tensor((n - 1) / (size - 1) if resample and size > 1 else 0.0, dtype=torch.float32)

    def __call__(self, i0: int, i1: int) -> Tensor:
        if not self.resample:
            return self.cnn(i0, i1)
        pos = torch.arange(i0, i1, dtype=torch.float32) * self.scale
        lo_idx = pos.floor().long().clamp(max=self.cnn.count - 1)
        lo, hi = int(lo_idx[0]), min(int(lo_idx[-1]) + 2, self.cnn.count)
        x = self.cnn(lo, hi)[0]  # (hi − lo, C)
        frac = (pos - lo_idx).to(x.dtype).unsqueeze(1)
        i_a = lo_idx - lo
        i_b = (i_a + 1).clamp(max=hi - lo - 1)
        return (x[i_a] * (1 - frac) + x[i_b] * frac).unsqueeze(0)


def _seconds_to_frames(seconds: float, rate: float) -> int:
    return int(round(seconds * rate))


def encode_windows(encoder: SpeechEncoder, wave: Tensor, size: int, resample: bool, rate: float,
                   chunking: ChunkingConfig, out_map=None) -> Tensor:
    """(1, size, C) transformer features of one normalized (1, L) waveform, window by window,
    each window's kept frames mapped by ``out_map`` (e.g. E_a^c's Linear(H, d)) before stitching."""
    window = _seconds_to_frames(chunking.window_s, rate)
    left, right = _seconds_to_frames(chunking.left_s, rate), _seconds_to_frames(chunking.right_s, rate)
    source = _AlignedFrames(_CnnFrames(encoder, wave, window), size, resample)
    out = None
    for a, b, keep_a, keep_b in windows(size, window, left, right):
        hidden = encoder.transform(source(a, b))[:, keep_a - a: keep_b - a]
        if out_map is not None:
            hidden = out_map(hidden)
        if out is None:
            out = hidden.new_empty(1, size, hidden.shape[-1])
        out[:, keep_a:keep_b] = hidden
    return out


# ---------------------------------------------------------------------------------------------- the model
def _fits(num_frames: int, rate: float, chunking: ChunkingConfig) -> bool:
    return chunking.is_full_context or num_frames <= _seconds_to_frames(chunking.window_s, rate)


def content_features(model: "PTalker", wave: Tensor, wave_lengths: Tensor, num_frames: int,
                     frame_lengths: Tensor, chunking: ChunkingConfig | None = None) -> Tensor:
    """E_a^c's (B, k·T, d) features a: the full path when every sequence fits in one window,
    else each sequence encoded window by window (zeros beyond its own frames)."""
    enc = model.audio_encoder
    cfg = chunking_for(encoder_kind(enc), chunking)
    rate = SPEECH_HZ if enc.exact else float(model.config.fps)
    sizes = [enc.k * int(f) for f in frame_lengths]
    if all(_fits(s, rate, cfg) for s in sizes):
        return model.encode_audio(wave, wave_lengths, num_frames, frame_lengths)[0]
    out = None
    for i, (n, size) in enumerate(zip(wave_lengths.tolist(), sizes)):
        if size <= 0:
            continue
        feats = encode_windows(enc, wave[i: i + 1, : int(n)], size, not enc.exact, rate, cfg,
                               model.audio_feature_map)
        if out is None:
            out = feats.new_zeros(wave.shape[0], enc.k * num_frames, feats.shape[-1])
        out[i, :size] = feats[0]
    return out


def _style_size(backbone: SpeechEncoder, num_samples: int) -> int:
    n = int(backbone.num_frames(num_samples))
    if backbone.rate_hz > 0:
        return int(n / SPEECH_HZ * backbone.rate_hz) if n > 0 else 0
    return max(n, 0)


def audio_style_code(model: "PTalker", wave: Tensor, wave_lengths: Tensor,
                     chunking: ChunkingConfig | None = None) -> Tensor | None:
    """E_a^s's (B, d) audio style code s_a (None without E_a^s): the full path when every
    sequence fits in one window of every backbone, else each backbone's features stitched
    window by window and pooled over the whole recording."""
    style = model.audio_style
    if style is None:
        return None
    plans = []
    for backbone in style.backbones:
        cfg = chunking_for(encoder_kind(backbone), chunking)
        rate = backbone.rate_hz if backbone.rate_hz > 0 else SPEECH_HZ
        plans.append((backbone, cfg, rate))
    lengths = wave_lengths.tolist()
    if all(_fits(_style_size(bb, int(n)), rate, cfg) for bb, cfg, rate in plans for n in lengths):
        return model.audio_style_code(wave, wave_lengths)[0]
    codes = []
    for i, n in enumerate(lengths):
        hidden = []
        for backbone, cfg, rate in plans:
            size = _style_size(backbone, int(n))
            hidden.append(encode_windows(backbone, wave[i: i + 1, : int(n)], size, backbone.rate_hz > 0, rate, cfg)
                          if size > 0 else wave.new_zeros(1, 0, backbone.hidden_size))
        s = min(h.shape[1] for h in hidden)
        feats = torch.cat([h[:, :s] for h in hidden], dim=-1)
        codes.append(style.code(feats, torch.ones(1, s, dtype=torch.bool, device=wave.device)))
    return torch.cat(codes)
