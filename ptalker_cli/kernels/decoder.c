/* The fused decode pass of ptalker_cli.model.decoder.MotionDecoder: a whole cached autoregressive
 * pass (token feedback through the folded embed-after-head map) in one call; Python side:
 * ptalker_cli/model/native_decoder.py.  Same math as the PyTorch path (max-subtracted softmax,
 * attention scale 1/sqrt(dh), bias added before the softmax, LayerNorm with the modules' eps),
 * compiled without -ffast-math, so results agree to float32 round-off.
 *
 * Interface: the functions marked KERNEL_API are the only exported symbols (the build uses
 * -fvisibility=hidden); ptalker_cli/kernels/build.py reads their prototypes from this file to
 * declare the ctypes signatures, so each argument list is written down here and nowhere else. */
#define KERNEL_API __attribute__((visibility("default")))

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
/* the vector helpers are static inline: no vector crosses the library's ABI */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
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

KERNEL_API int decoder_num_params(void) { return P_COUNT; }

/* The whole cached decode pass.
   params: L * P_COUNT pointers (see the enum): weight matrices TRANSPOSED (in, out), biases /
   LayerNorm affines (NULL = none), memory K/V (B, Tm, kk, H, dh);
   eps: (L, 3) LayerNorm eps; ppe (period, d); bias (H, Tb): reversed bias row, query t uses
   bias[h, Tb-1-t ..]; w_fold^T (d, d), b_fold (d); token0 (B, d); extra (B, T, d);
   kcache, vcache (L, B, H, T, dh) scratch; out (B, T, d).  Returns 0, or -1 (no memory). */
KERNEL_API int decode_pass(int L, int B, int T, int d, int H, int Fd, int kk, int Tm, int Tb, int period,
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
