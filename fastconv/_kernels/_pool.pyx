"""Max and average pooling kernels on NHWC activations, PyTorch's semantics.

The input is not padded: each window is clipped to the image here (max pooling pads with
-inf, so clipping is the same thing; average pooling needs the clipped and unclipped window
sizes for its divisor). Padding may be asymmetric (ONNX's pads) and larger than the kernel:
max pooling needs only the padding before (top, left), the output's shape says the rest.
The innermost loops run over contiguous channels.

Shapes:
    x    (N, H, W, C)     input
    y    (N, Ho, Wo, C)   output
    idx  (N, Ho, Wo, C)   int64 flat index ih * W + iw of each maximum, -1 for a window that
                          lies wholly in the padding (possible with dilation)
The caller has checked the geometry: every window starts before the end of the image.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY
from libc.stdint cimport INT32_MAX, int32_t, int64_t, uint32_t, uint64_t

from fastconv._kernels._share cimport part_start
from fastconv._kernels._taps cimport _end_tap, _first_tap


cdef enum:
    _IDX_BLOCK = 64  # channels whose running maxima and tap numbers a window keeps locally
    _MAX_BLOCK = 64  # channels whose running maxima a window keeps locally (no indices)
    _FLAT_TAPS = 64  # windows of up to this many taps look their indices up in a local table


cdef inline void _window_max(const floating* x, Py_ssize_t W, Py_ssize_t C, Py_ssize_t h0,
                             Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t dh, Py_ssize_t w0,
                             Py_ssize_t s0, Py_ssize_t s1, Py_ssize_t dw,
                             floating* yp) noexcept nogil:
    """The maxima of one window (of image x; its taps r0 <= r < r1, s0 <= s < s1 lie inside
    it), block of channels by block, the running maxima in a local array that the compiler
    vectorises (y, which may alias nothing the compiler can prove, read and written once
    per window instead of once per tap)."""
    cdef floating m[_MAX_BLOCK]
    cdef Py_ssize_t c, nc, r, s, c0 = 0
    cdef const floating* xp
    cdef floating v
    while c0 < C:
        nc = min(<Py_ssize_t> _MAX_BLOCK, C - c0)
        for c in range(_MAX_BLOCK):
            m[c] = -INFINITY
        for r in range(r0, r1):
            for s in range(s0, s1):
                xp = x + ((h0 + r * dh) * W + w0 + s * dw) * C + c0
                for c in range(nc):
                    v = xp[c]
                    m[c] = v if (v > m[c]) | (v != v) else m[c]  # NaN wins, no branch
        for c in range(nc):
            yp[c0 + c] = m[c]
        c0 += _MAX_BLOCK


cdef inline void _window_max_with_index(const floating* x, Py_ssize_t W, Py_ssize_t C,
                                        Py_ssize_t h0, Py_ssize_t r0, Py_ssize_t r1,
                                        Py_ssize_t dh, Py_ssize_t w0, Py_ssize_t s0,
                                        Py_ssize_t s1, Py_ssize_t dw, floating* yp,
                                        int64_t* ip) noexcept nogil:
    """The maxima of one window (of image x; its taps r0 <= r < r1, s0 <= s < s1 lie inside
    it, fewer than 2**31 of them) and their flat indices. Block of channels by block, the
    running maxima and the number of the tap that gave each (32-bit, as wide as a float:
    one select mask serves both) kept in local arrays, which the compiler vectorises; the
    indices are made from the tap numbers at the end: looked up in a table of the window's
    flat indices where it has at most _FLAT_TAPS taps (two integer divisions per channel
    made 3x3 pooling with indices 4x slower than without). (A branch per channel and tap ran
    14x slower than the maxima alone.)"""
    cdef floating m[_IDX_BLOCK]
    cdef int32_t tap[_IDX_BLOCK]
    cdef int64_t flat[_FLAT_TAPS]
    cdef Py_ssize_t c, nc, r, s, k, c0 = 0, ns = s1 - s0
    cdef int32_t t
    cdef const floating* xp
    cdef floating v
    cdef bint better
    cdef bint table = (r1 - r0) * ns <= _FLAT_TAPS
    if table:
        t = 0
        for r in range(r0, r1):
            for s in range(s0, s1):
                flat[t] = (h0 + r * dh) * W + w0 + s * dw
                t += 1
        if r0 >= r1 or ns <= 0:  # no tap inside the image: every index is -1
            flat[0] = -1
    while c0 < C:
        nc = min(<Py_ssize_t> _IDX_BLOCK, C - c0)
        for c in range(_IDX_BLOCK):
            m[c] = -INFINITY
            tap[c] = 0  # the window's first pixel, until a larger value comes
        t = 0
        for r in range(r0, r1):
            for s in range(s0, s1):
                xp = x + ((h0 + r * dh) * W + w0 + s * dw) * C + c0
                for c in range(nc):
                    v = xp[c]
                    better = (v > m[c]) | (v != v)  # NaN wins; no short circuit, no branch
                    m[c] = v if better else m[c]
                    tap[c] = t if better else tap[c]
                t += 1
        for c in range(nc):
            yp[c0 + c] = m[c]
        if table:
            for c in range(nc):
                ip[c0 + c] = flat[tap[c]]
        else:
            for c in range(nc):
                k = tap[c]
                ip[c0 + c] = ((h0 + (r0 + k // ns) * dh) * W + w0 + (s0 + k % ns) * dw
                              if r0 < r1 and ns > 0 else -1)
        c0 += _IDX_BLOCK


def max_pool_forward(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C)
                     floating[:, :, :, ::1] y,         # OUT (N, Ho, Wo, C)
                     int64_t[:, :, :, ::1] idx,        # OUT (N, Ho, Wo, C), or (0, 0, 0, 0)
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                     Py_ssize_t vector_window_taps, int num_threads):
    """Maximum over each window. Ties keep the first in row-major window order; NaN wins
    over numbers and a later NaN over an earlier one (as PyTorch: `v > m or isnan(v)`).
    An empty idx (inference): the maxima alone (_window_max, several times faster than also
    finding the indices). With idx, windows of up to vector_window_taps taps (at most
    2**31 - 1) run _window_max_with_index, larger ones one channel and tap at a time."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2]
    cdef Py_ssize_t row, n, oh, ow, h0, w0, r0, r1, s0, s1, r, s, c, ih, iw
    cdef bint indices = idx.shape[0] > 0
    cdef int64_t first, flat
    cdef const floating* xp
    cdef floating* yp
    cdef int64_t* ip = NULL
    cdef floating v
    if N * Ho * Wo * C == 0:
        return
    vector_window_taps = min(vector_window_taps, <Py_ssize_t> INT32_MAX)
    for row in prange(N * Ho, nogil=True, schedule="static", num_threads=num_threads):
        n = row // Ho
        oh = row % Ho
        h0 = oh * sh - ph
        r0 = _first_tap(h0, dh)
        r1 = _end_tap(h0, dh, kh, H)
        for ow in range(Wo):
            w0 = ow * sw - pw
            s0 = _first_tap(w0, dw)
            s1 = _end_tap(w0, dw, kw, W)
            yp = &y[n, oh, ow, 0]
            if not indices:
                _window_max(&x[n, 0, 0, 0], W, C, h0, r0, r1, dh, w0, s0, s1, dw, yp)
                continue
            ip = &idx[n, oh, ow, 0]
            if (r1 - r0) * (s1 - s0) <= vector_window_taps:
                _window_max_with_index(&x[n, 0, 0, 0], W, C, h0, r0, r1, dh, w0, s0, s1, dw,
                                       yp, ip)
                continue
            # a window of more than vector_window_taps taps: a channel and tap at a time, the
            # window's first real pixel holding the index until a larger value comes
            first = (h0 + r0 * dh) * W + (w0 + s0 * dw) if r0 < r1 and s0 < s1 else -1
            for c in range(C):
                yp[c] = -INFINITY
                ip[c] = first
            for r in range(r0, r1):
                ih = h0 + r * dh
                for s in range(s0, s1):
                    iw = w0 + s * dw
                    xp = &x[n, ih, iw, 0]
                    flat = ih * W + iw
                    for c in range(C):
                        v = xp[c]
                        if v > yp[c] or v != v:
                            yp[c] = v
                            ip[c] = flat


def max_pool_backward(const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C)
                      const int64_t[:, :, :, ::1] idx,  # IN  (N, Ho, Wo, C), each in [-1, H*W)
                      floating[:, :, :, ::1] gx,        # OUT (N, H, W, C), every value written
                      Py_ssize_t channel_block, int num_threads):
    """Scatter each output gradient to the pixel its index names (-1: nowhere).

    One task per (image, block of channels) zeroes its part of gx, then sums its outputs
    into it in a fixed order, so the result does not depend on the thread count and no two
    threads write the same memory (zeroed by the task, the part is in cache for the sums:
    8x56x56x64, 3x3 stride 2, 1.2 -> 0.7 ms on an AMD EPYC Zen 4 against np.zeros first).
    """
    cdef Py_ssize_t N = gx.shape[0], H = gx.shape[1], W = gx.shape[2], C = gx.shape[3]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2]
    cdef Py_ssize_t blocks = (C + channel_block - 1) // channel_block
    cdef Py_ssize_t task, n, c0, c1, oh, ow, c, p
    cdef int64_t j
    cdef const floating* gyp
    cdef const int64_t* ip
    cdef floating* gxp
    if N * H * W * C == 0:
        return
    for task in prange(N * blocks, nogil=True, schedule="static", num_threads=num_threads):
        n = task // blocks
        c0 = (task % blocks) * channel_block
        c1 = c0 + channel_block if c0 + channel_block < C else C
        gxp = &gx[n, 0, 0, 0]
        for p in range(H * W):
            for c in range(c0, c1):
                gxp[p * C + c] = 0
        for oh in range(Ho):
            for ow in range(Wo):
                gyp = &gy[n, oh, ow, 0]
                ip = &idx[n, oh, ow, 0]
                for c in range(c0, c1):
                    j = ip[c]
                    if j >= 0:
                        gxp[j * C + c] += gyp[c]


cdef inline Py_ssize_t _divisor(Py_ssize_t start, Py_ssize_t dil, Py_ssize_t k, Py_ssize_t size,
                                Py_ssize_t after, bint count_include_pad) noexcept nogil:
    """How many taps of a window along one axis count in the average: with padding, those
    inside the padded image (the `after` padding included: a ceil-mode window may overhang
    it); without, those inside the image. The window starts at `start` >= -(padding before)."""
    if count_include_pad:
        return _end_tap(start, dil, k, size + after)
    return max(0, _end_tap(start, dil, k, size) - _first_tap(start, dil))


def avg_pool_forward(const floating[:, :, :, ::1] x,   # IN  (N, H, W, C)
                     floating[:, :, :, ::1] y,         # OUT (N, Ho, Wo, C)
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                     Py_ssize_t top, Py_ssize_t bottom, Py_ssize_t left, Py_ssize_t right,
                     Py_ssize_t dh, Py_ssize_t dw, bint count_include_pad,
                     Py_ssize_t divisor_override, int num_threads):
    """Mean over each window's taps (padding counts as zeros when count_include_pad); the
    divisor is divisor_override when > 0. A window with a divisor of 0 (no tap inside the
    image, count_include_pad False) gives 0."""
    cdef Py_ssize_t N = x.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t Ho = y.shape[1], Wo = y.shape[2]
    cdef Py_ssize_t row, n, oh, ow, h0, w0, r0, r1, s0, s1, r, s, c, dv, count
    cdef const floating* xp
    cdef floating* yp
    cdef floating divisor
    if N * Ho * Wo * C == 0:
        return
    for row in prange(N * Ho, nogil=True, schedule="static", num_threads=num_threads):
        n = row // Ho
        oh = row % Ho
        h0 = oh * sh - top
        r0 = _first_tap(h0, dh)
        r1 = _end_tap(h0, dh, kh, H)
        dv = _divisor(h0, dh, kh, H, bottom, count_include_pad)
        for ow in range(Wo):
            w0 = ow * sw - left
            s0 = _first_tap(w0, dw)
            s1 = _end_tap(w0, dw, kw, W)
            count = divisor_override if divisor_override > 0 else \
                dv * _divisor(w0, dw, kw, W, right, count_include_pad)
            divisor = <floating> count
            yp = &y[n, oh, ow, 0]
            for c in range(C):
                yp[c] = 0
            for r in range(r0, r1):
                for s in range(s0, s1):
                    xp = &x[n, h0 + r * dh, w0 + s * dw, 0]
                    for c in range(C):
                        yp[c] += xp[c]
            if count > 0:
                for c in range(C):
                    yp[c] = yp[c] / divisor


def avg_pool_backward(const floating[:, :, :, ::1] gy,  # IN  (N, Ho, Wo, C)
                      floating[:, :, :, ::1] gx,        # OUT (N, H, W, C), every element written
                      Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                      Py_ssize_t top, Py_ssize_t bottom, Py_ssize_t left, Py_ssize_t right,
                      Py_ssize_t dh, Py_ssize_t dw, bint count_include_pad,
                      Py_ssize_t divisor_override, int num_threads):
    """Gather form: each input pixel sums gy / divisor over the windows that cover it (tap r
    of output row oh reads ih = oh*sh - top + r*dh; likewise along W)."""
    cdef Py_ssize_t N = gx.shape[0], H = gx.shape[1], W = gx.shape[2], C = gx.shape[3]
    cdef Py_ssize_t Ho = gy.shape[1], Wo = gy.shape[2]
    cdef Py_ssize_t row, n, ih, iw, oh, ow, r, s, t, c, dv, count
    cdef const floating* gyp
    cdef floating* gxp
    cdef floating divisor
    if N * H * W * C == 0:
        return
    for row in prange(N * H, nogil=True, schedule="static", num_threads=num_threads):
        n = row // H
        ih = row % H
        for iw in range(W):
            gxp = &gx[n, ih, iw, 0]
            for c in range(C):
                gxp[c] = 0
            for r in range(kh):
                t = ih + top - r * dh  # oh * sh for the output row whose tap r reads ih
                if t < 0 or t % sh != 0 or t // sh >= Ho:
                    continue
                oh = t // sh
                dv = _divisor(oh * sh - top, dh, kh, H, bottom, count_include_pad)
                for s in range(kw):
                    t = iw + left - s * dw
                    if t < 0 or t % sw != 0 or t // sw >= Wo:
                        continue
                    ow = t // sw
                    count = divisor_override if divisor_override > 0 else \
                        dv * _divisor(ow * sw - left, dw, kw, W, right, count_include_pad)
                    if count > 0:
                        divisor = <floating> count
                        gyp = &gy[n, oh, ow, 0]
                        for c in range(C):
                            gxp[c] += gyp[c] / divisor


def relu_backward(const floating[::1] gy,        # IN  grad_output, flattened
                  const unsigned char[::1] keep,  # IN  x > 0 or NaN (a boolean mask as bytes)
                  floating[::1] gx,               # OUT the input's gradient, flattened
                  int num_threads):
    """gx = gy where keep, else 0 (a NaN of gy where keep is false gives 0, as PyTorch's
    threshold_backward). One pass over the bits, without branches (a random mask made a
    branch mispredicted every other element); NumPy's np.where took 10x as long."""
    cdef Py_ssize_t n = gy.shape[0], i
    cdef const uint32_t* g32
    cdef uint32_t* o32
    cdef const uint64_t* g64
    cdef uint64_t* o64
    _check_elementwise("relu_backward", n, keep.shape[0], gx.shape[0], num_threads)
    if n == 0:
        return
    if floating is float:
        g32 = <const uint32_t*> &gy[0]
        o32 = <uint32_t*> &gx[0]
        for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
            o32[i] = g32[i] & (0u - <uint32_t> (keep[i] != 0))
    else:
        g64 = <const uint64_t*> &gy[0]
        o64 = <uint64_t*> &gx[0]
        for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
            o64[i] = g64[i] & (0u - <uint64_t> (keep[i] != 0))


cdef int _check_elementwise(str fn, Py_ssize_t n, Py_ssize_t a, Py_ssize_t b,
                            int num_threads) except -1:
    """ValueError unless the two other flat arrays have the first one's n values and
    num_threads >= 1 (the loops read and write n values of each, bounds checks off)."""
    if a != n or b != n:
        raise ValueError(f"{fn}: expected arrays of {n} values, but got {a} and {b}")
    if num_threads < 1:
        raise ValueError(f"{fn}: num_threads must be >= 1, got {num_threads}")
    return 0


ctypedef fused _bits:  # a float's bits as an unsigned integer of its size
    uint32_t
    uint64_t


cdef inline void _relu_range(const floating* x, _bits* y, unsigned char* keep,
                             Py_ssize_t n) noexcept nogil:
    """relu_forward over n values (y: the bits of floats of x's size), as a plain loop the
    compiler vectorises: x's bits masked by the comparison (branch-free: a random sign made
    a branch mispredicted half the time)."""
    cdef Py_ssize_t i
    cdef _bits k
    cdef const _bits* bits = <const _bits*> x
    for i in range(n):
        k = not (x[i] <= 0)
        keep[i] = <unsigned char> k
        y[i] = bits[i] & (0u - k)


def relu_forward(const floating[::1] x,       # IN  the input, flattened
                 floating[::1] y,             # OUT max(x, 0), NaN kept; may be x itself
                 unsigned char[::1] keep,     # OUT x > 0 or NaN: relu_backward's mask
                 int num_threads):
    """ReLU's forward for training in one pass, one contiguous range per thread: the output
    and the mask its backward reads (NumPy's np.maximum then ~(y <= 0) made three passes
    and two temporaries)."""
    cdef Py_ssize_t n = x.shape[0], k, lo, hi
    _check_elementwise("relu_forward", n, y.shape[0], keep.shape[0], num_threads)
    if n == 0:
        return
    for k in prange(num_threads, nogil=True, schedule="static", num_threads=num_threads):
        lo = part_start(k, n, num_threads)
        hi = part_start(k + 1, n, num_threads)
        if hi > lo:
            if floating is float:
                _relu_range(&x[lo], <uint32_t*> &y[lo], &keep[lo], hi - lo)
            else:
                _relu_range(&x[lo], <uint64_t*> &y[lo], &keep[lo], hi - lo)
