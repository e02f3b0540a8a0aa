"""Audio/motion alignment terms: the top-k bidirectional contrastive loss (Eq. 6-7) and the Gaussian KL
(Eq. 8) between frame-aligned audio and motion content."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import check_mask, fp32, zero

# ---------------------------------------------------------------------------
# 9: top-k bidirectional contrastive loss
# ---------------------------------------------------------------------------


def _topk_direction(E: Tensor, k: int, alpha: float, beta: float) -> Tensor:
    """Per-query loss ``(L,)`` for rows of ``E`` (``L x L``, positives on the diagonal)."""
    L = E.shape[0]
    eye = torch.eye(L, dtype=torch.bool, device=E.device)
    pos = E.diagonal()
    neg = E.masked_fill(eye, float("-inf")).topk(k, dim=1).values  # (L, k), all finite
    denom = torch.cat([pos.unsqueeze(1), neg + math.log(beta)], dim=1)
    return -alpha * (pos - torch.logsumexp(denom, dim=1))


@fp32
def topk_contrastive_loss(
    audio: Tensor,
    content: Tensor,
    mask: Optional[Tensor] = None,
    k: Optional[int] = None,
    k_ratio: float = 0.15,
    alpha: float = 1.5,
    beta: float = 0.7,
    lam: float = 0.5,
    temperature: float | Tensor = 0.07,
) -> Tensor:
    r"""Top-k bidirectional contrastive loss ``L_Top-k`` (paper Eq. 6-7) on frame-aligned
    features.

    ``audio`` and ``content`` are ``(B, T, D)`` and aligned frame by frame (for BIWI,
    pool the 50 Hz audio features to the 25 Hz motion rate first). Frames are the
    samples: contrast is within each sequence over its ``L`` valid frames. With
    ``a, c`` L2-normalised, ``E = a c^T / temperature`` (``L x L``). For query ``i``::

        l_i^{a->c} = -alpha * log( exp(E_ii) / (exp(E_ii) + beta * sum_{j in TopK_i} exp(E_ij)) )

    where ``TopK_i`` are the ``k`` largest ``E_ij`` over ``j != i``; ``c->a`` uses ``E^T``.
    ``L = lam * mean_i l^{a->c} + (1 - lam) * mean_i l^{c->a}``, the mean running over all
    valid queries of all sequences. Computed with ``logsumexp``.

    ``k = max(1, round(k_ratio * L))`` when ``k`` is None (Python ``round``), always capped
    at ``L - 1``. Sequences with ``L < 2`` contribute nothing; none left -> 0.

    Choices versus the paper: Eq. 6 puts only ``beta * sum_TopK exp(E_ij)`` in the
    denominator; the ratio can then exceed 1 and the loss is unbounded below (it
    rewards pushing negatives away without limit). Keeping the positive in the
    denominator (the usual InfoNCE form) makes every term >= 0 and equals the paper's
    intent "positive against its hardest negatives".

    Released-code bugs not reproduced (spec 2.2.8): the "positive" was read from the
    diagonal of the sorted ``L x k`` top-k value matrix (the r-th largest similarity of
    row r, not the matched key); only the first ``k`` rows contributed; audio (50 Hz) and
    motion (25 Hz) were truncated to the shorter length, misaligning frames; the
    temperature was an unclamped learnable parameter (here a fixed value; pass a
    positive tensor, e.g. ``log_tau.exp()``, to learn it); an extra
    ``0.001 (||a|| + ||c||)`` regulariser was added; argument names were swapped.
    """
    if audio.dim() != 3 or audio.shape[:2] != content.shape[:2]:
        raise ValueError(
            f"audio and content must be frame-aligned (B, T, D), got {tuple(audio.shape)}, {tuple(content.shape)}"
        )
    if audio.shape[-1] != content.shape[-1]:
        raise ValueError("audio and content must have the same feature size")
    if not 0.0 <= lam <= 1.0 or beta <= 0:
        raise ValueError("need 0 <= lam <= 1 and beta > 0")
    B, T, _ = audio.shape
    m = check_mask(mask, B, T, audio.device)
    a_all = F.normalize(audio.float(), dim=-1, eps=1e-8)
    c_all = F.normalize(content.float(), dim=-1, eps=1e-8)
    tau = temperature.float() if isinstance(temperature, Tensor) else float(temperature)
    total = zero(audio, content)
    n_queries = 0
    for b in range(B):
        idx = m[b].nonzero(as_tuple=True)[0]
        L = int(idx.numel())
        if L < 2:
            continue
        kb = max(1, int(round(k_ratio * L))) if k is None else int(k)
        kb = max(1, min(kb, L - 1))
        E = a_all[b, idx] @ c_all[b, idx].t() / tau
        l_ac = _topk_direction(E, kb, alpha, beta)
        l_ca = _topk_direction(E.t(), kb, alpha, beta)
        total = total + (lam * l_ac + (1.0 - lam) * l_ca).sum()
        n_queries += L
    if n_queries == 0:
        return total
    return total / n_queries


# ---------------------------------------------------------------------------
# 10: KL divergence between Gaussian fits of audio and motion content
# ---------------------------------------------------------------------------


@fp32
def kl_loss(
    audio: Tensor, content: Tensor, mask: Optional[Tensor] = None, eps: float = 1e-6
) -> Tensor:
    r"""Gaussian KL from audio to motion content, per feature dimension (paper Eq. 8)::

        L_KL = 1/2 sum_d [ log(var_c/var_a) + (var_a + (mu_a - mu_c)^2) / var_c - 1 ]

    i.e. ``KL(N(mu_a, var_a) || N(mu_c, var_c))`` summed over ``d``, where ``mu``, ``var``
    are the mean and the unbiased variance over the valid frames of each sequence
    (``+ eps`` on both variances, as the code). Mean over sequences; sequences with fewer
    than 2 valid frames are skipped (no unbiased variance); none left -> 0.

    Inputs are frame-aligned ``(B, T, D)`` with a shared mask. Released code: the same
    formula on ``(a_{1:S}, c_{1:T})`` truncated to ``min(S, T)`` frames, which misaligns
    50 Hz audio and 25 Hz motion for BIWI (spec 2.2.9) -- align before calling.
    """
    if audio.dim() != 3 or audio.shape != content.shape:
        raise ValueError(
            f"audio and content must both be (B, T, D), got {tuple(audio.shape)}, {tuple(content.shape)}"
        )
    B, T, _ = audio.shape
    m = check_mask(mask, B, T, audio.device).float().unsqueeze(-1)  # (B, T, 1)
    n = m.sum(1)  # (B, 1)
    keep = n[:, 0] >= 2
    if int(keep.sum()) == 0:
        return zero(audio, content)

    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        mu = (x * m).sum(1) / n.clamp_min(1.0)
        var = ((x - mu.unsqueeze(1)).pow(2) * m).sum(1) / (n - 1.0).clamp_min(1.0)
        return mu, var + eps

    mu_a, var_a = stats(audio.float())
    mu_c, var_c = stats(content.float())
    # skipped sequences get a harmless N(0, 1) so they cannot inject NaN (even with eps=0)
    k2 = keep.unsqueeze(-1)
    one = torch.ones_like(var_a)
    mu_a, mu_c = torch.where(k2, mu_a, 0.0 * mu_a), torch.where(k2, mu_c, 0.0 * mu_c)
    var_a, var_c = torch.where(k2, var_a, one), torch.where(k2, var_c, one)
    kl = 0.5 * (torch.log(var_c / var_a) + (var_a + (mu_a - mu_c).pow(2)) / var_c - 1.0)
    kl = kl.sum(-1)  # (B,)
    kf = keep.float()
    return (kl * kf).sum() / kf.sum()
