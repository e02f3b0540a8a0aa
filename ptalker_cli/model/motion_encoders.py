"""Motion encoders: the vertex embedding, the motion style encoder E_m^s and the motion content encoder E_m^c.

Both motion encoders follow the paper's layer order (projection → temporal
convolutions → projection + periodic positional encoding → transformer → linear)
but are **causal**: every convolution is left-padded, the instance normalization
uses running statistics, and the transformer is masked. Position ``t`` therefore
depends only on motion frames ``≤ t``. Teacher forcing feeds them the ground truth
shifted right by one frame, so the decoder's prediction of frame ``t`` never sees
ground-truth frames ``≥ t`` — the released code's bidirectional encoders leak the
whole future into every position (spec §6.2 #13). At inference the same encoders
run on generated frames (docs/inference.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import PeriodicPositionalEncoding


class CausalConv1d(nn.Conv1d):
    """Conv1d over (B, C, T) padded on the left only (output t sees inputs ≤ t)."""

    def __init__(self, channels: int, kernel_size: int = 3):
        super().__init__(channels, channels, kernel_size, bias=False)
        self.left = kernel_size - 1

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class CausalInstanceNorm(nn.Module):
    """Instance normalization over time with running (prefix) statistics, per channel.

    Frame ``t`` is normalized with the mean and variance of frames ``1 … t``; at the
    last frame this equals ``nn.InstanceNorm1d`` (affine = False).
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        xf = x.float()
        n = torch.arange(1, x.shape[-1] + 1, device=x.device, dtype=torch.float32)
        mean = xf.cumsum(-1) / n
        var = (xf.square().cumsum(-1) / n - mean.square()).clamp(min=0.0)
        return ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over channels of a (B, C, T) tensor."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def causal_mask(length: int, device=None) -> Tensor:
    return torch.triu(torch.full((length, length), float("-inf"), device=device), diagonal=1)


class CausalTransformer(nn.Module):
    """PPE + post-norm transformer encoder (ReLU) under a causal mask."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, period: int, dropout: float):
        super().__init__()
        self.ppe = PeriodicPositionalEncoding(dim, period, dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: Tensor) -> Tensor:
        mask = causal_mask(x.shape[1], x.device).to(x.dtype)
        return self.encoder(self.ppe(x), mask=mask, is_causal=True)


class MotionStyleEncoder(nn.Module):
    """E_m^s: projection → causal TCN → LN → Linear(d, 2d) → PPE → causal transformer → Linear(2d, d).

    Returns the per-frame style vectors and their running mean: the style code of
    frame ``t`` (``s_m`` at ``t``) summarizes frames ``≤ t``; the mean over the whole
    sequence is the clip's style ``s_m``.
    """

    def __init__(self, dim: int, layers: int, heads: int, conv_layers: int, period: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.convs = nn.ModuleList(
            nn.Sequential(CausalConv1d(dim), _ChannelLayerNorm(dim), nn.ReLU()) for _ in range(conv_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * dim)
        self.transformer = CausalTransformer(2 * dim, heads, 3 * dim, layers, period, dropout)
        self.down = nn.Linear(2 * dim, dim)

    def forward(self, g: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, d) motion features → (tokens (B,T,d), running style (B,T,d), clip style (B,d))."""
        x = self.proj(g).transpose(1, 2)
        for conv in self.convs:
            x = conv(x)
        x = self.up(self.norm(x.transpose(1, 2)))
        tokens = self.down(self.transformer(x))
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        m = mask.unsqueeze(-1).to(tokens.dtype)
        count = m.cumsum(1).clamp(min=1.0)
        running = (tokens * m).cumsum(1) / count
        clip = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
        return tokens, running, clip


class MotionContentEncoder(nn.Module):
    """E_m^c: FC → causal [Conv1d → instance norm → ReLU] × n → IN → Linear(d, 2d) → PPE → causal transformer → Linear."""

    def __init__(self, dim: int, layers: int, heads: int, conv_layers: int, period: int, dropout: float):
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.convs = nn.ModuleList(
            nn.Sequential(CausalConv1d(dim), CausalInstanceNorm(), nn.ReLU()) for _ in range(conv_layers)
        )
        self.norm = CausalInstanceNorm()
        self.up = nn.Linear(dim, 2 * dim)
        self.transformer = CausalTransformer(2 * dim, heads, 3 * dim, layers, period, dropout)
        self.down = nn.Linear(2 * dim, dim)

    def forward(self, g: Tensor) -> Tensor:
        x = self.fc(g).transpose(1, 2)
        for conv in self.convs:
            x = conv(x)
        x = self.up(self.norm(x).transpose(1, 2))
        return self.down(self.transformer(x))
