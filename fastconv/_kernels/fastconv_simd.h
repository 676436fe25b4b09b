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

/* Stores the first nc lanes of v at p (all of them when nc is a whole vector). */
#define FC_DEFINE_STORE_PART(T, V, SUF)                                                      \
    static inline void fc_store_part_##SUF(T *p, V v, ptrdiff_t nc) {                        \
        if (nc == (ptrdiff_t)(sizeof(V) / sizeof(T))) { fc_store_##SUF(p, v); return; }      \
        T lanes[sizeof(V) / sizeof(T)];                                                      \
        memcpy(lanes, &v, sizeof(V));                                                        \
        memcpy(p, lanes, (size_t)nc * sizeof(T));                                            \
    }

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

/* Depthwise block: y[p, :] = bias + sum_{r, s} x[p*x_pix + r*x_row + s*x_col + :] * w[(r*kw + s)*w_c + :]
 * (x's and w's channel counts are whole numbers of vectors; y_pix: y's pixel stride). */
#define FC_DEFINE_DEPTHWISE(T, V, SUF, NP)                                                   \
    static inline void fc_depthwise_##SUF##_##NP(                                            \
        const T *x, const T *w, T *y, const T *bias, ptrdiff_t nc, ptrdiff_t kh,             \
        ptrdiff_t ks, ptrdiff_t kw, ptrdiff_t w_c, ptrdiff_t unused, ptrdiff_t y_pix,        \
        ptrdiff_t x_pix, ptrdiff_t x_row, ptrdiff_t x_col)                                   \
    {                                                                                        \
        (void)unused;                                                                        \
        V acc[NP];                                                                           \
        V b = bias ? fc_load_##SUF(bias) : (V){0};                                           \
        for (int p = 0; p < NP; p++) acc[p] = b;                                             \
        for (ptrdiff_t r = 0; r < kh; r++)                                                   \
            for (ptrdiff_t s = 0; s < ks; s++) {                                             \
                const T *xt = x + r * x_row + s * x_col;                                     \
                V wv = fc_load_##SUF(w + (r * kw + s) * w_c);                                \
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

FC_DEFINE_IO(float, fc_vf, f)
FC_DEFINE_IO(double, fc_vd, d)
FC_DEFINE_STORE_PART(float, fc_vf, f)
FC_DEFINE_STORE_PART(double, fc_vd, d)
FC_FOR_EACH_NP(FC_DEFINE_DENSE, float, fc_vf, f)
FC_FOR_EACH_NP(FC_DEFINE_DENSE, double, fc_vd, d)
FC_FOR_EACH_NP(FC_DEFINE_DEPTHWISE, float, fc_vf, f)
FC_FOR_EACH_NP(FC_DEFINE_DEPTHWISE, double, fc_vd, d)
FC_DEFINE_DISPATCH(float, dense, f)
FC_DEFINE_DISPATCH(double, dense, d)
FC_DEFINE_DISPATCH(float, depthwise, f)
FC_DEFINE_DISPATCH(double, depthwise, d)
FC_DEFINE_WGRAD_DENSE(float, fc_vf, f)
FC_DEFINE_WGRAD_DENSE(double, fc_vd, d)
FC_DEFINE_WGRAD_DEPTHWISE(float, fc_vf, f)
FC_DEFINE_WGRAD_DEPTHWISE(double, fc_vd, d)

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
FC_STUB_WGRAD(fc_wgrad_dense_block_f, float)
FC_STUB_WGRAD(fc_wgrad_dense_block_d, double)
FC_STUB_WGRAD_DW(fc_wgrad_depthwise_block_f, float)
FC_STUB_WGRAD_DW(fc_wgrad_depthwise_block_d, double)
#endif

#endif
