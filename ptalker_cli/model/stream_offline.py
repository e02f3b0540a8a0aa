"""The offline path with a stream's windowing: the whole recording at once, same settings.

:func:`offline_windowed` gives what :class:`~.streaming.Streamer` gives for the same audio and
:class:`~.streaming.StreamSettings`, computed the batched way: every speech window's features
at once, the decoder with the library's growing key/value cache (:class:`~.decoder.KVCache`)
and the ALiBi bias masked beyond the attention window, the motion encoders over the whole
sequence with a banded causal mask and ``torch.cumsum`` statistics. It shares no state-keeping
code with the streamer, so the two agreeing is a test of the streamer's carried state.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .decoder import KVCache, biased_causal_bias
from .decoding import StyleSpec, _condition
from .motion_encoders import shift_right
from .streaming import StreamSettings, _Grid, fold, num_passes, style_code, style_end, window_features, window_mask
from .threads import single_thread


def _speech(model, wave: Tensor, grid: _Grid, style: StyleSpec) -> tuple[Tensor, Tensor]:
    """Content features a (1, k·T, d) hop by hop and the per-frame condition (1, T, d)."""
    n = wave.shape[1]
    total = grid.speech_frames(n)
    frames = model.num_motion_frames(n)
    feats, conds = [], []
    for f0 in range(0, frames, grid.hop):
        f1 = min(f0 + grid.hop, frames)
        w0, w1 = grid.window(f0, f1, total)
        a = window_features(model, wave[:, grid.stride * w0:], grid, f0, f1, w0, w1)
        s_a = style_code(model, wave[:, : style_end(grid, w1)])
        feats.append(a)
        conds.append(_condition(model, style, s_a, 1, a).expand(1, f1 - f0, -1))
    return torch.cat(feats, 1), torch.cat(conds, 1)


def _decoder_pass(model, extra: Tensor, memory: Tensor, window: int) -> Tensor:
    """One autoregressive pass over all frames; self-attention limited to the last ``window`` frames."""
    dec = model.decoder
    state = dec.prepare(memory)
    caches = [KVCache() for _ in dec.layers]
    w_fold, b_fold, first = fold(model)
    t_all = extra.shape[1]
    out = extra.new_empty(extra.shape)
    token = first + extra[:, :1]
    for t in range(t_all):
        x = dec.ppe(token, offset=t)
        bias = biased_causal_bias(dec.heads, 1, t + 1, dec.period, t, x.device, x.dtype)
        bias = bias.masked_fill(torch.arange(t, -1, -1, device=x.device) >= window, float("-inf"))
        for layer, (mk, mv), cache in zip(dec.layers, state.memory_kv, caches):
            x = layer(x, bias, mk, mv, t, cache)
        out[:, t: t + 1] = x
        if t + 1 < t_all:
            token = F.linear(x, w_fold, b_fold) + extra[:, t + 1: t + 2]
    return out


def _banded(transformer, x: Tensor, window: int) -> Tensor:
    pos = torch.arange(x.shape[1], device=x.device)
    mask = torch.zeros(x.shape[1], x.shape[1], device=x.device, dtype=x.dtype)
    mask = mask.masked_fill(~window_mask(pos, pos, window), float("-inf"))
    return transformer.encoder(transformer.ppe(x), mask=mask)


def _content(enc, g: Tensor, window: int) -> Tensor:
    x = enc.fc(g).transpose(1, 2)
    for conv, norm, act in enc.convs:
        x = act(norm(conv(x)))
    x = enc.up(enc.norm(x).transpose(1, 2))
    return enc.down(_banded(enc.transformer, x, window))


def _running_style(enc, g: Tensor, window: int) -> Tensor:
    x = enc.proj(g).transpose(1, 2)
    for conv in enc.convs:
        x = conv(x)
    x = enc.up(enc.norm(x.transpose(1, 2)))
    tokens = enc.down(_banded(enc.transformer, x, window))
    count = torch.arange(1, tokens.shape[1] + 1, device=g.device, dtype=tokens.dtype).view(1, -1, 1)
    return tokens.cumsum(1) / count


@torch.inference_mode()
def offline_windowed(model, wave: Tensor | np.ndarray, template: Tensor | np.ndarray,
                     style: StyleSpec | None = None, settings: StreamSettings | None = None) -> np.ndarray:
    """(T, V, 3) float32 vertices of 16-kHz mono ``wave`` under the stream windowing ``settings``."""
    with single_thread(model.device):
        return _offline(model, wave, template, style or StyleSpec(), settings)


def _offline(model, wave, template, style: StyleSpec, settings: StreamSettings | None) -> np.ndarray:
    grid = _Grid.of(model, settings or StreamSettings())
    wave = torch.as_tensor(np.asarray(wave, dtype=np.float32)).to(model.device).reshape(1, -1)
    a, cond = _speech(model, wave, grid, style)
    hidden = _decoder_pass(model, cond, a, grid.kv)
    head = model.vertice_decoder
    for _ in range(num_passes(model) - 1):
        disp = shift_right(F.linear(hidden, head.weight, head.bias).view(1, hidden.shape[1], -1, 3))
        g = model.motion_features(disp)
        extra = cond
        if model.content_motion is not None:
            extra = extra + _content(model.content_motion, g, grid.kv)
        if model.style_motion is not None and style.reference_style is None:
            extra = extra + style.strength * _running_style(model.style_motion, g, grid.kv)
        hidden = _decoder_pass(model, extra, a, grid.kv)
    tmpl = torch.as_tensor(np.asarray(template, dtype=np.float32)).to(model.device).reshape(1, -1)
    verts = F.linear(hidden[0], head.weight, head.bias) + tmpl
    return verts.view(hidden.shape[1], -1, 3).float().cpu().numpy()
