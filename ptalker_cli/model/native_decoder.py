"""The fused native decode pass: :class:`.decoder.MotionDecoder`'s whole cached autoregressive
pass (as used by :func:`.decoding.autoregressive_pass`: token feedback through the folded
``embed ∘ head`` map) in one call of ``ptalker_cli/kernels/decoder.c``.

A step at the paper's BIWI size is ~0.8 M multiply-adds but hundreds of tiny eager PyTorch ops
(~1 ms); in C it is tens of microseconds. Same math as the PyTorch path (max-subtracted softmax,
attention scale 1/sqrt(dh), bias added before the softmax, LayerNorm with the modules' eps),
compiled *without* ``-ffast-math``; results agree with the PyTorch path to float32 round-off
(tests/test_native_decoder.py checks 1e-5 over 300 steps). Building, caching and loading:
:mod:`ptalker_cli.kernels.build`.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from ..kernels.build import kernel, native_disabled, ptr

__all__ = ["decode_pass", "decoder_native_available"]

_N_PARAMS = 20  # pointers per layer handed to decode_pass (the C enum's P_COUNT)


def _check_layout(lib: ctypes.CDLL) -> None:
    if lib.decoder_num_params() != _N_PARAMS:
        raise RuntimeError("decoder kernel parameter layout mismatch")


_decoder_lib = kernel("decoder", _check_layout)


def decoder_native_available() -> bool:
    """Whether the fused decoder kernel could be built/loaded (and is not disabled)."""
    return not native_disabled() and _decoder_lib.get() is not None


def _f32(t: Tensor | None, keep: list) -> int | None:
    if t is None:
        return None
    t = t.detach()
    if t.dtype != torch.float32 or not t.is_contiguous():
        t = t.to(torch.float32).contiguous()
    keep.append(t)
    return t.data_ptr()


def _packed_weights(decoder) -> list[list[Tensor | None]] | None:
    """Per layer, the 18 weight tensors in the kernel's order (matrices transposed to (in, out),
    float32, contiguous); cached on the module until a parameter changes (in place or not)."""
    try:
        key = tuple((p.data_ptr(), p._version, p.dtype) for p in decoder.parameters())
    except RuntimeError:  # inference tensors have no version counter: do not cache
        key = None
    cached = getattr(decoder, "_native_weights", None)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]

    def mat(w):
        return w.detach().to(torch.float32).t().contiguous()

    def vec(v):
        return None if v is None else v.detach().to(torch.float32).contiguous()

    d = decoder.dim
    packed = []
    for layer in decoder.layers:
        sa, ca = layer.self_attn, layer.multihead_attn
        norms = []
        for n in (layer.norm1, layer.norm2, layer.norm3):
            norms += [vec(getattr(n, "weight", None)), vec(getattr(n, "bias", None))]
        packed.append([
            mat(sa.in_proj_weight), vec(sa.in_proj_bias), mat(sa.out_proj.weight), vec(sa.out_proj.bias),
            mat(ca.in_proj_weight[:d]), vec(None if ca.in_proj_bias is None else ca.in_proj_bias[:d]),
            mat(ca.out_proj.weight), vec(ca.out_proj.bias),
            mat(layer.linear1.weight), vec(layer.linear1.bias),
            mat(layer.linear2.weight), vec(layer.linear2.bias),
            *norms,
        ])
    decoder._native_weights = None if key is None else (key, packed)
    return packed


def decode_pass(decoder, state, token0: Tensor, extra: Tensor, w_fold: Tensor,
                b_fold: Tensor) -> Tensor | None:
    """The whole cached pass of :func:`.decoding.autoregressive_pass` in one native call.

    ``decoder``: a :class:`~.decoder.MotionDecoder` in eval mode; ``state``: its fresh
    ``prepare(memory)`` (cross-attention K/V, PPE table, bias row); ``token0`` (B, 1, d) or
    (B, d): the first token; ``extra`` (B, T, d); token_{t+1} = h_t w_foldᵀ + b_fold + extra_{t+1}.
    Returns the hidden states (B, T, d), or None when the kernel does not apply (unavailable,
    not CPU float32, training mode, or T beyond the prepared length): then use the PyTorch loop.
    """
    if native_disabled() or decoder.training:
        return None
    B, T, d = extra.shape
    if T == 0 or extra.device.type != "cpu" or extra.dtype != torch.float32:
        return None
    if state.bias is None or state.ppe is None or state.position != 0:
        return None
    Tb = state.bias.shape[-1]
    if T > Tb or d != decoder.dim or d % decoder.heads:
        return None
    lib = _decoder_lib.get()
    if lib is None:
        return None
    layers = list(decoder.layers)
    L, H = len(layers), decoder.heads
    dh = d // H
    if L == 0 or len(state.memory_kv) != L:
        return None
    Fd = layers[0].linear1.out_features
    if any(layer.linear1.out_features != Fd for layer in layers):
        return None
    weights = _packed_weights(decoder)
    if weights is None:
        return None
    keep: list = []
    params: list[int | None] = []
    kk = Tm = None
    for lw, (mk, mv) in zip(weights, state.memory_kv):
        if (mk.dim() != 5 or mk.shape[0] != B or tuple(mk.shape[3:]) != (H, dh)
                or mk.shape[1] < T or mk.shape != mv.shape
                or (kk is not None and (Tm, kk) != tuple(mk.shape[1:3]))):
            return None
        Tm, kk = mk.shape[1], mk.shape[2]
        params += [None if w is None else w.data_ptr() for w in lw] + [_f32(mk, keep), _f32(mv, keep)]
    eps = [float(n.eps) for layer in layers for n in (layer.norm1, layer.norm2, layer.norm3)]
    param_arr = (ctypes.c_void_p * len(params))(*params)
    eps_t = torch.tensor(eps, dtype=torch.float32)
    ppe = state.ppe.detach().to(torch.float32).contiguous()
    bias = state.bias.detach().to(torch.float32).reshape(H, Tb).contiguous()
    wf = w_fold.detach().to(torch.float32).t().contiguous()  # kernels take W transposed
    bf = b_fold.detach().to(torch.float32).contiguous()
    tok0 = token0.detach().to(torch.float32).reshape(B, d).contiguous()
    ex = extra.detach().contiguous()
    kc = torch.empty(L, B, H, T, dh, dtype=torch.float32)
    vc = torch.empty_like(kc)
    out = torch.empty(B, T, d, dtype=torch.float32)
    rc = lib.decode_pass(L, B, T, d, H, Fd, kk, Tm, Tb, int(decoder.period), param_arr,
                         ptr(eps_t), ptr(ppe), ptr(bias), ptr(wf), ptr(bf), ptr(tok0), ptr(ex),
                         ptr(kc), ptr(vc), ptr(out))
    if rc != 0:
        return None
    return out
