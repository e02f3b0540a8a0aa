"""Disentanglement terms: content/style orthogonality (Eq. 4), InfoNCE (Eq. 5) and the CLUB upper bound
on mutual information."""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_mask, fp32, masked_time_mean, zero

# ---------------------------------------------------------------------------
# 6: orthogonality
# ---------------------------------------------------------------------------


@fp32
def pool_to_length(x: Tensor, length: int, mask: Optional[Tensor] = None) -> Tensor:
    r"""Adaptive average pooling along time: ``(B, T, D) -> (B, length, D)``.

    Frame ``i`` of the output averages input frames
    ``floor(i*L/length) .. ceil((i+1)*L/length) - 1`` (``torch``'s
    ``adaptive_avg_pool1d``); when ``length > L`` this repeats frames (upsampling), which
    is how the released code equalises the lengths of two sequences.

    With a mask, only the ``L_b`` valid frames of item ``b`` are resampled (padding is
    dropped first); an item with no valid frame gives zeros.
    """
    if x.dim() != 3:
        raise ValueError(f"x must be (B, T, D), got {tuple(x.shape)}")
    length = int(length)
    if length < 1:
        raise ValueError("length must be >= 1")
    B, T, D = x.shape
    x = x.float()
    if mask is None:
        if T == 0:
            return x.new_zeros(B, length, D)
        return F.adaptive_avg_pool1d(x.transpose(1, 2), length).transpose(1, 2)
    m = check_mask(mask, B, T, x.device)
    outs = []
    for b in range(B):
        xb = x[b][m[b]]  # (L_b, D)
        if xb.shape[0] == 0:
            outs.append(x.new_zeros(length, D) + 0.0 * x[b].sum())
        else:
            outs.append(F.adaptive_avg_pool1d(xb.t().unsqueeze(0), length)[0].t())
    return torch.stack(outs, 0)


@fp32
def orthogonality_loss(
    content: Tensor,
    style: Tensor,
    form: str = "norm",
    content_mask: Optional[Tensor] = None,
    style_mask: Optional[Tensor] = None,
) -> Tensor:
    r"""Content/style orthogonality loss ``L_orth``.

    ``content`` ``(B, F_c, D_c)`` and ``style`` ``(B, F_s, D_s)`` are brought to a common
    length ``F = max(F_c, F_s)`` with :func:`pool_to_length` (the shorter is resampled to
    the longer, as in the released code; with masks, per item, ``F_b`` = the larger of
    its two valid lengths, so padding never changes the value). Per item
    ``P = C^T S`` (``D_c x D_s``).

    * ``form="norm"`` (default; released code): ``L = (1/B) sum_b ||P_b||_F``.
    * ``form="procrustes"`` (paper Eq. 4 as printed): ``L = (1/B) sum_b ||P_b P_b^T - I||_F``.

    Why ``"norm"`` is the default (spec 2.2.6): the paper's text wants the inner products
    between content and style features to vanish, which is what minimising ``||P||_F``
    does. The Procrustes form instead drives ``P`` towards a matrix with orthonormal
    rows -- a different objective, whose minimum (0) is only reachable when
    ``D_c <= D_s`` -- and which *penalises* exactly orthogonal (``P = 0``) features.

    Items where either sequence has no valid frame are skipped; the mean is over the
    remaining items (``= B`` without masks); none left -> 0.
    """
    if form not in ("norm", "procrustes"):
        raise ValueError(f"form must be 'norm' or 'procrustes', got {form!r}")
    if content.dim() != 3 or style.dim() != 3 or content.shape[0] != style.shape[0]:
        raise ValueError(
            f"content and style must be (B, F, D) with equal B, got {tuple(content.shape)}, {tuple(style.shape)}"
        )
    B, Fc, Dc = content.shape
    Fs = style.shape[1]
    c_all, s_all = content.float(), style.float()
    if content_mask is None and style_mask is None:
        L = max(Fc, Fs)
        if L == 0 or B == 0:
            return zero(content, style)
        C = pool_to_length(c_all, L)
        S = pool_to_length(s_all, L)
        P = C.transpose(1, 2) @ S  # (B, Dc, Ds)
        return _orth_reduce(P, form).mean()
    cm = check_mask(content_mask, B, Fc, content.device)
    sm = check_mask(style_mask, B, Fs, style.device)
    terms = []
    for b in range(B):
        lc, ls = int(cm[b].sum()), int(sm[b].sum())
        if lc == 0 or ls == 0:
            continue
        L = max(lc, ls)
        C = pool_to_length(c_all[b : b + 1], L, cm[b : b + 1])
        S = pool_to_length(s_all[b : b + 1], L, sm[b : b + 1])
        terms.append(_orth_reduce(C.transpose(1, 2) @ S, form))
    if not terms:
        return zero(content, style)
    return torch.cat(terms).mean()


def _orth_reduce(P: Tensor, form: str) -> Tensor:
    """Per-item Frobenius norm of ``P`` or of ``P P^T - I``: ``(B, Dc, Ds) -> (B,)``."""
    if form == "norm":
        M = P
    else:
        eye = torch.eye(P.shape[1], dtype=P.dtype, device=P.device)
        M = P @ P.transpose(1, 2) - eye
    return torch.linalg.matrix_norm(M, ord="fro")


# ---------------------------------------------------------------------------
# 7: InfoNCE (as written in the paper)
# ---------------------------------------------------------------------------


@fp32
def infonce_loss(
    content: Tensor,
    style: Tensor,
    temperature: float = 0.1,
    content_mask: Optional[Tensor] = None,
    style_mask: Optional[Tensor] = None,
) -> Tensor:
    r"""InfoNCE between content and style, paper Eq. 5 as written::

        L_Info = -(1/B) sum_i log[ exp(sim(a_i, c_i)/tau) / sum_j exp(sim(a_i, c_j)/tau) ]

    Each sequence ``(B, T, D)`` is averaged over its valid frames to one vector per
    sample; ``sim`` is the cosine similarity (``B x B`` matrix), divided by ``tau``
    (code: 0.1); cross-entropy with the diagonal as positives. Samples with no valid
    frame in either sequence are dropped. Both feature sizes must match.

    Caveats (spec 2.2.7, 6.1 #8):

    * at ``B = 1`` the logit vector has one entry, so the loss is **exactly 0 with zero
      gradient** -- the released training (batch size 1) never uses it;
    * minimising InfoNCE makes matched pairs *more* similar, i.e. it *raises* a lower
      bound on the mutual information; it does not minimise MI. For actual MI
      minimisation use :class:`CLUBEstimator`.

    Released code: the two sequences are first adaptive-pooled to equal length and then
    averaged; pooling with frame repetition reweights frames slightly, so here the plain
    mean over valid frames is used.
    """
    if content.dim() != 3 or style.dim() != 3 or content.shape[0] != style.shape[0]:
        raise ValueError("content and style must be (B, T, D) with equal B")
    if content.shape[-1] != style.shape[-1]:
        raise ValueError(
            f"infonce_loss needs equal feature sizes, got {content.shape[-1]} and {style.shape[-1]}"
        )
    c, hc = masked_time_mean(content.float(), content_mask)
    s, hs = masked_time_mean(style.float(), style_mask)
    keep = hc & hs
    if int(keep.sum()) == 0:
        return zero(content, style)
    c, s = c[keep], s[keep]
    sim = F.normalize(c, dim=-1, eps=1e-8) @ F.normalize(s, dim=-1, eps=1e-8).t()
    logits = sim / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, target)


# ---------------------------------------------------------------------------
# 8: CLUB upper bound on mutual information
# ---------------------------------------------------------------------------


class CLUBEstimator(nn.Module):
    r"""CLUB: contrastive log-ratio upper bound of mutual information
    (Cheng et al., ICML 2020, "CLUB: A Contrastive Log-ratio Upper Bound of Mutual
    Information").

    A variational ``q(y|x) = N(y; mu(x), diag(exp(logvar(x))))`` with two MLPs
    ``Linear(Dx, hidden) -> ReLU -> Linear(hidden, Dy)`` (the logvar head ends in
    ``tanh``, as in the reference implementation, so ``logvar`` is in ``(-1, 1)``).

    Training protocol (two players):

    * the estimator is fitted by minimising :meth:`learning_loss` ``= -log_likelihood``
      on *detached* ``x, y``;
    * the model minimises :meth:`forward`, the MI upper-bound estimate::

          I_CLUB = mean_i log q(y_i|x_i) - mean_{i,j} log q(y_j|x_i)
                 = mean_i sum_d [ -(y_i - mu_i)^2 + mean_j (y_j - mu_i)^2 ]_d / (2 var_{i,d})

      (closed form of the paper: the log-variance and ``log 2 pi`` terms cancel).

    Samples are rows of ``(N, D)`` tensors; a ``(B, T, D)`` input with an optional
    ``(B, T)`` mask is flattened to its valid frames, so batch size 1 works (frames are
    the samples). ``N <= 1`` -> 0.

    Difference from the CLUB reference code: :meth:`log_likelihood` returns the true
    Gaussian log-density (with the ``1/2`` factor and ``-log(2 pi)/2``), the reference
    code drops both; the fitted ``q`` is the same. The reference code splits
    ``hidden_size // 2``; here ``hidden_size`` is the hidden width.
    """

    def __init__(self, x_dim: int, y_dim: int, hidden_size: int = 128):
        super().__init__()
        self.x_dim, self.y_dim = int(x_dim), int(y_dim)
        self.p_mu = nn.Sequential(
            nn.Linear(x_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, y_dim)
        )
        self.p_logvar = nn.Sequential(
            nn.Linear(x_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, y_dim), nn.Tanh()
        )

    @staticmethod
    def _flatten(x: Tensor, y: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        if x.dim() == 3:
            if y.dim() != 3 or x.shape[:2] != y.shape[:2]:
                raise ValueError("x and y must share (B, T) when given as sequences")
            B, T = x.shape[:2]
            m = check_mask(mask, B, T, x.device)
            return x[m], y[m]
        if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
            raise ValueError("x and y must be (N, Dx) and (N, Dy)")
        if mask is not None:
            m = mask.reshape(-1).to(device=x.device, dtype=torch.bool)
            return x[m], y[m]
        return x, y

    def get_mu_logvar(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.p_mu(x), self.p_logvar(x)

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # run the MLPs in float32 (parameters may be float32 while x is half under autocast)
        dtype = next(self.parameters()).dtype
        mu, logvar = self.get_mu_logvar(x.to(dtype))
        return mu.float(), logvar.float()

    def log_likelihood(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """``mean_i log q(y_i | x_i)`` (to be maximised when fitting ``q``)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, y = self._flatten(x, y, mask)
            if x.shape[0] == 0:
                return zero(x, y, *self.parameters())
            mu, logvar = self._params(x)
            y = y.float()
            ll = -0.5 * ((y - mu).pow(2) / logvar.exp() + logvar + math.log(2 * math.pi))
            return ll.sum(-1).mean()

    def learning_loss(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Loss for fitting ``q``: ``-log_likelihood(x.detach(), y.detach())``."""
        return -self.log_likelihood(x.detach(), y.detach(), mask)

    def forward(self, x: Tensor, y: Tensor, mask: Optional[Tensor] = None) -> Tensor:  # type: ignore[override]
        """MI upper-bound estimate (to be minimised by the model)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, y = self._flatten(x, y, mask)
            if x.shape[0] <= 1:
                return zero(x, y)
            mu, logvar = self._params(x)
            y = y.float()
            inv2var = 0.5 / logvar.exp()  # (N, Dy)
            positive = -(y - mu).pow(2) * inv2var  # (N, Dy)
            # mean_j (y_j - mu_i)^2 = mean_j y_j^2 - 2 mu_i mean_j y_j + mu_i^2  (O(N D) memory)
            y_mean = y.mean(0, keepdim=True)
            y2_mean = y.pow(2).mean(0, keepdim=True)
            negative = -(y2_mean - 2.0 * mu * y_mean + mu.pow(2)) * inv2var
            return (positive.sum(-1) - negative.sum(-1)).mean()


def mi_upper_bound_loss(
    estimator: CLUBEstimator, x: Tensor, y: Tensor, mask: Optional[Tensor] = None
) -> Tensor:
    """Alias for ``estimator(x, y, mask)``: the CLUB MI upper bound the model minimises."""
    return estimator(x, y, mask)
