/* The fused graph-attention (GAT) layer of ptalker_cli.model.graph_encoder, inference only:
 * online max / exp / weighted sum over each vertex's neighbour slots, OpenMP over vertices when
 * built with -fopenmp (without it the pragmas are ignored and the kernel runs on one thread).
 * Built with -ffast-math; agrees with the PyTorch path to float32 round-off.
 *
 * Interface: the functions marked KERNEL_API are the only exported symbols (the build uses
 * -fvisibility=hidden); ptalker_cli/kernels/build.py reads their prototypes from this file to
 * declare the ctypes signatures, so each argument list is written down here and nowhere else. */
#define KERNEL_API __attribute__((visibility("default")))

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Layout convention: a feature tensor is (Vf, Hf, F, ld) float32, row (= one channel of one
   vertex) stride ld, frames contiguous; only the first N entries of each row are used. */

/* exp(x) = 2^n * 2^r, r in [-.5, .5], degree-6 polynomial (rel. error ~2e-7); arguments are
   <= 0 here (softmax numerators after max subtraction, ELU's negative branch). */
static inline float fexp(float x) {
    float t = x * 1.4426950408889634f;
    t = t < -126.f ? -126.f : (t > 126.f ? 126.f : t);
    const float n = floorf(t + 0.5f);
    const float r = t - n;
    float p = 1.5353362e-4f;
    p = p * r + 1.3398874e-3f;
    p = p * r + 9.6181291e-3f;
    p = p * r + 5.5504109e-2f;
    p = p * r + 2.4022651e-1f;
    p = p * r + 6.9314718e-1f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* ---- 16-wide vectors (GCC/Clang vector extensions; AVX-512 with -march=native) ----
   the vector helpers are static inline: no vector crosses the library's ABI */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
#define VL 16
static inline vf vload(const float* p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float* p, vf v) { memcpy(p, &v, sizeof v); }
static inline vf vbcast(float x) { vf v = {0}; return v + x; }
static inline vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
static inline vf vmax(vf a, vf b) { return vsel(a > b, a, b); }
static inline vf vmin(vf a, vf b) { return vsel(a < b, a, b); }
static inline vf vlrelu(vf z, float s) { return vsel(z > vbcast(0.f), z, z * s); }
static inline vf vexp(vf x) {
    vf t = x * 1.4426950408889634f;
    t = vmin(vmax(t, vbcast(-126.f)), vbcast(126.f));
    const vi k = __builtin_convertvector(t + 128.5f, vi);   /* floor(t + .5) + 128 (> 0) */
    const vf r = t - (__builtin_convertvector(k, vf) - 128.f);
    vf p = vbcast(1.5353362e-4f);
    p = p * r + 1.3398874e-3f;
    p = p * r + 9.6181291e-3f;
    p = p * r + 5.5504109e-2f;
    p = p * r + 2.4022651e-1f;
    p = p * r + 6.9314718e-1f;
    p = p * r + 1.0f;
    return p * (vf)((k - 1) << 23);
}

/* out (cols, rows) = in (rows, cols)^T, blocked */
KERNEL_API void transpose_f32(const float* in, int64_t rows, int64_t cols, float* out, int nthreads) {
#ifndef _OPENMP
    (void)nthreads;
#endif
    const int64_t B = 32;
    #pragma omp parallel for schedule(dynamic, 8) num_threads(nthreads)
    for (int64_t cb = 0; cb < cols; cb += B) {
        const int64_t ce = cb + B < cols ? cb + B : cols;
        for (int64_t rb = 0; rb < rows; rb += B) {
            const int64_t re = rb + B < rows ? rb + B : rows;
            for (int64_t c = cb; c < ce; ++c)
                for (int64_t r = rb; r < re; ++r)
                    out[c * rows + r] = in[r * cols + c];
        }
    }
}

/* s (Vf, H, N) contiguous: s[u,h,n] = sum_c a[h,c] * f[u, hf(h), c, n] */
static void scores_block(const float* f, int64_t ld, int64_t u0, int64_t u1, int H, int Hf,
                         int F, int64_t N, const float* a, float* s) {
    for (int64_t u = u0; u < u1; ++u)
        for (int h = 0; h < H; ++h) {
            const float* fu = f + (u * Hf + (Hf == 1 ? 0 : h)) * (int64_t)F * ld;
            float* su = s + (u * H + h) * N;
            for (int64_t n = 0; n < N; ++n) su[n] = 0.f;
            for (int c = 0; c < F; ++c) {
                const float w = a[h * F + c];
                const float* fc = fu + c * ld;
                #pragma omp simd
                for (int64_t n = 0; n < N; ++n) su[n] += w * fc[n];
            }
        }
}

#define FMAX 8
/* the widest per-head feature gat_layer keeps in registers (checked by the Python side) */
KERNEL_API int gat_max_features(void) { return FMAX; }

/* one vertex, one head: softmax over the cnt valid slots and weighted sum, frames [0, N) */
static inline __attribute__((always_inline)) void gat_vertex_head(
        const float* const* sp, const float* const* fp, int cnt, const float* sd, int64_t N,
        int64_t ldf, const int F, float slope, const float* Ph, int O, float scale,
        const float* bias_h, int fuse_post, int elu, int accumulate, float* oh, int64_t ldo) {
    int64_t n = 0;
    for (; n + VL <= N; n += VL) {
        const vf sdn = vload(sd + n);
        vf mx = vload(sp[0] + n);
        for (int k = 1; k < cnt; ++k) mx = vmax(mx, vload(sp[k] + n));
        mx = vlrelu(mx + sdn, slope);   /* leaky relu is monotonic: max of the logits */
        vf den = vbcast(0.f);
        /* named accumulators (F <= 8 after constant folding) so that they stay in registers */
        vf a0 = den, a1 = den, a2 = den, a3 = den, a4 = den, a5 = den, a6 = den, a7 = den;
        for (int k = 0; k < cnt; ++k) {
            const vf p = vexp(vlrelu(vload(sp[k] + n) + sdn, slope) - mx);
            den += p;
            const float* fk = fp[k] + n;
            a0 += p * vload(fk);
            if (F > 1) a1 += p * vload(fk + ldf);
            if (F > 2) a2 += p * vload(fk + 2 * ldf);
            if (F > 3) a3 += p * vload(fk + 3 * ldf);
            if (F > 4) a4 += p * vload(fk + 4 * ldf);
            if (F > 5) a5 += p * vload(fk + 5 * ldf);
            if (F > 6) a6 += p * vload(fk + 6 * ldf);
            if (F > 7) a7 += p * vload(fk + 7 * ldf);
        }
        vf a[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
        const vf inv = scale / den;
        for (int c = 0; c < F; ++c) a[c] *= inv;
        for (int o = 0; o < O; ++o) {
            vf y;
            if (Ph) {
                y = vbcast(0.f);
                for (int c = 0; c < F; ++c) y += Ph[o * F + c] * a[c];
            } else {
                y = a[o];
            }
            float* oo = oh + o * ldo + n;
            if (accumulate) y += vload(oo);
            if (fuse_post) {
                if (bias_h) y += bias_h[o];
                if (elu) y = vsel(y > vbcast(0.f), y, vexp(y) - 1.f);
            }
            vstore(oo, y);
        }
    }
    for (; n < N; ++n) {  /* scalar tail */
        const float sdn = sd[n];
        float mx = sp[0][n];
        for (int k = 1; k < cnt; ++k) mx = sp[k][n] > mx ? sp[k][n] : mx;
        mx += sdn;
        mx = mx > 0.f ? mx : mx * slope;
        float den = 0.f, a[FMAX];
        for (int c = 0; c < F; ++c) a[c] = 0.f;
        for (int k = 0; k < cnt; ++k) {
            float z = sp[k][n] + sdn;
            z = z > 0.f ? z : z * slope;
            const float p = fexp(z - mx);
            den += p;
            for (int c = 0; c < F; ++c) a[c] += p * fp[k][c * ldf + n];
        }
        const float inv = scale / den;
        for (int o = 0; o < O; ++o) {
            float y = 0.f;
            if (Ph) { for (int c = 0; c < F; ++c) y += Ph[o * F + c] * a[c] * inv; }
            else y = a[o] * inv;
            float* oo = oh + o * ldo + n;
            if (accumulate) y += *oo;
            if (fuse_post) {
                if (bias_h) y += bias_h[o];
                if (elu) y = y > 0.f ? y : fexp(y) - 1.f;
            }
            *oo = y;
        }
    }
}

/* Full GAT layer over a frame block.
   f: (V, Hf, F, ldf) features (Hf == 1: shared by all heads, i.e. raw inputs);
   nbr: (V, K) neighbour table, padding slots < 0 (valid slots form a prefix, slot 0 = self);
   a_src, a_dst: (H, F) score vectors; P: (H, O, F) matrix applied after aggregation or NULL
   (then O == F); bias: (Cout) or NULL; out: (V, Cout, ldo), Cout = concat ? H*O : O;
   ss, sd: scratch (V, H, N) each. */
KERNEL_API void gat_layer(const float* f, int64_t ldf, const int64_t* nbr, int64_t V, int K, int H,
                          int Hf, int F, int64_t N, const float* a_src, const float* a_dst, float slope,
                          const float* P, int O, const float* bias, int concat, int elu,
                          float* out, int64_t ldo, float* ss, float* sd, int nthreads) {
#ifndef _OPENMP
    (void)nthreads;
#endif
    const int Cout = concat ? H * O : O;
    const int fuse_post = concat || H == 1;
    const float scale = concat ? 1.f : 1.f / (float)H;
    const int64_t SB = 256;
    #pragma omp parallel num_threads(nthreads)
    {
        #pragma omp for schedule(dynamic, 1)
        for (int64_t u0 = 0; u0 < V; u0 += SB) {
            const int64_t u1 = u0 + SB < V ? u0 + SB : V;
            scores_block(f, ldf, u0, u1, H, Hf, F, N, a_src, ss);
            scores_block(f, ldf, u0, u1, H, Hf, F, N, a_dst, sd);
        }
        /* implicit barrier */
        #pragma omp for schedule(dynamic, 64)
        for (int64_t v = 0; v < V; ++v) {
            const int64_t* nv = nbr + v * K;
            const float* sp[K];
            const float* fp[K];
            float* ov = out + v * (int64_t)Cout * ldo;
            int cnt = 0;
            while (cnt < K && nv[cnt] >= 0) ++cnt;
            for (int h = 0; h < H; ++h) {
                for (int k = 0; k < cnt; ++k) {
                    const int64_t u = nv[k];
                    sp[k] = ss + (u * H + h) * N;
                    fp[k] = f + (u * Hf + (Hf == 1 ? 0 : h)) * (int64_t)F * ldf;
                }
                const float* sdv = sd + (v * H + h) * N;
                const float* Ph = P ? P + (int64_t)h * O * F : NULL;
                float* oh = ov + (int64_t)(concat ? h * O : 0) * ldo;
                const float* bh = bias ? bias + (concat ? h * O : 0) : NULL;
                const int acc = !concat && h > 0;
#define GVH(FF) gat_vertex_head(sp, fp, cnt, sdv, N, ldf, FF, slope, Ph, O, scale, bh, fuse_post, elu, acc, oh, ldo)
                switch (F) {  /* constant F: the F weighted sums live in registers */
                case 1: GVH(1); break;
                case 2: GVH(2); break;
                case 3: GVH(3); break;
                case 4: GVH(4); break;
                case 5: GVH(5); break;
                case 6: GVH(6); break;
                case 8: GVH(8); break;
                default: GVH(F > FMAX ? FMAX : F); break;
                }
#undef GVH
            }
            if (!fuse_post) {  /* mean over heads: bias / ELU after the last head */
                for (int c = 0; c < Cout; ++c) {
                    float* oc = ov + (int64_t)c * ldo;
                    const float b = bias ? bias[c] : 0.f;
                    for (int64_t n = 0; n < N; ++n) {
                        const float z = oc[n] + b;
                        oc[n] = elu ? (z > 0.f ? z : fexp(z) - 1.f) : z;
                    }
                }
            }
        }
    }
}
