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

The terms, all importable from here: :mod:`.motion` (reconstruction, mouth, velocity),
:mod:`.style` (adversarial speaker classifier, style cosine), :mod:`.disentangle`
(orthogonality, InfoNCE, CLUB), :mod:`.alignment` (top-k contrastive, KL) and, not in the
paper, :mod:`.closure` (closure-aware lip loss, issue 19) and :mod:`.viseme` (auxiliary viseme
classification, issue 19).
"""

from __future__ import annotations

from ._common import masked_time_mean
from .alignment import kl_loss, topk_contrastive_loss
from .closure import INNER_LIP_PAIRS, lip_closure_loss, lip_pairs
from .disentangle import CLUBEstimator, infonce_loss, mi_upper_bound_loss, orthogonality_loss, pool_to_length
from .motion import mouth_loss, reconstruction_loss, velocity_loss
from .style import GradReverse, adversarial_loss, grad_reverse, style_cosine_loss
from .viseme import viseme_loss

__all__ = [
    "reconstruction_loss",
    "mouth_loss",
    "velocity_loss",
    "lip_closure_loss",
    "lip_pairs",
    "viseme_loss",
    "INNER_LIP_PAIRS",
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
    "masked_time_mean",
]
