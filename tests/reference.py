"""Plain NumPy convolutions written straight from the definitions, to test the kernels against.

    y[n, i, j, g*cog + o] = bias[g*cog + o] + sum_{r, s, c} xp[n, i*sh + r*dh, j*sw + s*dw, g*cig + c]
                                                          * w[r, s, c, g*cog + o]

where xp is x padded with np.pad. The transposed convolution is the scatter form of its
definition: each input pixel adds its weighted kernel into the output, then the padding is
cropped. Nothing here shares code with fastconv.
"""
import math

import numpy as np

PAD_MODE = {"zeros": "constant", "reflect": "reflect", "symmetric": "symmetric",
            "replicate": "edge", "circular": "wrap"}


def pads_from_spec(padding, in_hw, kernel_hw, stride, dilation):
    """((top, bottom), (left, right)) for any padding spec of API.md, written from API.md:
    an int, (ph, pw), ((top, bottom), (left, right)), "valid", or "same" (output
    ceil(in / stride), total padding max((out-1)*stride + dilation*(k-1) + 1 - in, 0) with the
    odd pixel at the bottom/right)."""
    stride = stride if isinstance(stride, (tuple, list)) else (stride, stride)
    dilation = dilation if isinstance(dilation, (tuple, list)) else (dilation, dilation)
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        pads = []
        for n, k, s, d in zip(in_hw, kernel_hw, stride, dilation):
            total = max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def conv2d(x, w, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
           mode="zeros"):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)), mode=PAD_MODE[mode])
    n, hp, wp, c = xp.shape
    kh, kw, cig, cout = w.shape
    (sh, sw), (dh, dw) = stride, dilation
    ho = (hp - dh * (kh - 1) - 1) // sh + 1
    wo = (wp - dw * (kw - 1) - 1) // sw + 1
    cog = cout // groups
    y = np.zeros((n, ho, wo, cout))
    for g in range(groups):
        for r in range(kh):
            for s in range(kw):
                window = xp[:, r * dh: r * dh + sh * (ho - 1) + 1: sh,
                            s * dw: s * dw + sw * (wo - 1) + 1: sw, g * cig:(g + 1) * cig]
                y[..., g * cog:(g + 1) * cog] += window @ w[r, s, :, g * cog:(g + 1) * cog]
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y


def _transpose_full_size(in_hw, kernel_hw, stride, dilation, output_padding):
    """A transposed convolution's output before `pads` crops it: (in-1)*s + d*(k-1) + 1 + op."""
    return tuple((n - 1) * s + d * (k - 1) + 1 + op for n, k, s, d, op
                 in zip(in_hw, kernel_hw, stride, dilation, output_padding))


def conv_transpose2d(x, w, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)),
                     output_padding=(0, 0), dilation=(1, 1), groups=1):
    """x (N, H, W, C_in), w (kh, kw, C_out // groups, C_in): scatter each input pixel."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, cin = x.shape
    kh, kw, cog_t, _ = w.shape
    cig_t = cin // groups
    (sh, sw), (dh, dw) = stride, dilation
    full_h, full_w = _transpose_full_size((h, wd), (kh, kw), stride, dilation, output_padding)
    y = np.zeros((n, full_h, full_w, cog_t * groups))
    for g in range(groups):
        xg = x[..., g * cig_t:(g + 1) * cig_t]
        for r in range(kh):
            for s in range(kw):
                # input pixel (i, j) adds w[r, s] @ x[i, j] at output (i*sh + r*dh, j*sw + s*dw)
                contrib = xg @ w[r, s, :, g * cig_t:(g + 1) * cig_t].T
                y[:, r * dh: r * dh + sh * (h - 1) + 1: sh, s * dw: s * dw + sw * (wd - 1) + 1: sw,
                  g * cog_t:(g + 1) * cog_t] += contrib
    (top, bottom), (left, right) = pads
    y = y[:, top: full_h - bottom, left: full_w - right]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


# ----------------------------------------------------------------------------------------------
# gradients, from the same definitions (added for the gradient tests)

def _pad_sources(size, pad, mode):
    """For each position of an axis padded by np.pad, the input index it copies (-1: a zero)."""
    if mode == "zeros":
        return np.pad(np.arange(size), pad, mode="constant", constant_values=-1)
    return np.pad(np.arange(size), pad, mode=PAD_MODE[mode])


def _unpad_grad(gxp, in_hw, pads, mode):
    """The gradient wrt x given the gradient wrt xp = np.pad(x): padded position i copies
    x[source(i)], so its gradient is added to that input pixel."""
    n, _, wp, c = gxp.shape
    h, w = in_hw
    src_h = _pad_sources(h, pads[0], mode)
    src_w = _pad_sources(w, pads[1], mode)
    rows = np.zeros((n, h, wp, c))
    for i, src in enumerate(src_h):
        if src >= 0:
            rows[:, src] += gxp[:, i]
    gx = np.zeros((n, h, w, c))
    for j, src in enumerate(src_w):
        if src >= 0:
            gx[:, :, src] += rows[:, :, j]
    return gx


def conv2d_backward(gy, x, w, stride=(1, 1), pads=((0, 0), (0, 0)), dilation=(1, 1), groups=1,
                    mode="zeros"):
    """(grad_input, grad_weight, grad_bias) of conv2d above, given gy = dL/dy.

    Each term xp[n, i*sh + r*dh, j*sw + s*dw, g*cig + c] * w[r, s, c, g*cog + o] of
    y[n, i, j, g*cog + o] sends gy * w to the padded input and gy * xp to the weight.
    """
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), *pads, (0, 0)), mode=PAD_MODE[mode])
    kh, kw, cig, cout = w.shape
    _, ho, wo, _ = gy.shape
    (sh, sw), (dh, dw) = stride, dilation
    cog = cout // groups
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for g in range(groups):
        ci, co = slice(g * cig, (g + 1) * cig), slice(g * cog, (g + 1) * cog)
        for r in range(kh):
            for s in range(kw):
                rows = slice(r * dh, r * dh + sh * (ho - 1) + 1, sh)
                cols = slice(s * dw, s * dw + sw * (wo - 1) + 1, sw)
                gw[r, s, :, co] += np.einsum("nhwc,nhwo->co", xp[:, rows, cols, ci], gy[..., co])
                gxp[:, rows, cols, ci] += gy[..., co] @ w[r, s, :, co].T
    return _unpad_grad(gxp, x.shape[1:3], pads, mode), gw, gy.sum(axis=(0, 1, 2))


def conv_transpose2d_backward(gy, x, w, stride=(1, 1), pads=((0, 0), (0, 0)),
                              output_padding=(0, 0), dilation=(1, 1), groups=1):
    """(grad_input, grad_weight, grad_bias) of conv_transpose2d above, given gy = dL/dy.

    Input pixel (i, j) added w[r, s] @ x[i, j] at full-output pixel (i*sh + r*dh, j*sw + s*dw),
    and the output is the full output cropped by pads: un-crop gy, then gather it back.
    """
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, cin = x.shape
    kh, kw, cog_t, _ = w.shape
    cig_t = cin // groups
    (sh, sw), (dh, dw) = stride, dilation
    full_h, full_w = _transpose_full_size((h, wd), (kh, kw), stride, dilation, output_padding)
    (top, bottom), (left, right) = pads
    gfull = np.zeros((n, full_h, full_w, gy.shape[3]))
    gfull[:, top:full_h - bottom, left:full_w - right] = gy
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    for g in range(groups):
        ci, co = slice(g * cig_t, (g + 1) * cig_t), slice(g * cog_t, (g + 1) * cog_t)
        for r in range(kh):
            for s in range(kw):
                seen = gfull[:, r * dh: r * dh + sh * (h - 1) + 1: sh,
                             s * dw: s * dw + sw * (wd - 1) + 1: sw, co]
                gx[..., ci] += seen @ w[r, s, :, ci]
                gw[r, s, :, ci] += np.einsum("nhwo,nhwc->oc", seen, x[..., ci])
    return gx, gw, gy.sum(axis=(0, 1, 2))


# ----------------------------------------------------------------------------------------------
# 1-D, written directly on (N, L, C) arrays and (k, C_in // groups, C_out) weights

def conv1d(x, w, bias=None, stride=1, pads=(0, 0), dilation=1, groups=1, mode="zeros"):
    """y[n, l, g*cog + o] = bias[g*cog + o]
        + sum_{t, c} xp[n, l*stride + t*dilation, g*cig + c] * w[t, c, g*cog + o]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), pads, (0, 0)), mode=PAD_MODE[mode])
    n, lp, _ = xp.shape
    k, cig, cout = w.shape
    cog = cout // groups
    lo = (lp - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((n, lo, cout))
    for l in range(lo):
        for t in range(k):
            for g in range(groups):
                y[:, l, g * cog:(g + 1) * cog] += (xp[:, l * stride + t * dilation,
                                                      g * cig:(g + 1) * cig]
                                                   @ w[t, :, g * cog:(g + 1) * cog])
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y


def conv_transpose1d(x, w, bias=None, stride=1, pads=(0, 0), output_padding=0, dilation=1,
                     groups=1):
    """x (N, L, C_in), w (k, C_out // groups, C_in): input position l adds w[t] @ x[l] at
    full-output position l*stride + t*dilation; then pads are cropped."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, length, cin = x.shape
    k, cog_t, _ = w.shape
    cig_t = cin // groups
    full = (length - 1) * stride + dilation * (k - 1) + 1 + output_padding
    y = np.zeros((n, full, cog_t * groups))
    for l in range(length):
        for t in range(k):
            for g in range(groups):
                y[:, l * stride + t * dilation, g * cog_t:(g + 1) * cog_t] += (
                    x[:, l, g * cig_t:(g + 1) * cig_t] @ w[t, :, g * cig_t:(g + 1) * cig_t].T)
    y = y[:, pads[0]: full - pads[1]]
    if bias is not None:
        y = y + np.asarray(bias, np.float64)
    return y


def conv1d_backward(gy, x, w, stride=1, pads=(0, 0), dilation=1, groups=1, mode="zeros"):
    """(grad_input, grad_weight, grad_bias) of conv1d above: the term
    xp[n, l*stride + t*dilation, c] * w[t, c, o] sends gy * w to xp and gy * xp to w."""
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    xp = np.pad(x, ((0, 0), pads, (0, 0)), mode=PAD_MODE[mode])
    k, cig, cout = w.shape
    cog = cout // groups
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for l in range(gy.shape[1]):
        for t in range(k):
            for g in range(groups):
                ci, co = slice(g * cig, (g + 1) * cig), slice(g * cog, (g + 1) * cog)
                pos = l * stride + t * dilation
                gxp[:, pos, ci] += gy[:, l, co] @ w[t, :, co].T
                gw[t, :, co] += xp[:, pos, ci].T @ gy[:, l, co]
    # padded position i copies x[source[i]]: its gradient goes back there
    source = np.pad(np.arange(x.shape[1]), pads, mode="constant", constant_values=-1) \
        if mode == "zeros" else np.pad(np.arange(x.shape[1]), pads, mode=PAD_MODE[mode])
    gx = np.zeros_like(x)
    for i, src in enumerate(source):
        if src >= 0:
            gx[:, src] += gxp[:, i]
    return gx, gw, gy.sum(axis=(0, 1))


def conv_transpose1d_backward(gy, x, w, stride=1, pads=(0, 0), output_padding=0, dilation=1,
                              groups=1):
    """(grad_input, grad_weight, grad_bias) of conv_transpose1d above: input position l
    reached full-output position l*stride + t*dilation through w[t]."""
    gy = np.asarray(gy, np.float64)
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, length, cin = x.shape
    k, cog_t, _ = w.shape
    cig_t = cin // groups
    full = (length - 1) * stride + dilation * (k - 1) + 1 + output_padding
    gfull = np.zeros((n, full, gy.shape[2]))
    gfull[:, pads[0]: full - pads[1]] = gy
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    for l in range(length):
        for t in range(k):
            for g in range(groups):
                ci, co = slice(g * cig_t, (g + 1) * cig_t), slice(g * cog_t, (g + 1) * cog_t)
                seen = gfull[:, l * stride + t * dilation, co]
                gx[:, l, ci] += seen @ w[t, :, ci]
                gw[t, :, ci] += seen.T @ x[:, l, ci]
    return gx, gw, gy.sum(axis=(0, 1))
