"""Batch normalisation on activations seen as rows of C channels (NHWC: rows = N * H * W).

A forward is two calls (the batch's statistics in training mode, then the normalising pass
with its per-channel factors), a backward one (its sums, the per-channel arithmetic on them
and the pass over the rows). Called dozens of times per
training step on small activations, the NumPy operations that did the per-channel part in
between cost more than the passes themselves (ResNet-18 at 112x112, batch 1: 0.7 ms of a
step's 3 ms of BatchNorm forward). Sums run in float64 in `chunks` fixed ranges of rows,
added up in order, so results do not depend on the thread count.

Shapes: x, g, out (rows, C); per-channel vectors (C,), statistics float64; stats (2, C).
A function returning int gives 1 when it could not allocate its scratch memory, else 0.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free, malloc


cdef int _check(str fn, Py_ssize_t rows, Py_ssize_t C, Py_ssize_t chunks, tuple vectors,
                int num_threads) except -1:
    """ValueError unless each of `vectors` ((name, length, optional) triples) has C values
    (or none when optional), chunks is in [1, max(rows, 1)] and num_threads >= 1: the loops
    index them with bounds checks off."""
    for name, n, optional in vectors:
        if n != C and not (optional and n == 0):
            raise ValueError(f"{fn}: expected {name} with one value per channel ({C})"
                             f"{' or none' if optional else ''}, but got {n}")
    if not 1 <= chunks <= max(rows, 1):
        raise ValueError(f"{fn}: chunks must be in [1, {max(rows, 1)}], got {chunks}")
    if num_threads < 1:
        raise ValueError(f"{fn}: num_threads must be >= 1, got {num_threads}")
    return 0


cdef int _sums(const floating[:, ::1] x, const double* centre, Py_ssize_t chunks,
               double* total, int num_threads) noexcept nogil:
    """total[c] = sum over rows of x[r, c] (centre NULL) or of (x[r, c] - centre[c])^2."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], k, r, c
    cdef double d
    cdef double* part
    cdef double* partial = <double*> calloc(chunks * C, sizeof(double))
    if partial == NULL:
        return 1
    for k in prange(chunks, schedule="static", num_threads=num_threads):
        part = partial + k * C
        for r in range(k * rows // chunks, (k + 1) * rows // chunks):
            if centre == NULL:
                for c in range(C):
                    part[c] += x[r, c]
            else:
                for c in range(C):
                    d = x[r, c] - centre[c]
                    part[c] += d * d
    _add_chunks(partial, chunks, C, total)
    free(partial)
    return 0


cdef void _add_chunks(const double* partial, Py_ssize_t chunks, Py_ssize_t C,
                      double* total) noexcept nogil:
    """total = the chunks' partial sums (chunks x C) added in order."""
    cdef Py_ssize_t k, c
    for c in range(C):
        total[c] = 0
    for k in range(chunks):
        for c in range(C):
            total[c] += partial[k * C + c]


cdef int _stats(const floating[:, ::1] x, Py_ssize_t chunks, double* mean, double* var,
                int num_threads) noexcept nogil:
    """mean and biased variance per channel, the variance as the mean of (x - mean)^2 (a
    second pass: no cancellation of large means)."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], c
    if _sums(x, NULL, chunks, mean, num_threads):
        return 1
    for c in range(C):
        mean[c] /= rows
    if _sums(x, mean, chunks, var, num_threads):
        return 1
    for c in range(C):
        var[c] /= rows
    return 0


def batch_stats(const floating[:, ::1] x,    # IN  (rows, C), rows >= 1
                Py_ssize_t chunks,
                double[:, ::1] stats,         # OUT (2, C): the mean, the biased variance
                int num_threads):
    """The batch's mean and biased variance per channel."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1]
    cdef int status
    _check("batch_stats", rows, C, chunks, (("stats", stats.shape[1], False),), num_threads)
    if stats.shape[0] != 2:
        raise ValueError(f"batch_stats: expected stats of 2 rows, got {stats.shape[0]}")
    if rows == 0:
        raise ValueError("batch_stats: no values to take statistics of")
    if C == 0:
        return 0
    with nogil:
        status = _stats(x, chunks, &stats[0, 0], &stats[1, 0], num_threads)
    return status


cdef int _normalized(const floating[:, ::1] x, const floating[::1] weight,
                     const floating[::1] bias, double eps, const double* mean,
                     const double* var, floating[:, ::1] out, int num_threads) noexcept nogil:
    """out = (x - mean) * weight / sqrt(var + eps) + bias (weight, bias empty: 1, 0), the
    per-channel factors in x's dtype."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], r, c
    cdef bint has_weight = weight.shape[0] > 0, has_bias = bias.shape[0] > 0
    cdef floating* per_channel = <floating*> malloc(3 * C * sizeof(floating))
    cdef floating* mean_f
    cdef floating* scale_f
    cdef floating* shift_f
    if per_channel == NULL:
        return 1
    mean_f, scale_f, shift_f = per_channel, per_channel + C, per_channel + 2 * C
    for c in range(C):
        mean_f[c] = <floating> mean[c]
        scale_f[c] = <floating> ((1.0 / sqrt(var[c] + eps)) * (weight[c] if has_weight else 1.0))
        shift_f[c] = bias[c] if has_bias else 0
    for r in prange(rows, schedule="static", num_threads=num_threads):
        for c in range(C):
            out[r, c] = (x[r, c] - mean_f[c]) * scale_f[c] + shift_f[c]
    free(per_channel)
    return 0


def train_backward(const floating[:, ::1] g,      # IN  (rows, C) grad_output
                   const floating[:, ::1] x,      # IN  (rows, C)
                   const double[:, ::1] stats,    # IN  (2, C): the mean and the variance
                   const floating[::1] weight,    # IN  (C,), or (0,): ones
                   double eps,
                   bint training,                 # stats are the batch's: gx through them
                   Py_ssize_t chunks,
                   double[:, ::1] grads,          # OUT (2, C): grad_weight, grad_bias
                   floating[:, ::1] gx,           # OUT (rows, C), or (0, C): not wanted
                   int num_threads):
    """Batch normalisation's gradients. grads[1] = sum of g, grads[0] = sum of g * (x -
    mean) * invstd (invstd = 1 / sqrt(var + eps)); gx = g * scale (scale = invstd * weight)
    for fixed statistics, and through the batch statistics
    gx = scale * (g - mean(g) - (x - mean) * invstd^2 * mean(g * (x - mean)))."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1]
    cdef int status
    _check("train_backward", rows, C, chunks, (("weight", weight.shape[0], True),
           ("stats", stats.shape[1], False), ("grads", grads.shape[1], False),
           ("gx", gx.shape[1], False)), num_threads)
    if (g.shape[0] != rows or g.shape[1] != C or stats.shape[0] != 2 or grads.shape[0] != 2
            or gx.shape[0] not in (0, rows)):
        raise ValueError(f"train_backward: expected g ({rows}, {C}), stats and grads (2, {C}) "
                         f"and gx ({rows}, {C}) or (0, {C}), but got g ({g.shape[0]}, "
                         f"{g.shape[1]}), stats ({stats.shape[0]}, {stats.shape[1]}), grads "
                         f"({grads.shape[0]}, {grads.shape[1]}), gx ({gx.shape[0]}, "
                         f"{gx.shape[1]})")
    if C == 0:
        return 0
    with nogil:
        status = _grad_sums(g, x, &stats[0, 0], chunks, &grads[1, 0], &grads[0, 0],
                            num_threads)
        if status == 0:
            status = _gradients(g, x, stats, weight, eps, training, grads, gx, num_threads)
    return status


cdef int _grad_sums(const floating[:, ::1] g, const floating[:, ::1] x, const double* mean,
                    Py_ssize_t chunks, double* sum_g, double* sum_gc,
                    int num_threads) noexcept nogil:
    """sum_g[c] = sum of g[r, c] and sum_gc[c] = sum of g[r, c] * (x[r, c] - mean[c]), in
    one pass."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], k, r, c
    cdef double gv
    cdef double* part_g
    cdef double* part_gc
    cdef double* partial = <double*> calloc(2 * chunks * C, sizeof(double))
    if partial == NULL:
        return 1
    for k in prange(chunks, schedule="static", num_threads=num_threads):
        part_g = partial + k * C
        part_gc = partial + (chunks + k) * C
        for r in range(k * rows // chunks, (k + 1) * rows // chunks):
            for c in range(C):
                gv = g[r, c]
                part_g[c] += gv
                part_gc[c] += gv * (x[r, c] - mean[c])
    _add_chunks(partial, chunks, C, sum_g)
    _add_chunks(partial + chunks * C, chunks, C, sum_gc)
    free(partial)
    return 0


cdef int _gradients(const floating[:, ::1] g, const floating[:, ::1] x,
                    const double[:, ::1] stats, const floating[::1] weight, double eps,
                    bint training, double[:, ::1] grads, floating[:, ::1] gx,
                    int num_threads) noexcept nogil:
    """From the sums in grads (sum of g * (x - mean), sum of g): grads[0] made the weight's
    gradient, and gx (unless empty)."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1], r, c
    cdef double invstd, scale
    cdef bint has_weight = weight.shape[0] > 0
    cdef floating* per_channel = <floating*> malloc(4 * C * sizeof(floating))
    cdef floating* a
    cdef floating* b
    cdef floating* mean_f
    cdef floating* shift
    if per_channel == NULL:
        return 1
    a, b, mean_f, shift = per_channel, per_channel + C, per_channel + 2 * C, per_channel + 3 * C
    for c in range(C):
        invstd = 1.0 / sqrt(stats[1, c] + eps)
        scale = invstd * (weight[c] if has_weight else 1.0)
        a[c] = <floating> scale
        b[c] = <floating> (-scale * invstd * invstd * grads[0, c] / rows)
        shift[c] = <floating> (-scale * grads[1, c] / rows)
        mean_f[c] = <floating> stats[0, c]
        grads[0, c] *= invstd
    if gx.shape[0] > 0:
        if training:
            for r in prange(rows, schedule="static", num_threads=num_threads):
                for c in range(C):
                    gx[r, c] = g[r, c] * a[c] + (x[r, c] - mean_f[c]) * b[c] + shift[c]
        else:
            for r in prange(rows, schedule="static", num_threads=num_threads):
                for c in range(C):
                    gx[r, c] = g[r, c] * a[c]
    free(per_channel)
    return 0


def normalize(const floating[:, ::1] x,        # IN  (rows, C)
              const floating[::1] weight,      # IN  (C,), or (0,): ones
              const floating[::1] bias,        # IN  (C,), or (0,): zeros
              double eps,
              const double[:, ::1] stats,      # IN  (2, C): the mean and the variance
              floating[:, ::1] out,            # OUT (rows, C)
              int num_threads):
    """out = (x - mean) * weight / sqrt(var + eps) + bias with given statistics (eval mode:
    the running ones)."""
    cdef Py_ssize_t rows = x.shape[0], C = x.shape[1]
    cdef int status
    _check("normalize", rows, C, 1, (("weight", weight.shape[0], True),
           ("bias", bias.shape[0], True), ("stats", stats.shape[1], False)), num_threads)
    if stats.shape[0] != 2 or out.shape[0] != rows or out.shape[1] != C:
        raise ValueError(f"normalize: expected stats (2, {C}) and out ({rows}, {C}), got "
                         f"({stats.shape[0]}, {stats.shape[1]}) and ({out.shape[0]}, "
                         f"{out.shape[1]})")
    if rows == 0 or C == 0:
        return 0
    with nogil:
        status = _normalized(x, weight, bias, eps, &stats[0, 0], &stats[1, 0], out,
                             num_threads)
    return status
