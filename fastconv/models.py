"""Classic CNNs built from fastconv layers and the blocks of fastconv.graph (NHWC input).

    model = resnet18(num_classes=10, rng=0)
    logits = model(images)          # images (N, H, W, 3)

Constructors: resnet18, resnet50, mobilenet_v2, vgg16_bn, unet; each takes `num_classes`,
`dtype` (float32 or float64), `rng` (seed or Generator: every layer initialised from it, as
PyTorch initialises it) and `width`, the channel count of the first stage (the paper's by
default; smaller widths make small test networks). The architectures follow torchvision's
(ResNet v1.5: the stride in the 3x3 conv of a Bottleneck) and the U-Net paper's with "same"
padding. The building blocks are public too: conv_bn, basic_block, bottleneck,
inverted_residual, squeeze_excitation, dense_block.
"""
from __future__ import annotations

import numpy as np

from fastconv import _params
from fastconv import layers as L
from fastconv.graph import Mul, Parallel, Residual


def conv_bn(cin: int, cout: int, kernel_size: int, stride: int = 1, groups: int = 1,
            act=L.ReLU, *, dtype=np.float32, rng=None) -> list[L.Layer]:
    """[Conv2d (no bias, padding kernel_size // 2), BatchNorm2d, act()] (act None: no
    activation), to splice into a Sequential."""
    layers = [L.Conv2d(cin, cout, kernel_size, stride, kernel_size // 2, groups=groups,
                       bias=False, dtype=dtype, rng=rng),
              L.BatchNorm2d(cout, dtype=dtype)]
    return layers + ([act()] if act is not None else [])


def _shortcut(cin, cout, stride, dtype, rng):
    """None (identity) when the shape is kept, else a 1x1 conv + BatchNorm (downsample)."""
    if stride == 1 and cin == cout:
        return None
    return L.Sequential(*conv_bn(cin, cout, 1, stride, act=None, dtype=dtype, rng=rng))


def basic_block(cin: int, cout: int, stride: int = 1, *, dtype=np.float32, rng=None):
    """ResNet-18/34's block: relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))."""
    rng = _params.as_rng(rng)  # one generator for every layer of the block
    body = L.Sequential(*conv_bn(cin, cout, 3, stride, dtype=dtype, rng=rng),
                        *conv_bn(cout, cout, 3, act=None, dtype=dtype, rng=rng))
    return L.Sequential(Residual(body, _shortcut(cin, cout, stride, dtype, rng)), L.ReLU())


def bottleneck(cin: int, width: int, stride: int = 1, *, dtype=np.float32, rng=None):
    """ResNet-50's block: 1x1 to `width`, 3x3 (stride), 1x1 to 4 * width, plus the shortcut,
    then ReLU."""
    rng = _params.as_rng(rng)  # one generator for every layer of the block
    cout = 4 * width
    body = L.Sequential(*conv_bn(cin, width, 1, dtype=dtype, rng=rng),
                        *conv_bn(width, width, 3, stride, dtype=dtype, rng=rng),
                        *conv_bn(width, cout, 1, act=None, dtype=dtype, rng=rng))
    return L.Sequential(Residual(body, _shortcut(cin, cout, stride, dtype, rng)), L.ReLU())


def _resnet(block, blocks, expansion, num_classes, width, dtype, rng):
    rng = _params.as_rng(rng)
    layers = [*conv_bn(3, width, 7, 2, dtype=dtype, rng=rng), L.MaxPool2d(3, 2, 1)]
    cin = width
    for stage, n in enumerate(blocks):
        w = width * 2 ** stage
        for i in range(n):
            layers.append(block(cin, w, 2 if stage > 0 and i == 0 else 1, dtype=dtype, rng=rng))
            cin = w * expansion
    layers += [L.AdaptiveAvgPool2d(1), L.Flatten(), L.Linear(cin, num_classes, dtype=dtype,
                                                              rng=rng)]
    return L.Sequential(*layers)


def resnet18(num_classes: int = 1000, *, width: int = 64, dtype=np.float32, rng=None):
    """ResNet-18 (He et al. 2015; torchvision's layout): a 7x7 stride-2 stem, max pooling,
    four stages of two basic blocks, global average pooling, a Linear classifier."""
    return _resnet(basic_block, (2, 2, 2, 2), 1, num_classes, width, dtype, rng)


def resnet50(num_classes: int = 1000, *, width: int = 64, dtype=np.float32, rng=None):
    """ResNet-50 (torchvision's v1.5): stages of 3, 4, 6, 3 bottleneck blocks."""
    return _resnet(bottleneck, (3, 4, 6, 3), 4, num_classes, width, dtype, rng)


def squeeze_excitation(channels: int, squeezed: int, *, dtype=np.float32, rng=None):
    """x * hardsigmoid(conv1x1(relu(conv1x1(mean over H, W of x)))) (MobileNetV3's SE)."""
    rng = _params.as_rng(rng)  # one generator for every layer of the block
    gate = L.Sequential(L.AdaptiveAvgPool2d(1),
                        L.Conv2d(channels, squeezed, 1, dtype=dtype, rng=rng), L.ReLU(),
                        L.Conv2d(squeezed, channels, 1, dtype=dtype, rng=rng), L.Hardsigmoid())
    return Parallel(None, gate, merge=Mul())


def inverted_residual(cin: int, cout: int, stride: int, expand: int, *, dtype=np.float32,
                      rng=None):
    """MobileNetV2's block: 1x1 expansion (ReLU6), 3x3 depthwise (stride, ReLU6), linear 1x1
    projection; plus x when the shape is kept."""
    rng = _params.as_rng(rng)  # one generator for every layer of the block
    hidden = cin * expand
    layers = [] if expand == 1 else conv_bn(cin, hidden, 1, act=L.ReLU6, dtype=dtype, rng=rng)
    layers += conv_bn(hidden, hidden, 3, stride, groups=hidden, act=L.ReLU6, dtype=dtype,
                      rng=rng)
    layers += conv_bn(hidden, cout, 1, act=None, dtype=dtype, rng=rng)
    body = L.Sequential(*layers)
    return Residual(body) if stride == 1 and cin == cout else body


def mobilenet_v2(num_classes: int = 1000, *, width: int = 32, dtype=np.float32, rng=None):
    """MobileNetV2 (Sandler et al. 2018) with the paper's (expansion, channels, blocks,
    stride) table scaled by width / 32, a 1280-channel (40 * width) last conv, global average
    pooling, dropout 0.2 and a Linear classifier."""
    rng = _params.as_rng(rng)
    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]
    layers = conv_bn(3, width, 3, 2, act=L.ReLU6, dtype=dtype, rng=rng)
    cin = width
    for expand, channels, n, stride in table:
        cout = max(1, channels * width // 32)
        for i in range(n):
            layers.append(inverted_residual(cin, cout, stride if i == 0 else 1, expand,
                                            dtype=dtype, rng=rng))
            cin = cout
    last = 40 * width
    layers += conv_bn(cin, last, 1, act=L.ReLU6, dtype=dtype, rng=rng)
    layers += [L.AdaptiveAvgPool2d(1), L.Flatten(), L.Dropout(0.2),
               L.Linear(last, num_classes, dtype=dtype, rng=rng)]
    return L.Sequential(*layers)


def vgg16_bn(num_classes: int = 1000, *, width: int = 64, dtype=np.float32, rng=None):
    """VGG-16 with BatchNorm (torchvision's vgg16_bn): thirteen 3x3 conv + BN + ReLU in five
    stages of width, 2, 4, 8, 8 x width channels with max pooling, adaptive pooling to 7x7 and
    a classifier of Linear layers of 64 x width (4096) features with dropout 0.5."""
    rng = _params.as_rng(rng)
    layers: list[L.Layer] = []
    cin = 3
    for convs, mult in ((2, 1), (2, 2), (3, 4), (3, 8), (3, 8)):
        for _ in range(convs):
            layers.append(L.Conv2d(cin, width * mult, 3, padding=1, dtype=dtype, rng=rng))
            layers += [L.BatchNorm2d(width * mult, dtype=dtype), L.ReLU()]
            cin = width * mult
        layers.append(L.MaxPool2d(2))
    hidden = 64 * width
    layers += [L.AdaptiveAvgPool2d(7), L.Flatten(),
               L.Linear(cin * 49, hidden, dtype=dtype, rng=rng), L.ReLU(), L.Dropout(0.5),
               L.Linear(hidden, hidden, dtype=dtype, rng=rng), L.ReLU(), L.Dropout(0.5),
               L.Linear(hidden, num_classes, dtype=dtype, rng=rng)]
    return L.Sequential(*layers)


def _double_conv(cin, cout, dtype, rng):
    return [*conv_bn(cin, cout, 3, dtype=dtype, rng=rng),
            *conv_bn(cout, cout, 3, dtype=dtype, rng=rng)]


def unet(num_classes: int = 2, in_channels: int = 3, *, width: int = 64, depth: int = 4,
         dtype=np.float32, rng=None):
    """U-Net (Ronneberger et al. 2015) with "same" padding and BatchNorm: `depth` times max
    pooling and a double 3x3 conv doubling the channels, then 2x2 stride-2 transposed convs
    back up, each output joined on channels with the encoder's map of its size (a Parallel
    skip) and a double conv; a 1x1 conv to num_classes. H and W must be multiples of
    2 ** depth."""
    rng = _params.as_rng(rng)

    def level(c, d):  # a map of c channels in, the same size and channels out
        deeper = [level(2 * c, d - 1)] if d > 1 else []
        down = L.Sequential(L.MaxPool2d(2), *_double_conv(c, 2 * c, dtype, rng), *deeper,
                            L.ConvTranspose2d(2 * c, c, 2, stride=2, dtype=dtype, rng=rng))
        return L.Sequential(Parallel(down, None), *_double_conv(2 * c, c, dtype, rng))

    depth = _params.as_int("depth", depth, 1)
    return L.Sequential(*_double_conv(in_channels, width, dtype, rng), level(width, depth),
                        L.Conv2d(width, num_classes, 1, dtype=dtype, rng=rng))


def dense_block(channels: int, growth: int, layers: int, *, dtype=np.float32, rng=None):
    """A DenseNet block: each layer adds `growth` channels, BN-ReLU-conv3x3 of everything
    before it joined on channels (channels + layers * growth channels out)."""
    rng = _params.as_rng(rng)
    return L.Sequential(*(
        Parallel(None, L.Sequential(L.BatchNorm2d(channels + i * growth, dtype=dtype), L.ReLU(),
                                    L.Conv2d(channels + i * growth, growth, 3, padding=1,
                                             bias=False, dtype=dtype, rng=rng)))
        for i in range(layers)))
