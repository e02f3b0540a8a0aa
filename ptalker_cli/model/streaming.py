"""Streaming inference: audio chunks of any size in, motion frames out with a bounded look-ahead.

:class:`Streamer` runs the same network as :func:`.decoding.generate`, reorganized so that each
motion frame depends only on audio up to a fixed look-ahead past it and on a bounded window of
past frames (docs/streaming.md):

* **Speech windows.** Motion frames are decoded ``hop_frames`` at a time. The content speech
  encoder runs on a window of speech frames around each hop: ``left_s`` of left context, the
  hop, and ``lookahead_s`` of right context (the look-ahead). Windows start on the encoder's
  frame grid (stride 320 samples, receptive field 400), so a window's CNN / log-mel frames are
  those of the whole recording; each window's waveform is normalized on its own.
* **Audio style.** ``s_a`` is the style code of the audio received so far, recomputed with each
  hop until ``style_s`` seconds are in, then frozen.
* **Bounded attention.** The decoder's self-attention and the causal motion encoders' transformers
  attend to the last ``kv_window_s`` of frames only; their key/value caches are kept to that
  window (:class:`WindowKV`), so memory stays flat however long the stream runs. The causal
  convolutions keep their last inputs, the causal instance norms and the running motion style
  their running sums (float64, as ``torch.cumsum`` accumulates).

:func:`.stream_offline.offline_windowed` computes the same thing from the whole recording with
the library's batched modules and masks; the two agree to float32 round-off (tests/test_streaming.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import PtalkerError
from .audio_encoders import normalize_audio
from .decoder import alibi_slopes, periodic_positional_encoding
from .decoding import StyleSpec, _condition
from .threads import single_thread

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class StreamSettings:
    """How a stream is windowed. Seconds are rounded to the speech encoder's 20-ms frames.

    ``lookahead_s``: right context of each speech window (the latency the model adds);
    ``left_s``: left context of each speech window; ``hop_frames``: motion frames decoded per
    window; ``kv_window_s``: past motion frames the decoder and motion encoders attend to;
    ``style_s``: audio the audio style code is taken from (updated with each hop until then).
    """

    lookahead_s: float = 0.2
    left_s: float = 1.0
    hop_frames: int = 3
    kv_window_s: float = 20.0
    style_s: float = 3.0

    def __post_init__(self) -> None:
        for name in ("lookahead_s", "left_s", "kv_window_s", "style_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise PtalkerError(f"stream setting {name}={value!r} must be a number ≥ 0")
        if not isinstance(self.hop_frames, int) or self.hop_frames < 1:
            raise PtalkerError(f"stream setting hop_frames={self.hop_frames!r} must be an integer ≥ 1")


@dataclass(frozen=True)
class _Grid:
    """The content encoder's frame grid and the settings in frames."""

    stride: int  # samples per speech frame
    field: int  # samples one speech frame sees
    k: int  # speech frames per motion frame
    left: int  # speech frames of left context
    right: int  # speech frames of right context
    hop: int  # motion frames per window
    kv: int  # motion frames attended to (≥ 1)
    style_samples: int

    @classmethod
    def of(cls, model, settings: StreamSettings) -> "_Grid":
        cfg = model.config
        enc = model.audio_encoder
        if not enc.exact:
            raise PtalkerError(f"streaming needs a frame rate that divides 50 speech frames/s; this model runs at "
                               f"{cfg.fps:g} fps")
        if cfg.inference_form == "released" or cfg.motion_encoder_form == "released":
            raise PtalkerError("streaming needs the causal PTalker inference form; this model uses the released "
                               "(bidirectional) form")
        stride = math.prod(enc.strides)
        field, jump = 1, 1
        for kernel, s in zip(enc.kernels, enc.strides):
            field += (kernel - 1) * jump
            jump *= s
        rate = SAMPLE_RATE / stride
        kv = max(1, round(settings.kv_window_s * cfg.fps))
        return cls(stride, field, model.k, round(settings.left_s * rate), round(settings.lookahead_s * rate),
                   settings.hop_frames, kv, round(settings.style_s * SAMPLE_RATE))

    def speech_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.field else (num_samples - self.field) // self.stride + 1

    def window(self, f0: int, f1: int, total_speech: int | None) -> tuple[int, int]:
        """Speech frames [w0, w1) of the window around motion frames [f0, f1)."""
        w1 = self.k * f1 + self.right
        if total_speech is not None:
            w1 = min(w1, total_speech)
        return max(0, self.k * f0 - self.left), w1

    def samples_for(self, w1: int) -> int:
        """Samples needed to compute speech frames < w1."""
        return self.stride * (w1 - 1) + self.field


def window_features(model, audio: Tensor, grid: _Grid, f0: int, f1: int, w0: int, w1: int) -> Tensor:
    """Content features a (1, k·(f1−f0), d) of motion frames [f0, f1) from speech window [w0, w1).

    ``audio`` (1, L) starts at sample ``grid.stride·w0`` and holds at least the window's samples.
    """
    seg = audio[:, : grid.samples_for(w1) - grid.stride * w0]
    hidden, _ = model.audio_encoder(normalize_audio(seg))
    if hidden.shape[1] != w1 - w0:
        raise RuntimeError(f"speech window gave {hidden.shape[1]} frames, expected {w1 - w0}")
    return model.audio_feature_map(hidden[:, grid.k * f0 - w0: grid.k * f1 - w0])


def style_code(model, audio: Tensor) -> Tensor | None:
    """s_a (1, d) of (1, L) audio (None for a model without an audio style encoder)."""
    return model.audio_style_code(normalize_audio(audio), None)[0]


def style_end(grid: _Grid, w1: int) -> int:
    """Samples the audio style code of the window ending at speech frame w1 is taken from."""
    return min(grid.samples_for(w1), max(grid.style_samples, grid.field))


def num_passes(model) -> int:
    if model.content_motion is None and model.style_motion is None:
        return 1
    return 1 + model.config.refine_passes


def fold(model) -> tuple[Tensor, Tensor, Tensor]:
    """The decoder's input map embed ∘ head folded into one d×d map (as in autoregressive_pass)."""
    enc, head = model.vertice_encoder, model.vertice_decoder
    return enc.weight @ head.weight, enc.weight @ head.bias + enc.bias, enc.bias


class WindowKV:
    """Keys/values (B, h, n, dh) of the last ``keep`` positions plus the ones being appended.

    ``reserve(n)`` makes room for n new positions (dropping the oldest beyond ``keep`` when the
    buffer is full, so copying is amortized O(1)) and returns the absolute position of the first
    key the next ``append`` returns; ``append`` writes and returns every buffered key and value.
    """

    def __init__(self, keep: int):
        self.keep = keep
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0
        self.start = 0

    def reserve(self, n: int) -> int:
        cap = 0 if self.k is None else self.k.shape[2]
        if self.length + n > cap and self.length > self.keep:
            drop = self.length - self.keep
            self.k[:, :, : self.keep] = self.k[:, :, drop: self.length].clone()
            self.v[:, :, : self.keep] = self.v[:, :, drop: self.length].clone()
            self.start += drop
            self.length = self.keep
        self._need = self.length + n
        return self.start

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        b, h, n, dh = k.shape
        need = self.length + n
        if self.k is None or need > self.k.shape[2]:
            cap = max(need, min(2 * need, 2 * (self.keep + n)), 16)  # geometric growth up to the bound
            new_k, new_v = k.new_empty(b, h, cap, dh), v.new_empty(b, h, cap, dh)
            if self.k is not None and self.length:
                new_k[:, :, : self.length] = self.k[:, :, : self.length]
                new_v[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = new_k, new_v
        self.k[:, :, self.length: need] = k
        self.v[:, :, self.length: need] = v
        self.length = need
        return self.k[:, :, :need], self.v[:, :, :need]


def window_mask(q_pos: Tensor, k_pos: Tensor, window: int) -> Tensor:
    """(Q, K) bool: key position j is visible from query position i when 0 ≤ i − j < window."""
    dist = q_pos.unsqueeze(1) - k_pos.unsqueeze(0)
    return (dist >= 0) & (dist < window)


class _DecoderPass:
    """One decoder pass kept across hops: per-layer windowed caches, the last hidden state."""

    def __init__(self, model, window: int):
        dec = model.decoder
        self.dec = dec
        self.window = window
        self.caches = [WindowKV(window - 1) for _ in dec.layers]
        self.position = 0
        self.last: Tensor | None = None  # hidden state of the previous frame
        self.ppe = None
        self.slopes = None

    def _bias(self, t: int, start: int, like: Tensor) -> Tensor:
        dist = t - torch.arange(start, t + 1, device=like.device)
        steps = torch.div(dist, self.dec.period, rounding_mode="floor").to(torch.float32)
        bias = -self.slopes * steps.view(1, 1, -1)
        return bias.masked_fill((dist >= self.window).view(1, 1, -1), float("-inf")).to(like.dtype)

    def run(self, extra: Tensor, memory: Tensor, w_fold: Tensor, b_fold: Tensor, first: Tensor) -> Tensor:
        """Decode the hop's frames: extra (1, n, d), memory (1, k·n, d) → hidden (1, n, d)."""
        dec = self.dec
        if self.ppe is None:
            self.ppe = periodic_positional_encoding(dec.period, dec.dim, dec.period, 0, memory.device, memory.dtype)
            self.slopes = torch.tensor(alibi_slopes(dec.heads), device=memory.device).view(-1, 1, 1)
        mem = [layer.multihead_attn.memory_kv(memory, dec.k) for layer in dec.layers]
        n = extra.shape[1]
        out = extra.new_empty(extra.shape)
        for i in range(n):
            t = self.position
            prev = first if self.last is None else F.linear(self.last, w_fold, b_fold)
            x = prev + extra[:, i: i + 1] + self.ppe[t % dec.period]
            start = 0
            for cache in self.caches:
                start = cache.reserve(1)
            bias = self._bias(t, start, x)
            for layer, (mk, mv), cache in zip(dec.layers, mem, self.caches):
                x = layer(x, bias, mk, mv, i, cache)
            out[:, i: i + 1] = x
            self.last = x
            self.position = t + 1
        return out


class _TransformerState:
    """A causal motion encoder's post-norm transformer run incrementally over a window of frames."""

    def __init__(self, transformer, window: int):
        self.tr = transformer
        self.window = window
        self.caches = [WindowKV(window - 1) for _ in transformer.encoder.layers]
        self.position = 0

    def run(self, x: Tensor) -> Tensor:
        n = x.shape[1]
        p0 = self.position
        x = self.tr.ppe(x, offset=p0)
        q_pos = torch.arange(p0, p0 + n, device=x.device)
        mask = None
        for layer, cache in zip(self.tr.encoder.layers, self.caches):
            attn = layer.self_attn
            d, h = x.shape[-1], attn.num_heads
            qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
            q, k, v = (t.view(1, n, h, d // h).transpose(1, 2) for t in qkv.split(d, dim=-1))
            start = cache.reserve(n)
            keys, values = cache.append(k, v)
            if mask is None:
                k_pos = torch.arange(start, start + keys.shape[2], device=x.device)
                mask = window_mask(q_pos, k_pos, self.window)
            a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
            a = attn.out_proj(a.transpose(1, 2).reshape(1, n, d))
            x = layer.norm1(x + a)
            x = layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))
        self.position = p0 + n
        return x


class _ConvState:
    """A causal convolution's last ``kernel − 1`` inputs (zeros before the first frame)."""

    def __init__(self, conv):
        self.conv = conv
        self.past: Tensor | None = None

    def run(self, x: Tensor) -> Tensor:  # (1, C, n)
        if self.past is None:
            self.past = x.new_zeros(x.shape[0], x.shape[1], self.conv.left)
        xin = torch.cat([self.past, x], dim=-1)
        self.past = xin[..., xin.shape[-1] - self.conv.left:]
        return F.conv1d(xin, self.conv.weight, self.conv.bias)


class _RunningMean:
    """Running mean over time (dim ``axis``) from float64 sums, as the batched cumsum computes it."""

    def __init__(self):
        self.sum: Tensor | None = None
        self.count = 0

    def run(self, x: Tensor, axis: int) -> tuple[Tensor, Tensor]:
        """(running mean at each new frame (float32), frame counts) for the new frames in ``x``."""
        cs = x.double().cumsum(axis)
        if self.sum is not None:
            cs = cs + self.sum
        n = x.shape[axis]
        self.sum = cs.narrow(axis, n - 1, 1)
        counts = torch.arange(self.count + 1, self.count + n + 1, device=x.device, dtype=torch.float32)
        self.count += n
        return cs, counts


class _InstanceNormState:
    """CausalInstanceNorm with running (prefix) statistics kept across hops."""

    def __init__(self, norm):
        self.eps = norm.eps
        self.s1, self.s2 = _RunningMean(), _RunningMean()

    def run(self, x: Tensor) -> Tensor:  # (1, C, n)
        xf = x.float()
        cs, n = self.s1.run(xf, -1)
        cs2, _ = self.s2.run(xf.square(), -1)
        mean = cs.float() / n
        var = (cs2.float() / n - mean.square()).clamp(min=0.0)
        return ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)


class _ContentState:
    def __init__(self, enc, window: int):
        self.enc = enc
        self.convs = [(_ConvState(conv), _InstanceNormState(norm)) for conv, norm, _ in enc.convs]
        self.norm = _InstanceNormState(enc.norm)
        self.tr = _TransformerState(enc.transformer, window)

    def run(self, g: Tensor) -> Tensor:
        x = self.enc.fc(g).transpose(1, 2)
        for (conv, norm), (_, _, act) in zip(self.convs, self.enc.convs):
            x = act(norm.run(conv.run(x)))
        x = self.enc.up(self.norm.run(x).transpose(1, 2))
        return self.enc.down(self.tr.run(x))


class _StyleState:
    def __init__(self, enc, window: int):
        self.enc = enc
        self.convs = [_ConvState(seq[0]) for seq in enc.convs]
        self.tr = _TransformerState(enc.transformer, window)
        self.mean = _RunningMean()

    def run(self, g: Tensor) -> Tensor:
        """Running motion style (1, n, d) of the new frames."""
        x = self.enc.proj(g).transpose(1, 2)
        for conv, seq in zip(self.convs, self.enc.convs):
            x = seq[2](seq[1](conv.run(x)))
        x = self.enc.up(self.enc.norm(x.transpose(1, 2)))
        tokens = self.enc.down(self.tr.run(x))
        cs, n = self.mean.run(tokens, 1)
        return cs.float() / n.view(1, -1, 1)


class Streamer:
    """Feed audio with :meth:`push` (float32 mono 16 kHz, chunks of any size), end with :meth:`finish`.

    Each returns the motion frames that became ready, as an (n, V, 3) float32 array of
    absolute vertices (the template plus the predicted displacement). ``frames_out`` counts them.
    """

    def __init__(self, model, template: Tensor | np.ndarray, style: StyleSpec | None = None,
                 settings: StreamSettings | None = None):
        self.model = model.eval()
        self.settings = settings or StreamSettings()
        self.grid = _Grid.of(model, self.settings)
        self.style = style or StyleSpec()
        dev = model.device
        self.template = torch.as_tensor(np.asarray(template, dtype=np.float32)).to(dev).reshape(1, -1)
        self.passes = [_DecoderPass(model, self.grid.kv) for _ in range(num_passes(model))]
        kv = self.grid.kv
        self.content = [_ContentState(model.content_motion, kv) if model.content_motion is not None else None
                        for _ in self.passes[1:]]
        self.style_states = [_StyleState(model.style_motion, kv) if model.style_motion is not None else None
                             for _ in self.passes[1:]]
        self._fold: tuple[Tensor, Tensor, Tensor] | None = None
        self.carry: list[Tensor | None] = [None] * len(self.passes)  # each pass's last hidden state
        self.buffer = np.zeros(0, dtype=np.float32)  # audio from sample `offset` on
        self.offset = 0
        self.received = 0
        self.style_audio = np.zeros(0, dtype=np.float32)  # the first style_samples
        self.s_a: Tensor | None = None
        self.s_a_end = -1
        self.frames_out = 0
        self.finished = False

    # ------------------------------------------------------------------ input
    def push(self, samples) -> np.ndarray:
        if self.finished:
            raise PtalkerError("this stream has ended; start a new one")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if x.size:
            if not np.isfinite(x).all():
                raise PtalkerError("audio samples must be finite numbers")
            room = self.grid.style_samples - self.style_audio.size
            if room > 0:
                self.style_audio = np.concatenate([self.style_audio, x[:room]])
            self.buffer = np.concatenate([self.buffer, x])
            self.received += x.size
        return self._drain(final=False)

    def finish(self) -> np.ndarray:
        """Decode the frames the remaining audio gives (their right context is what the audio has)."""
        if self.finished:
            return self._empty()
        out = self._drain(final=True)
        self.finished = True
        return out

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.model.config.num_vertices, 3), dtype=np.float32)

    @torch.inference_mode()
    def _drain(self, final: bool) -> np.ndarray:
        with single_thread(self.model.device):
            return self._drain_hops(final)

    def _drain_hops(self, final: bool) -> np.ndarray:
        grid, outs = self.grid, []
        total = grid.speech_frames(self.received) if final else None
        frames_total = self.model.num_motion_frames(self.received) if final else None
        while True:
            f0 = self.frames_out
            f1 = f0 + grid.hop if not final else min(f0 + grid.hop, frames_total)
            if f1 <= f0:
                break
            w0, w1 = grid.window(f0, f1, total)
            if not final and grid.samples_for(w1) > self.received:
                break
            outs.append(self._hop(f0, f1, w0, w1))
            self.frames_out = f1
            self._trim()
        return np.concatenate(outs) if outs else self._empty()

    def _trim(self) -> None:
        """Drop audio no later window needs."""
        w0, _ = self.grid.window(self.frames_out, self.frames_out + self.grid.hop, None)
        keep_from = self.grid.stride * w0
        if keep_from > self.offset:
            self.buffer = self.buffer[keep_from - self.offset:]
            self.offset = keep_from

    # ------------------------------------------------------------------ one hop
    def _style_for(self, w1: int) -> Tensor | None:
        end = style_end(self.grid, w1)
        if end != self.s_a_end:
            self.s_a = style_code(self.model, self._tensor(self.style_audio[:end]))
            self.s_a_end = end
        return self.s_a

    def _tensor(self, x: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(self.model.device).unsqueeze(0)

    def _hop(self, f0: int, f1: int, w0: int, w1: int) -> np.ndarray:
        model, grid = self.model, self.grid
        seg = self.buffer[grid.stride * w0 - self.offset:]
        a = window_features(model, self._tensor(seg), grid, f0, f1, w0, w1)
        cond = _condition(model, self.style, self._style_for(w1), 1, a)
        hidden = self.run_passes(cond, a)
        head = model.vertice_decoder
        verts = F.linear(hidden[0], head.weight, head.bias) + self.template
        return verts.view(f1 - f0, -1, 3).float().cpu().numpy()

    def _motion_features(self, h_in: Tensor, zero_first: bool) -> Tensor:
        """E_G features (1, n, d) of the displacements the output head makes of hidden states h_in (1, n, d)."""
        model, head = self.model, self.model.vertice_decoder
        g_enc = model.graph_encoder
        n = h_in.shape[1]
        if g_enc is not None and g_enc.native_vertex_major_ok(h_in):
            # straight into the fused GAT's vertex-major layout, as refine_codes does offline
            disp_vm = torch.addmm(head.bias.unsqueeze(1), head.weight, h_in[0].t())  # (3V, n)
            if zero_first:
                disp_vm[:, 0] = 0.0
            return g_enc.encode_vertex_major(disp_vm.view(-1, 3, n)).unsqueeze(0)
        disp = F.linear(h_in, head.weight, head.bias)
        if zero_first:
            disp[:, 0] = 0.0
        return model.motion_features(disp.view(1, n, -1, 3))

    def run_passes(self, cond: Tensor, a: Tensor) -> Tensor:
        model = self.model
        if self._fold is None:
            self._fold = fold(model)
        w_fold, b_fold, first = self._fold
        n = a.shape[1] // model.k
        extra = cond.expand(1, n, -1)
        hidden = self.passes[0].run(extra, a, w_fold, b_fold, first)
        for p in range(1, len(self.passes)):
            # the motion encoders see each frame's previous frame (a zero displacement before frame 0)
            before = self.carry[p - 1]
            h_in = torch.cat([before if before is not None else hidden.new_zeros(1, 1, hidden.shape[-1]),
                              hidden[:, :-1]], dim=1)
            self.carry[p - 1] = hidden[:, -1:]
            g = self._motion_features(h_in, before is None)
            extra = cond.expand(1, n, -1)
            if self.content[p - 1] is not None:
                extra = extra + self.content[p - 1].run(g)
            if self.style_states[p - 1] is not None:
                running = self.style_states[p - 1].run(g)
                if self.style.reference_style is None:
                    extra = extra + self.style.strength * running
            hidden = self.passes[p].run(extra, a, w_fold, b_fold, first)
        return hidden
