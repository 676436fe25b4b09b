/* Post-operations on a convolution's output, oneDNN-style: a fixed chain
 *
 *     y = act2(act1((y + bias) * scale + shift) + residual)
 *
 * (any step may be absent) described by a small struct, fc_postops_f32 / fc_postops_f64.
 * A kernel applies it with fc_postops_pixels_* to each stretch of output it stores,
 * while those values are still in L1 (each activation is then written once); _epilogue.pyx
 * also runs it as a pass over a finished output, for the kernels and shapes that do not.
 *
 * Activation codes (FC_ACT_*) match fastconv._postops.ACTIVATIONS; `alpha` is the slope of
 * leaky_relu and the alpha of elu. The formulas are fastconv.activations' (PyTorch's); NaN
 * stays NaN. The piecewise ones are written as selects so that the compiler vectorises them.
 */
#ifndef FASTCONV_EPILOGUE_H
#define FASTCONV_EPILOGUE_H
#include <math.h>
#include <stddef.h>

enum {
    FC_ACT_NONE = 0, FC_ACT_RELU = 1, FC_ACT_RELU6 = 2, FC_ACT_LEAKY_RELU = 3, FC_ACT_SILU = 4,
    FC_ACT_HARDSWISH = 5, FC_ACT_HARDSIGMOID = 6, FC_ACT_SIGMOID = 7, FC_ACT_TANH = 8,
    FC_ACT_GELU = 9, FC_ACT_GELU_TANH = 10, FC_ACT_ELU = 11
};

#define FC_DEFINE_POSTOPS(T, SUF, EXP, EXPM1, ERF, TANH)                                       \
typedef struct {                                                                          \
    const T *bias;      /* (C,) or NULL */                                                \
    const T *scale;     /* (C,) or NULL: y * scale */                                     \
    const T *shift;     /* (C,) or NULL: + shift */                                       \
    int act1; T alpha1; /* before the residual */                                         \
    const T *residual;  /* NULL, or pixel p's C channels at residual + p * residual_pixel */ \
    ptrdiff_t residual_pixel;                                                             \
    int act2; T alpha2; /* after the residual */                                          \
} fc_postops_##SUF;                                                                       \
                                                                                          \
static inline T fc_sigmoid_##SUF(T x) {                                                   \
    /* exp of -|x| only: never overflows */                                               \
    T e = EXP(-(x < 0 ? -x : x));                                                         \
    T s = (T)1 / ((T)1 + e);                                                              \
    return x >= 0 ? s : e * s;                                                            \
}                                                                                         \
                                                                                          \
static inline void fc_activate_##SUF(T *y, ptrdiff_t n, int act, T alpha) {               \
    ptrdiff_t i;                                                                          \
    switch (act) {                                                                        \
    case FC_ACT_RELU:                                                                     \
        for (i = 0; i < n; i++) y[i] = (y[i] > 0 || y[i] != y[i]) ? y[i] : (T)0;         \
        break;                                                                            \
    case FC_ACT_RELU6:                                                                    \
        for (i = 0; i < n; i++)                                                           \
            y[i] = y[i] < 0 ? (T)0 : (y[i] > 6 ? (T)6 : y[i]);                           \
        break;                                                                            \
    case FC_ACT_LEAKY_RELU:                                                               \
        for (i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : y[i] * alpha;                    \
        break;                                                                            \
    case FC_ACT_SILU:                                                                     \
        for (i = 0; i < n; i++) y[i] = y[i] * fc_sigmoid_##SUF(y[i]);                     \
        break;                                                                            \
    case FC_ACT_HARDSWISH:                                                                \
        for (i = 0; i < n; i++) {                                                         \
            T g = y[i] + 3; g = g < 0 ? (T)0 : (g > 6 ? (T)6 : g);                        \
            y[i] = y[i] * g / 6;                                                          \
        }                                                                                 \
        break;                                                                            \
    case FC_ACT_HARDSIGMOID:                                                              \
        for (i = 0; i < n; i++) {                                                         \
            T g = y[i] + 3; g = g < 0 ? (T)0 : (g > 6 ? (T)6 : g);                        \
            y[i] = g / 6;                                                                 \
        }                                                                                 \
        break;                                                                            \
    case FC_ACT_SIGMOID:                                                                  \
        for (i = 0; i < n; i++) y[i] = fc_sigmoid_##SUF(y[i]);                            \
        break;                                                                            \
    case FC_ACT_TANH:                                                                     \
        for (i = 0; i < n; i++) y[i] = TANH(y[i]);                                        \
        break;                                                                            \
    case FC_ACT_GELU:                                                                     \
        for (i = 0; i < n; i++)                                                           \
            y[i] = y[i] * (((T)1 + ERF(y[i] * (T)0.70710678118654752440)) / 2);           \
        break;                                                                            \
    case FC_ACT_GELU_TANH:                                                                \
        for (i = 0; i < n; i++)                                                           \
            y[i] = y[i] * (((T)1 + TANH((T)0.79788456080286535588 *                       \
                                        (y[i] + (T)0.044715 * y[i] * y[i] * y[i]))) / 2); \
        break;                                                                            \
    case FC_ACT_ELU:                                                                      \
        for (i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : alpha * EXPM1(y[i]);             \
        break;                                                                            \
    default:                                                                              \
        break;                                                                            \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* The chain on channels [c0, c0 + n) of the npix output pixels from `pixel` on, stored     \
 * y_pix values apart from y on (a row, a tile, or a kernel's register block). Step by step \
 * over all the pixels (each step's test once per call); whole contiguous rows without      \
 * per-channel steps run as one stretch. */                                                \
static inline void fc_postops_pixels_##SUF(const fc_postops_##SUF *p, T *y, ptrdiff_t pixel, \
                                           ptrdiff_t npix, ptrdiff_t y_pix, ptrdiff_t c0, \
                                           ptrdiff_t n) {                                 \
    ptrdiff_t q, i;                                                                       \
    if (!p->bias && !p->scale && !p->shift && c0 == 0 && n == y_pix                       \
            && (!p->residual || p->residual_pixel == n)) {                                \
        n *= npix;                                                                        \
        npix = 1;                                                                         \
    }                                                                                     \
    if (p->bias)                                                                          \
        for (q = 0; q < npix; q++)                                                        \
            for (i = 0; i < n; i++) y[q * y_pix + i] += p->bias[c0 + i];                  \
    if (p->scale)                                                                         \
        for (q = 0; q < npix; q++)                                                        \
            for (i = 0; i < n; i++) y[q * y_pix + i] *= p->scale[c0 + i];                 \
    if (p->shift)                                                                         \
        for (q = 0; q < npix; q++)                                                        \
            for (i = 0; i < n; i++) y[q * y_pix + i] += p->shift[c0 + i];                 \
    if (p->act1)                                                                          \
        for (q = 0; q < npix; q++) fc_activate_##SUF(y + q * y_pix, n, p->act1, p->alpha1); \
    if (p->residual) {                                                                    \
        const T *r = p->residual + pixel * p->residual_pixel + c0;                        \
        for (q = 0; q < npix; q++)                                                        \
            for (i = 0; i < n; i++) y[q * y_pix + i] += r[q * p->residual_pixel + i];    \
    }                                                                                     \
    if (p->act2)                                                                          \
        for (q = 0; q < npix; q++) fc_activate_##SUF(y + q * y_pix, n, p->act2, p->alpha2); \
}

FC_DEFINE_POSTOPS(float, f32, expf, expm1f, erff, tanhf)
FC_DEFINE_POSTOPS(double, f64, exp, expm1, erf, tanh)
#undef FC_DEFINE_POSTOPS
#endif
