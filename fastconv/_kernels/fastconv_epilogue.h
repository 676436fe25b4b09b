/* Post-operations on a convolution's output, oneDNN-style: a fixed chain
 *
 *     y = act2(act1((y + bias) * scale + shift) + residual)
 *
 * applied to one output row of C channels at a time (any step may be absent). The chain is
 * described by a small struct, fc_postops_f32 / fc_postops_f64, so that a kernel's own
 * store can apply it to a row while it is still in registers or L1: today _epilogue.pyx
 * runs it as one pass over a finished output (fastconv._postops); a kernel that takes the
 * struct later calls fc_postops_row_* on each row it stores instead.
 *
 * Activation codes (FC_ACT_*) match fastconv._postops.ACTIVATIONS; `alpha` is the slope of
 * leaky_relu and the alpha of elu. The formulas are fastconv.activations' (PyTorch's).
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
        for (i = 0; i < n; i++) y[i] = y[i] > 0 ? y[i] : (y[i] != y[i] ? y[i] : (T)0);    \
        break;                                                                            \
    case FC_ACT_RELU6:                                                                    \
        for (i = 0; i < n; i++)                                                           \
            y[i] = y[i] != y[i] ? y[i] : (y[i] < 0 ? (T)0 : (y[i] > 6 ? (T)6 : y[i]));    \
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
/* The chain on one row y[0..c) (residual: the row of the residual tensor, or NULL). */  \
static inline void fc_postops_row_##SUF(const fc_postops_##SUF *p, T *y,                  \
                                        const T *residual, ptrdiff_t c) {                 \
    ptrdiff_t i;                                                                          \
    if (p->bias) for (i = 0; i < c; i++) y[i] += p->bias[i];                              \
    if (p->scale) for (i = 0; i < c; i++) y[i] *= p->scale[i];                            \
    if (p->shift) for (i = 0; i < c; i++) y[i] += p->shift[i];                            \
    fc_activate_##SUF(y, c, p->act1, p->alpha1);                                          \
    if (residual) for (i = 0; i < c; i++) y[i] += residual[i];                            \
    fc_activate_##SUF(y, c, p->act2, p->alpha2);                                          \
}

FC_DEFINE_POSTOPS(float, f32, expf, expm1f, erff, tanhf)
FC_DEFINE_POSTOPS(double, f64, exp, expm1, erf, tanh)
#undef FC_DEFINE_POSTOPS
#endif
