"""The released PTalker code's inference loops (``wangryhen/PTalker``, spec §3.1–3.3).

Used by :func:`.decoding.decode_motion` when ``ModelConfig.inference_form == "released"``
(the configuration ``ptalker convert`` writes), so that a converted checkpoint animates
exactly as the authors' ``predict_seen`` / ``predict_unseen`` / ``predict_with_ref_motion``
do. The token list ``E`` is built as the released code builds it:

====================  ==========================  =====================  ============================
mode                  stored first token E_0      decoder input, step 0  token appended at step i
====================  ==========================  =====================  ============================
seen (one-hot/blend)  s_p                         PPE(s_p + s_a)         enc(ŷ_i) + s_p + s_a (+ s_m)
unseen (no weights)   start_token + s_a           PPE(E_0)               enc(ŷ_i) + s_a (+ s_m)
reference motion      enc(first reference frame)  PPE(E_0)               enc(ŷ_i) + s_a (+ s_m)
====================  ==========================  =====================  ============================

``enc`` is the vertex encoder (``Linear(3V, d)`` with its bias), ``ŷ_i`` the head output of
the last position at step i (a displacement: the template is only added at the end), and
``s_m = mean_t E_m^s(PPE(E_{0..i}))`` — the motion style encoder run on the decoder's own
PPE'd input tokens of the prefix — is added for i ≥ 1 only. Every step re-runs the decoder
over the whole prefix (``PPE(E)``, biased causal mask, alignment mask); the result is the
last step's decoder output for **all** positions through the head, plus the template. In
``predict_seen`` the stored first token lacks s_a, so position 0 of the result differs from
the step-0 output that produced token 1 — reproduced here.

Cost: O(T²) decoder and motion-style-encoder work (the style encoder is bidirectional and
must see the whole prefix at every step); only the last position goes through the output
head inside the loop. There is no length cap (the released code stops at 600 frames).
``s_p`` and ``s_m`` are multiplied by ``StyleSpec.strength`` (1 = released). A batch is
decoded in lock-step; each row's frames before its own end are exactly what decoding it
alone gives (the decoder is causal and the prefix always has the same length).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import ConfigError
from .decoder import MotionDecoder, biased_causal_bias
from .threads import single_thread

if TYPE_CHECKING:  # pragma: no cover
    from .decoding import StyleSpec
    from .network import PTalker


def _prefix_pass(decoder: MotionDecoder, tokens: Tensor, memory_kv, bias: Tensor) -> Tensor:
    """The decoder over a whole prefix: PPE(tokens), self-attention under ``bias[:, :n, :n]``."""
    x = decoder.ppe(tokens)
    n = x.shape[1]
    b = bias[:, :n, :n]
    for layer, (mk, mv) in zip(decoder.layers, memory_kv):
        x = layer(x, b, mk, mv, 0, None)
    return x


def released_first_tokens(model: "PTalker", style: "StyleSpec", s_a: Tensor | None, b: int, device, dtype):
    """(stored E_0, decoder input at step 0, term added to every new token), each (B, 1, d), per row's mode."""
    d = model.config.feature_dim
    sa = s_a.unsqueeze(1).to(dtype) if s_a is not None else torch.zeros(b, 1, d, device=device, dtype=dtype)
    if style.reference_motion is not None:  # predict_with_ref_motion: raw first frame, no identity
        ref = style.reference_motion.to(device, dtype)
        frame0 = ref[:, 0].reshape(ref.shape[0], -1)
        if frame0.shape != (b, 3 * model.config.num_vertices):
            raise ConfigError(f"reference motion has shape {tuple(ref.shape)}; expected (B, T, V, 3) with B = {b} "
                              f"and V = {model.config.num_vertices}")
        first = model.vertice_encoder(frame0).unsqueeze(1)
        return first, first, sa
    if style.reference_style is not None:
        raise ConfigError("inference_form='released' starts from a reference motion's first frame: pass "
                          "StyleSpec.reference_motion (a style code alone is not enough)")
    weights = style.subject_weights
    if weights is None:
        weights = torch.zeros(b, max(model.config.num_subjects, 1), device=device, dtype=dtype)
    weights = weights.to(device, dtype)
    s_p = style.strength * model.identity(weights).unsqueeze(1)
    seen = (weights.abs().sum(-1) > 0).view(b, 1, 1)  # predict_seen rows; the others predict_unseen
    unseen_first = model.start_token.to(dtype).expand(b, 1, d) + sa
    stored = torch.where(seen, s_p, unseen_first)
    step0 = torch.where(seen, s_p + sa, unseen_first)
    add = torch.where(seen, s_p + sa, sa)
    return stored, step0, add


def released_decode_motion(model: "PTalker", feats: dict, template: Tensor, style: "StyleSpec") -> Tensor:
    """The released inference loop on encoded speech → (B, T, V, 3) vertices (see the module notes)."""
    a, s_a = feats["audio_content"], feats["s_a"]
    b, t = a.shape[0], a.shape[1] // model.k
    decoder = model.decoder
    stored, step0, add = released_first_tokens(model, style, s_a, b, a.device, a.dtype)
    memory_kv = decoder.prepare(a).memory_kv  # cross-attention keys/values of the utterance, once
    bias = biased_causal_bias(decoder.heads, t, t, decoder.period, 0, a.device, a.dtype)
    tokens = stored
    hidden = None
    with single_thread(a.device):  # many small ops per step: one CPU thread is several times faster
        for i in range(t):
            inputs = step0 if i == 0 else tokens
            hidden = _prefix_pass(decoder, inputs, memory_kv, bias)
            if i + 1 == t:
                break
            new = model.vertice_encoder(model.vertice_decoder(hidden[:, -1:])) + add
            if i >= 1 and model.style_motion is not None:
                s_m = model.style_motion(decoder.ppe(inputs))[2]  # E_m^s on the PPE'd prefix tokens, clip mean
                new = new + style.strength * s_m.unsqueeze(1)
            tokens = torch.cat([tokens, new], dim=1)
    return model.vertice_decoder(hidden).view(b, t, -1, 3) + template.unsqueeze(1)
