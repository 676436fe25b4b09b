"""Unit tests of the argument helpers in fastconv._params."""
import numpy as np
import pytest

from fastconv import _params


# ----------------------------------------------------------------------------------------------
# as_int / as_pair / as_tuple

@pytest.mark.parametrize("value", [3, np.int64(3), np.int8(3), np.uint16(3)])
def test_as_int_accepts_integers(value):
    got = _params.as_int("k", value, 1)
    assert got == 3 and type(got) is int


@pytest.mark.parametrize("value", [3.0, 1.5, True, np.bool_(True), "3", None, (3,)])
def test_as_int_refuses_non_integers(value):
    with pytest.raises(TypeError, match=r"k must be an int.*got"):
        _params.as_int("k", value)


def test_as_int_minimum():
    assert _params.as_int("k", 0, 0) == 0
    with pytest.raises(ValueError, match=r"k must be >= 1, but got 0"):
        _params.as_int("k", 0, 1)
    assert _params.as_int("k", -7) == -7  # no minimum given


@pytest.mark.parametrize("value, expected", [
    (2, (2, 2)),
    (np.int32(4), (4, 4)),
    ((1, 3), (1, 3)),
    ([5, 2], (5, 2)),
    (np.array([2, 7]), (2, 7)),
    ((np.int64(1), 2), (1, 2)),
])
def test_as_pair_forms(value, expected):
    got = _params.as_pair("stride", value, 1)
    assert got == expected
    assert isinstance(got, tuple) and all(type(v) is int for v in got)


@pytest.mark.parametrize("value, exc, pattern", [
    ((1, 2, 3), TypeError, r"stride must be an int or a sequence of 2 ints.*\(1, 2, 3\)"),
    ((1,), TypeError, r"stride.*\(1,\)"),
    (1.0, TypeError, r"stride.*1\.0"),
    (True, TypeError, r"stride.*True"),
    ((1, 2.5), TypeError, r"stride\[1\] must be an int.*2\.5"),
    ((1, True), TypeError, r"stride\[1\].*True"),
    (0, ValueError, r"stride must be >= 1, but got 0"),
    ((3, 0), ValueError, r"stride\[1\] must be >= 1, but got 0"),
    ((-1, 2), ValueError, r"stride\[0\] must be >= 1, but got -1"),
    ("11", TypeError, r"stride.*'11'"),
])
def test_as_pair_errors(value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _params.as_pair("stride", value, 1)


def test_as_tuple_lengths():
    assert _params.as_tuple("d", 2, 1) == (2,)
    assert _params.as_tuple("d", (4,), 1) == (4,)
    assert _params.as_tuple("d", 1, 3) == (1, 1, 1)
    with pytest.raises(TypeError, match=r"d must be an int or a 1-tuple, but got \(1, 2\)"):
        _params.as_tuple("d", (1, 2), 1)


# ----------------------------------------------------------------------------------------------
# padding_pairs

K3, S1, D1, IN = (3, 3), (1, 1), (1, 1), (8, 9)


@pytest.mark.parametrize("padding, expected", [
    (0, ((0, 0), (0, 0))),
    (2, ((2, 2), (2, 2))),
    (np.int64(1), ((1, 1), (1, 1))),
    ((1, 2), ((1, 1), (2, 2))),
    ([3, 0], ((3, 3), (0, 0))),
    (((0, 1), (2, 3)), ((0, 1), (2, 3))),
    ([[4, 0], [0, 5]], ((4, 0), (0, 5))),
    ((1, (0, 2)), ((1, 1), (0, 2))),
    (((2, 0), 1), ((2, 0), (1, 1))),
    ("valid", ((0, 0), (0, 0))),
])
def test_padding_pairs_explicit_forms(padding, expected):
    got = _params.padding_pairs(padding, K3, S1, D1, IN)
    assert got == expected
    assert all(type(p) is int for pair in got for p in pair)


@pytest.mark.parametrize("n, k, s, d, expected", [
    # stride 1: total = d*(k-1); odd totals put the extra pixel after
    (8, 3, 1, 1, (1, 1)),
    (8, 2, 1, 1, (0, 1)),
    (8, 4, 1, 1, (1, 2)),
    (8, 5, 1, 1, (2, 2)),
    (8, 1, 1, 1, (0, 0)),
    (8, 3, 1, 2, (2, 2)),
    (8, 2, 1, 3, (1, 2)),
    # stride 2: out = ceil(n/2), total = (out-1)*2 + d*(k-1) + 1 - n
    (8, 3, 2, 1, (0, 1)),   # out 4: 6 + 2 + 1 - 8 = 1
    (7, 3, 2, 1, (1, 1)),   # out 4: 6 + 2 + 1 - 7 = 2
    (9, 4, 2, 1, (1, 2)),   # out 5: 8 + 3 + 1 - 9 = 3
    (8, 1, 2, 1, (0, 0)),   # out 4: 6 + 0 + 1 - 8 < 0 -> 0
    # stride 3
    (10, 3, 3, 1, (1, 1)),  # out 4: 9 + 2 + 1 - 10 = 2
    (9, 3, 3, 1, (0, 0)),   # out 3: 6 + 2 + 1 - 9 = 0
    (8, 5, 3, 1, (1, 2)),   # out 3: 6 + 4 + 1 - 8 = 3
    (7, 3, 3, 2, (2, 2)),   # out 3: 6 + 4 + 1 - 7 = 4
    (1, 7, 3, 1, (3, 3)),   # out 1: 0 + 6 + 1 - 1 = 6
])
def test_padding_pairs_same(n, k, s, d, expected):
    got = _params.padding_pairs("same", (k, 3), (s, 1), (d, 1), (n, 9))
    assert got[0] == expected
    assert got[1] == (1, 1)
    # the output size of the padded input is ceil(n / s)
    assert _params.conv_output_size(n, got[0], k, s, d) == -(-n // s)


def test_padding_pairs_same_per_axis():
    got = _params.padding_pairs("same", (2, 5), (1, 2), (1, 1), (6, 10))
    assert got == ((0, 1), (1, 2))  # W: out 5, total 8 + 4 + 1 - 10 = 3


def test_padding_pairs_same_is_ceil_for_all_small_cases():
    for n in range(1, 15):
        for k in range(1, 6):
            for s in range(1, 5):
                for d in range(1, 3):
                    (top, bottom), _ = _params.padding_pairs("same", (k, 1), (s, 1), (d, 1),
                                                             (n, 1))
                    assert 0 <= bottom - top <= 1
                    assert _params.conv_output_size(n, (top, bottom), k, s, d) == -(-n // s)


@pytest.mark.parametrize("padding, exc, pattern", [
    (-1, ValueError, r"padding must be >= 0, but got -1"),
    ((0, -2), ValueError, r"padding\[1\] must be >= 0, but got -2"),
    (((0, 1), (-1, 0)), ValueError, r"padding\[1\]\[0\] must be >= 0, but got -1"),
    (True, TypeError, r"padding.*True"),
    (1.0, TypeError, r"padding.*1\.0"),
    ((1, 2, 3), TypeError, r"padding.*\(1, 2, 3\)"),
    (((1, 2, 3), 0), TypeError, r"padding\[0\].*\(1, 2, 3\)"),
    ("full", ValueError, r"padding.*'full'"),
    ("Same", ValueError, r"padding.*'Same'"),
    (None, TypeError, r"padding.*None"),
])
def test_padding_pairs_errors(padding, exc, pattern):
    with pytest.raises(exc, match=pattern):
        _params.padding_pairs(padding, K3, S1, D1, IN)


def test_padding_pairs_one_axis():
    assert _params.padding_pairs(2, (3,), (1,), (1,), (5,)) == ((2, 2),)
    assert _params.padding_pairs("same", (4,), (1,), (1,), (5,)) == ((1, 2),)


# ----------------------------------------------------------------------------------------------
# conv_output_size and the other small helpers

@pytest.mark.parametrize("n, pad, k, s, d, expected", [
    (5, (0, 0), 3, 1, 1, 3),
    (5, (1, 1), 3, 1, 1, 5),
    (5, (1, 1), 3, 2, 1, 3),
    (6, (1, 1), 3, 2, 1, 3),
    (7, (0, 0), 3, 1, 2, 3),
    (7, (0, 1), 2, 3, 1, 3),
    (224, (3, 3), 7, 2, 1, 112),
    (3, (0, 0), 3, 1, 1, 1),
    (2, (0, 0), 3, 1, 1, 0),   # may be < 1: the caller reports it
    (1, (0, 0), 5, 1, 1, -3),
])
def test_conv_output_size(n, pad, k, s, d, expected):
    assert _params.conv_output_size(n, pad, k, s, d) == expected


def test_conv_output_size_formula_grid():
    for n in range(1, 12):
        for p0 in range(3):
            for p1 in range(3):
                for k in range(1, 5):
                    for s in range(1, 4):
                        for d in range(1, 3):
                            span = n + p0 + p1 - d * (k - 1) - 1
                            if span < 0:
                                continue
                            # number of window starts 0, s, 2s, ... <= span
                            starts = len(range(0, span + 1, s))
                            assert _params.conv_output_size(n, (p0, p1), k, s, d) == starts


def test_padding_mode():
    for mode in ("zeros", "reflect", "symmetric", "replicate", "circular"):
        assert _params.padding_mode(mode) == mode
    with pytest.raises(ValueError, match=r"padding_mode must be one of .*'edge'"):
        _params.padding_mode("edge")


def test_check_ndim():
    _params.check_ndim("input", np.ones((1, 2, 3)), (3, 4), "(N, H, W, C)")
    with pytest.raises(ValueError, match=r"expected input to be 3-D or 4-D \(N, H, W, C\), "
                                         r"but got a 2-D array of shape \(1, 2\)"):
        _params.check_ndim("input", np.ones((1, 2)), (3, 4), "(N, H, W, C)")


@pytest.mark.parametrize("dtypes, expected", [
    ((np.float32, np.float32), np.float32),
    ((np.uint8, np.float32), np.float32),
    ((np.float16,), np.float32),
    ((np.int16, np.int16), np.float32),
    ((np.int32, np.float32), np.float64),
    ((np.int64,), np.float64),
    ((np.float32, np.float64), np.float64),
    ((np.bool_, np.float32), np.float32),
])
def test_float_dtype(dtypes, expected):
    arrays = [np.zeros(1, dt) for dt in dtypes]
    assert _params.float_dtype(*arrays) == expected


def test_as_array_refuses_longdouble():
    if np.dtype(np.longdouble) == np.float64:  # platforms where long double is double
        assert _params.as_array("x", np.zeros(1, np.longdouble)).dtype == np.float64
        return
    with pytest.raises(TypeError, match=rf"x must hold real numbers.*{np.dtype(np.longdouble)}"):
        _params.as_array("x", np.zeros(1, np.longdouble))


@pytest.mark.parametrize("value", [[1, 2], np.arange(3), 2.5, np.ones((2, 2), np.uint8)])
def test_as_array_accepts_real_numbers(value):
    arr = _params.as_array("x", value)
    assert isinstance(arr, np.ndarray)
    np.testing.assert_array_equal(arr, np.asarray(value))


@pytest.mark.parametrize("value, shown", [
    (np.ones(2, complex), "complex128"), (["a", "b"], "<U1"), (np.array([None]), "object"),
])
def test_as_array_refuses_other_data(value, shown):
    with pytest.raises(TypeError, match=rf"x must hold real numbers.*{shown}"):
        _params.as_array("x", value)


def test_as_array_ragged():
    with pytest.raises(TypeError, match=r"x must be array-like"):
        _params.as_array("x", [[1, 2], [3]])


def test_conv_geometry():
    geo = _params.conv_geometry("conv2d", (2, 9, 10, 4), (3, 2, 2, 6), (2, 1), "same",
                                (1, 2), 2)
    assert geo.n == 2 and geo.in_hw == (9, 10) and geo.in_channels == 4
    assert geo.kernel_hw == (3, 2) and geo.out_channels == 6 and geo.groups == 2
    assert geo.stride == (2, 1) and geo.dilation == (1, 2)
    # H: out 5, total 8 + 2 + 1 - 9 = 2 -> (1, 1); W: out 10, total 9 + 2 + 1 - 10 = 2 -> (1, 1)
    assert geo.padding == ((1, 1), (1, 1))
    assert geo.out_hw == (5, 10)
    assert geo.padded_hw == (11, 12)
    assert geo.flops == 2 * 2 * 5 * 10 * 6 * 2 * 3 * 2
