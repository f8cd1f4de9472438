"""MVN, Reduction, Embed, Parameter and ArgMax's shapes: forward against loop or NumPy references,
backward by finite differences (or Caffe's own formula where it differs from the exact one)."""
import numpy as np
import pytest
from google.protobuf import text_format

from gradcheck import check_gradient, forward, make_layer
from minicaffe import Net
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError


def randn(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


# ---------------------------------------------------------------- ArgMax

@pytest.mark.parametrize("shape,param,want", [
    ((5,), "", (5, 1, 1)),
    ((4, 6), "", (4, 1, 1)),
    ((4, 6), "top_k: 3", (4, 1, 3)),
    ((4, 6), "out_max_val: true", (4, 2, 1)),
    ((2, 3, 4), "top_k: 2 out_max_val: true", (2, 2, 2)),
    ((2, 3, 4, 5), "top_k: 2", (2, 1, 2, 1)),
    ((2, 3, 2, 2, 2), "out_max_val: true", (2, 2, 1, 1, 1)),
    ((2, 3, 4, 5), "axis: 2 top_k: 3", (2, 3, 3, 5)),
    ((2, 3, 4, 5), "axis: -1 out_max_val: true", (2, 3, 4, 1)),
    ((4, 6), "axis: 0 top_k: 2", (2, 6)),
])
def test_argmax_top_shapes(shape, param, want):
    """Caffe's ArgMaxLayer::Reshape: without axis (N, 1 or 2, top_k) padded with 1s to the
    bottom's rank, at least 3 axes; with axis the bottom's shape with top_k on that axis."""
    x = np.random.RandomState(0).randn(*shape).astype(np.float32)
    layer, bottom, top = make_layer(f'type: "ArgMax" argmax_param {{ {param} }}', [x])
    forward(layer, bottom, top)
    assert top[0].shape == want


def argmax_reference(row, k):
    """Caffe ranks (value, index) pairs, largest first: equal values put the higher index first."""
    pairs = sorted(((float(v), j) for j, v in enumerate(row)), reverse=True)[:k]
    return [j for _, j in pairs], [v for v, _ in pairs]


def test_argmax_ties_and_values_against_reference():
    rs = np.random.RandomState(1)
    x = rs.randint(0, 4, (3, 2, 5)).astype(np.float32)     # many ties
    layer, bottom, top = make_layer('type: "ArgMax" argmax_param { top_k: 4 out_max_val: true }', [x])
    forward(layer, bottom, top)
    for n in range(3):
        idx, val = argmax_reference(x[n].ravel(), 4)
        np.testing.assert_array_equal(top[0].data[n, 0], idx)
        np.testing.assert_array_equal(top[0].data[n, 1], val)
    layer, bottom, top = make_layer('type: "ArgMax" argmax_param { axis: 2 top_k: 3 }', [x])
    forward(layer, bottom, top)
    for n in range(3):
        for c in range(2):
            np.testing.assert_array_equal(top[0].data[n, c], argmax_reference(x[n, c], 3)[0])
    layer, bottom, top = make_layer('type: "ArgMax" argmax_param { axis: 0 out_max_val: true }', [x])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data[0], x.max(axis=0))
    tie = np.array([[2, 7, 7, 1]], np.float32)
    layer, bottom, top = make_layer('type: "ArgMax"', [tie])
    forward(layer, bottom, top)
    assert top[0].data.ravel()[0] == 2


def test_argmax_top_k_too_large():
    from minicaffe.errors import CaffeError
    with pytest.raises(CaffeError, match="top_k"):
        make_layer('type: "ArgMax" argmax_param { top_k: 5 }', [np.zeros((2, 4), np.float32)])
    with pytest.raises(CaffeError, match="top_k"):
        make_layer('type: "ArgMax" argmax_param { axis: 0 top_k: 3 }', [np.zeros((2, 4), np.float32)])




# ---------------------------------------------------------------- MVN

def mvn_reference(x, across, variance, eps):
    """Per item (and channel unless across): loops, float64, dividing by std + eps as Caffe."""
    x4 = x.reshape(x.shape + (1,) * (4 - x.ndim)).astype(np.float64)
    y = np.empty_like(x4)
    for n in range(x4.shape[0]):
        for c in ([slice(None)] if across else range(x4.shape[1])):
            v = x4[n, c]
            d = v - v.mean()
            y[n, c] = d / (np.sqrt((d ** 2).mean()) + eps) if variance else d
    return y


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("variance", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 4, 6), (4, 7)])
def test_mvn_forward_and_gradient(across, variance, shape):
    across_t, var_t = str(across).lower(), str(variance).lower()
    text = f'type: "MVN" mvn_param {{ across_channels: {across_t} normalize_variance: {var_t} }}'
    x = randn(*shape, seed=1) * 2 + 0.5
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    assert top[0].shape == shape + (1,) * (4 - len(shape))    # Caffe's legacy 4-D top
    np.testing.assert_allclose(top[0].data, mvn_reference(x, across, variance, 1e-9),
                               rtol=1e-4, atol=1e-5)
    if len(shape) > 2 or across:             # (N, C) per channel is one value: y = 0, no slope
        check_gradient(text, [x], step=1e-3, tol=1e-2)


def test_mvn_eps_is_added_to_the_std():
    x = randn(2, 3, 4, seed=2) * 0.3
    text = 'type: "MVN" mvn_param { eps: 0.25 }'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, mvn_reference(x, False, True, 0.25), rtol=1e-5, atol=1e-6)
    # Caffe's backward: (dy - mean(dy) - y * mean(dy * y)) / (std + eps)
    dy = randn(*top[0].shape, seed=3)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    g, yy = dy.reshape(6, 4).astype(np.float64), top[0].data.reshape(6, 4).astype(np.float64)
    d = x.reshape(6, 4) - x.reshape(6, 4).mean(1, keepdims=True)
    std = np.sqrt((d ** 2).mean(1, keepdims=True)) + 0.25
    want = (g - g.mean(1, keepdims=True) - yy * (g * yy).mean(1, keepdims=True)) / std
    np.testing.assert_allclose(bottom[0].diff.reshape(6, 4), want, rtol=1e-4, atol=1e-6)


def caffe_in_place_mvn_backward(y, dy, std, dim):
    """Caffe's MVNLayer::Backward_cpu replayed step by step on one array holding both diffs (the
    in-place case), one group at a time; axpby is scal then axpy, as in non-MKL builds."""
    d = dy.astype(np.float64).copy()
    y = y.astype(np.float64)
    for g in range(d.shape[0]):
        d[g] = y[g] * d[g]            # caffe_mul(top_data, top_diff, bottom_diff)
        a = d[g].sum()                # gemv: sum of bottom_diff
        d[g] = y[g] * a               # gemm broadcast, then caffe_mul by top_data
        b = d[g].sum()                # gemv over top_diff, which is bottom_diff now
        d[g] += b                     # gemm with beta 1
        d[g] *= -1.0 / dim            # axpby: scal(beta, Y) ...
        d[g] += d[g]                  # ... then axpy(1, X = Y, Y)
        d[g] /= std[g]
    return d


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 3, 5)])
@pytest.mark.parametrize("variance", [True, False])
def test_mvn_in_place(shape, variance):
    """In place, the top keeps Caffe's 4-D shape and forward is unchanged; backward is Caffe's:
    right without normalize_variance, and what its aliased steps compute with it."""
    text = f'type: "MVN" mvn_param {{ normalize_variance: {str(variance).lower()} }}'
    x = randn(*shape, seed=4)
    dy = randn(*(shape + (1,) * (4 - len(shape))), seed=5)
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    layer2, bottom2, _ = make_layer(text, [x])
    forward(layer2, bottom2, bottom2)
    np.testing.assert_array_equal(bottom2[0].data, top[0].data)
    bottom2[0].diff[...] = dy
    layer2.backward(bottom2, [True], bottom2)
    assert bottom2[0].shape == top[0].shape       # the shared blob takes the 4-D shape, values kept
    if not variance:
        np.testing.assert_allclose(bottom2[0].diff.reshape(shape), bottom[0].diff, rtol=1e-6)
        return
    groups = shape[0] * shape[1]
    y = top[0].data.reshape(groups, -1)
    d = x.reshape(groups, -1).astype(np.float64)
    d -= d.mean(1, keepdims=True)
    std = np.sqrt((d ** 2).mean(1)) + 1e-9
    want = caffe_in_place_mvn_backward(y, dy.reshape(groups, -1), std, y.shape[1])
    np.testing.assert_allclose(bottom2[0].diff.reshape(groups, -1), want, rtol=1e-4, atol=1e-6)
    assert not np.allclose(bottom2[0].diff.reshape(shape), bottom[0].diff, atol=1e-3)


def test_mvn_rank_limit():
    with pytest.raises(CaffeError, match="at most 4 axes"):
        make_layer('type: "MVN"', [np.zeros((2, 2, 2, 2, 2), np.float32)])


# ---------------------------------------------------------------- Reduction

REDUCE = {
    "SUM": lambda v: v.sum(),
    "ASUM": lambda v: np.abs(v).sum(),
    "SUMSQ": lambda v: (v ** 2).sum(),
    "MEAN": lambda v: v.mean(),
}


@pytest.mark.parametrize("op", list(REDUCE))
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, -0.5), (2, 2.0), (-1, 1.0)])
def test_reduction(op, axis, coeff):
    x = randn(2, 3, 4, seed=6)
    x = np.where(np.abs(x) < 0.1, 0.7, x).astype(np.float32)     # |x| has a kink at 0
    text = f'type: "Reduction" reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    a = axis % 3
    assert top[0].shape == x.shape[:a]
    want = np.empty(x.shape[:a])
    for i in np.ndindex(*x.shape[:a]):
        want[i] = coeff * REDUCE[op](x[i].astype(np.float64))
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5, atol=1e-6)
    check_gradient(text, [x], loss=a == 0)   # a 0-axis top takes the checker's loss weight 1


def test_reduction_defaults_to_a_scalar_sum():
    x = randn(3, 5, seed=7)
    layer, bottom, top = make_layer('type: "Reduction"', [x])
    forward(layer, bottom, top)
    assert top[0].shape == ()
    np.testing.assert_allclose(top[0].data, x.astype(np.float64).sum(), rtol=1e-5)
    top[0].diff[...] = 2
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, np.full_like(x, 2))


def test_reduction_asum_gradient_at_zero_is_zero():
    x = np.array([[0.0, -2.0, 3.0]], np.float32)
    layer, bottom, top = make_layer('type: "Reduction" reduction_param { operation: ASUM axis: 1 }', [x])
    forward(layer, bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[0, -1, 1]])


# ---------------------------------------------------------------- Embed

EMBED = ('type: "Embed" embed_param {{ num_output: 4 input_dim: 6 bias_term: {bias} '
         'weight_filler {{ type: "gaussian" std: 1 }} bias_filler {{ type: "gaussian" std: 1 }} }}')


@pytest.mark.parametrize("bias", ["true", "false"])
def test_embed_forward_shapes_and_gradient(bias):
    idx = np.array([[0, 5, 2], [2, 2, 1]], np.float32)        # repeats: gradients add up
    text = EMBED.format(bias=bias)
    layer, bottom, top = make_layer(text, [idx])
    assert [b.shape for b in layer.blobs] == ([(6, 4), (4,)] if bias == "true" else [(6, 4)])
    forward(layer, bottom, top)
    assert top[0].shape == (2, 3, 4)
    w = layer.blobs[0].data
    for i in np.ndindex(2, 3):
        want = w[int(idx[i])] + (layer.blobs[1].data if bias == "true" else 0)
        np.testing.assert_allclose(top[0].data[i], want, rtol=1e-6)
    dy = randn(2, 3, 4, seed=8)
    top[0].diff[...] = dy
    for p in layer.blobs:
        p.diff[...] = 1                                         # param gradients accumulate
    layer.backward(top, [False], bottom)
    want = np.ones((6, 4))
    for i in np.ndindex(2, 3):
        want[int(idx[i])] += dy[i]
    np.testing.assert_allclose(layer.blobs[0].diff, want, rtol=1e-5)
    if bias == "true":
        np.testing.assert_allclose(layer.blobs[1].diff, 1 + dy.sum((0, 1)), rtol=1e-5)
    check_gradient(text, [idx], check_bottom=[])


def test_embed_truncates_indices_as_caffes_release_build():
    """static_cast<int> toward zero; Caffe only DCHECKs that the index is an integer."""
    text = EMBED.format(bias="false")
    layer, bottom, top = make_layer(text, [np.array([2.7, -0.5, 5.99], np.float32)])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, layer.blobs[0].data[[2, 0, 5]])
    top[0].diff[...] = 1
    layer.backward(top, [False], bottom)
    np.testing.assert_array_equal(layer.blobs[0].diff.sum(1), [4, 0, 4, 0, 0, 4])


def test_embed_rejects_bad_indices_and_bottom_gradients():
    text = EMBED.format(bias="true")
    for bad in (6, -1, 6.5, np.nan):
        layer, bottom, top = make_layer(text, [np.array([0, 1], np.float32)])
        bottom[0].data[1] = bad
        with pytest.raises(CaffeError, match=r"\[0, 6\)"):
            forward(layer, bottom, top)
    layer, bottom, top = make_layer(text, [np.array([0, 1], np.float32)])
    forward(layer, bottom, top)
    assert not layer.allow_force_backward(0)
    with pytest.raises(CaffeError, match="propagate_down"):
        layer.backward(top, [True], bottom)
    with pytest.raises(CaffeError, match="positive"):
        make_layer('type: "Embed" embed_param { num_output: 3 }', [np.zeros(2, np.float32)])


# ---------------------------------------------------------------- Parameter

def test_parameter_top_is_the_param_blob():
    layer, bottom, top = make_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [])
    forward(layer, bottom, top)
    assert layer.blobs[0].shape == top[0].shape == (2, 3)
    assert top[0].data is layer.blobs[0].data and top[0].diff is layer.blobs[0].diff


def test_parameter_learns_through_a_net():
    text = """
    force_backward: true
    layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }
    layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "t" top: "loss" }
    """
    net = Net(text_format.Parse(text, pb.NetParameter()), pb.TRAIN)
    w = randn(2, 3, seed=9)
    t = randn(2, 3, seed=10)
    net.params["p"][0].data[...] = w
    net.blobs["t"].data[...] = t
    net.forward()
    net.backward()
    np.testing.assert_allclose(net.blobs["p"].data, w)
    np.testing.assert_allclose(net.params["p"][0].diff, (w - t) / 2, rtol=1e-5)
