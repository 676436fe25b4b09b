"""Plain NumPy convolutions written straight from the definitions, to test the kernels against.

    y[n, i, j, g*cog + o] = bias[g*cog + o] + sum_{r, s, c} xp[n, i*sh + r*dh, j*sw + s*dw, g*cig + c]
                                                          * w[r, s, c, g*cog + o]

where xp is x padded with np.pad. The transposed convolution is the scatter form of its
definition: each input pixel adds its weighted kernel into the output, then the padding is
cropped. Nothing here shares code with fastconv.
"""
import numpy as np

PAD_MODE = {"zeros": "constant", "reflect": "reflect", "symmetric": "symmetric",
            "replicate": "edge", "circular": "wrap"}


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


def conv_transpose2d(x, w, bias=None, stride=(1, 1), pads=((0, 0), (0, 0)),
                     output_padding=(0, 0), dilation=(1, 1), groups=1):
    """x (N, H, W, C_in), w (kh, kw, C_out // groups, C_in): scatter each input pixel."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, h, wd, cin = x.shape
    kh, kw, cog_t, _ = w.shape
    cig_t = cin // groups
    (sh, sw), (dh, dw) = stride, dilation
    full_h = (h - 1) * sh + dh * (kh - 1) + 1 + output_padding[0]
    full_w = (wd - 1) * sw + dw * (kw - 1) + 1 + output_padding[1]
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
