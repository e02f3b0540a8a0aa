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

``causal=False`` (``ModelConfig.motion_encoder_form = "released"``) gives the released
code's bidirectional encoders instead (spec §1.5–1.6): symmetric convolution padding
(k = 3, padding 1), instance normalization over the whole clip, an unmasked transformer and
``s_m`` = the mean over all frames. Parameter names and shapes are the same in both forms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import PeriodicPositionalEncoding


def shift_right(disp: Tensor) -> Tensor:
    """(B, T, ...) → the same with a zero frame first and the last frame dropped (the decoder's and the
    motion encoders' input: frame ``t`` sees frames ``< t``)."""
    return torch.cat([torch.zeros_like(disp[:, :1]), disp[:, :-1]], dim=1)


class CausalConv1d(nn.Conv1d):
    """Conv1d over (B, C, T) padded on the left only (output t sees inputs ≤ t).

    ``causal=False``: symmetric zero padding (``(k−1)//2`` each side, the released code's
    ``padding=1`` for k = 3), output t sees inputs t−1 … t+1.
    """

    def __init__(self, channels: int, kernel_size: int = 3, causal: bool = True):
        super().__init__(channels, channels, kernel_size, bias=False)
        self.causal = causal
        self.left = kernel_size - 1 if causal else (kernel_size - 1) // 2
        self.right = 0 if causal else kernel_size - 1 - self.left

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.left, self.right)))


class CausalInstanceNorm(nn.Module):
    """Instance normalization over time with running (prefix) statistics, per channel.

    Frame ``t`` is normalized with the mean and variance of frames ``1 … t``; at the
    last frame this equals ``nn.InstanceNorm1d`` (affine = False). ``causal=False`` is
    ``nn.InstanceNorm1d`` (statistics of the whole clip; of its valid frames under ``mask``).
    """

    def __init__(self, eps: float = 1e-5, causal: bool = True):
        super().__init__()
        self.eps = eps
        self.causal = causal

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # (B, C, T), mask (B, T)
        if not self.causal:
            if mask is None:
                return F.instance_norm(x, eps=self.eps)
            m = mask.unsqueeze(1).to(x.dtype)
            n = m.sum(-1, keepdim=True).clamp(min=1.0)
            mean = (x * m).sum(-1, keepdim=True) / n
            var = (((x - mean) * m) ** 2).sum(-1, keepdim=True) / n
            return (x - mean) * torch.rsqrt(var + self.eps)
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
    """PPE + post-norm transformer encoder (ReLU) under a causal mask (``causal=False``: unmasked)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, period: int, dropout: float,
                 causal: bool = True):
        super().__init__()
        self.causal = causal
        self.ppe = PeriodicPositionalEncoding(dim, period, dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn_dim, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        if not self.causal:  # bidirectional; padded frames (valid False) are never attended to
            pad = None if valid is None or bool(valid.all()) else ~valid
            return self.encoder(self.ppe(x), src_key_padding_mask=pad)
        if not torch.is_grad_enabled() and not self.training:  # inference: no (T, T) mask or weights
            return causal_encoder_inference(self.encoder, self.ppe(x))
        mask = causal_mask(x.shape[1], x.device).to(x.dtype)
        return self.encoder(self.ppe(x), mask=mask, is_causal=True)


def causal_encoder_inference(encoder: nn.TransformerEncoder, x: Tensor) -> Tensor:
    """``encoder(x, mask=causal_mask, is_causal=True)`` in eval mode, with the attention computed by
    ``scaled_dot_product_attention(is_causal=True)``: memory linear in length (no (T, T) mask and no
    (heads, T, T) weights; 10 minutes are 15000 frames), equal up to float32 round-off."""
    for layer in encoder.layers:  # post-norm layers (norm_first False), ReLU, dropout off
        attn = layer.self_attn
        b, t, dim = x.shape
        heads = attn.num_heads
        q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, dim)
        x = layer.norm1(x + attn.out_proj(o))
        x = layer.norm2(x + layer.linear2(layer.activation(layer.linear1(x))))
    return x if encoder.norm is None else encoder.norm(x)


def _zero_padded(x: Tensor, valid: Tensor | None) -> Tensor:
    """(B, C, T) with the frames after each sequence's end zeroed (the non-causal convolutions then see the
    zero padding of the unpadded sequence)."""
    return x if valid is None else x * valid.unsqueeze(1).to(x.dtype)


class MotionStyleEncoder(nn.Module):
    """E_m^s: projection → causal TCN → LN → Linear(d, 2d) → PPE → causal transformer → Linear(2d, d).

    Returns the per-frame style vectors and their running mean: the style code of
    frame ``t`` (``s_m`` at ``t``) summarizes frames ``≤ t``; the mean over the whole
    sequence is the clip's style ``s_m``. With ``causal=False`` (the released encoder)
    the "running" style is the clip style at every frame, as the released training adds it.
    """

    def __init__(self, dim: int, layers: int, heads: int, conv_layers: int, period: int, dropout: float,
                 causal: bool = True):
        super().__init__()
        self.causal = causal
        self.proj = nn.Linear(dim, dim)
        self.convs = nn.ModuleList(
            nn.Sequential(CausalConv1d(dim, causal=causal), _ChannelLayerNorm(dim), nn.ReLU())
            for _ in range(conv_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * dim)
        self.transformer = CausalTransformer(2 * dim, heads, 3 * dim, layers, period, dropout, causal)
        self.down = nn.Linear(2 * dim, dim)

    def forward(self, g: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(B, T, d) motion features → (tokens (B,T,d), running style (B,T,d), clip style (B,d))."""
        valid = None if self.causal else mask
        x = self.proj(g).transpose(1, 2)
        for conv in self.convs:
            x = conv(_zero_padded(x, valid))
        x = self.up(self.norm(x.transpose(1, 2)))
        tokens = self.down(self.transformer(x, valid))
        if mask is None:
            if not self.causal:
                clip = tokens.mean(1)
                return tokens, clip.unsqueeze(1).expand_as(tokens), clip
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        m = mask.unsqueeze(-1).to(tokens.dtype)
        clip = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
        if not self.causal:
            return tokens, clip.unsqueeze(1).expand_as(tokens), clip
        count = m.cumsum(1).clamp(min=1.0)
        running = (tokens * m).cumsum(1) / count
        return tokens, running, clip


class MotionContentEncoder(nn.Module):
    """E_m^c: FC → causal [Conv1d → instance norm → ReLU] × n → IN → Linear(d, 2d) → PPE → causal transformer →
    Linear."""

    def __init__(self, dim: int, layers: int, heads: int, conv_layers: int, period: int, dropout: float,
                 causal: bool = True):
        super().__init__()
        self.causal = causal
        self.fc = nn.Linear(dim, dim)
        self.convs = nn.ModuleList(
            nn.Sequential(CausalConv1d(dim, causal=causal), CausalInstanceNorm(causal=causal), nn.ReLU())
            for _ in range(conv_layers)
        )
        self.norm = CausalInstanceNorm(causal=causal)
        self.up = nn.Linear(dim, 2 * dim)
        self.transformer = CausalTransformer(2 * dim, heads, 3 * dim, layers, period, dropout, causal)
        self.down = nn.Linear(2 * dim, dim)

    def forward(self, g: Tensor, mask: Tensor | None = None) -> Tensor:
        """(B, T, d) → c (B, T, d). ``mask`` (B, T) valid frames: only the non-causal form needs it."""
        valid = None if self.causal else mask
        x = self.fc(g).transpose(1, 2)
        for conv, norm, act in self.convs:
            x = act(norm(conv(_zero_padded(x, valid)), valid))
        x = self.up(self.norm(x, valid).transpose(1, 2))
        return self.down(self.transformer(x, valid))
