"""Identity terms: the adversarial speaker classifier behind gradient reversal (Eq. 1) and the style
cosine consistency (Eq. 2-3)."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import fp32, zero

# ---------------------------------------------------------------------------
# 4: gradient reversal + adversarial identity classifier
# ---------------------------------------------------------------------------


class GradReverse(torch.autograd.Function):
    """Identity in the forward pass, gradient multiplied by ``-alpha`` in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:  # type: ignore[override]
        ctx.alpha = float(alpha)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # type: ignore[override]
        return -ctx.alpha * grad_output, None


def grad_reverse(x: Tensor, alpha: float = 1.0) -> Tensor:
    r"""Gradient reversal layer ``GRL(x, alpha)`` (paper Eq. 1, code ``alpha_c = 1.0``).

    Forward: ``y = x``. Backward: ``dL/dx = -alpha * dL/dy``. Placed between the content
    features and the identity classifier so that the classifier learns to predict the
    identity while the encoder learns to remove it.
    """
    return GradReverse.apply(x, alpha)


@fp32
def adversarial_loss(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Identity classification loss ``L_adv = CE(C(GRL(a_c)), y)`` (paper Eq. 1).

    ``logits``: ``(B, N_id)`` classifier output (apply :func:`grad_reverse` to its input
    beforehand); ``labels``: ``(B,)`` integer identity ids, ``-1`` = ignore (unseen
    subject, no class). Mean over the non-ignored samples; all ignored -> 0.

    Released code: only on the audio content (time mean of ``a_{1:S}``), classifier
    ``Linear(d, N_id)``, label = argmax of the one-hot; no branch on the motion content.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, N_id), got {tuple(logits.shape)}")
    labels = torch.as_tensor(labels, device=logits.device).long().reshape(-1)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError("logits and labels disagree on the batch size")
    valid = labels != -1
    n = int(valid.sum())
    if n == 0:
        return zero(logits)
    if int(labels[valid].min()) < 0 or int(labels[valid].max()) >= logits.shape[1]:
        raise ValueError(f"labels must be -1 or in [0, {logits.shape[1] - 1}]")
    ce = F.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum")
    return ce / n


# ---------------------------------------------------------------------------
# 5: style cosine similarity
# ---------------------------------------------------------------------------


@fp32
def style_cosine_loss(
    s_a: Optional[Tensor],
    s_m: Optional[Tensor],
    s_p: Optional[Tensor],
    weights: Sequence[float] = (1.0, 1.0, 1.0),
) -> Tensor:
    r"""Style consistency loss ``L_cos`` (paper Eq. 2-3)::

        L_cos = w1 (1 - cos(s_a, s_m)) + w2 (1 - cos(s_a, s_p)) + w3 (1 - cos(s_m, s_p))

    averaged over the batch. ``s_a``, ``s_m``, ``s_p``: audio, motion and identity
    style vectors ``(B, D)`` (a 1-D ``(D,)`` vector is treated as ``B = 1``). Any argument
    may be ``None``; the terms that use it are skipped (fewer than two given -> 0).

    Released code: a function of this form (equal weights) exists but is never called;
    the paper describes and ablates it but leaves it out of its total Eq. 14.
    """
    w1, w2, w3 = (float(w) for w in weights)

    def prep(s):
        if s is None:
            return None
        s = s.float()
        return s.unsqueeze(0) if s.dim() == 1 else s

    a, m, p = prep(s_a), prep(s_m), prep(s_p)
    total = zero(a, m, p)
    for w, x, y in ((w1, a, m), (w2, a, p), (w3, m, p)):
        if x is None or y is None:
            continue
        if x.shape != y.shape:
            raise ValueError(f"style vectors differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        total = total + w * (1.0 - F.cosine_similarity(x, y, dim=-1, eps=1e-8)).mean()
    return total
