"""Native (C) inference kernels: shared build/cache/load machinery and the fused decoder pass.

Kernels are C sources embedded as strings, compiled once with the system C compiler (``CC``,
default ``cc``) into a cache directory (``PTALKER_CACHE_DIR``/kernels, default
``~/.cache/ptalker/kernels``, falling back to a per-user temp directory), keyed by a hash of the
source, the flags, the compiler, the platform and the CPU (``-march=native`` builds are never
reused on another CPU), and loaded with ``ctypes``.  Any failure (no compiler, read-only cache,
...) leaves the kernel unavailable and callers use their pure-PyTorch paths; the first such
failure in a process logs one warning line (what, why, how to enable).  Setting
``PTALKER_NO_NATIVE=1`` disables every kernel (and that warning).

Kernels here:

* the graph encoder's fused GAT layer (source in :mod:`.graph_encoder`), and
* :func:`decode_pass`: the *whole* cached autoregressive pass of :class:`.decoder.MotionDecoder`
  as used by ``PTalker._decode`` (token feedback through the folded ``embed ∘ head`` map) in one
  C call.  A step at the paper's BIWI size is ~0.8 M multiply-adds but hundreds of tiny eager
  PyTorch ops (~1 ms); in C it is tens of microseconds.  Same math as the PyTorch path
  (max-subtracted softmax, attention scale 1/sqrt(dh), bias added before the softmax, LayerNorm
  with the modules' eps), compiled *without* ``-ffast-math``; results agree with the PyTorch
  path to float32 round-off (tests/test_native_decoder.py checks 1e-5 over 300 steps).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "NativeLibrary",
    "build_library",
    "cache_dir",
    "cpu_fingerprint",
    "decode_pass",
    "decoder_native_available",
    "native_disabled",
    "ptr",
]


# --------------------------------------------------------------------------------------------
# build / cache / load
# --------------------------------------------------------------------------------------------


log = logging.getLogger(__name__)
_notice_given = False


def _fallback_notice(why: str) -> None:
    """Say once per process that the compiled kernels are off, why, and how to turn them on."""
    global _notice_given
    if not _notice_given:
        _notice_given = True
        log.warning("ptalker: compiled CPU kernels unavailable (%s); using the slower PyTorch path. Install gcc "
                    "(or point CC at a C compiler), or set PTALKER_NO_NATIVE=1 to silence this.", why)


def native_disabled() -> bool:
    """``PTALKER_NO_NATIVE`` set to any non-empty value disables every kernel."""
    return bool(os.environ.get("PTALKER_NO_NATIVE"))


def cache_dir() -> Path:
    root = os.environ.get("PTALKER_CACHE_DIR")
    if root:
        return Path(root) / "kernels"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ptalker" / "kernels"


def cpu_fingerprint() -> str:
    """Identifies the CPU so that a cached ``-march=native`` build is never reused elsewhere."""
    info = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    info += line
                if line.strip() == "":
                    break  # first CPU is enough
    except OSError:
        pass
    return info


_march_ok: dict[str, bool] = {}


def _march_native_ok(cc: str) -> bool:
    if cc not in _march_ok:
        try:
            subprocess.run([cc, "-march=native", "-E", "-x", "c", "-"], input=b"", check=True,
                           capture_output=True, timeout=30)
            _march_ok[cc] = True
        except Exception:  # noqa: BLE001
            _march_ok[cc] = False
    return _march_ok[cc]


def build_library(name: str, source: str, flag_sets: Sequence[Sequence[str]]) -> ctypes.CDLL:
    """Compile ``source`` into a shared library (or reuse the cached build) and load it.

    ``flag_sets``: complete compiler flag lists (``-fPIC -shared`` included) to try in order,
    e.g. with then without ``-fopenmp``; ``-march=native`` is inserted after the first flag
    when the compiler accepts it.  Raises RuntimeError when nothing builds/loads.
    """
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        raise RuntimeError(f"no C compiler '{cc}' found")
    march = _march_native_ok(cc)
    uid = os.getuid() if hasattr(os, "getuid") else 0
    dirs = [cache_dir(), Path(tempfile.gettempdir()) / f"ptalker-kernels-{uid}"]
    last_err: Exception | None = None
    for given in flag_sets:
        flags = list(given)
        if march:
            flags.insert(1, "-march=native")
        key = hashlib.sha256("\0".join([source, " ".join(flags), cc, sys.platform,
                                         cpu_fingerprint()]).encode()).hexdigest()[:16]
        for d in dirs:
            so = d / f"{name}_{key}.so"
            if so.exists():
                try:
                    return ctypes.CDLL(str(so))
                except OSError as err:
                    last_err = err
                    continue
            try:
                d.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=d) as tmp:
                    src = Path(tmp) / f"{name}.c"
                    src.write_text(source)
                    tmp_so = Path(tmp) / f"{name}.so"
                    subprocess.run([cc, *flags, str(src), "-o", str(tmp_so), "-lm"], check=True,
                                   capture_output=True, timeout=300)
                    os.replace(tmp_so, so)  # atomic: concurrent builders are harmless
                return ctypes.CDLL(str(so))
            except Exception as err:  # noqa: BLE001 - any failure means "try the next option"
                last_err = err
    if isinstance(last_err, subprocess.CalledProcessError):  # the compiler's first complaint, not its argv
        said = (last_err.stderr or b"").decode(errors="replace").strip().splitlines()
        said = [line for line in said if "error" in line] or said or [f"exit status {last_err.returncode}"]
        last_err = f"{cc} failed: {said[0]}"
    raise RuntimeError(f"could not build the native {name} kernel: {last_err}")


class NativeLibrary:
    """A lazily built kernel library: :meth:`get` returns the loaded CDLL or None (then
    :attr:`error` says why).  ``setup(lib)`` declares the argument types; the build is attempted
    once per process (thread-safe)."""

    def __init__(self, name: str, source: str, flag_sets: Sequence[Sequence[str]],
                 setup: Callable[[ctypes.CDLL], None]):
        self.name, self.source, self.flag_sets, self.setup = name, source, flag_sets, setup
        self._lib: ctypes.CDLL | None = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def get(self) -> ctypes.CDLL | None:
        if self._lib is not None or self.error is not None:
            return self._lib
        if native_disabled():
            return None  # checked on every call: the env var may be set later (tests)
        with self._lock:
            if self._lib is None and self.error is None:
                try:
                    lib = build_library(self.name, self.source, self.flag_sets)
                    self.setup(lib)
                    self._lib = lib
                except Exception as err:  # noqa: BLE001
                    self.error = " ".join(str(err).split())
                    _fallback_notice(self.error)
        return self._lib

    def available(self) -> bool:
        return self.get() is not None


def ptr(t: Tensor | None):
    return None if t is None else ctypes.c_void_p(t.data_ptr())


# --------------------------------------------------------------------------------------------
# fused decoder pass
# --------------------------------------------------------------------------------------------

_DECODER_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* VL-wide float vectors (GCC/Clang vector extensions; 16 lanes = one AVX-512 register, split
   by the compiler on narrower targets).  No -ffast-math: every reduction order below is
   explicit (vector lanes accumulate strided partial sums, then a fixed pairwise tree). */
#ifndef VL
#define VL 8
#endif
typedef float vf __attribute__((vector_size(VL * 4)));
static inline vf vload(const float* p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float* p, vf v) { memcpy(p, &v, sizeof v); }
static inline float hsum(vf v) {
    for (int w = VL / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; ++i) v[i] += v[i + w];
    return v[0];
}

static inline float dot(const float* a, const float* b, int n) {
    vf a0 = {0}, a1 = {0};
    int i = 0;
    for (; i + 2 * VL <= n; i += 2 * VL) {
        a0 += vload(a + i) * vload(b + i);
        a1 += vload(a + i + VL) * vload(b + i + VL);
    }
    for (; i + VL <= n; i += VL) a0 += vload(a + i) * vload(b + i);
    float s = hsum(a0 + a1);
    for (; i < n; ++i) s += a[i] * b[i];
    return s;
}

/* Y (B, out) = X (B, in) W^T + bias (optional ReLU), with W given TRANSPOSED: Wt (in, out)
   row-major.  Vectorised over outputs (no horizontal sums): each output accumulates its
   products in input order; NB blocks of VL outputs give independent FMA chains. */
#define NB 8
static void linear(const float* Wt, const float* bias, int out, int in, const float* X, int B,
                   float* Y, int relu) {
    for (int b = 0; b < B; ++b) {
        const float* x = X + (int64_t)b * in;
        float* y = Y + (int64_t)b * out;
        int o = 0;
        for (; o + NB * VL <= out; o += NB * VL) {
            vf acc[NB];
#pragma GCC unroll 8
            for (int r = 0; r < NB; ++r) acc[r] = (vf){0};
            const float* w = Wt + o;
            for (int i = 0; i < in; ++i, w += out) {
                const float xi = x[i];
#pragma GCC unroll 8
                for (int r = 0; r < NB; ++r) acc[r] += xi * vload(w + r * VL);
            }
#pragma GCC unroll 8
            for (int r = 0; r < NB; ++r) {
                vf v = acc[r];
                if (bias) v += vload(bias + o + r * VL);
                if (relu) v = (vf)((v > 0.f) & (__typeof__((v > 0.f)))v);
                vstore(y + o + r * VL, v);
            }
        }
        for (; o + VL <= out; o += VL) {
            vf acc = {0};
            const float* w = Wt + o;
            for (int i = 0; i < in; ++i, w += out) acc += x[i] * vload(w);
            if (bias) acc += vload(bias + o);
            if (relu) acc = (vf)((acc > 0.f) & (__typeof__((acc > 0.f)))acc);
            vstore(y + o, acc);
        }
        for (; o < out; ++o) {
            float s = 0.f;
            for (int i = 0; i < in; ++i) s += x[i] * Wt[(int64_t)i * out + o];
            if (bias) s += bias[o];
            if (relu) s = s > 0.f ? s : 0.f;
            y[o] = s;
        }
    }
}

/* x <- LayerNorm(x + r) over d (statistics in double), for B rows */
static void add_layernorm(float* x, const float* r, int B, int d, const float* g,
                          const float* beta, float eps) {
    for (int b = 0; b < B; ++b) {
        float* xb = x + (int64_t)b * d;
        const float* rb = r + (int64_t)b * d;
        double s = 0.0;
        for (int i = 0; i < d; ++i) { xb[i] = xb[i] + rb[i]; s += xb[i]; }
        const double mean = s / d;
        double v = 0.0;
        for (int i = 0; i < d; ++i) { const double c = xb[i] - mean; v += c * c; }
        const float rstd = (float)(1.0 / sqrt(v / d + (double)eps));
        const float m = (float)mean;
        for (int i = 0; i < d; ++i) {
            float y = (xb[i] - m) * rstd;
            if (g) y *= g[i];
            if (beta) y += beta[i];
            xb[i] = y;
        }
    }
}

/* softmax of s[0..n) in place, max subtracted */
static inline void softmax(float* s, int n) {
    float mx = s[0];
    for (int j = 1; j < n; ++j) mx = s[j] > mx ? s[j] : mx;
    float sum = 0.f;
    for (int j = 0; j < n; ++j) { s[j] = expf(s[j] - mx); sum += s[j]; }
    const float inv = 1.f / sum;
    for (int j = 0; j < n; ++j) s[j] *= inv;
}

/* o[0..dh) = sum_j p[j] * v[j * ld .. +dh) */
static inline void weighted_sum(const float* p, int n, const float* v, int64_t ld, int dh,
                                float* o) {
    int c = 0;
    for (; c + VL <= dh; c += VL) {
        vf acc = {0};
        for (int j = 0; j < n; ++j) acc += p[j] * vload(v + j * ld + c);
        vstore(o + c, acc);
    }
    for (; c < dh; ++c) {
        float acc = 0.f;
        for (int j = 0; j < n; ++j) acc += p[j] * v[j * ld + c];
        o[c] = acc;
    }
}

enum { P_SA_W, P_SA_B, P_SA_OW, P_SA_OB, P_CA_QW, P_CA_QB, P_CA_OW, P_CA_OB, P_L1_W, P_L1_B,
       P_L2_W, P_L2_B, P_N1_W, P_N1_B, P_N2_W, P_N2_B, P_N3_W, P_N3_B, P_MEM_K, P_MEM_V,
       P_COUNT };

int decoder_num_params(void) { return P_COUNT; }

/* The whole cached decode pass.
   params: L * P_COUNT pointers (see the enum): weight matrices TRANSPOSED (in, out), biases /
   LayerNorm affines (NULL = none), memory K/V (B, Tm, kk, H, dh);
   eps: (L, 3) LayerNorm eps; ppe (period, d); bias (H, Tb): reversed bias row, query t uses
   bias[h, Tb-1-t ..]; w_fold^T (d, d), b_fold (d); token0 (B, d); extra (B, T, d);
   kcache, vcache (L, B, H, T, dh) scratch; out (B, T, d).  Returns 0, or -1 (no memory). */
int decode_pass(int L, int B, int T, int d, int H, int Fd, int kk, int Tm, int Tb, int period,
                const float* const* params, const float* eps, const float* ppe,
                const float* bias, const float* w_fold, const float* b_fold,
                const float* token0, const float* extra, float* kcache, float* vcache,
                float* out) {
    const int dh = d / H;
    const float scale = (float)(1.0 / sqrt((double)dh));  /* SDPA's default scale */
    const float cdiv = (float)sqrt((double)dh);            /* cross attention divides */
    const int S = T > kk ? T : kk;
    float* buf = (float*)malloc(sizeof(float) * ((size_t)B * (7 * (size_t)d + (size_t)Fd) + S));
    if (!buf) return -1;
    float* x = buf;                    /* (B, d) running activations */
    float* qkv = x + (size_t)B * d;    /* (B, 3d) */
    float* att = qkv + (size_t)3 * B * d;  /* (B, d) */
    float* tmp = att + (size_t)B * d;  /* (B, d) */
    float* hid = tmp + (size_t)B * d;  /* (B, Fd) */
    float* sc = hid + (size_t)B * Fd;  /* (S) */

    for (int t = 0; t < T; ++t) {
        /* input token + periodic positional encoding */
        const float* pe = ppe + (int64_t)(t % period) * d;
        if (t == 0) {
            for (int b = 0; b < B; ++b)
                for (int i = 0; i < d; ++i) x[(int64_t)b * d + i] = token0[(int64_t)b * d + i] + pe[i];
        } else {
            for (int b = 0; b < B; ++b)
                linear(w_fold, b_fold, d, d, out + ((int64_t)b * T + t - 1) * d, 1,
                       tmp + (int64_t)b * d, 0);
            for (int b = 0; b < B; ++b) {
                const float* e = extra + ((int64_t)b * T + t) * d;
                for (int i = 0; i < d; ++i) {
                    const float tok = tmp[(int64_t)b * d + i] + e[i];
                    x[(int64_t)b * d + i] = tok + pe[i];
                }
            }
        }
        const float* brow = bias + (Tb - 1 - t);
        for (int l = 0; l < L; ++l) {
            const float* const* P = params + (int64_t)l * P_COUNT;
            const float* le = eps + 3 * l;
            /* ---- biased causal self-attention over keys 0..t (cached) ---- */
            linear(P[P_SA_W], P[P_SA_B], 3 * d, d, x, B, qkv, 0);
            for (int b = 0; b < B; ++b) {
                const float* q = qkv + (int64_t)b * 3 * d;
                for (int h = 0; h < H; ++h) {
                    const int64_t base = (((int64_t)l * B + b) * H + h) * T * dh;
                    float* kc = kcache + base;
                    float* vc = vcache + base;
                    memcpy(kc + (int64_t)t * dh, q + d + h * dh, sizeof(float) * dh);
                    memcpy(vc + (int64_t)t * dh, q + 2 * d + h * dh, sizeof(float) * dh);
                    const float* qh = q + h * dh;
                    const float* bh = brow + (int64_t)h * Tb;
                    for (int j = 0; j <= t; ++j)
                        sc[j] = dot(qh, kc + (int64_t)j * dh, dh) * scale + bh[j];
                    softmax(sc, t + 1);
                    weighted_sum(sc, t + 1, vc, dh, dh, att + (int64_t)b * d + h * dh);
                }
            }
            linear(P[P_SA_OW], P[P_SA_OB], d, d, att, B, tmp, 0);
            add_layernorm(x, tmp, B, d, P[P_N1_W], P[P_N1_B], le[0]);
            /* ---- aligned cross-attention: query t attends its kk speech frames ---- */
            linear(P[P_CA_QW], P[P_CA_QB], d, d, x, B, qkv, 0);
            for (int b = 0; b < B; ++b) {
                const float* q = qkv + (int64_t)b * d;
                const int64_t mbase = ((int64_t)b * Tm + t) * kk * d;
                const float* mk = P[P_MEM_K] + mbase;
                const float* mv = P[P_MEM_V] + mbase;
                for (int h = 0; h < H; ++h) {
                    for (int j = 0; j < kk; ++j)
                        sc[j] = dot(q + h * dh, mk + (int64_t)j * d + h * dh, dh) / cdiv;
                    softmax(sc, kk);
                    weighted_sum(sc, kk, mv + h * dh, d, dh, att + (int64_t)b * d + h * dh);
                }
            }
            linear(P[P_CA_OW], P[P_CA_OB], d, d, att, B, tmp, 0);
            add_layernorm(x, tmp, B, d, P[P_N2_W], P[P_N2_B], le[1]);
            /* ---- ReLU feed-forward ---- */
            linear(P[P_L1_W], P[P_L1_B], Fd, d, x, B, hid, 1);
            linear(P[P_L2_W], P[P_L2_B], d, Fd, hid, B, tmp, 0);
            add_layernorm(x, tmp, B, d, P[P_N3_W], P[P_N3_B], le[2]);
        }
        for (int b = 0; b < B; ++b)
            memcpy(out + ((int64_t)b * T + t) * d, x + (int64_t)b * d, sizeof(float) * d);
    }
    free(buf);
    return 0;
}
"""


_N_PARAMS = 20  # pointers per layer handed to decode_pass (the C enum's P_COUNT)


def _setup_decoder(lib: ctypes.CDLL) -> None:
    i32, p = ctypes.c_int, ctypes.c_void_p
    lib.decoder_num_params.argtypes = []
    lib.decoder_num_params.restype = i32
    lib.decode_pass.argtypes = [i32] * 10 + [p] * 11
    lib.decode_pass.restype = i32
    if lib.decoder_num_params() != _N_PARAMS:
        raise RuntimeError("decoder kernel parameter layout mismatch")


# no -ffast-math: the reductions' order is explicit and expf/sqrt stay exact-ish
_decoder_lib = NativeLibrary("decoder", _DECODER_SOURCE, [["-O3", "-fPIC", "-shared"]],
                             _setup_decoder)


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
    """The whole cached pass of ``PTalker._decode`` in one native call.

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
