/* Register block of the blocked direct convolution (_blocked.pyx): FC_BLK_NP output pixels x
 * FC_BLK_NV vectors of output channels, accumulated in registers. Each input value is
 * broadcast once per block and multiplied into all FC_BLK_NV weight vectors, each weight
 * vector loaded once per block and multiplied into all FC_BLK_NP pixels: NP*NV FMAs per
 * NP + NV loads (the old direct block, NP pixels x one vector, does NP FMAs per NP + 1).
 * Sized to the register file the module is compiled for (NP*NV accumulators, NV weight
 * vectors and a broadcast): AVX-512 has 32 vector registers, 6 x 4 uses 29 of them (7 x 4
 * would need 33: GCC spills accumulators to the stack); SSE2 and AVX2 have 16, 6 x 2 uses 15.
 * The weight gradient's block is FC_BLK_NP input channels x the same FC_BLK_NV vectors.
 * Packed weight layout: [group][C_out block][kh][kw][C_in / groups][FC_BLK_NV vectors].
 */
#ifndef FASTCONV_BLOCKED_H
#define FASTCONV_BLOCKED_H
#include "fastconv_simd.h"

#ifndef FC_BLK_NV
#if defined(__AVX512F__)
#define FC_BLK_NV 4
#else
#define FC_BLK_NV 2
#endif
#endif
#ifndef FC_BLK_NP
#define FC_BLK_NP 6
#endif

/* output channels per block (one packed weight row) */
#define FC_BLK_OB_F (FC_CB_F * FC_BLK_NV)
#define FC_BLK_OB_D (FC_CB_D * FC_BLK_NV)

#if FC_HAVE_VECTORS
/* One block of NP pixels x OB output channels over ntaps taps of cb input channels:
 *   out[p][c] = init[p*init_pix + c]
 *               + sum_{t < ntaps, ci < cb} xp[t*FC_BLK_NP + p][ci] * w[t*w_tap + ci*OB + c]
 * for c < nc (init NULL: 0). xp holds each tap's pointer per pixel (into x, or at zeros where
 * the tap falls in the padding); a tap whose first pointer is NULL is skipped (no pixel of the
 * block reaches x through it). init and out may be the same buffer. */
#define FC_DEFINE_BLOCKED(T, V, SUF, NP)                                                     \
    static inline void fc_blocked_##SUF##_##NP(                                              \
        const T *const *xp, const T *w, ptrdiff_t ntaps, ptrdiff_t cb, ptrdiff_t w_tap,      \
        const T *init, ptrdiff_t init_pix, T *const *out, ptrdiff_t nc)                      \
    {                                                                                        \
        enum { VL = sizeof(V) / sizeof(T), OB = VL * FC_BLK_NV };                            \
        V acc[NP][FC_BLK_NV];                                                                \
        for (int p = 0; p < NP; p++)                                                         \
            for (int v = 0; v < FC_BLK_NV; v++)                                              \
                acc[p][v] = init ? fc_load_##SUF(init + p * init_pix + v * VL) : (V){0};     \
        for (ptrdiff_t t = 0; t < ntaps; t++) {                                              \
            const T *const *xt = xp + t * FC_BLK_NP;                                         \
            if (!xt[0]) continue;                                                            \
            const T *px[NP];                                                                 \
            for (int p = 0; p < NP; p++) px[p] = xt[p];                                      \
            const T *wt = w + t * w_tap;                                                     \
            for (ptrdiff_t ci = 0; ci < cb; ci++) {                                          \
                V wv[FC_BLK_NV];                                                             \
                for (int v = 0; v < FC_BLK_NV; v++) wv[v] = fc_load_##SUF(wt + v * VL);      \
                wt += OB;                                                                    \
                for (int p = 0; p < NP; p++) {                                               \
                    T xs = px[p][ci];                                                        \
                    for (int v = 0; v < FC_BLK_NV; v++) acc[p][v] += xs * wv[v];             \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        for (int p = 0; p < NP; p++)                                                         \
            for (int v = 0; v < FC_BLK_NV && v * VL < nc; v++)                               \
                fc_store_part_##SUF(out[p] + v * VL, acc[p][v],                              \
                                    nc - v * VL < VL ? nc - v * VL : VL);                    \
    }

#define FC_BLK_FOR_EACH_NP(M, T, V, SUF) \
    M(T, V, SUF, 1) M(T, V, SUF, 2) M(T, V, SUF, 3) M(T, V, SUF, 4) \
    M(T, V, SUF, 5) M(T, V, SUF, 6) M(T, V, SUF, 7) M(T, V, SUF, 8)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, float, fc_vf, f)
FC_BLK_FOR_EACH_NP(FC_DEFINE_BLOCKED, double, fc_vd, d)

#define FC_BLK_CASE(SUF, NP) \
    case NP: fc_blocked_##SUF##_##NP(xp, w, ntaps, cb, w_tap, init, init_pix, out, nc); break;
#define FC_DEFINE_BLOCKED_DISPATCH(T, SUF)                                                   \
    static inline void fc_blocked_##SUF(                                                     \
        int npix, const T *const *xp, const T *w, ptrdiff_t ntaps, ptrdiff_t cb,             \
        ptrdiff_t w_tap, const T *init, ptrdiff_t init_pix, T *const *out, ptrdiff_t nc)     \
    {                                                                                        \
        switch (npix) {                                                                      \
            FC_BLK_CASE(SUF, 1) FC_BLK_CASE(SUF, 2) FC_BLK_CASE(SUF, 3) FC_BLK_CASE(SUF, 4)  \
            FC_BLK_CASE(SUF, 5) FC_BLK_CASE(SUF, 6) FC_BLK_CASE(SUF, 7) FC_BLK_CASE(SUF, 8)  \
        }                                                                                    \
    }
FC_DEFINE_BLOCKED_DISPATCH(float, f)
FC_DEFINE_BLOCKED_DISPATCH(double, d)
#if FC_BLK_NP > 8
#error "FC_BLK_NP is at most 8 (one function per pixel count above)"
#endif

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
        for (int i = 0; i < NCI; i++)                                                        \
            for (int v = 0; v < FC_BLK_NV && v * VL < nc; v++) {                             \
                T *out = gw + i * w_ci + v * VL;                                             \
                ptrdiff_t n = nc - v * VL < VL ? nc - v * VL : VL;                           \
                T lanes[VL];                                                                 \
                memcpy(lanes, &acc[i][v], sizeof(V));                                        \
                for (ptrdiff_t c = 0; c < n; c++) out[c] += lanes[c];                        \
            }                                                                                \
    }
FC_BLK_FOR_EACH_NP(FC_DEFINE_WGRAD_BLOCKED, float, fc_vf, f)
FC_BLK_FOR_EACH_NP(FC_DEFINE_WGRAD_BLOCKED, double, fc_vd, d)

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
#define FC_STUB_BLOCKED(SUF, T) static inline void fc_blocked_##SUF(int npix, \
    const T *const *xp, const T *w, ptrdiff_t ntaps, ptrdiff_t cb, ptrdiff_t w_tap, \
    const T *init, ptrdiff_t init_pix, T *const *out, ptrdiff_t nc) {}
FC_STUB_BLOCKED(f, float)
FC_STUB_BLOCKED(d, double)
#define FC_STUB_WGRAD_BLOCKED(SUF, T) static inline void fc_wgrad_blocked_##SUF(int nci, \
    const T *const *xp, ptrdiff_t ci0, const T *gy, ptrdiff_t gy_pix, ptrdiff_t npix, T *gw, \
    ptrdiff_t w_ci, ptrdiff_t nc) {}
FC_STUB_WGRAD_BLOCKED(f, float)
FC_STUB_WGRAD_BLOCKED(d, double)
#endif
#endif
