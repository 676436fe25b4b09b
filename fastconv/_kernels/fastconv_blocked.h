/* Register block of the blocked direct convolution (_blocked.pyx): up to FC_BLK_PIX(NV) output
 * pixels x NV vectors of output channels, accumulated in registers. Each input value is
 * broadcast once per block and multiplied into all NV weight vectors, each weight vector
 * loaded once per block and multiplied into all pixels: NP*NV FMAs per NP + NV loads.
 * A packed weight row holds FC_BLK_NV vectors (one output-channel block); a block's last
 * row, narrower where C_out is not a whole number of blocks, runs with only the vectors it
 * needs (NV < FC_BLK_NV) and more pixels, so that no FMA works on padding.
 * Sized to the register file the module is compiled for (NP*NV accumulators, NV weight
 * vectors and a broadcast): AVX-512 has 32 vector registers: 6 x 4 uses 29 of them (7 x 4
 * would need 33: GCC spills accumulators to the stack), 8 x 3 uses 28, 8 x 2 and 8 x 1 fewer
 * (8 pixel pointers and the loop counters fill the 15 general registers); SSE2 and AVX2 have
 * 16: 6 x 2 uses 15, 8 x 1 uses 10.
 * The weight gradient's block is FC_BLK_NP input channels x FC_BLK_NV vectors.
 * Packed weight layout: [group][C_out block][kh][kw][C_in / groups][FC_BLK_NV vectors].
 */
#ifndef FASTCONV_BLOCKED_H
#define FASTCONV_BLOCKED_H
#include "fastconv_simd.h"
#include "fastconv_epilogue.h"

#if defined(__AVX512F__)
#define FC_BLK_NV 4
#else
#define FC_BLK_NV 2
#endif
#define FC_BLK_PIX(nv) ((nv) >= FC_BLK_NV ? 6 : 8)  /* pixels of a block of nv vectors */
#define FC_BLK_NP FC_BLK_PIX(FC_BLK_NV)  /* pixels of a full-width block */
#define FC_BLK_PIX_MAX 8                 /* the most pixels of any block: xp's stride */

/* output channels per block (one packed weight row) */
#define FC_BLK_OB_F (FC_CB_F * FC_BLK_NV)
#define FC_BLK_OB_D (FC_CB_D * FC_BLK_NV)

/* Whether a register block applies chain p itself (its activations are none, relu or relu6),
 * or stores first and leaves the chain to fc_postops_pixels. */
#define FC_DEFINE_CHAIN_IN_REGISTERS(PSUF)                                                   \
    static inline int fc_blk_chain_in_registers_##PSUF(const fc_postops_##PSUF *p) {         \
        return p->act1 <= FC_ACT_RELU6 && p->act2 <= FC_ACT_RELU6;                           \
    }
FC_DEFINE_CHAIN_IN_REGISTERS(f32)
FC_DEFINE_CHAIN_IN_REGISTERS(f64)

/* fully unrolled: the register block's accumulators stay in registers */
#define FC_UNROLL _Pragma("GCC unroll 16")
#if FC_HAVE_VECTORS
typedef int fc_vif __attribute__((vector_size(FC_VBYTES)));        /* lane masks */
typedef long long fc_vid __attribute__((vector_size(FC_VBYTES)));

/* The activations that a register block applies itself (fc_blk_chain_in_registers), as
 * fastconv_epilogue.h has them: relu (NaN stays NaN, -0 becomes 0) and relu6 (NaN stays
 * NaN, -0 stays -0, clamped to [0, 6]). AVX-512
 * compares into mask registers; the others select through integer vectors. */
#if defined(__AVX512F__)
#define FC_DEFINE_BLOCK_POST(T, V, SUF, M, PS)                                               \
    static inline V fc_relu_##SUF(V v) {                                                     \
        const M z = _mm512_setzero_##PS();                                                   \
        return (V)_mm512_mask_mov_##PS((M)v, _mm512_cmp_##PS##_mask((M)v, z, _CMP_LE_OQ), z); \
    }                                                                                        \
    static inline V fc_relu6_##SUF(V v) {                                                    \
        const M z = _mm512_setzero_##PS(), six = _mm512_set1_##PS(6);                        \
        M u = _mm512_mask_mov_##PS((M)v, _mm512_cmp_##PS##_mask((M)v, z, _CMP_LT_OQ), z);   \
        return (V)_mm512_mask_mov_##PS(u, _mm512_cmp_##PS##_mask(u, six, _CMP_GT_OQ), six);  \
    }
FC_DEFINE_BLOCK_POST(float, fc_vf, f, __m512, ps)
FC_DEFINE_BLOCK_POST(double, fc_vd, d, __m512d, pd)
#else
#define FC_DEFINE_BLOCK_POST(T, V, VI, SUF)                                                  \
    static inline V fc_where_##SUF(VI m, V a, V b) { /* m ? a : b, lane by lane */           \
        return (V)(((VI)a & m) | ((VI)b & ~m));                                              \
    }                                                                                        \
    static inline V fc_relu_##SUF(V v) {                                                     \
        const V zero = {0};                                                                  \
        return fc_where_##SUF(v <= zero, zero, v);                                           \
    }                                                                                        \
    static inline V fc_relu6_##SUF(V v) {                                                    \
        const V zero = {0};                                                                  \
        v = fc_where_##SUF(v < zero, zero, v);                                               \
        return fc_where_##SUF(v > zero + 6, zero + 6, v);                                    \
    }
FC_DEFINE_BLOCK_POST(float, fc_vf, fc_vif, f)
FC_DEFINE_BLOCK_POST(double, fc_vd, fc_vid, d)
#endif

/* One block of NP pixels x NV vectors (the first nc channels kept) over ntaps taps of cb
 * input channels:
 *   out[p][c] = post(init[p*init_pix + c]
 *                    + sum_{t < ntaps, ci < cb}
 *                          xp[t*FC_BLK_PIX_MAX + p][ci] * w[t*w_tap + ci*OB + c])
 * for c < nc, nc in ((NV-1)*VL, NV*VL] (init NULL: 0; OB: a packed row, FC_BLK_NV vectors).
 * xp holds each tap's pointer per pixel (into x, or at zeros where the tap falls in the
 * padding); a tap whose first pointer is NULL is skipped (no pixel of the block reaches x
 * through it). init and out may be the same buffer. post (NULL: none) is a chain that
 * fc_blk_chain_in_registers accepts, on channels c0 + c of output pixels pixel + p.
 * stream: the whole vectors go out with non-temporal stores (out[p] aligned to a vector). */
#define FC_DEFINE_BLOCKED(T, V, SUF, PSUF, NP, NV)                                           \
    static inline void fc_blocked_##SUF##_##NV##_##NP(                                       \
        const T *const *xp, const T *w, ptrdiff_t ntaps, ptrdiff_t cb, ptrdiff_t w_tap,      \
        const T *init, ptrdiff_t init_pix, T *const *out, ptrdiff_t nc,                      \
        const fc_postops_##PSUF *post, ptrdiff_t pixel, ptrdiff_t c0, int stream)            \
    {                                                                                        \
        enum { VL = sizeof(V) / sizeof(T), OB = VL * FC_BLK_NV };                            \
        V acc[NP][NV];                                                                       \
        FC_UNROLL for (int p = 0; p < NP; p++)                                               \
            FC_UNROLL for (int v = 0; v < NV; v++)                                           \
                acc[p][v] = init ? fc_load_##SUF(init + p * init_pix + v * VL) : (V){0};     \
        for (ptrdiff_t t = 0; t < ntaps; t++) {                                              \
            const T *const *xt = xp + t * FC_BLK_PIX_MAX;                                    \
            if (!xt[0]) continue;                                                            \
            const T *px[NP];                                                                 \
            FC_UNROLL for (int p = 0; p < NP; p++) px[p] = xt[p];                            \
            const T *wt = w + t * w_tap;                                                     \
            for (ptrdiff_t ci = 0; ci < cb; ci++) {                                          \
                V wv[NV];                                                                    \
                FC_UNROLL for (int v = 0; v < NV; v++) wv[v] = fc_load_##SUF(wt + v * VL);   \
                wt += OB;                                                                    \
                FC_UNROLL for (int p = 0; p < NP; p++) {                                     \
                    T xs = px[p][ci];                                                        \
                    FC_UNROLL for (int v = 0; v < NV; v++) acc[p][v] += xs * wv[v];          \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        const ptrdiff_t last = nc - (NV - 1) * VL; /* lanes kept of the last vector */       \
        if (post) { /* each step's test once per block, its loops over constant bounds */    \
            FC_BLK_CHANNEL_STEP(V, SUF, NP, NV, post->bias, +=)                              \
            FC_BLK_CHANNEL_STEP(V, SUF, NP, NV, post->scale, *=)                             \
            FC_BLK_CHANNEL_STEP(V, SUF, NP, NV, post->shift, +=)                             \
            FC_BLK_ACT(SUF, NP, NV, post->act1)                                              \
            if (post->residual)                                                              \
                FC_UNROLL for (int p = 0; p < NP; p++) {                                     \
                    const T *r = post->residual + (pixel + p) * post->residual_pixel + c0;   \
                    FC_UNROLL for (int v = 0; v < NV; v++)                                   \
                        acc[p][v] += v < NV - 1 ? fc_load_##SUF(r + v * VL)                  \
                                                : fc_load_part_##SUF(r + v * VL, last);      \
                }                                                                            \
            FC_BLK_ACT(SUF, NP, NV, post->act2)                                              \
        }                                                                                    \
        FC_UNROLL for (int p = 0; p < NP; p++) {                                             \
            FC_UNROLL for (int v = 0; v < NV - 1; v++) {                                     \
                if (stream) fc_stream_##SUF(out[p] + v * VL, acc[p][v]);                     \
                else fc_store_##SUF(out[p] + v * VL, acc[p][v]);                             \
            }                                                                                \
            if (stream && last == VL) fc_stream_##SUF(out[p] + (NV - 1) * VL, acc[p][NV - 1]); \
            else fc_store_part_##SUF(out[p] + (NV - 1) * VL, acc[p][NV - 1], last);          \
        }                                                                                    \
    }
/* (inside FC_DEFINE_BLOCKED) acc[p][v] OP vec[c0 + v*VL ...] for every pixel, where vec is
 * not NULL */
#define FC_BLK_CHANNEL_STEP(V, SUF, NP, NV, vec, OP)                                         \
    if (vec) {                                                                               \
        FC_UNROLL for (int v = 0; v < NV; v++) {                                             \
            const V s = v < NV - 1 ? fc_load_##SUF(vec + c0 + v * VL)                        \
                                   : fc_load_part_##SUF(vec + c0 + v * VL, last);            \
            FC_UNROLL for (int p = 0; p < NP; p++) acc[p][v] OP s;                           \
        }                                                                                    \
    }
/* (inside FC_DEFINE_BLOCKED) activation `act` on every accumulator */
#define FC_BLK_ACT(SUF, NP, NV, act)                                                         \
    if ((act) == FC_ACT_RELU) {                                                              \
        FC_UNROLL for (int p = 0; p < NP; p++)                                               \
            FC_UNROLL for (int v = 0; v < NV; v++) acc[p][v] = fc_relu_##SUF(acc[p][v]);     \
    } else if ((act) == FC_ACT_RELU6) {                                                      \
        FC_UNROLL for (int p = 0; p < NP; p++)                                               \
            FC_UNROLL for (int v = 0; v < NV; v++) acc[p][v] = fc_relu6_##SUF(acc[p][v]);    \
    }

#define FC_BLK_FOR_EACH_NP(M, T, V, SUF, PSUF, NV) \
    M(T, V, SUF, PSUF, 1, NV) M(T, V, SUF, PSUF, 2, NV) M(T, V, SUF, PSUF, 3, NV) \
    M(T, V, SUF, PSUF, 4, NV) M(T, V, SUF, PSUF, 5, NV) M(T, V, SUF, PSUF, 6, NV) \
    M(T, V, SUF, PSUF, 7, NV) M(T, V, SUF, PSUF, 8, NV)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, float, fc_vf, f, f32, 1)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, float, fc_vf, f, f32, 2)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, double, fc_vd, d, f64, 1)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, double, fc_vd, d, f64, 2)
#if FC_BLK_NV == 4
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, float, fc_vf, f, f32, 3)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, float, fc_vf, f, f32, 4)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, double, fc_vd, d, f64, 3)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, double, fc_vd, d, f64, 4)
#define FC_BLK_WIDE_CASES(SUF) FC_BLK_NV_CASE(SUF, 3) FC_BLK_NV_CASE(SUF, 4)
#elif FC_BLK_NV == 2
#define FC_BLK_WIDE_CASES(SUF)
#else
#error "FC_BLK_NV is 2 or 4"
#endif

#define FC_BLK_CASE(SUF, NV, NP) case NP: fc_blocked_##SUF##_##NV##_##NP(                    \
    xp, w, ntaps, cb, w_tap, init, init_pix, out, nc, post, pixel, c0, stream); return;
#define FC_BLK_NV_CASE(SUF, NV) case NV: switch (npix) {                                     \
    FC_BLK_CASE(SUF, NV, 1) FC_BLK_CASE(SUF, NV, 2) FC_BLK_CASE(SUF, NV, 3)                  \
    FC_BLK_CASE(SUF, NV, 4) FC_BLK_CASE(SUF, NV, 5) FC_BLK_CASE(SUF, NV, 6)                  \
    FC_BLK_CASE(SUF, NV, 7) FC_BLK_CASE(SUF, NV, 8) } return;
/* The block of npix <= FC_BLK_PIX(nv) pixels and nc channels, nv = ceil(nc / VL). */
#define FC_DEFINE_BLOCKED_DISPATCH(T, SUF, PSUF)                                             \
    static inline void fc_blocked_##SUF(                                                     \
        int npix, const T *const *xp, const T *w, ptrdiff_t ntaps, ptrdiff_t cb,             \
        ptrdiff_t w_tap, const T *init, ptrdiff_t init_pix, T *const *out, ptrdiff_t nc,     \
        const fc_postops_##PSUF *post, ptrdiff_t pixel, ptrdiff_t c0, int stream)            \
    {                                                                                        \
        enum { VL = FC_VBYTES / sizeof(T) };                                                 \
        switch ((nc + VL - 1) / VL) {                                                        \
            FC_BLK_NV_CASE(SUF, 1) FC_BLK_NV_CASE(SUF, 2) FC_BLK_WIDE_CASES(SUF)             \
        }                                                                                    \
    }
FC_DEFINE_BLOCKED_DISPATCH(float, f, f32)
FC_DEFINE_BLOCKED_DISPATCH(double, d, f64)

/* Weight gradient, one block of NCI input channels x OB output channels of one tap:
 *   gw[i*w_ci + c] += sum_{p < npix} xp[p][ci0 + i] * gy[p*gy_pix + c]   for i < nci, c < nc
 * xp: each pixel's input at the group's first channel (or at zeros where the tap falls in
 * the padding); gy: the pixels' output gradients, OB channels each (zero beyond nc). */
#define FC_DEFINE_WGRAD_BLOCKED(T, V, SUF, NCI)                                              \
    static inline void fc_wgrad_blocked_##SUF##_##NCI(                                       \
        const T *const *xp, ptrdiff_t ci0, const T *gy, ptrdiff_t gy_pix, ptrdiff_t npix,    \
        T *gw, ptrdiff_t w_ci, ptrdiff_t nc)                                                 \
    {                                                                                        \
        enum { VL = sizeof(V) / sizeof(T) };                                                 \
        V acc[NCI][FC_BLK_NV];                                                               \
        for (int i = 0; i < NCI; i++)                                                        \
            for (int v = 0; v < FC_BLK_NV; v++) acc[i][v] = (V){0};                          \
        for (ptrdiff_t p = 0; p < npix; p++) {                                               \
            const T *xs = xp[p] + ci0;                                                       \
            V g[FC_BLK_NV];                                                                  \
            for (int v = 0; v < FC_BLK_NV; v++) g[v] = fc_load_##SUF(gy + p * gy_pix + v * VL); \
            for (int i = 0; i < NCI; i++) {                                                  \
                T xi = xs[i];                                                                \
                for (int v = 0; v < FC_BLK_NV; v++) acc[i][v] += xi * g[v];                  \
            }                                                                                \
        }                                                                                    \
        /* whole vectors added as vectors (with few pixels this store is as long as the  \
         * sums: 3x3 512 -> 512 at 4x4), a last partial one through masked lanes */          \
        for (int i = 0; i < NCI; i++)                                                        \
            for (int v = 0; v < FC_BLK_NV && v * VL < nc; v++) {                             \
                T *out = gw + i * w_ci + v * VL;                                             \
                ptrdiff_t n = nc - v * VL < VL ? nc - v * VL : VL;                           \
                fc_store_part_##SUF(out, fc_load_part_##SUF(out, n) + acc[i][v], n);         \
            }                                                                                \
    }
FC_FOR_EACH_NP(FC_DEFINE_WGRAD_BLOCKED, float, fc_vf, f)
FC_FOR_EACH_NP(FC_DEFINE_WGRAD_BLOCKED, double, fc_vd, d)

#define FC_WG_CASE(SUF, NCI) \
    case NCI: fc_wgrad_blocked_##SUF##_##NCI(xp, ci0, gy, gy_pix, npix, gw, w_ci, nc); break;
#define FC_DEFINE_WGRAD_DISPATCH(T, SUF)                                                     \
    static inline void fc_wgrad_blocked_##SUF(                                               \
        int nci, const T *const *xp, ptrdiff_t ci0, const T *gy, ptrdiff_t gy_pix,           \
        ptrdiff_t npix, T *gw, ptrdiff_t w_ci, ptrdiff_t nc)                                 \
    {                                                                                        \
        switch (nci) {                                                                       \
            FC_WG_CASE(SUF, 1) FC_WG_CASE(SUF, 2) FC_WG_CASE(SUF, 3) FC_WG_CASE(SUF, 4)      \
            FC_WG_CASE(SUF, 5) FC_WG_CASE(SUF, 6) FC_WG_CASE(SUF, 7) FC_WG_CASE(SUF, 8)      \
        }                                                                                    \
    }
FC_DEFINE_WGRAD_DISPATCH(float, f)
FC_DEFINE_WGRAD_DISPATCH(double, d)

#else /* no vector extensions: _blocked.pyx's Cython loop does the work */
#define FC_STUB_BLOCKED(SUF, T, PSUF) static inline void fc_blocked_##SUF(int npix, \
    const T *const *xp, const T *w, ptrdiff_t ntaps, ptrdiff_t cb, ptrdiff_t w_tap, \
    const T *init, ptrdiff_t init_pix, T *const *out, ptrdiff_t nc, \
    const fc_postops_##PSUF *post, ptrdiff_t pixel, ptrdiff_t c0, int stream) {}
FC_STUB_BLOCKED(f, float, f32)
FC_STUB_BLOCKED(d, double, f64)
#define FC_STUB_WGRAD_BLOCKED(SUF, T) static inline void fc_wgrad_blocked_##SUF(int nci, \
    const T *const *xp, ptrdiff_t ci0, const T *gy, ptrdiff_t gy_pix, ptrdiff_t npix, T *gw, \
    ptrdiff_t w_ci, ptrdiff_t nc) {}
FC_STUB_WGRAD_BLOCKED(f, float)
FC_STUB_WGRAD_BLOCKED(d, double)
#endif
#endif
