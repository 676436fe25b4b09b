/* The 1-D transforms of Winograd's F(4, 3) (Lavin & Gray, arXiv 1509.09308; interpolation
 * points 0, 1, -1, 2, -2 and infinity), applied to n channels at once: each argument is an
 * array of pointers to n contiguous values, one pointer per point, and the loops run over the
 * channels so the compiler vectorises them. A 2-D transform is the 1-D one along rows, then
 * along columns (the Winograd kernel composes them).
 *
 *   input  (6 -> 6), rows of B^T:   [4, 0,-5, 0, 1, 0]   output (6 -> 4), rows of A^T:
 *                                   [0,-4,-4, 1, 1, 0]     [1, 1, 1, 1, 1, 0]
 *                                   [0, 4,-4,-1, 1, 0]     [0, 1,-1, 2,-2, 0]
 *                                   [0,-2,-1, 2, 1, 0]     [0, 1, 1, 4, 4, 0]
 *                                   [0, 2,-1,-2, 1, 0]     [0, 1,-1, 8,-8, 1]
 *                                   [0, 4, 0,-5, 0, 1]
 *   for the weight gradient, the adjoints: A (4 -> 6) of the output transform, and G^T
 *   (6 -> 3) of the weight transform
 *   weight (3 -> 6), rows of G:     [ 1/4,     0,    0]
 *                                   [-1/6,  -1/6, -1/6]
 *                                   [-1/6,   1/6, -1/6]
 *                                   [1/24,  1/12,  1/6]
 *                                   [1/24, -1/12,  1/6]
 *                                   [   0,     0,    1]
 */
#ifndef FASTCONV_WINOGRAD_H
#define FASTCONV_WINOGRAD_H
#include <stddef.h>

#if defined(__GNUC__) || defined(__clang__)
#define FC_R __restrict__
#else
#define FC_R
#endif

/* o_k[c] = sum_j G[k][j] g_j[c] */
#define FC_DEFINE_WINOGRAD_WEIGHT(T, SUF)                                                    \
    static inline void fc_winograd_weight_##SUF(                                             \
        const T *FC_R g0, const T *FC_R g1, const T *FC_R g2, T *FC_R o0, T *FC_R o1,        \
        T *FC_R o2, T *FC_R o3, T *FC_R o4, T *FC_R o5, ptrdiff_t n)                         \
    {                                                                                        \
        for (ptrdiff_t c = 0; c < n; c++) {                                                  \
            T even = g0[c] + g2[c], ends = g0[c] / 24 + g2[c] / 6;                           \
            o0[c] = g0[c] / 4;                                                               \
            o1[c] = -(even + g1[c]) / 6;                                                     \
            o2[c] = -(even - g1[c]) / 6;                                                     \
            o3[c] = ends + g1[c] / 12;                                                       \
            o4[c] = ends - g1[c] / 12;                                                       \
            o5[c] = g2[c];                                                                   \
        }                                                                                    \
    }

/* o_k[c] = sum_j B^T[k][j] d_j[c] */
#define FC_DEFINE_WINOGRAD_IN(T, SUF)                                                        \
    static inline void fc_winograd_in_##SUF(                                                 \
        const T *FC_R d0, const T *FC_R d1, const T *FC_R d2, const T *FC_R d3,              \
        const T *FC_R d4, const T *FC_R d5, T *FC_R o0, T *FC_R o1, T *FC_R o2, T *FC_R o3,  \
        T *FC_R o4, T *FC_R o5, ptrdiff_t n)                                                 \
    {                                                                                        \
        for (ptrdiff_t c = 0; c < n; c++) {                                                  \
            T a = d4[c] - 4 * d2[c], b = d3[c] - 4 * d1[c];  /* shared by o1, o2 */          \
            T e = d4[c] - d2[c], f = 2 * (d3[c] - d1[c]);    /* shared by o3, o4 */          \
            o0[c] = 4 * d0[c] - 5 * d2[c] + d4[c];                                           \
            o1[c] = a + b;                                                                   \
            o2[c] = a - b;                                                                   \
            o3[c] = e + f;                                                                   \
            o4[c] = e - f;                                                                   \
            o5[c] = 4 * d1[c] - 5 * d3[c] + d5[c];                                           \
        }                                                                                    \
    }

/* o_k[c] = sum_j A^T[k][j] m_j[c] (+ bias[c] when bias is not NULL) */
#define FC_DEFINE_WINOGRAD_OUT(T, SUF)                                                       \
    static inline void fc_winograd_out_##SUF(                                                \
        const T *FC_R m0, const T *FC_R m1, const T *FC_R m2, const T *FC_R m3,              \
        const T *FC_R m4, const T *FC_R m5, T *FC_R o0, T *FC_R o1, T *FC_R o2, T *FC_R o3,  \
        const T *FC_R bias, ptrdiff_t n)                                                     \
    {                                                                                        \
        for (ptrdiff_t c = 0; c < n; c++) {                                                  \
            T p = m1[c] + m2[c], q = m1[c] - m2[c];                                          \
            T r = m3[c] + m4[c], s = m3[c] - m4[c];                                          \
            T b = bias ? bias[c] : 0;                                                        \
            o0[c] = b + m0[c] + p + r;                                                       \
            o1[c] = b + q + 2 * s;                                                           \
            o2[c] = b + p + 4 * r;                                                           \
            o3[c] = b + q + 8 * s + m5[c];                                                   \
        }                                                                                    \
    }

/* o_k[c] = sum_j A[k][j] y_j[c]: the adjoint of the output transform, which takes a tile of
 * output gradients into the Winograd domain */
#define FC_DEFINE_WINOGRAD_OUT_ADJOINT(T, SUF)                                               \
    static inline void fc_winograd_out_adjoint_##SUF(                                        \
        const T *FC_R y0, const T *FC_R y1, const T *FC_R y2, const T *FC_R y3, T *FC_R o0,  \
        T *FC_R o1, T *FC_R o2, T *FC_R o3, T *FC_R o4, T *FC_R o5, ptrdiff_t n)             \
    {                                                                                        \
        for (ptrdiff_t c = 0; c < n; c++) {                                                  \
            T even = y0[c] + y2[c], odd = y1[c] + y3[c];                                     \
            T even4 = y0[c] + 4 * y2[c], odd2 = 2 * y1[c] + 8 * y3[c];                       \
            o0[c] = y0[c];                                                                   \
            o1[c] = even + odd;                                                              \
            o2[c] = even - odd;                                                              \
            o3[c] = even4 + odd2;                                                            \
            o4[c] = even4 - odd2;                                                            \
            o5[c] = y3[c];                                                                   \
        }                                                                                    \
    }

/* o_k[c] = sum_j G[j][k] u_j[c]: the adjoint of the weight transform (a gradient in the
 * Winograd domain back to the kernel's taps) */
#define FC_DEFINE_WINOGRAD_WEIGHT_ADJOINT(T, SUF)                                            \
    static inline void fc_winograd_weight_adjoint_##SUF(                                     \
        const T *FC_R u0, const T *FC_R u1, const T *FC_R u2, const T *FC_R u3,              \
        const T *FC_R u4, const T *FC_R u5, T *FC_R o0, T *FC_R o1, T *FC_R o2, ptrdiff_t n) \
    {                                                                                        \
        for (ptrdiff_t c = 0; c < n; c++) {                                                  \
            T sum12 = u1[c] + u2[c], sum34 = u3[c] + u4[c];                                  \
            o0[c] = u0[c] / 4 - sum12 / 6 + sum34 / 24;                                      \
            o1[c] = (u2[c] - u1[c]) / 6 + (u3[c] - u4[c]) / 12;                              \
            o2[c] = (sum34 - sum12) / 6 + u5[c];                                             \
        }                                                                                    \
    }

FC_DEFINE_WINOGRAD_WEIGHT(float, f)
FC_DEFINE_WINOGRAD_WEIGHT(double, d)
FC_DEFINE_WINOGRAD_IN(float, f)
FC_DEFINE_WINOGRAD_IN(double, d)
FC_DEFINE_WINOGRAD_OUT(float, f)
FC_DEFINE_WINOGRAD_OUT(double, d)
FC_DEFINE_WINOGRAD_WEIGHT_ADJOINT(float, f)
FC_DEFINE_WINOGRAD_WEIGHT_ADJOINT(double, d)
FC_DEFINE_WINOGRAD_OUT_ADJOINT(float, f)
FC_DEFINE_WINOGRAD_OUT_ADJOINT(double, d)

#endif
