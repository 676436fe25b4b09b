"""Every bad argument of conv2d raises ValueError/TypeError naming the argument and the value."""
import numpy as np
import pytest

import fastconv

X = np.ones((2, 6, 7, 4))  # N, H, W, C
W = np.ones((3, 3, 4, 5))  # kh, kw, C_in, C_out
B = np.ones(5)


def call(**changes):
    args = dict(x=X, weight=W, bias=None)
    args.update(changes)
    return fastconv.conv2d(args.pop("x"), args.pop("weight"), args.pop("bias"), **args)


# (id, arguments changed from the valid call, exception, regex the message must match)
CASES = [
    # ndim
    ("x_2d", dict(x=np.ones((6, 7))), ValueError, r"input.*3-D or 4-D.*2-D.*\(6, 7\)"),
    ("x_5d", dict(x=np.ones((1, 2, 6, 7, 4))), ValueError, r"input.*3-D or 4-D.*5-D"),
    ("x_1d", dict(x=np.ones(4)), ValueError, r"input.*1-D"),
    ("x_scalar", dict(x=np.float64(1.0)), ValueError, r"input.*0-D"),
    ("weight_3d", dict(weight=np.ones((3, 3, 4))), ValueError, r"weight.*4-D.*3-D.*\(3, 3, 4\)"),
    ("weight_5d", dict(weight=np.ones((1, 3, 3, 4, 5))), ValueError, r"weight.*4-D.*5-D"),
    ("bias_2d", dict(bias=np.ones((5, 1))), ValueError, r"bias.*\(5,\).*\(5, 1\)"),
    ("bias_wrong_length", dict(bias=np.ones(4)), ValueError, r"bias.*\(5,\).*\(4,\)"),
    ("bias_scalar", dict(bias=1.0), ValueError, r"bias.*\(5,\).*\(\)"),
    # channels and groups
    ("channel_mismatch", dict(x=np.ones((2, 6, 7, 3))), ValueError,
     r"weight.*\(3, 3, 4, 5\).*expected input.*\(2, 6, 7, 3\).*4 channels.*got 3 channels"),
    ("channel_mismatch_groups", dict(x=np.ones((2, 6, 7, 6)), weight=np.ones((3, 3, 2, 4)),
                                     groups=2), ValueError,
     r"groups=2.*expected input.*4 channels.*got 6 channels"),
    ("cout_not_divisible", dict(x=np.ones((2, 6, 7, 4)), weight=np.ones((3, 3, 2, 5)), groups=2),
     ValueError, r"weight.*\(3, 3, 2, 5\).*5 output channels.*not divisible by groups=2"),
    ("groups_0", dict(groups=0), ValueError, r"groups.*>= 1.*0"),
    ("groups_negative", dict(groups=-2), ValueError, r"groups.*>= 1.*-2"),
    ("groups_float", dict(groups=1.0), TypeError, r"groups.*int.*1\.0"),
    ("groups_bool", dict(groups=True), TypeError, r"groups.*int.*True"),
    ("groups_str", dict(groups="1"), TypeError, r"groups.*int.*'1'"),
    # stride and dilation
    ("stride_0", dict(stride=0), ValueError, r"stride.*>= 1.*0"),
    ("stride_negative", dict(stride=-1), ValueError, r"stride.*>= 1.*-1"),
    ("stride_pair_0", dict(stride=(1, 0)), ValueError, r"stride\[1\].*>= 1.*0"),
    ("stride_float", dict(stride=1.5), TypeError, r"stride.*1\.5"),
    ("stride_bool", dict(stride=True), TypeError, r"stride.*True"),
    ("stride_triple", dict(stride=(1, 1, 1)), TypeError, r"stride.*\(1, 1, 1\)"),
    ("dilation_0", dict(dilation=0), ValueError, r"dilation.*>= 1.*0"),
    ("dilation_pair_0", dict(dilation=(0, 1)), ValueError, r"dilation\[0\].*>= 1.*0"),
    ("dilation_float", dict(dilation=2.0), TypeError, r"dilation.*2\.0"),
    # padding
    ("padding_negative", dict(padding=-1), ValueError, r"padding.*>= 0.*-1"),
    ("padding_pair_negative", dict(padding=(1, -2)), ValueError, r"padding\[1\].*>= 0.*-2"),
    ("padding_pairs_negative", dict(padding=((0, 1), (2, -3))), ValueError,
     r"padding\[1\]\[1\].*>= 0.*-3"),
    ("padding_bool", dict(padding=True), TypeError, r"padding.*True"),
    ("padding_float", dict(padding=1.5), TypeError, r"padding.*1\.5"),
    ("padding_pair_float", dict(padding=(1, 0.5)), TypeError, r"padding.*0\.5"),
    ("padding_triple", dict(padding=(1, 1, 1)), TypeError, r"padding.*\(1, 1, 1\)"),
    ("padding_unknown_string", dict(padding="full"), ValueError,
     r"padding.*'valid'.*'same'.*'full'"),
    ("padding_upper_case", dict(padding="SAME"), ValueError, r"padding.*'SAME'"),
    ("padding_none", dict(padding=None), TypeError, r"padding.*None"),
    ("padding_mode_unknown", dict(padding_mode="wrap"), ValueError,
     r"padding_mode.*'zeros'.*'circular'.*'wrap'"),
    ("padding_mode_none", dict(padding_mode=None), ValueError, r"padding_mode.*None"),
    ("algorithm_unknown", dict(algorithm="fft"), ValueError,
     r"algorithm.*'direct'.*'im2col'.*'fft'"),
    # output size
    ("output_too_small", dict(x=np.ones((1, 2, 7, 4))), ValueError,
     r"padded input size \(2, 7\).*dilated kernel size \(3, 3\)"),
    ("output_too_small_dilated", dict(x=np.ones((1, 8, 4, 4)), dilation=(1, 3), padding=1),
     ValueError, r"padded input size \(10, 6\).*dilated kernel size \(3, 7\)"),
    ("output_too_small_big_kernel", dict(weight=np.ones((7, 2, 4, 5)), padding=((0, 0), (1, 1))),
     ValueError, r"padded input size \(6, 9\).*dilated kernel size \(7, 2\)"),
    # zero-size kernel dimensions
    ("kernel_h_0", dict(weight=np.ones((0, 3, 4, 5))), ValueError,
     r"weight.*\(0, 3, 4, 5\).*>= 1"),
    ("kernel_w_0", dict(weight=np.ones((3, 0, 4, 5))), ValueError,
     r"weight.*\(3, 0, 4, 5\).*>= 1"),
    # (zero channel counts are valid: empty sums, see test_robustness's empty tests)
    ("kernel_cin_0", dict(weight=np.ones((3, 3, 0, 5))), ValueError,
     r"expected input \(2, 6, 7, 4\) \[NHWC\] to have 0 channels"),
    # data that is not real numbers
    ("x_complex", dict(x=X.astype(complex)), TypeError, r"input.*complex128"),
    ("x_object", dict(x=X.astype(object)), TypeError, r"input.*object"),
    ("x_string", dict(x=X.astype(str)), TypeError, r"input.*<U"),
    ("x_ragged", dict(x=[[[1.0]], [[1.0, 2.0]]]), TypeError, r"input.*array-like"),
    ("weight_complex", dict(weight=W.astype(np.complex64)), TypeError, r"weight.*complex64"),
    ("weight_object", dict(weight=W.astype(object)), TypeError, r"weight.*object"),
    ("weight_bytes", dict(weight=W.astype(bytes)), TypeError, r"weight.*\|S"),
    ("bias_complex", dict(bias=B.astype(complex)), TypeError, r"bias.*complex128"),
    ("bias_string", dict(bias=["a"] * 5), TypeError, r"bias.*<U1"),
]


@pytest.mark.parametrize("changes, exc, pattern", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_argument(changes, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(**changes)


@pytest.mark.parametrize("changes, name, shown", [
    (dict(groups=-3), "groups", "-3"),
    (dict(stride=(2, 0)), "stride[1]", "0"),
    (dict(dilation=-4), "dilation", "-4"),
    (dict(padding=-5), "padding", "-5"),
    (dict(padding=((1, 2), (3, -6))), "padding[1][1]", "-6"),
    (dict(padding="half"), "padding", "'half'"),
    (dict(padding_mode="mirror"), "padding_mode", "'mirror'"),
    (dict(algorithm="winograd-xyz"), "algorithm", "'winograd-xyz'"),
    (dict(groups=2.5), "groups", "2.5"),
], ids=lambda v: str(v))
def test_message_contains_offending_value(changes, name, shown):
    with pytest.raises((ValueError, TypeError)) as info:
        call(**changes)
    message = str(info.value)
    assert name in message
    assert f"got {shown}" in message, message


def test_longdouble():
    x = X.astype(np.longdouble)
    if np.dtype(np.longdouble) == np.float64:  # platforms where long double is double
        assert call(x=x).dtype == np.float64
        return
    with pytest.raises(TypeError, match=rf"input must hold real numbers.*{np.dtype(np.longdouble)}"):
        call(x=x)


def test_groups_not_dividing_channels_names_both():
    # groups=3 cannot split 4 input channels: either the C_out or the channel check fires,
    # and it must say groups=3
    with pytest.raises(ValueError, match=r"groups=3"):
        call(weight=np.ones((3, 3, 1, 6)), groups=3)


@pytest.mark.parametrize("fn_args, pattern", [
    (dict(input_hw=(2, 2), kernel_size=3), r"padded input size \(2, 2\).*\(3, 3\)"),
    (dict(input_hw=(8, 8), kernel_size=0), r"kernel_size.*>= 1.*0"),
    (dict(input_hw=(8, 8), kernel_size=3, stride=0), r"stride.*>= 1.*0"),
    (dict(input_hw=(8, 8), kernel_size=3, padding=-1), r"padding.*>= 0.*-1"),
    (dict(input_hw=(8, 8), kernel_size=3, padding="bogus"), r"padding.*'bogus'"),
])
def test_conv_output_shape_errors(fn_args, pattern):
    with pytest.raises(ValueError, match=pattern):
        fastconv.conv_output_shape(**fn_args)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_propagate(bad):
    # not an error: NaN/inf in the data must come through, not be silently dropped
    x = X.copy()
    x[0, 0, 0, 0] = bad
    y = call(x=x, padding=1)
    assert not np.isfinite(y[0, 0, 0]).any()
    assert np.isfinite(y[1]).all()


def test_errors_leave_inputs_untouched():
    x = X.copy()
    with pytest.raises(ValueError):
        call(x=x, padding_mode="bad")
    np.testing.assert_array_equal(x, X)
