"""Identity style encoder E_p^s (from TalkingStyle), implemented as the paper describes.

personalized style ``p = W·w`` (one-hot → linear), common style ``q = E[w]``
(embedding by index), attention of ``p`` over the two tokens ``[p; q]``, and a
residual: ``s_p = p + Attn(p, [p; q])``. With a blend vector ``w`` (weights over
training subjects instead of a one-hot) both styles are the same blend.

The released code reads the d scalars of one sample as a sequence and attends over
the batch axis, which at batch size 1 degenerates to a per-scalar map of ``q``
(spec §1.7); this module attends between the two style tokens of each sample.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class IdentityStyleEncoder(nn.Module):
    def __init__(self, num_subjects: int, dim: int, heads: int, attention: bool = True, dropout: float = 0.1):
        super().__init__()
        self.num_subjects = num_subjects
        self.personalized = nn.Linear(max(num_subjects, 1), dim, bias=False)
        self.common = nn.Embedding(max(num_subjects, 1), dim) if attention else None
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True) if attention else None
        self.norm = nn.LayerNorm(dim) if attention else None

    def forward(self, weights: Tensor) -> Tensor:
        """(B, N) subject weights (one-hot, blend, or zeros for none) → s_p (B, d); zero rows give 0."""
        p = self.personalized(weights)
        if self.attention is None:
            return p
        q = weights @ self.common.weight
        tokens = torch.stack([p, q], dim=1)
        attended, _ = self.attention(p.unsqueeze(1), tokens, tokens, need_weights=False)
        s_p = p + self.norm(attended.squeeze(1))
        present = (weights.abs().sum(-1, keepdim=True) > 0).to(s_p.dtype)
        return s_p * present
