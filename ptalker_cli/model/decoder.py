"""The autoregressive motion decoder D.

FaceFormer's decoder as PTalker uses it (spec §1.9): post-norm transformer decoder
layers over motion tokens with

* a periodic positional encoding (PPE) that repeats every ``period`` frames,
* ALiBi-like biased causal self-attention (the penalty grows by one slope step per
  elapsed period), and
* cross-attention restricted by the audio–motion alignment mask: motion frame ``t``
  sees only speech frames ``k·t … k·t+k−1`` (``k`` speech frames per motion frame).

Unlike the research code nothing is built for a maximum length: encodings and biases
are computed for the actual positions, so any length works. The alignment mask is
applied in its equivalent local form (each query attends its ``k`` keys directly),
which costs O(T·k) instead of O(T·S). Incremental decoding keeps a key/value cache
per layer (grown geometrically, so appending is amortized O(1)) and computes the
cross-attention keys and values of the whole utterance once.

Parameter names follow ``torch.nn.TransformerDecoderLayer`` (``self_attn.in_proj_weight``,
``multihead_attn.out_proj``, ``linear1``, ``norm1`` …) so checkpoints of the research
code map onto this module one to one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


# ----------------------------------------------------------------------------- encodings
def periodic_positional_encoding(
    length: int, dim: int, period: int, offset: int = 0, device=None, dtype=torch.float32
) -> Tensor:
    """(length, dim) sinusoidal encoding of positions ``offset … offset+length−1`` modulo ``period``."""
    pos = ((torch.arange(length, device=device) + offset) % period).to(torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device, dtype=torch.float32)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe.to(dtype)


class PeriodicPositionalEncoding(nn.Module):
    """Adds the PPE to a (B, T, dim) sequence, then dropout."""

    def __init__(self, dim: int, period: int, dropout: float = 0.1):
        super().__init__()
        self.dim, self.period = dim, period
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        pe = periodic_positional_encoding(x.shape[1], self.dim, self.period, offset, x.device, x.dtype)
        return self.dropout(x + pe)


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi head slopes (Press et al.); 0.25, 0.0625, 0.015625, 0.00390625 for 4 heads."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


def biased_causal_bias(
    n_heads: int, q_len: int, k_len: int, period: int, q_offset: int = 0, device=None, dtype=torch.float32
) -> Tensor:
    """(n_heads, q_len, k_len) additive bias: ``−slope·⌊(i−j)/period⌋`` for keys ``j ≤ i``, ``−inf`` after.

    Query ``i`` sits at absolute position ``q_offset + i``; keys at ``0 … k_len−1``.
    """
    qi = torch.arange(q_len, device=device).unsqueeze(1) + q_offset
    kj = torch.arange(k_len, device=device).unsqueeze(0)
    dist = qi - kj
    steps = torch.div(dist.clamp(min=0), period, rounding_mode="floor").to(torch.float32)
    slopes = torch.tensor(alibi_slopes(n_heads), device=device, dtype=torch.float32).view(-1, 1, 1)
    bias = -slopes * steps
    bias = bias.masked_fill((dist < 0).unsqueeze(0), float("-inf"))
    return bias.to(dtype)


def alignment_mask(num_frames: int, num_audio: int, k: int, device=None) -> Tensor:
    """(T, S) bool mask, True = blocked: motion frame ``t`` may attend speech frames ``k·t … k·t+k−1``.

    Provided for reference and tests; the decoder applies it in local form.
    """
    t = torch.arange(num_frames, device=device).unsqueeze(1)
    s = torch.arange(num_audio, device=device).unsqueeze(0)
    return ~((s >= k * t) & (s < k * t + k))


# ----------------------------------------------------------------------------- attention
class _Projections(nn.Module):
    """Q/K/V input projections packed like ``nn.MultiheadAttention`` plus ``out_proj``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def project(self, x: Tensor, which: slice) -> Tensor:
        return F.linear(x, self.in_proj_weight[which], self.in_proj_bias[which])

    def split_heads(self, x: Tensor) -> Tensor:  # (B, L, D) -> (B, h, L, dh)
        b, length, d = x.shape
        return x.view(b, length, self.heads, d // self.heads).transpose(1, 2)


@dataclass
class KVCache:
    """Per-layer self-attention keys/values, grown geometrically along time."""

    k: Tensor | None = None
    v: Tensor | None = None
    length: int = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        b, h, n, dh = k.shape
        need = self.length + n
        if self.k is None or need > self.k.shape[2]:
            cap = max(need, 2 * (self.k.shape[2] if self.k is not None else 16))
            new_k = k.new_empty(b, h, cap, dh)
            new_v = v.new_empty(b, h, cap, dh)
            if self.k is not None and self.length:
                new_k[:, :, : self.length] = self.k[:, :, : self.length]
                new_v[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = new_k, new_v
        self.k[:, :, self.length : need] = k
        self.v[:, :, self.length : need] = v
        self.length = need
        return self.k[:, :, :need], self.v[:, :, :need]


class BiasedSelfAttention(_Projections):
    def forward(self, x: Tensor, bias: Tensor, cache: KVCache | None = None, dropout: float = 0.0) -> Tensor:
        d = x.shape[-1]
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = (self.split_heads(t) for t in qkv.split(d, dim=-1))
        if cache is not None:
            k, v = cache.append(k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(x.shape))


class AlignedCrossAttention(_Projections):
    """Multi-head cross-attention under the alignment mask, computed locally.

    ``memory_kv`` holds the projected keys/values of the whole utterance reshaped to
    (B, T_audio, k, heads, dh): query frame ``t`` attends exactly ``memory[:, t]``.
    """

    def memory_kv(self, memory: Tensor, k: int) -> tuple[Tensor, Tensor]:
        d = memory.shape[-1]
        b, s, _ = memory.shape
        kk = self.project(memory, slice(d, 2 * d)).view(b, s // k, k, self.heads, d // self.heads)
        vv = self.project(memory, slice(2 * d, 3 * d)).view(b, s // k, k, self.heads, d // self.heads)
        return kk, vv

    def forward(self, x: Tensor, mem_k: Tensor, mem_v: Tensor, start: int = 0, dropout: float = 0.0) -> Tensor:
        b, length, d = x.shape
        dh = d // self.heads
        q = self.project(x, slice(0, d)).view(b, length, self.heads, dh)
        kk = mem_k[:, start : start + length]
        vv = mem_v[:, start : start + length]
        if kk.shape[1] != length:
            raise ValueError(f"audio features cover {mem_k.shape[1]} frames, decoder asked for {start + length}")
        scores = torch.einsum("blhd,blkhd->blhk", q, kk) / math.sqrt(dh)
        attn = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        if dropout > 0:
            attn = F.dropout(attn, p=dropout)
        out = torch.einsum("blhk,blkhd->blhd", attn, vv).reshape(b, length, d)
        return self.out_proj(out)


class DecoderLayer(nn.Module):
    """Post-norm layer: biased causal self-attention, aligned cross-attention, ReLU FFN."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = BiasedSelfAttention(dim, heads)
        self.multihead_attn = AlignedCrossAttention(dim, heads)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.p = dropout

    def forward(self, x, bias, mem_k, mem_v, start=0, cache=None):
        p = self.p if self.training else 0.0
        x = self.norm1(x + F.dropout(self.self_attn(x, bias, cache, p), p, self.training))
        x = self.norm2(x + F.dropout(self.multihead_attn(x, mem_k, mem_v, start, p), p, self.training))
        h = F.dropout(F.relu(self.linear1(x)), p, self.training)
        return self.norm3(x + F.dropout(self.linear2(h), p, self.training))


@dataclass
class DecoderState:
    """Everything incremental decoding keeps between steps.

    ``ppe`` is the (period, d) encoding table; ``bias`` holds, for each head, the
    penalty of every distance m = T−1 … 0 (reversed), so the bias row of query ``t``
    over keys ``0 … t`` is the slice ``bias[..., T−1−t:]``: no per-step construction.
    """

    memory_kv: list[tuple[Tensor, Tensor]]
    caches: list[KVCache] = field(default_factory=list)
    position: int = 0
    ppe: Tensor | None = None
    bias: Tensor | None = None


class MotionDecoder(nn.Module):
    """Stack of :class:`DecoderLayer` with PPE; full (teacher-forced) and incremental modes."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, period: int, dropout: float, k: int):
        super().__init__()
        self.dim, self.heads, self.period, self.k = dim, heads, period, k
        self.ppe = PeriodicPositionalEncoding(dim, period, dropout)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(layers))

    def prepare(self, memory: Tensor) -> DecoderState:
        """Project the speech features once for every layer's cross-attention."""
        if memory.shape[1] % self.k:
            raise ValueError(f"speech features ({memory.shape[1]}) must be a multiple of {self.k} frames")
        kv = [layer.multihead_attn.memory_kv(memory, self.k) for layer in self.layers]
        frames = memory.shape[1] // self.k
        ppe = periodic_positional_encoding(self.period, self.dim, self.period, 0, memory.device, memory.dtype)
        last_row = biased_causal_bias(self.heads, 1, frames, self.period, frames - 1, memory.device, memory.dtype)
        return DecoderState(kv, [KVCache() for _ in self.layers], 0, ppe, last_row)

    def forward(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Teacher-forced pass: (B, T, d) input tokens → (B, T, d) hidden states."""
        state = self.prepare(memory)
        x = self.ppe(tokens)
        bias = biased_causal_bias(self.heads, x.shape[1], x.shape[1], self.period, 0, x.device, x.dtype)
        for layer, (mk, mv) in zip(self.layers, state.memory_kv):
            x = layer(x, bias, mk, mv, 0, None)
        return x

    def step(self, token: Tensor, state: DecoderState) -> Tensor:
        """One incremental step: (B, 1, d) token at ``state.position`` → (B, 1, d) hidden state."""
        t = state.position
        if state.bias is not None and t < state.bias.shape[-1]:
            x = self.ppe.dropout(token + state.ppe[t % self.period])
            bias = state.bias[..., state.bias.shape[-1] - 1 - t:]
        else:  # past the prepared length (not used by PTalker.generate): build them
            x = self.ppe(token, offset=t)
            bias = biased_causal_bias(self.heads, 1, t + 1, self.period, t, x.device, x.dtype)
        for layer, (mk, mv), cache in zip(self.layers, state.memory_kv, state.caches):
            x = layer(x, bias, mk, mv, t, cache)
        state.position = t + 1
        return x
