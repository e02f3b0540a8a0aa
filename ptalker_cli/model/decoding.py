"""The inference engine: audio → motion with a trained :class:`~.network.PTalker`.

:func:`generate` = :func:`encode_speech` (the speech encoders: content features a, audio
style s_a) then :func:`decode_motion`: a first pass decoded with the identity / audio (and
reference) style, then ``refine_passes`` styled passes that re-encode the previous pass's
motion with E_G and the motion encoders (causal, batched over all frames) and decode again
with the motion content and running motion style (docs/inference.md). The network binds these
functions as its methods (``model.generate(...)``).

Each pass is one :func:`autoregressive_pass`, which takes one of three routes:

* the fused C kernel (CPU float32, no autograd; :mod:`.native_decoder`) — the whole pass in one call;
* the cached PyTorch loop (key/value cache, ``embed ∘ head`` folded into one d×d map);
* ``use_cache=False``: the whole prefix recomputed every step (slow reference).

``ModelConfig.inference_form == "released"`` takes the fourth route instead: the released
code's loops (:mod:`.released`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import PtalkerError
from .audio_encoders import normalize_audio
from .native_decoder import decode_pass as native_decode_pass
from .released import released_decode_motion
from .speech_chunks import ChunkingConfig, audio_style_code, content_features
from .threads import single_thread

if TYPE_CHECKING:  # pragma: no cover
    from .network import PTalker


#: Allowed ``StyleSpec.strength``. Training only ever adds the personal style parts s_p and s_m at
#: scale 1, or 0 (identity_dropout / motion_dropout), so [0, 1] interpolates between what the model
#: saw; up to 2 exaggerates the style. Beyond that the style code is extrapolated far outside training,
#: and a negative strength inverts the personal style: neither means anything.
STYLE_STRENGTH_RANGE = (0.0, 2.0)


def check_style_strength(value: float) -> float:
    """``value`` as a float when it lies in :data:`STYLE_STRENGTH_RANGE`, else a one-line :class:`PtalkerError`."""
    lo, hi = STYLE_STRENGTH_RANGE
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = math.nan
    if not lo <= x <= hi:  # NaN fails too
        raise PtalkerError(f"style strength {value} is outside [{lo:g}, {hi:g}]: 0 keeps only the audio style, "
                           f"1 is the learned style, {hi:g} exaggerates it")
    return x


@dataclass
class StyleSpec:
    """How to style a generation.

    ``subject_weights`` (B, N): a one-hot (seen subject), a blend over training
    subjects, or None / zeros (unseen subject: style from audio alone).
    ``reference_style`` (B, d): a motion style code from a reference motion.
    ``strength`` scales the personal parts (s_p and s_m) of the style code, within
    :data:`STYLE_STRENGTH_RANGE` (checked here).
    ``reference_motion`` (B, T, V, 3): the reference motion itself (absolute vertices); only
    ``inference_form="released"`` uses it (its first frame starts the decoder, spec §3.3).
    """

    subject_weights: Tensor | None = None
    reference_style: Tensor | None = None
    strength: float = 1.0
    reference_motion: Tensor | None = None

    def __post_init__(self) -> None:
        self.strength = check_style_strength(self.strength)


@torch.inference_mode()
def generate(model: "PTalker", audio: Tensor, template: Tensor, style: StyleSpec | None = None,
             audio_lengths: Tensor | None = None, use_cache: bool = True,
             refine_passes: int | None = None, chunking: ChunkingConfig | None = None) -> Tensor:
    """Animate (B, L) 16-kHz waveforms → (B, T, V, 3) vertices, T = the audio's motion frames.

    Pass 1 decodes with the identity/audio (and reference) style; each refinement
    pass re-encodes the previous pass's motion with E_G and the motion encoders
    (causal, batched over all frames) and decodes again with the motion content
    and running motion style. Each pass is linear in length with the KV cache.
    ``use_cache=False`` recomputes the whole prefix every step (slow reference).
    """
    feats = encode_speech(model, audio, audio_lengths, chunking)
    return decode_motion(model, feats, template, style, use_cache, refine_passes)


@torch.inference_mode()
def encode_speech(model: "PTalker", audio: Tensor, audio_lengths: Tensor | None = None,
                  chunking: ChunkingConfig | None = None) -> dict[str, Tensor | None]:
    """The speech encoders' part of :func:`generate`: content features a, audio style s_a.

    Long audio goes through the encoders in windows (:mod:`.speech_chunks`; ``chunking`` None =
    each encoder kind's default, ``ChunkingConfig.full_context()`` = never split).
    """
    b = audio.shape[0]
    if audio_lengths is None:
        audio_lengths = torch.full((b,), audio.shape[1], dtype=torch.long, device=audio.device)
    t = model.num_motion_frames(int(audio_lengths.max()))
    if t <= 0:
        raise ValueError("audio too short to produce a motion frame")
    frame_lengths = torch.tensor([model.num_motion_frames(int(n)) for n in audio_lengths], device=audio.device)
    wave = normalize_audio(audio, audio_lengths)
    a = content_features(model, wave, audio_lengths, t, frame_lengths, chunking)
    s_a = audio_style_code(model, wave, audio_lengths, chunking)
    return {"audio_content": a, "s_a": s_a, "frame_lengths": frame_lengths}


def _condition(model: "PTalker", style: StyleSpec, s_a: Tensor | None, b: int, like: Tensor) -> Tensor:
    """(B, 1, d) added to every token of every pass: start token + strength·s_p + s_a (+ strength·reference)."""
    weights = style.subject_weights
    if weights is None:
        weights = torch.zeros(b, max(model.config.num_subjects, 1), device=like.device)
    s_p = model.identity(weights.to(like.device, like.dtype))
    cond = model.start_token + style.strength * s_p.unsqueeze(1)
    if s_a is not None:
        cond = cond + s_a.unsqueeze(1)
    if style.reference_style is not None and model.style_motion is not None:
        cond = cond + style.strength * style.reference_style.unsqueeze(1)
    return cond


@torch.inference_mode()
def decode_motion(model: "PTalker", feats: dict[str, Tensor | None], template: Tensor,
                  style: StyleSpec | None = None, use_cache: bool = True,
                  refine_passes: int | None = None) -> Tensor:
    """Everything after the speech encoders: decoder passes, E_G, motion encoders, output head."""
    style = style or StyleSpec()
    if model.config.inference_form == "released":  # the released predict_* loops (use_cache/refine ignored)
        return released_decode_motion(model, feats, template, style)
    hidden = decode_hidden(model, feats, style, use_cache, refine_passes)
    return apply_head(model, hidden, template)


@torch.inference_mode()
def apply_head(model: "PTalker", hidden: Tensor, template: Tensor) -> Tensor:
    """The output head on hidden states (B, n, d) → vertices (B, n, V, 3), the template folded into its bias:
    one pass over the (n, 3V) output."""
    b, n = hidden.shape[:2]
    head = model.vertice_decoder
    bias = head.bias.unsqueeze(0) + template.reshape(b, 1, -1)  # (B, 1, 3V)
    return torch.baddbmm(bias, hidden, head.weight.t().expand(b, -1, -1)).view(b, n, -1, 3)


@torch.inference_mode()
def decode_hidden(model: "PTalker", feats: dict[str, Tensor | None], style: StyleSpec | None = None,
                  use_cache: bool = True, refine_passes: int | None = None) -> Tensor:
    """:func:`decode_motion` up to the output head: the last pass's hidden states (B, T, d), small
    next to the (B, T, V, 3) vertices (``model/vertex_blocks.py`` applies the head block by block)."""
    style = style or StyleSpec()
    a, s_a, frame_lengths = feats["audio_content"], feats["s_a"], feats["frame_lengths"]
    b, t = a.shape[0], a.shape[1] // model.k
    cond = _condition(model, style, s_a, b, a)
    passes = model.config.refine_passes if refine_passes is None else refine_passes
    if model.content_motion is None and model.style_motion is None:
        passes = 0
    hidden = autoregressive_pass(model, cond.expand(b, t, -1), a, use_cache)
    frame_mask = torch.arange(t, device=a.device).unsqueeze(0) < frame_lengths.unsqueeze(1)
    for _ in range(passes):
        c, _, running, _ = refine_codes(model, hidden, frame_mask)
        extra = cond.expand(b, t, -1)
        if c is not None:
            extra = extra + c
        if running is not None and style.reference_style is None:
            extra = extra + style.strength * running
        hidden = autoregressive_pass(model, extra, a, use_cache)
    return hidden


#: Frames per block when a refinement pass re-encodes the previous pass's motion: the (3V × block)
#: displacements are its largest buffer, whatever the length. A multiple of the graph encoder's own
#: chunks (32 frames, 256 on the fused path), so the result is the same as in one block, bit for bit.
REFINE_BLOCK_FRAMES = 512


def refine_codes(model: "PTalker", hidden: Tensor, frame_mask: Tensor):
    """The motion codes of the motion a pass decoded (its frames shifted by one).

    The displacements are made and encoded (E_G, frame by frame) in blocks of
    :data:`REFINE_BLOCK_FRAMES`; only the (T, features) result is whole. On the fused CPU path the
    shifted displacements are produced directly in the graph encoder's vertex-major layout —
    W (3V × d) @ [0, h_0 … h_{T−2}] — which saves the shift and the transpose; the result is the same.
    """
    if model.content_motion is None and model.style_motion is None:
        return None, None, None, None
    t = hidden.shape[1]
    g_enc = model.graph_encoder
    native = g_enc is not None and hidden.shape[0] == 1 and g_enc.native_vertex_major_ok(hidden)
    step = REFINE_BLOCK_FRAMES
    g = [_shifted_features(model, hidden, i, min(i + step, t), native) for i in range(0, t, step)]
    return model.codes_from_features(g[0] if len(g) == 1 else torch.cat(g, dim=1), frame_mask)


def _shifted_features(model: "PTalker", hidden: Tensor, i: int, j: int, native: bool) -> Tensor:
    """Motion features (B, j − i, F) of frames i..j−1 of the motion shifted right by one (frame −1: zero)."""
    b, _, d = hidden.shape
    n, head = j - i, model.vertice_decoder
    prev = hidden[:, max(i - 1, 0): j - 1]
    if i == 0:
        prev = torch.cat([hidden.new_zeros(b, 1, d), prev], dim=1)
    if not native:
        disp = head(prev).view(b, n, -1, 3)
        if i == 0:
            disp[:, 0] = 0.0
        return model.motion_features(disp)
    size = head.weight.shape[0] * n
    ws = model.__dict__.get("_refine_workspace")
    if ws is None or ws.numel() < size or ws.dtype != hidden.dtype:
        ws = torch.empty(size, dtype=hidden.dtype)  # reused: first-touch page faults cost as much as the product
        model.__dict__["_refine_workspace"] = ws
    disp_vm = ws[:size].view(-1, n)
    torch.addmm(head.bias.unsqueeze(1), head.weight, prev[0].t(), out=disp_vm)  # (3V, n) = (V, 3, n)
    if i == 0:
        disp_vm[:, 0] = 0.0  # frame −1 is a zero displacement
    return model.graph_encoder.encode_vertex_major(disp_vm.view(-1, 3, n)).unsqueeze(0)


def autoregressive_pass(model: "PTalker", extra: Tensor, memory: Tensor, use_cache: bool) -> Tensor:
    """One decoder pass: token_t = embed(previous frame) + extra_t → hidden states (B, T, d).

    With the cache, embed(head(h)) is folded into one d×d map (both are linear), so
    each step costs O(t·d) attention plus O(d²) — no V-sized work in the loop.
    """
    b, t, d = extra.shape
    enc, head = model.vertice_encoder, model.vertice_decoder
    w_fold = enc.weight @ head.weight  # (d, d)
    b_fold = enc.weight @ head.bias + enc.bias
    first = enc.bias  # embedding of a zero displacement
    if not use_cache:
        tokens = (first + extra[:, :1]).clone()
        outs = []
        for i in range(t):
            h = model.decoder(tokens, memory)[:, -1:]
            outs.append(h)
            if i + 1 < t:
                tokens = torch.cat([tokens, enc(head(h)) + extra[:, i + 1: i + 2]], dim=1)
        return torch.cat(outs, dim=1)
    state = model.decoder.prepare(memory)
    token = first + extra[:, :1]
    if not (torch.is_grad_enabled() and (w_fold.requires_grad or extra.requires_grad or any(
            p.requires_grad for p in model.decoder.parameters()) or memory.requires_grad)):
        # the whole pass in one fused C call (CPU float32, eval, no autograd); None when
        # it does not apply (or PTALKER_NO_NATIVE=1 / no compiler): the loop below
        out = native_decode_pass(model.decoder, state, token, extra, w_fold, b_fold)
        if out is not None:
            return out
    out = extra.new_empty(b, t, d)
    with single_thread(memory.device):
        for i in range(t):
            h = model.decoder.step(token, state)
            out[:, i: i + 1] = h
            if i + 1 < t:
                token = F.linear(h, w_fold, b_fold) + extra[:, i + 1: i + 2]
    return out
