"""Loss terms of PTalker (ACM MM 2025), one pure function per term.

Every function here

* returns a scalar (0-dim) float32 tensor and is differentiable;
* accepts ``mask=None`` (all frames valid) or a ``(B, T)`` bool tensor whose ``False``
  entries are padding; padded frames never change the value or the gradient;
* never returns NaN: when nothing is left to average (all frames masked, sequences too
  short, ...) the result is an exact zero that is still attached to the inputs' graph;
* computes in float32 with autocast disabled, so it can be called inside an
  ``torch.autocast`` region.

Conventions: motion tensors are ``(B, T, V, 3)`` vertex positions or displacements;
feature sequences are ``(B, T, D)``.

The docstrings quote the paper's equation ([P]) and say how the released code ([C])
differs; see ``ptalker-spec.md`` sections 2.1-2.3 and 6.1 for the full discussion.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional, Sequence, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "reconstruction_loss",
    "mouth_loss",
    "velocity_loss",
    "grad_reverse",
    "GradReverse",
    "adversarial_loss",
    "style_cosine_loss",
    "pool_to_length",
    "orthogonality_loss",
    "infonce_loss",
    "CLUBEstimator",
    "mi_upper_bound_loss",
    "topk_contrastive_loss",
    "kl_loss",
]

_F = TypeVar("_F", bound=Callable)


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _fp32(fn: _F) -> _F:
    """Run ``fn`` with autocast disabled on the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device_type = "cpu"
        for a in list(args) + list(kwargs.values()):
            if isinstance(a, Tensor):
                device_type = a.device.type
                break
        if device_type not in ("cpu", "cuda", "xpu", "mps", "hpu"):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _zero(*tensors: Optional[Tensor]) -> Tensor:
    """An exact float32 zero that stays connected to the graph of ``tensors``.

    Connecting it keeps ``loss.backward()`` legal (and the gradient zero) even when no
    element contributes.
    """
    out = None
    for t in tensors:
        if t is None:
            continue
        term = t.float().sum() * 0.0
        out = term if out is None else out + term
    if out is None:
        return torch.zeros((), dtype=torch.float32)
    return out


def _check_mask(mask: Optional[Tensor], B: int, T: int, device: torch.device) -> Tensor:
    """Return a ``(B, T)`` bool mask (all True when ``mask`` is None)."""
    if mask is None:
        return torch.ones(B, T, dtype=torch.bool, device=device)
    if mask.shape != (B, T):
        raise ValueError(f"mask must have shape ({B}, {T}), got {tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def _check_motion(pred: Tensor, gt: Tensor) -> None:
    if pred.dim() != 4 or pred.shape[-1] != 3:
        raise ValueError(f"motion must have shape (B, T, V, 3), got {tuple(pred.shape)}")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")


def _frame_error(diff: Tensor, mask: Tensor, form: str) -> Tensor:
    """Shared reduction of a ``(B, T, V, 3)`` error tensor for rec/mouth/velocity losses."""
    B, T = diff.shape[:2]
    flat = diff.reshape(B, T, -1)
    m = mask.to(flat.dtype)
    if form == "l2":
        # ||.||_2 over all V*3 coordinates of a frame (not squared). vector_norm has a
        # zero sub-gradient at 0, so identical inputs give a finite (zero) gradient.
        per_frame = torch.linalg.vector_norm(flat, ord=2, dim=-1)  # (B, T)
        n = m.sum(dim=1)  # valid frames per sequence
        per_seq = (per_frame * m).sum(dim=1) / n.clamp_min(1.0)
        has = n > 0
        n_seq = has.sum()
        if n_seq == 0:
            return _zero(diff)
        return (per_seq * has.to(per_seq.dtype)).sum() / n_seq.to(per_seq.dtype)
    if form == "mse":
        n_entries = m.sum() * flat.shape[-1]
        if n_entries == 0:
            return _zero(diff)
        return ((flat.pow(2) * m.unsqueeze(-1)).sum()) / n_entries
    raise ValueError(f"form must be 'l2' or 'mse', got {form!r}")


# ---------------------------------------------------------------------------
# 1-3: motion losses
# ---------------------------------------------------------------------------


@_fp32
def reconstruction_loss(
    pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None, form: str = "l2"
) -> Tensor:
    r"""Vertex reconstruction loss ``L_rec``.

    ``form="l2"`` -- paper Eq. 10::

        L_rec = (1/N) sum_n (1/T_n) sum_t || d_{n,t} - d^_{n,t} ||_2

    the L2 norm (not squared) of the whole-frame error over all ``V*3`` coordinates,
    averaged over the valid frames of each sequence, then over sequences (sequences
    with no valid frame are skipped).

    ``form="mse"`` -- released code: ``nn.MSELoss()``, the mean of squared coordinate
    errors over all valid ``T*V*3`` entries of the batch (long sequences weigh more).
    Same optimum, different scale and gradient.

    Args:
        pred, gt: ``(B, T, V, 3)``.
        mask: optional ``(B, T)`` bool, ``True`` = valid frame.
        form: ``"l2"`` or ``"mse"``.
    """
    _check_motion(pred, gt)
    B, T = pred.shape[:2]
    m = _check_mask(mask, B, T, pred.device)
    return _frame_error(pred.float() - gt.float(), m, form)


@_fp32
def mouth_loss(
    pred: Tensor,
    gt: Tensor,
    lip_index: Tensor,
    mask: Optional[Tensor] = None,
    form: str = "l2",
) -> Tensor:
    r"""Mouth-region loss ``L_mou`` (paper Eq. 11): ``L_rec`` restricted to vertices ``m``.

    ``lip_index`` is a 1-D LongTensor of **vertex** ids selecting along the ``V`` axis of
    ``(B, T, V, 3)`` tensors; every selected vertex contributes its 3 coordinates.

    Released-code difference (spec 2.2.2, 6.1 #5, not reproduced here): the code applies
    these vertex ids to the flattened ``V*3`` axis, so it really penalises coordinate
    ``idx % 3`` of vertex ``idx // 3`` -- for BIWI a region among the first ~7,780
    vertices, not the lips. The code also uses MSE (``form="mse"``) with weight 1.2.
    """
    _check_motion(pred, gt)
    lip_index = torch.as_tensor(lip_index, device=pred.device)
    if lip_index.dim() != 1:
        raise ValueError(f"lip_index must be 1-D, got shape {tuple(lip_index.shape)}")
    if lip_index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"lip_index must hold integer vertex ids, got {lip_index.dtype}")
    V = pred.shape[2]
    if lip_index.numel() == 0:
        raise ValueError("lip_index is empty")
    if int(lip_index.min()) < 0 or int(lip_index.max()) >= V:
        raise ValueError(f"lip_index holds vertex ids outside [0, {V - 1}]")
    lip_index = lip_index.long()
    B, T = pred.shape[:2]
    m = _check_mask(mask, B, T, pred.device)
    diff = pred.float().index_select(2, lip_index) - gt.float().index_select(2, lip_index)
    return _frame_error(diff, m, form)


@_fp32
def velocity_loss(
    pred: Tensor, gt: Tensor, mask: Optional[Tensor] = None, form: str = "l2"
) -> Tensor:
    r"""Velocity loss ``L_vel`` (paper Eq. 12) on first differences along time::

        L_vel = (1/N) sum_n (1/(T_n - 1)) sum_{t>=2} || (d_t - d_{t-1}) - (d^_t - d^_{t-1}) ||_2

    A difference ``t-1 -> t`` is valid when both frames are valid. The per-sequence mean
    is over its valid differences (the paper writes ``1/T_n``; ``1/(T_n-1)`` is the mean
    of the ``T_n-1`` terms -- only a constant factor per sequence). Sequences with no
    valid difference (e.g. one frame) contribute nothing; if none remains, 0.

    ``form="mse"`` is the released code: MSE between the first differences (weight 10
    in ``main.py``), averaged over all valid difference entries.
    """
    _check_motion(pred, gt)
    B, T = pred.shape[:2]
    m = _check_mask(mask, B, T, pred.device)
    if form not in ("l2", "mse"):
        raise ValueError(f"form must be 'l2' or 'mse', got {form!r}")
    if T < 2:
        return _zero(pred)
    p, g = pred.float(), gt.float()
    d = (p[:, 1:] - p[:, :-1]) - (g[:, 1:] - g[:, :-1])
    dm = m[:, 1:] & m[:, :-1]
    return _frame_error(d, dm, form)


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


@_fp32
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
        return _zero(logits)
    if int(labels[valid].min()) < 0 or int(labels[valid].max()) >= logits.shape[1]:
        raise ValueError(f"labels must be -1 or in [0, {logits.shape[1] - 1}]")
    ce = F.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum")
    return ce / n


# ---------------------------------------------------------------------------
# 5: style cosine similarity
# ---------------------------------------------------------------------------


@_fp32
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
    total = _zero(a, m, p)
    for w, x, y in ((w1, a, m), (w2, a, p), (w3, m, p)):
        if x is None or y is None:
            continue
        if x.shape != y.shape:
            raise ValueError(f"style vectors differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
        total = total + w * (1.0 - F.cosine_similarity(x, y, dim=-1, eps=1e-8)).mean()
    return total


# ---------------------------------------------------------------------------
# 6: orthogonality
# ---------------------------------------------------------------------------


@_fp32
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
    m = _check_mask(mask, B, T, x.device)
    outs = []
    for b in range(B):
        xb = x[b][m[b]]  # (L_b, D)
        if xb.shape[0] == 0:
            outs.append(x.new_zeros(length, D) + 0.0 * x[b].sum())
        else:
            outs.append(F.adaptive_avg_pool1d(xb.t().unsqueeze(0), length)[0].t())
    return torch.stack(outs, 0)


@_fp32
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
            return _zero(content, style)
        C = pool_to_length(c_all, L)
        S = pool_to_length(s_all, L)
        P = C.transpose(1, 2) @ S  # (B, Dc, Ds)
        return _orth_reduce(P, form).mean()
    cm = _check_mask(content_mask, B, Fc, content.device)
    sm = _check_mask(style_mask, B, Fs, style.device)
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
        return _zero(content, style)
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


def masked_time_mean(x: Tensor, mask: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    """Mean over valid frames: ``(B, T, D) -> (B, D)`` plus a ``(B,)`` has-frames flag."""
    B, T, _ = x.shape
    m = _check_mask(mask, B, T, x.device).to(x.dtype)
    n = m.sum(1)
    mean = (x * m.unsqueeze(-1)).sum(1) / n.clamp_min(1.0).unsqueeze(-1)
    return mean, n > 0


@_fp32
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
        return _zero(content, style)
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
            m = _check_mask(mask, B, T, x.device)
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
                return _zero(x, y, *self.parameters())
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
                return _zero(x, y)
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


@_fp32
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
    m = _check_mask(mask, B, T, audio.device)
    a_all = F.normalize(audio.float(), dim=-1, eps=1e-8)
    c_all = F.normalize(content.float(), dim=-1, eps=1e-8)
    tau = temperature.float() if isinstance(temperature, Tensor) else float(temperature)
    total = _zero(audio, content)
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


@_fp32
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
    m = _check_mask(mask, B, T, audio.device).float().unsqueeze(-1)  # (B, T, 1)
    n = m.sum(1)  # (B, 1)
    keep = n[:, 0] >= 2
    if int(keep.sum()) == 0:
        return _zero(audio, content)

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
