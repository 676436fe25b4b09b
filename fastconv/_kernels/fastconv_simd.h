/* Register-blocked inner loops of the direct kernels, written with GCC/Clang vector extensions
 * so that one source compiles to SSE2, AVX2 or AVX-512 code depending on the flags the module
 * is built with (setup.py builds one module per instruction set; Python picks one at run time).
 *
 * A block is FC_PB output pixels x one vector of output channels, accumulated in registers over
 * all kernel taps (and input channels) before it is stored once.
 * Compilers without vector extensions (MSVC), or -DFASTCONV_NO_VECTORS, get FC_HAVE_VECTORS 0
 * and the Cython loops.
 */
#ifndef FASTCONV_SIMD_H
#define FASTCONV_SIMD_H
#include <stddef.h>
#include <string.h>

#if defined(__AVX512F__)
#define FC_VBYTES 64
#define FC_PB 8
#define FC_ISA "avx512"
#elif defined(__AVX2__)
#define FC_VBYTES 32
#define FC_PB 6
#define FC_ISA "avx2"
#else
#define FC_VBYTES 16
#define FC_PB 4
#define FC_ISA "baseline"
#endif

#if (defined(__GNUC__) || defined(__clang__)) && !defined(FASTCONV_NO_VECTORS)
#define FC_HAVE_VECTORS 1
#define FC_CB_F (FC_VBYTES / 4)  /* floats in one vector */
#define FC_CB_D (FC_VBYTES / 8)  /* doubles in one vector */

typedef float fc_vf __attribute__((vector_size(FC_VBYTES)));
typedef double fc_vd __attribute__((vector_size(FC_VBYTES)));

/* Unaligned loads and stores (memcpy of a fixed size compiles to one vector move). */
#define FC_DEFINE_IO(T, V, SUF)                                                              \
    static inline V fc_load_##SUF(const T *p) { V v; memcpy(&v, p, sizeof(V)); return v; }  \
    static inline void fc_store_##SUF(T *p, V v) { memcpy(p, &v, sizeof(V)); }
FC_DEFINE_IO(float, fc_vf, f)
FC_DEFINE_IO(double, fc_vd, d)

/* The first n lanes of a vector, 0 < n <= VL: fc_store_part stores them at p (all of them
 * when n is a whole vector), fc_load_part loads them (the other lanes 0), neither touching
 * memory past p + n. AVX-512 and AVX2 mask the lanes (no call: a memcpy of a variable size
 * would make the compiler spill every accumulator around it); SSE2 copies through memory. */
/* fc_stream stores a whole vector at p (aligned to a vector) with a non-temporal store: the
 * line is not read first and does not displace the caches (for an output far larger than
 * them). */
#if defined(__AVX512F__)
#include <immintrin.h>
static inline void fc_stream_f(float *p, fc_vf v) { _mm512_stream_ps(p, (__m512)v); }
static inline void fc_stream_d(double *p, fc_vd v) { _mm512_stream_pd(p, (__m512d)v); }
static inline void fc_store_part_f(float *p, fc_vf v, ptrdiff_t n) {
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
}
static inline void fc_store_part_d(double *p, fc_vd v, ptrdiff_t n) {
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1), (__m512d)v);
}
static inline fc_vf fc_load_part_f(const float *p, ptrdiff_t n) {
    return (fc_vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
}
static inline fc_vd fc_load_part_d(const double *p, ptrdiff_t n) {
    return (fc_vd)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1), p);
}
#elif defined(__AVX2__)
#include <immintrin.h>
static inline void fc_stream_f(float *p, fc_vf v) { _mm256_stream_ps(p, (__m256)v); }
static inline void fc_stream_d(double *p, fc_vd v) { _mm256_stream_pd(p, (__m256d)v); }
static inline __m256i fc_lanes_below_f(ptrdiff_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256i fc_lanes_below_d(ptrdiff_t n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)n), _mm256_setr_epi64x(0, 1, 2, 3));
}
/* (a whole vector without the mask: AVX2's masked moves are microcoded on some cores, and
 * the direct kernels' stores are nearly all whole vectors) */
static inline void fc_store_part_f(float *p, fc_vf v, ptrdiff_t n) {
    if (n == 8) fc_store_f(p, v);
    else _mm256_maskstore_ps(p, fc_lanes_below_f(n), (__m256)v);
}
static inline void fc_store_part_d(double *p, fc_vd v, ptrdiff_t n) {
    if (n == 4) fc_store_d(p, v);
    else _mm256_maskstore_pd(p, fc_lanes_below_d(n), (__m256d)v);
}
static inline fc_vf fc_load_part_f(const float *p, ptrdiff_t n) {
    return n == 8 ? fc_load_f(p) : (fc_vf)_mm256_maskload_ps(p, fc_lanes_below_f(n));
}
static inline fc_vd fc_load_part_d(const double *p, ptrdiff_t n) {
    return n == 4 ? fc_load_d(p) : (fc_vd)_mm256_maskload_pd(p, fc_lanes_below_d(n));
}
#else
#if defined(__SSE2__)
#include <emmintrin.h>
static inline void fc_stream_f(float *p, fc_vf v) { _mm_stream_ps(p, (__m128)v); }
static inline void fc_stream_d(double *p, fc_vd v) { _mm_stream_pd(p, (__m128d)v); }
#else
static inline void fc_stream_f(float *p, fc_vf v) { memcpy(p, &v, sizeof(v)); }
static inline void fc_stream_d(double *p, fc_vd v) { memcpy(p, &v, sizeof(v)); }
#endif
#define FC_DEFINE_PART_IO(T, V, SUF)                                                         \
    static inline void fc_store_part_##SUF(T *p, V v, ptrdiff_t n) {                         \
        if (n == (ptrdiff_t)(sizeof(V) / sizeof(T))) { fc_store_##SUF(p, v); return; }       \
        T lanes[sizeof(V) / sizeof(T)];                                                      \
        memcpy(lanes, &v, sizeof(V));                                                        \
        memcpy(p, lanes, (size_t)n * sizeof(T));                                             \
    }                                                                                        \
    static inline V fc_load_part_##SUF(const T *p, ptrdiff_t n) {                            \
        if (n == (ptrdiff_t)(sizeof(V) / sizeof(T))) return fc_load_##SUF(p);                \
        V v = {0};                                                                           \
        memcpy(&v, p, (size_t)n * sizeof(T));                                                \
        return v;                                                                            \
    }
FC_DEFINE_PART_IO(float, fc_vf, f)
FC_DEFINE_PART_IO(double, fc_vd, d)
#endif

/* Dense block of NP pixels x one vector of output channels (nc of them stored), over kh x ks
 * taps of a weight kw taps wide (fewer than kw where the block touches the zero padding):
 * y[p, :] = bias + sum_{r, s, ci} x[p*x_pix + r*x_row + s*x_col + ci] * w[(r*kw + s)*cig*w_ci + ci*w_ci + :]
 * w_ci: the weight's row length, a whole number of vectors, so full-vector loads stay inside it. */
#define FC_DEFINE_DENSE(T, V, SUF, NP)                                                       \
    static inline void fc_dense_##SUF##_##NP(                                                \
        const T *x, const T *w, T *y, const T *bias, ptrdiff_t nc, ptrdiff_t kh,             \
        ptrdiff_t ks, ptrdiff_t kw, ptrdiff_t cig, ptrdiff_t w_ci, ptrdiff_t y_pix,          \
        ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col)                                   \
    {                                                                                        \
        V acc[NP];                                                                           \
        V b = bias ? fc_load_##SUF(bias) : (V){0};                                           \
        for (int p = 0; p < NP; p++) acc[p] = b;                                             \
        for (ptrdiff_t r = 0; r < kh; r++)                                                   \
            for (ptrdiff_t s = 0; s < ks; s++) {                                             \
                const T *xt = x + r * x_row + s * x_col;                                     \
                const T *wt = w + (r * kw + s) * cig * w_ci;                                 \
                for (ptrdiff_t ci = 0; ci < cig; ci++) {                                     \
                    V wv = fc_load_##SUF(wt + ci * w_ci);                                    \
                    for (int p = 0; p < NP; p++) acc[p] += xt[p * x_pix + ci] * wv;          \
                }                                                                            \
            }                                                                                \
        for (int p = 0; p < NP; p++) fc_store_part_##SUF(y + p * y_pix, acc[p], nc);         \
    }

/* Depthwise block: y[p, :] = bias + sum_{r, s} x[p*x_pix + r*x_row + s*x_col + :] * w[r*w_row + s*w_col + :]
 * (x's and w's channel counts are whole numbers of vectors; y_pix: y's pixel stride; the
 * strides may be negative: the input gradient walks its taps backwards). */
#define FC_DEFINE_DEPTHWISE(T, V, SUF, NP)                                                   \
    static inline void fc_depthwise_##SUF##_##NP(                                            \
        const T *x, const T *w, T *y, const T *bias, ptrdiff_t nc, ptrdiff_t kh,             \
        ptrdiff_t ks, ptrdiff_t w_row, ptrdiff_t w_col, ptrdiff_t unused, ptrdiff_t y_pix,   \
        ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col)                                   \
    {                                                                                        \
        (void)unused;                                                                        \
        V acc[NP];                                                                           \
        V b = bias ? fc_load_##SUF(bias) : (V){0};                                           \
        for (int p = 0; p < NP; p++) acc[p] = b;                                             \
        for (ptrdiff_t r = 0; r < kh; r++)                                                   \
            for (ptrdiff_t s = 0; s < ks; s++) {                                             \
                const T *xt = x + r * x_row + s * x_col;                                     \
                V wv = fc_load_##SUF(w + r * w_row + s * w_col);                             \
                for (int p = 0; p < NP; p++)                                                 \
                    acc[p] += fc_load_##SUF(xt + p * x_pix) * wv;                            \
            }                                                                                \
        for (int p = 0; p < NP; p++) fc_store_part_##SUF(y + p * y_pix, acc[p], nc);         \
    }

/* One function per pixel count, so that each block's accumulators live in registers. */
#define FC_FOR_EACH_NP(M, T, V, SUF) \
    M(T, V, SUF, 1) M(T, V, SUF, 2) M(T, V, SUF, 3) M(T, V, SUF, 4) \
    M(T, V, SUF, 5) M(T, V, SUF, 6) M(T, V, SUF, 7) M(T, V, SUF, 8)
#define FC_CASE(KIND, SUF, NP, ...) case NP: fc_##KIND##_##SUF##_##NP(__VA_ARGS__); break;
#define FC_DEFINE_DISPATCH(T, KIND, SUF)                                                     \
    static inline void fc_##KIND##_block_##SUF(                                              \
        int npix, const T *x, const T *w, T *y, const T *bias, ptrdiff_t nc, ptrdiff_t kh,   \
        ptrdiff_t ks, ptrdiff_t kw, ptrdiff_t a, ptrdiff_t b, ptrdiff_t y_pix,               \
        ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col)                                   \
    {                                                                                        \
        switch (npix) {                                                                      \
            FC_CASE(KIND, SUF, 1, x, w, y, bias, nc, kh, ks, kw, a, b, y_pix, x_pix, x_row, x_col) \
            FC_CASE(KIND, SUF, 2, x, w, y, bias, nc, kh, ks, kw, a, b, y_pix, x_pix, x_row, x_col) \
            FC_CASE(KIND, SUF, 3, x, w, y, bias, nc, kh, ks, kw, a, b, y_pix, x_pix, x_row, x_col) \
            FC_CASE(KIND, SUF, 4, x, w, y, bias, nc, kh, ks, kw, a, b, y_pix, x_pix, x_row, x_col) \
            FC_CASE(KIND, SUF, 5, x, w, y, bias, nc, kh, ks, kw, a, b, y_pix, x_pix, x_row, x_col) \
            FC_CASE(KIND, SUF, 6, x, w, y, bias, nc, kh, ks, kw, a, b, y_pix, x_pix, x_row, x_col) \
            FC_CASE(KIND, SUF, 7, x, w, y, bias, nc, kh, ks, kw, a, b, y_pix, x_pix, x_row, x_col) \
            FC_CASE(KIND, SUF, 8, x, w, y, bias, nc, kh, ks, kw, a, b, y_pix, x_pix, x_row, x_col) \
        }                                                                                    \
    }

/* A run of depthwise pixels, all channels: blocks of FC_PB pixels (y_pix / x_pix apart) x
 * one vector of channels, the C channels' last vector stored in part; x and w have whole
 * vectors of channels. (One call per run rather than per block: the blocks inline here.) */
#define FC_CAT_(a, b) a##b
#define FC_CAT(a, b) FC_CAT_(a, b)
#define FC_DEFINE_DEPTHWISE_RUN(T, V, SUF)                                                   \
    static inline void fc_depthwise_run_##SUF(                                               \
        ptrdiff_t npix, ptrdiff_t C, const T *x, const T *w, T *y, const T *bias,            \
        ptrdiff_t kh, ptrdiff_t ks, ptrdiff_t w_row, ptrdiff_t w_col, ptrdiff_t y_pix,       \
        ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col)                                   \
    {                                                                                        \
        const ptrdiff_t cb = (ptrdiff_t)(sizeof(V) / sizeof(T));                             \
        ptrdiff_t p = 0;                                                                     \
        for (; p + FC_PB <= npix; p += FC_PB)                                                \
            for (ptrdiff_t c0 = 0; c0 < C; c0 += cb)                                         \
                FC_CAT(fc_depthwise_##SUF##_, FC_PB)(                                        \
                    x + p * x_pix + c0, w + c0, y + p * y_pix + c0, bias ? bias + c0 : 0,    \
                    C - c0 < cb ? C - c0 : cb, kh, ks, w_row, w_col, 0, y_pix, x_pix,        \
                    x_row, x_col);                                                           \
        if (p < npix)                                                                        \
            for (ptrdiff_t c0 = 0; c0 < C; c0 += cb)                                         \
                fc_depthwise_block_##SUF((int)(npix - p), x + p * x_pix + c0, w + c0,        \
                    y + p * y_pix + c0, bias ? bias + c0 : 0, C - c0 < cb ? C - c0 : cb, kh, \
                    ks, w_row, w_col, 0, y_pix, x_pix, x_row, x_col);                        \
    }

/* A run of depthwise pixels whose 3 x 3 taps all lie inside x: fc_depthwise_run with
 * kh = ks = 3 known to the compiler (the tap loops unroll, measured 1.5x faster than with
 * run-time tap counts on a Zen 5). npix >= FC_PB. */
#define FC_DEFINE_DEPTHWISE3_RUN(T, V, SUF)                                                  \
    static inline void fc_depthwise3_run_##SUF(                                              \
        ptrdiff_t npix, ptrdiff_t C, const T *x, const T *w, T *y, const T *bias,            \
        ptrdiff_t w_row, ptrdiff_t w_col, ptrdiff_t y_pix, ptrdiff_t x_pix, ptrdiff_t x_row, \
        ptrdiff_t x_col)                                                                     \
    {                                                                                        \
        const ptrdiff_t cb = (ptrdiff_t)(sizeof(V) / sizeof(T));                             \
        /* blocks of FC_PB pixels; the last one ends at npix, overlapping the one before  \
         * it (npix >= FC_PB: its pixels are computed twice, alike) */                     \
        for (ptrdiff_t p = 0; p < npix; p += FC_PB) {                                        \
            if (p + FC_PB > npix) p = npix - FC_PB;                                          \
            for (ptrdiff_t c0 = 0; c0 < C; c0 += cb) {                                       \
                const T *xb = x + p * x_pix + c0;                                            \
                V acc[FC_PB];                                                                \
                V b = bias ? fc_load_##SUF(bias + c0) : (V){0};                              \
                for (int q = 0; q < FC_PB; q++) acc[q] = b;                                  \
                for (int r = 0; r < 3; r++)                                                  \
                    for (int s = 0; s < 3; s++) {                                            \
                        const T *xt = xb + r * x_row + s * x_col;                            \
                        V wv = fc_load_##SUF(w + r * w_row + s * w_col + c0);                \
                        for (int q = 0; q < FC_PB; q++)                                      \
                            acc[q] += fc_load_##SUF(xt + q * x_pix) * wv;                    \
                    }                                                                        \
                ptrdiff_t nc = C - c0 < cb ? C - c0 : cb;                                    \
                for (int q = 0; q < FC_PB; q++)                                              \
                    fc_store_part_##SUF(y + (p + q) * y_pix + c0, acc[q], nc);               \
            }                                                                                \
        }                                                                                    \
    }

/* Weight gradient, dense: gw[i*w_ci + :] += sum_{p < npix} x[p*x_pix + i] * gy[p*y_pix + :]
 * for FC_CI input channels i at once (they share each gy load). */
#define FC_CI 4
#define FC_DEFINE_WGRAD_DENSE(T, V, SUF)                                                     \
    static inline void fc_wgrad_dense_block_##SUF(                                           \
        const T *x, const T *gy, T *gw, ptrdiff_t npix, ptrdiff_t x_pix, ptrdiff_t y_pix,    \
        ptrdiff_t w_ci)                                                                      \
    {                                                                                        \
        V acc[FC_CI];                                                                        \
        for (int i = 0; i < FC_CI; i++) acc[i] = fc_load_##SUF(gw + i * w_ci);               \
        for (ptrdiff_t p = 0; p < npix; p++) {                                               \
            V g = fc_load_##SUF(gy + p * y_pix);                                             \
            for (int i = 0; i < FC_CI; i++) acc[i] += x[p * x_pix + i] * g;                  \
        }                                                                                    \
        for (int i = 0; i < FC_CI; i++) fc_store_##SUF(gw + i * w_ci, acc[i]);               \
    }

/* Weight gradient, depthwise: gw[:] += sum_{p < npix} x[p*x_pix + :] * gy[p*y_pix + :] */
#define FC_DEFINE_WGRAD_DEPTHWISE(T, V, SUF)                                                 \
    static inline void fc_wgrad_depthwise_block_##SUF(                                       \
        const T *x, const T *gy, T *gw, ptrdiff_t npix, ptrdiff_t x_pix, ptrdiff_t y_pix)    \
    {                                                                                        \
        V acc = fc_load_##SUF(gw), acc2 = (V){0};                                            \
        ptrdiff_t p = 0;                                                                     \
        for (; p + 1 < npix; p += 2) { /* two chains hide the FMA latency */                 \
            acc += fc_load_##SUF(x + p * x_pix) * fc_load_##SUF(gy + p * y_pix);             \
            acc2 += fc_load_##SUF(x + (p + 1) * x_pix) * fc_load_##SUF(gy + (p + 1) * y_pix); \
        }                                                                                    \
        if (p < npix) acc += fc_load_##SUF(x + p * x_pix) * fc_load_##SUF(gy + p * y_pix);   \
        fc_store_##SUF(gw, acc + acc2);                                                      \
    }

/* Weight gradient, depthwise, all taps of a kernel of at most 3 x 3 at once (nr, ns <= 3):
 * gw[r*g_row + s*g_col + :] += sum_{p < npix} x[p*x_pix + r*x_row + s*x_col + :] * gy[p*y_pix + :]
 * Each gy vector is loaded once for all taps; the nine sums stay in registers. */
#define FC_DEFINE_WGRAD_DEPTHWISE3(T, V, SUF)                                                \
    static inline void fc_wgrad_depthwise3_##SUF(                                            \
        const T *x, const T *gy, T *gw, ptrdiff_t npix, ptrdiff_t nr, ptrdiff_t ns,          \
        ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col, ptrdiff_t y_pix, ptrdiff_t g_row, \
        ptrdiff_t g_col)                                                                     \
    {                                                                                        \
        V acc[3][3];                                                                         \
        for (int r = 0; r < 3; r++)                                                          \
            for (int s = 0; s < 3; s++) acc[r][s] = (V){0};                                  \
        for (ptrdiff_t p = 0; p < npix; p++) {                                               \
            V g = fc_load_##SUF(gy + p * y_pix);                                             \
            const T *xp = x + p * x_pix;                                                     \
            for (int r = 0; r < 3; r++)                                                      \
                for (int s = 0; s < 3; s++)                                                  \
                    if (r < nr && s < ns)                                                    \
                        acc[r][s] += fc_load_##SUF(xp + r * x_row + s * x_col) * g;          \
        }                                                                                    \
        for (int r = 0; r < 3; r++)                                                          \
            for (int s = 0; s < 3; s++)                                                      \
                if (r < nr && s < ns) {                                                      \
                    T *gt = gw + r * g_row + s * g_col;                                      \
                    fc_store_##SUF(gt, fc_load_##SUF(gt) + acc[r][s]);                       \
                }                                                                            \
    }

FC_FOR_EACH_NP(FC_DEFINE_DENSE, float, fc_vf, f)
FC_FOR_EACH_NP(FC_DEFINE_DENSE, double, fc_vd, d)
FC_FOR_EACH_NP(FC_DEFINE_DEPTHWISE, float, fc_vf, f)
FC_FOR_EACH_NP(FC_DEFINE_DEPTHWISE, double, fc_vd, d)
FC_DEFINE_DISPATCH(float, dense, f)
FC_DEFINE_DISPATCH(double, dense, d)
FC_DEFINE_DISPATCH(float, depthwise, f)
FC_DEFINE_DISPATCH(double, depthwise, d)
FC_DEFINE_DEPTHWISE_RUN(float, fc_vf, f)
FC_DEFINE_DEPTHWISE_RUN(double, fc_vd, d)
FC_DEFINE_DEPTHWISE3_RUN(float, fc_vf, f)
FC_DEFINE_DEPTHWISE3_RUN(double, fc_vd, d)
FC_DEFINE_WGRAD_DENSE(float, fc_vf, f)
FC_DEFINE_WGRAD_DENSE(double, fc_vd, d)
FC_DEFINE_WGRAD_DEPTHWISE(float, fc_vf, f)
FC_DEFINE_WGRAD_DEPTHWISE(double, fc_vd, d)
FC_DEFINE_WGRAD_DEPTHWISE3(float, fc_vf, f)
FC_DEFINE_WGRAD_DEPTHWISE3(double, fc_vd, d)

#else /* no vector extensions: the Cython loops do all the work, these are never called */
#define FC_HAVE_VECTORS 0
#define FC_CB_F 1
#define FC_CB_D 1
#define FC_CI 1
#define FC_STUB_BLOCK(name, T) static inline void name(int npix, const T *x, const T *w, \
    T *y, const T *bias, ptrdiff_t nc, ptrdiff_t kh, ptrdiff_t ks, ptrdiff_t kw, ptrdiff_t a, \
    ptrdiff_t b, ptrdiff_t y_pix, ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col) {}
#define FC_STUB_WGRAD(name, T) static inline void name(const T *x, const T *gy, T *gw, \
    ptrdiff_t n, ptrdiff_t a, ptrdiff_t b, ptrdiff_t c) {}
#define FC_STUB_WGRAD_DW(name, T) static inline void name(const T *x, const T *gy, T *gw, \
    ptrdiff_t n, ptrdiff_t a, ptrdiff_t b) {}
FC_STUB_BLOCK(fc_dense_block_f, float)
FC_STUB_BLOCK(fc_dense_block_d, double)
FC_STUB_BLOCK(fc_depthwise_block_f, float)
FC_STUB_BLOCK(fc_depthwise_block_d, double)
#define FC_STUB_RUN(name, T) static inline void name(ptrdiff_t npix, ptrdiff_t C, const T *x, \
    const T *w, T *y, const T *bias, ptrdiff_t kh, ptrdiff_t ks, ptrdiff_t w_row, ptrdiff_t w_col, \
    ptrdiff_t y_pix, ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col) {}
FC_STUB_RUN(fc_depthwise_run_f, float)
FC_STUB_RUN(fc_depthwise_run_d, double)
#define FC_STUB_RUN3(name, T) static inline void name(ptrdiff_t npix, ptrdiff_t C, const T *x, \
    const T *w, T *y, const T *bias, ptrdiff_t w_row, ptrdiff_t w_col, ptrdiff_t y_pix, \
    ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col) {}
FC_STUB_RUN3(fc_depthwise3_run_f, float)
FC_STUB_RUN3(fc_depthwise3_run_d, double)
#define FC_STUB_WGRAD3(name, T) static inline void name(const T *x, const T *gy, T *gw, \
    ptrdiff_t npix, ptrdiff_t nr, ptrdiff_t ns, ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col, \
    ptrdiff_t y_pix, ptrdiff_t g_row, ptrdiff_t g_col) {}
FC_STUB_WGRAD3(fc_wgrad_depthwise3_f, float)
FC_STUB_WGRAD3(fc_wgrad_depthwise3_d, double)
FC_STUB_WGRAD(fc_wgrad_dense_block_f, float)
FC_STUB_WGRAD(fc_wgrad_dense_block_d, double)
FC_STUB_WGRAD_DW(fc_wgrad_depthwise_block_f, float)
FC_STUB_WGRAD_DW(fc_wgrad_depthwise_block_d, double)
#endif

/* Non-temporal stores: x86 with SSE2 and a compiler with vector extensions (the same
 * compilers as above; others copy with memcpy). */
#if FC_HAVE_VECTORS && defined(__SSE2__)
#define FC_STREAM_STORES 1
#include <immintrin.h>
#else
#define FC_STREAM_STORES 0
#endif

/* dst[:bytes] = src[:bytes] with non-temporal stores where dst is aligned: for an output
 * far larger than the caches, written once, this skips reading each line before writing it.
 * Call fc_store_fence() once the thread's streamed stores are done. */
static inline void fc_stream_copy(void *dst, const void *src, size_t bytes)
{
#if FC_STREAM_STORES
    char *d = (char *)dst;
    const char *s = (const char *)src;
    size_t head = (size_t)(-(size_t)d % 64);
    if (head > bytes) head = bytes;
    memcpy(d, s, head);
    d += head; s += head; bytes -= head;
    for (; bytes >= 64; bytes -= 64, d += 64, s += 64) {
#if defined(__AVX512F__)
        _mm512_stream_si512((void *)d, _mm512_loadu_si512((const void *)s));
#elif defined(__AVX__)
        _mm256_stream_si256((__m256i *)d, _mm256_loadu_si256((const __m256i *)s));
        _mm256_stream_si256((__m256i *)(d + 32), _mm256_loadu_si256((const __m256i *)(s + 32)));
#else
        for (int k = 0; k < 64; k += 16)
            _mm_stream_si128((__m128i *)(d + k), _mm_loadu_si128((const __m128i *)(s + k)));
#endif
    }
    memcpy(d, s, bytes);
#else
    memcpy(dst, src, bytes);
#endif
}

/* dst[:bytes] = 0 with non-temporal stores where dst is aligned (as fc_stream_copy: a fill
 * far larger than the caches skips reading each line before writing it). Call
 * fc_store_fence() once the thread's streamed stores are done. */
static inline void fc_stream_zero(void *dst, size_t bytes)
{
#if FC_STREAM_STORES
    char *d = (char *)dst;
    size_t head = (size_t)(-(size_t)d % 64);
    if (head > bytes) head = bytes;
    memset(d, 0, head);
    d += head; bytes -= head;
    for (; bytes >= 64; bytes -= 64, d += 64) {
#if defined(__AVX512F__)
        _mm512_stream_si512((void *)d, _mm512_setzero_si512());
#elif defined(__AVX__)
        _mm256_stream_si256((__m256i *)d, _mm256_setzero_si256());
        _mm256_stream_si256((__m256i *)(d + 32), _mm256_setzero_si256());
#else
        for (int k = 0; k < 64; k += 16)
            _mm_stream_si128((__m128i *)(d + k), _mm_setzero_si128());
#endif
    }
    memset(d, 0, bytes);
#else
    memset(dst, 0, bytes);
#endif
}

static inline void fc_store_fence(void)
{
#if FC_STREAM_STORES
    _mm_sfence();
#endif
}

#endif
