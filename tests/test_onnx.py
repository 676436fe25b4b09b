"""fastconv.onnx.load against ONNX Runtime (or onnx.reference): one graph per operator and
attribute built with onnx.helper, other converters' patterns, gradients, refused files."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastconv  # noqa: E402
import fastconv.onnx as fo  # noqa: E402

RNG = np.random.default_rng(0)
TOL = 1e-4  # max abs difference over max abs output, float32


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def make(nodes, inputs, outputs="y", inits=(), opset=17, elem=TensorProto.FLOAT):
    """A model: inputs {name: shape (None: a dynamic axis)}, inits {name: array}."""
    ins = [helper.make_tensor_value_info(n, elem, s) for n, s in inputs.items()]
    outs = [helper.make_empty_tensor_value_info(n)
            for n in ([outputs] if isinstance(outputs, str) else outputs)]
    graph = helper.make_graph(nodes, "g", ins, outs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in
                               dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(model).graph  # gives the outputs their types
    typed = {v.name: v for v in [*inferred.value_info, *inferred.output]}
    for out in model.graph.output:
        if out.name in typed and typed[out.name].HasField("type"):
            out.CopyFrom(typed[out.name])
        else:
            out.CopyFrom(helper.make_tensor_value_info(out.name, TensorProto.FLOAT, None))
    return model


def oracle(model, feeds, reference_ok=True):
    """ONNX Runtime's outputs, else onnx.reference's where it is right (reference_ok; onnx
    1.23's fails on grouped ConvTranspose, negative Pad and Resize's tf_half_pixel_for_nn, and
    differs from ONNX Runtime on downscaling Resize with floor or linear align_corners)."""
    try:
        import onnxruntime as ort
    except ImportError:
        if not reference_ok:
            pytest.skip("onnx.reference is wrong here: needs onnxruntime as the oracle")
        from onnx.reference import ReferenceEvaluator
        return ReferenceEvaluator(model).run(None, feeds)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so)
    return sess.run(None, feeds)


def check(model, feeds, tol=TOL, reference_ok=True):
    """fastconv's outputs equal the oracle's; returns the loaded model."""
    expected = oracle(model, feeds, reference_ok)
    net = fo.load(model)
    got = net(*feeds.values())
    got = got if isinstance(got, tuple) else (got,)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        scale = max(np.abs(e).max(), 1e-30)
        assert np.abs(g - e).max() / scale <= tol, np.abs(g - e).max() / scale
    return net


def node(op, inputs=("x",), outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


X4 = {"x": [2, 3, 7, 6]}


def feeds4(shape=(2, 3, 7, 6)):
    return {"x": rand(*shape)}


# ----------------------------------------------------------------------------------------------
# convolutions

@pytest.mark.parametrize("attrs", [
    dict(),
    dict(pads=[1, 1, 1, 1], strides=[2, 2]),
    dict(pads=[0, 1, 2, 1], dilations=[2, 1]),
    dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER"),
    dict(auto_pad="VALID", strides=[1, 2]),
    dict(group=3, pads=[1, 1, 1, 1]),
])
def test_conv(attrs):
    groups = attrs.get("group", 1)
    w, b = rand(6, 3 // groups, 3, 3), rand(6)
    check(make([node("Conv", ["x", "w", "b"], **attrs)], X4, inits={"w": w, "b": b}), feeds4())


@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2]),
    dict(strides=[2, 2], pads=[1, 0, 1, 2], output_padding=[1, 1]),
    dict(strides=[2, 2], output_shape=[15, 13]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(group=3, dilations=[2, 1]),
])
def test_conv_transpose(attrs):
    groups = attrs.get("group", 1)
    w, b = rand(3, 4 // groups * 1 if groups == 1 else 2, 3, 3), rand(4 if groups == 1 else 6)
    check(make([node("ConvTranspose", ["x", "w", "b"], **attrs)], X4, inits={"w": w, "b": b}),
          feeds4(), reference_ok=groups == 1)


def test_batch_norm_and_the_state_dict_names():
    c = 3
    inits = {"s": rand(c), "b": rand(c), "m": rand(c), "v": np.abs(rand(c)) + 0.5}
    net = check(make([node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)], X4,
                     inits=inits), feeds4())
    assert {"s", "b", "m", "v"} <= set(net.state_dict())
    np.testing.assert_array_equal(net.state_dict()["m"], inits["m"])


# ----------------------------------------------------------------------------------------------
# activations and elementwise arithmetic

@pytest.mark.parametrize("op, attrs", [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("HardSwish", {}), ("Erf", {}),
    ("LeakyRelu", dict(alpha=0.2)), ("Elu", dict(alpha=0.7)), ("HardSigmoid", {}),
    ("HardSigmoid", dict(alpha=1 / 6, beta=0.5)), ("Exp", {}), ("Neg", {}),
    ("Softmax", dict(axis=1)), ("Softmax", {}), ("LogSoftmax", dict(axis=2)),
    ("Identity", {}), ("Dropout", {}),
])
def test_unary(op, attrs):
    check(make([node(op, **attrs)], X4), feeds4())


def test_sqrt():
    check(make([node("Sqrt")], X4), {"x": np.abs(rand(2, 3, 7, 6)) + 0.1})


@pytest.mark.parametrize("bounds", [(0.0, 6.0), (0.0, None), (-1.0, 0.5)])
def test_clip(bounds):
    inits = {k: np.float32(v) for k, v in zip(("lo", "hi"), bounds) if v is not None}
    check(make([node("Clip", ["x", "lo", "hi" if "hi" in inits else ""])], X4, inits=inits),
          feeds4())


@pytest.mark.parametrize("slope", [np.float32([0.3]), rand(3, 1, 1)])
def test_prelu(slope):
    check(make([node("PRelu", ["x", "s"])], X4, inits={"s": slope}), feeds4())


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow"])
@pytest.mark.parametrize("other", ["map", "const_c11", "scalar", "const_first", "gate"])
def test_binary(op, other):
    x = feeds4()
    if op in ("Pow",):
        x["x"] = np.abs(x["x"]) + 0.5
    inits, inputs = {}, dict(X4)
    if other == "map":
        inputs["z"] = [2, 3, 7, 6]
        x["z"] = np.abs(rand(2, 3, 7, 6)) + 0.5
        names = ["x", "z"]
    elif other == "gate":  # an SE gate (N, C, 1, 1) computed by the model
        inputs["z"] = [2, 3, 1, 1]
        x["z"] = np.abs(rand(2, 3, 1, 1)) + 0.5
        names = ["x", "z"]
    elif other == "const_c11":
        inits["c"] = np.abs(rand(3, 1, 1)) + 0.5
        names = ["x", "c"]
    elif other == "scalar":
        inits["c"] = np.float32(2.0)
        names = ["x", "c"]
    else:
        inits["c"] = np.abs(rand(6)) + 0.5
        names = ["c", "x"]
    check(make([node(op, names)], inputs, inits=inits), x)


# ----------------------------------------------------------------------------------------------
# pooling and resampling

@pytest.mark.parametrize("op, attrs", [
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("MaxPool", dict(kernel_shape=[3, 2], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("MaxPool", dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[0, 1, 1, 0])),
    ("MaxPool", dict(kernel_shape=[3, 3], auto_pad="SAME_LOWER")),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    ("AveragePool", dict(kernel_shape=[3, 3], auto_pad="SAME_LOWER")),
    ("GlobalAveragePool", {}), ("GlobalMaxPool", {}),
    ("ReduceMean", dict(axes=[2, 3])), ("ReduceMean", dict(axes=[2, 3], keepdims=0)),
    ("ReduceMean", dict(axes=[1])), ("ReduceMean", dict(axes=[1, 3], keepdims=0)),
])
def test_pool(op, attrs):
    check(make([node(op, **attrs)], X4, opset=13 if op == "ReduceMean" else 17), feeds4())


RESIZES = [("nearest", "asymmetric", "floor"), ("nearest", "half_pixel", "round_prefer_floor"),
           ("nearest", "asymmetric", "round_prefer_ceil"), ("nearest", "align_corners", "ceil"),
           ("nearest", "tf_half_pixel_for_nn", "floor"),
           ("linear", "half_pixel", None), ("linear", "pytorch_half_pixel", None),
           ("linear", "align_corners", None), ("linear", "asymmetric", None)]


@pytest.mark.parametrize("mode, coords, nearest", RESIZES)
@pytest.mark.parametrize("how", ["scales", "sizes", "down"])
def test_resize(mode, coords, nearest, how):
    attrs = dict(mode=mode, coordinate_transformation_mode=coords)
    if nearest:
        attrs["nearest_mode"] = nearest
    if how == "sizes":
        inits = {"sizes": np.int64([2, 3, 15, 9])}
        names = ["x", "", "", "sizes"]
    else:
        scales = [1, 1, 2, 2.5] if how == "scales" else [1, 1, 0.6, 0.5]
        inits = {"scales": np.float32(scales)}
        names = ["x", "", "scales"]
    reference_ok = coords != "tf_half_pixel_for_nn" and not (how == "down" and (
        nearest == "floor" or mode == "linear" and coords == "align_corners"))
    check(make([node("Resize", names, **attrs)], X4, inits=inits), feeds4(),
          reference_ok=reference_ok)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad(mode):
    inits = {"pads": np.int64([0, 0, 1, 2, 0, 1, 2, 0]), "v": np.float32(1.5)}
    check(make([node("Pad", ["x", "pads", "v"], mode=mode)], X4, inits=inits), feeds4())


def test_pad_crops_with_negative_pads():
    inits = {"pads": np.int64([0, 0, -1, 2, 0, 0, 1, -2])}
    check(make([node("Pad", ["x", "pads"])], X4, inits=inits), feeds4(), reference_ok=False)


# ----------------------------------------------------------------------------------------------
# shapes, joins and fully connected layers

def test_concat_split_slice():
    nodes = [node("Split", ["x", "split"], ["a", "b"], axis=1),
             node("Slice", ["x", "starts", "ends", "axes", "steps"], ["s"]),
             node("Concat", ["b", "a", "x"], ["c"], axis=1),
             node("Split", ["c"], ["d", "e", "f"], axis=3, num_outputs=3),
             node("Concat", ["d", "f"], ["y"], axis=3)]
    inits = {"split": np.int64([1, 2]), "starts": np.int64([0, -1]), "ends": np.int64([9, 0]),
             "axes": np.int64([2, 3]), "steps": np.int64([2, -2])}
    check(make(nodes, X4, ["y", "s"], inits=inits, opset=18), feeds4())


def test_flatten_gemm_and_the_reshape_chain_of_torch():
    # x.view(x.size(0), -1) as the TorchScript exporter writes it, then a Gemm (transB)
    nodes = [node("GlobalAveragePool", ["x"], ["p"]),
             node("Shape", ["p"], ["sh"]),
             node("Constant", [], ["zero"], value=numpy_helper.from_array(np.int64(0))),
             node("Gather", ["sh", "zero"], ["n"], axis=0),
             node("Unsqueeze", ["n", "ax0"], ["n1"]),
             node("Concat", ["n1", "minus1"], ["target"], axis=0),
             node("Reshape", ["p", "target"], ["f"]),
             node("Gemm", ["f", "w", "b"], ["g"], transB=1, alpha=0.5, beta=2.0),
             node("Flatten", ["x"], ["h"], axis=-3),
             node("MatMul", ["h", "w2"], ["y"])]
    inits = {"ax0": np.int64([0]), "minus1": np.int64([-1]), "w": rand(4, 3), "b": rand(4),
             "w2": rand(3 * 7 * 6, 5)}
    model = make(nodes, {"x": ["n", 3, "h", "w"]}, ["g", "y"], inits=inits, opset=13)
    net = check(model, feeds4())
    x = rand(5, 3, 7, 6)  # another batch size
    expected = oracle(model, {"x": x})
    np.testing.assert_allclose(net(x)[0], expected[0], rtol=1e-4, atol=1e-5)


def test_transpose_reshape_squeeze_unsqueeze():
    # a channel shuffle (reshape to 5-D, transpose, reshape back), squeeze and unsqueeze
    nodes = [node("Reshape", ["x", "s5"], ["r"]),
             node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
             node("Reshape", ["t", "s4"], ["u"]),
             node("Conv", ["u", "w"], ["v"]),
             node("ReduceMean", ["v"], ["m"], axes=[2, 3]),
             node("Squeeze", ["m", "axes23"], ["q"]),
             node("Unsqueeze", ["q", "axes23"], ["z"]),
             node("Mul", ["v", "z"], ["y"]),
             node("Transpose", ["x"], ["nhwc"], perm=[0, 2, 3, 1]),
             node("Transpose", ["nhwc"], ["back"], perm=[0, 3, 1, 2]),
             node("Relu", ["back"], ["y2"])]
    inits = {"s5": np.int64([2, 2, 2, 7, 6]), "s4": np.int64([2, 4, 7, 6]),
             "w": rand(3, 4, 1, 1), "axes23": np.int64([2, 3])}
    check(make(nodes, {"x": [2, 4, 7, 6]}, ["y", "nhwc", "y2"], inits=inits, opset=13),
          {"x": rand(2, 4, 7, 6)})


def test_permute_copies_short_and_long_last_axes():
    # a short last axis is copied index by index (fastconv.graph._SHORT_AXIS), a longer one
    # at once; always a copy (a later layer may work in place), even where the transpose
    # leaves the array C-contiguous
    rng = np.random.default_rng(0)
    for shape, perm in [((2, 3, 5, 7), (0, 2, 3, 1)), ((1, 3, 4, 4), (0, 2, 3, 1)),
                        ((2, 4, 3, 20), (0, 3, 1, 2)), ((2, 7, 5, 3), (0, 3, 1, 2)),
                        ((0, 3, 2, 2), (0, 2, 3, 1)), ((5, 2), (1, 0)), ((3, 2, 9, 4), (3, 2, 1, 0)),
                        ((2, 3, 1, 1), (0, 2, 3, 1)), ((2, 1, 4, 5), (0, 2, 3, 1))]:
        x = rng.standard_normal(shape).astype(np.float32)
        for given in (x, x[..., ::-1], np.asfortranarray(x)):
            y = fo.Permute(perm)(given)
            assert y.flags.c_contiguous and not np.shares_memory(y, given)
            np.testing.assert_array_equal(y, given.transpose(perm))
    for perm in [(0, 1, 1), (0, 3, 1), (1, 2, 3)]:
        with pytest.raises(ValueError, match="perm must be a permutation of 0 .. 2"):
            fo.Permute(perm)


def test_matmul_of_two_computed_tensors_and_gather():
    nodes = [node("Reshape", ["x", "s"], ["f"]), node("Transpose", ["f"], ["t"], perm=[0, 2, 1]),
             node("MatMul", ["f", "t"], ["y"]), node("Gather", ["x", "i"], ["g"], axis=1)]
    inits = {"i": np.int64([2, 0]), "s": np.int64([2, 3, 42])}
    net = check(make(nodes, X4, ["y", "g"], inits=inits), feeds4())
    # its product holds BLAS on one thread (as the kernels do), so that an inference graph's
    # replays know to hold it too
    fast = fastconv.optimize_for_inference(net)
    for _ in range(3):
        fast(*feeds4().values())
    replay, = fast._local.pool.replays.values()
    assert replay.uses_blas


# ----------------------------------------------------------------------------------------------
# other converters' patterns

def test_hardswish_as_clip_div_mul_and_unfolded_batch_norm_and_gelus():
    c = 3
    nodes = [  # batch norm written out: (x - mean) / sqrt(var + eps) * scale + bias
        node("Sub", ["x", "mean"], ["a"]), node("Add", ["var", "eps"], ["ve"]),
        node("Sqrt", ["ve"], ["sd"]), node("Div", ["a", "sd"], ["bn0"]),
        node("Mul", ["bn0", "scale"], ["bn1"]), node("Add", ["bn1", "bias"], ["bn"]),
        # hard swish: x * clip(x + 3, 0, 6) / 6
        node("Add", ["bn", "three"], ["h0"]), node("Clip", ["h0", "zero", "six"], ["h1"]),
        node("Mul", ["bn", "h1"], ["h2"]), node("Div", ["h2", "six"], ["hs"]),
        # exact GELU: x * 0.5 * (1 + erf(x / sqrt 2))
        node("Div", ["hs", "sqrt2"], ["g0"]), node("Erf", ["g0"], ["g1"]),
        node("Add", ["g1", "one"], ["g2"]), node("Mul", ["hs", "g2"], ["g3"]),
        node("Mul", ["g3", "half"], ["ge"]),
        # tanh GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        node("Pow", ["ge", "three"], ["t0"]), node("Mul", ["t0", "k"], ["t1"]),
        node("Add", ["ge", "t1"], ["t2"]), node("Mul", ["t2", "s2pi"], ["t3"]),
        node("Tanh", ["t3"], ["t4"]), node("Add", ["t4", "one"], ["t5"]),
        node("Mul", ["ge", "t5"], ["t6"]), node("Mul", ["t6", "half"], ["y"])]
    f = np.float32
    inits = {"mean": rand(c, 1, 1), "var": np.abs(rand(c, 1, 1)) + 0.5, "eps": f(1e-5),
             "scale": rand(c, 1, 1), "bias": rand(c, 1, 1), "three": f(3), "zero": f(0),
             "six": f(6), "sqrt2": f(np.sqrt(2)), "one": f(1), "half": f(0.5),
             "k": f(0.044715), "s2pi": f(np.sqrt(2 / np.pi))}
    check(make(nodes, X4, inits=inits), feeds4())


def test_squeeze_and_excitation_with_gemms_and_a_detection_neck():
    c = 4
    nodes = [node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]),
             node("GlobalAveragePool", ["a"], ["p"]), node("Flatten", ["p"], ["f"]),
             node("Gemm", ["f", "w1", "b1"], ["g1"], transB=1), node("Relu", ["g1"], ["r"]),
             node("Gemm", ["r", "w2", "b2"], ["g2"], transB=1),
             node("HardSigmoid", ["g2"], ["s"]),
             node("Reshape", ["s", "shape"], ["gate"]), node("Mul", ["a", "gate"], ["se"]),
             # a neck: downsample, upsample by 2 (nearest), concat, transposed conv
             node("Conv", ["se", "w3"], ["d"], strides=[2, 2], pads=[1, 1, 1, 1]),
             node("Resize", ["d", "", "sc"], ["u"], mode="nearest",
                  coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
             node("Concat", ["u", "se"], ["cat"], axis=1),
             node("ConvTranspose", ["cat", "w4"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                  output_padding=[1, 1])]
    inits = {"w0": rand(c, 3, 3, 3), "w1": rand(2, c), "b1": rand(2), "w2": rand(c, 2),
             "b2": rand(c), "shape": np.int64([-1, c, 1, 1]), "w3": rand(c, c, 3, 3),
             "sc": np.float32([1, 1, 2, 2]), "w4": rand(2 * c, 3, 3, 3)}
    check(make(nodes, {"x": [2, 3, 8, 6]}, inits=inits), {"x": rand(2, 3, 8, 6)})


# ----------------------------------------------------------------------------------------------
# training

def test_backward_matches_finite_differences():
    nodes = [node("Conv", ["x", "w", "b"], ["a"], pads=[1, 1, 1, 1]),
             node("BatchNormalization", ["a", "s", "bb", "m", "v"], ["n"]),
             node("Mul", ["n", "c"], ["k"]), node("Sigmoid", ["k"], ["g"]),
             node("Mul", ["n", "g"], ["h"]), node("Resize", ["h", "", "sc"], ["r"],
                                                    mode="linear"),
             node("GlobalAveragePool", ["r"], ["p"]), node("Flatten", ["p"], ["f"]),
             node("Gemm", ["f", "w2", "b2"], ["y"], transB=1)]
    inits = {"w": rand(3, 2, 3, 3), "b": rand(3), "s": rand(3), "bb": rand(3), "m": rand(3),
             "v": np.abs(rand(3)) + 0.5, "c": rand(3, 1, 1), "sc": np.float32([1, 1, 2, 1.5]),
             "w2": rand(2, 3), "b2": rand(2)}
    x = RNG.standard_normal((2, 2, 5, 4))
    net64 = fo.load(make(nodes, {"x": [2, 2, 5, 4]}, elem=TensorProto.DOUBLE,
                         inits={k: v if k == "sc" else v.astype(np.float64)
                                for k, v in inits.items()}))
    net64.train()  # BatchNorm with batch statistics
    g_out = RNG.standard_normal((2, 2))

    def loss(xv):
        return float((net64(xv) * g_out).sum())

    loss(x)
    gx = net64.backward(g_out)
    eps = 1e-6
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = eps
        num[i] = (loss(x + d) - loss(x - d)) / (2 * eps)
    np.testing.assert_allclose(gx, num, rtol=1e-5, atol=1e-7)
    # the parameters are named by their initializers; the constant scale "c" is trainable
    params = {n: (v, g) for n, v, g in net64.parameters()}
    assert {"w", "b", "c", "w2", "b2"} <= set(params)
    net64.zero_grad()
    loss(x)
    net64.backward(g_out)
    c, gc = params["c"]
    for i in np.ndindex(c.shape):
        c[i] += eps
        up = loss(x)
        c[i] -= 2 * eps
        down = loss(x)
        c[i] += eps
        np.testing.assert_allclose(gc[i], (up - down) / (2 * eps), rtol=1e-5, atol=1e-7)


def test_the_model_is_in_eval_mode_and_trains():
    inits = {"s": np.ones(3, np.float32), "b": np.zeros(3, np.float32),
             "m": np.zeros(3, np.float32), "v": np.ones(3, np.float32)}
    net = fo.load(make([node("BatchNormalization", ["x", "s", "b", "m", "v"]),
                        node("Dropout", ["y0"] if False else ["y"], ["z"])]
                       if False else [node("BatchNormalization", ["x", "s", "b", "m", "v"])],
                       X4, inits=inits))
    assert not net.training
    x = feeds4()["x"] * 3 + 1
    np.testing.assert_allclose(net(x), x / np.sqrt(1 + 1e-5), rtol=1e-6)
    net.train()
    y = net(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-5)  # batch statistics
    assert net.backward(np.ones_like(y)).shape == x.shape
    assert net.state_dict()["m"].any()  # the running mean moved


# ----------------------------------------------------------------------------------------------
# refused models

def test_refuses_bad_files(tmp_path):
    good = make([node("Relu")], X4).SerializeToString()
    with pytest.raises(ValueError, match="not an ONNX model|no ONNX graph"):
        fo.load(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not an ONNX model|no ONNX graph"):
        fo.load(b"\x00\xff garbage")
    with pytest.raises(TypeError, match="path, bytes or an onnx.ModelProto"):
        fo.load(42)
    path = tmp_path / "m.onnx"
    path.write_bytes(good)
    assert fo.load(str(path))(feeds4()["x"]).shape == (2, 3, 7, 6)


def test_an_nhwc_array_given_to_an_nchw_model_is_refused_at_the_input():
    """The file declares C = 3 on axis 1: an NHWC array is refused by name at the input (also
    after optimize_for_inference), not deep inside with transposed shapes; a dynamic C is not
    checked."""
    w = rand(4, 3, 3, 3)
    model = make([node("Conv", ["x", "w"], pads=[1, 1, 1, 1])], X4, inits={"w": w})
    x = feeds4()["x"]
    import fastconv
    for net in (fo.load(model), fastconv.optimize_for_inference(fo.load(model))):
        assert net(x).shape == (2, 4, 7, 6)
        with pytest.raises(ValueError, match=r"file's layout \(N, C, H, W\) with C = 3, but got "
                                             r"shape \(2, 7, 6, 3\)"):
            net(x.transpose(0, 2, 3, 1))
    relu = fo.load(make([node("Relu")], {"x": [2, "c", 7, 6]}))
    assert relu(x.transpose(0, 2, 3, 1)).shape == (2, 7, 6, 3)


def test_refuses_unknown_operators_opsets_and_attributes():
    unknown = make([node("Relu")], X4)
    unknown.graph.node[0].op_type = "FancyConv"
    with pytest.raises(ValueError, match="unknown operator 'FancyConv'"):
        fo.load(unknown)
    with pytest.raises(ValueError, match="opset 9 .* 11 to 21"):
        fo.load(make([node("Relu")], X4, opset=9))
    unsupported = make([node("LpNormalization")], X4)
    with pytest.raises(ValueError, match="LpNormalization node 'y'.*no layer"):
        fo.load(unsupported)
    cubic = make([node("Resize", ["x", "", "s"], mode="cubic")], X4,
                 inits={"s": np.float32([1, 1, 2, 2])})
    with pytest.raises(ValueError, match="Resize node 'y': attribute mode='cubic'"):
        fo.load(cubic)
    lower = make([node("Conv", ["x", "w"], auto_pad="SAME_LOWER", strides=[2, 2])], X4,
                 inits={"w": rand(2, 3, 3, 3)})
    with pytest.raises(ValueError, match="Conv node 'y': attribute auto_pad='SAME_LOWER'"):
        fo.load(lower)
    order = make([node("MaxPool", kernel_shape=[2, 2], storage_order=1)], X4)
    with pytest.raises(ValueError, match="storage_order=1"):
        fo.load(order)


# ----------------------------------------------------------------------------------------------
# the command line

def test_cli_info_and_bench_of_an_onnx_file(tmp_path, capsys):
    from fastconv.cli import main

    path = tmp_path / "m.onnx"
    model = make([node("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]), node("Relu", ["a"])],
                 {"x": ["n", 3, 8, 8]}, inits={"w": rand(4, 3, 3, 3)})
    path.write_bytes(model.SerializeToString())
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Conv" in out and "-> Conv2d" in out and "fastconv loads it" in out
    pytest.importorskip("onnxruntime")
    assert main(["bench", "--onnx", str(path), "--shape", "2,3,8,8", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "outputs: ok" in out and "ratio" in out
    unsupported = make([node("LpNormalization")], X4)
    path.write_bytes(unsupported.SerializeToString())
    assert main(["info", str(path)]) == 1
    assert "cannot load it" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# ONNX's backend node tests (collecting them takes seconds: with the heavy tests)

@pytest.mark.heavy
def test_onnx_backend_node_tests_of_the_supported_operators():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from onnx.backend.test.case import node as cases
        testcases = cases.collect_testcases(None)
    # align_corners with a fractional scale: onnx.reference divides by the unrounded output
    # size in * scale, ONNX Runtime (and PyTorch, and fastconv) by the output size
    disputed = {"test_resize_downsample_scales_linear_align_corners"}
    ran, wrong = 0, []
    for case in testcases:
        model = case.model
        opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
        if ({n.op_type for n in model.graph.node} - set(fo.SUPPORTED) or "expanded" in case.name
                or not fo.OPSETS[0] <= opset <= fo.OPSETS[1] or case.name in disputed):
            continue
        inputs, outputs = case.data_sets[0]
        if not all(np.asarray(a).dtype in (np.float32, np.float64) for a in inputs[:1]):
            continue
        # the operands after the first as constants (weights, shapes, axes, scales)
        for info, value in zip(model.graph.input[1:], inputs[1:]):
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), info.name))
        try:
            net = fo.load(model)
        except ValueError:
            continue  # refused clearly: what fastconv lacks (cubic, 1-D and 3-D pooling, ...)
        got = net(np.asarray(inputs[0]))
        got = got if isinstance(got, tuple) else (got,)
        ran += 1
        for g, e in zip(got, outputs):
            # the expected values of some cases are rounded to 4 digits
            if g.shape != e.shape or not np.allclose(g, e, rtol=2e-4, atol=1e-5):
                wrong.append(case.name)
    assert ran >= 130 and not wrong, (ran, wrong)
