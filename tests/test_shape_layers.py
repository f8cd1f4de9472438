"""Concat, Slice, Split, Flatten, Reshape, Eltwise, Silence, BatchNorm, Scale, Bias."""
import numpy as np
import pytest

from gradcheck import check_gradient, forward, make_layer
from minicaffe import minicaffe_pb2 as pb


def r(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def test_concat_and_slice():
    a, b = r(2, 3, 4), r(2, 5, 4, seed=1)
    layer, bottom, top = make_layer('type: "Concat"', [a, b])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, np.concatenate([a, b], 1))
    check_gradient('type: "Concat"', [a, b])
    check_gradient('type: "Concat" concat_param { axis: 2 }', [a, r(2, 3, 2, seed=2)])
    x = r(2, 6, 3)
    layer, bottom, top = make_layer('type: "Slice" slice_param { slice_point: 1 slice_point: 4 }', [x], n_top=3)
    forward(layer, bottom, top)
    assert [t.shape for t in top] == [(2, 1, 3), (2, 3, 3), (2, 2, 3)]
    np.testing.assert_array_equal(top[1].data, x[:, 1:4])
    check_gradient('type: "Slice" slice_param { axis: 2 }', [x], n_top=3)


def test_split_flatten_reshape():
    x = r(2, 3, 4, 5)
    check_gradient('type: "Split"', [x], n_top=3)
    layer, bottom, top = make_layer('type: "Flatten"', [x])
    assert top[0].shape == (2, 60)
    layer, bottom, top = make_layer('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', [x])
    assert top[0].shape == (2, 12, 5)
    check_gradient('type: "Flatten"', [x])
    layer, bottom, top = make_layer('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 4 } }', [x])
    assert top[0].shape == (2, 15, 4)
    layer, bottom, top = make_layer(
        'type: "Reshape" reshape_param { shape { dim: 2 dim: 2 } axis: 2 num_axes: 1 }', [x])
    assert top[0].shape == (2, 3, 2, 2, 5)
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data.ravel(), x.ravel())
    check_gradient('type: "Reshape" reshape_param { shape { dim: -1 } }', [x])


@pytest.mark.parametrize("op", ["SUM", "PROD", "MAX"])
def test_eltwise(op):
    a, b, c = r(2, 3, seed=1), r(2, 3, seed=2), r(2, 3, seed=3)
    extra = "coeff: 1 coeff: -0.5 coeff: 2" if op == "SUM" else ""
    text = f'type: "Eltwise" eltwise_param {{ operation: {op} {extra} }}'
    layer, bottom, top = make_layer(text, [a, b, c])
    forward(layer, bottom, top)
    ref = {"SUM": a - 0.5 * b + 2 * c, "PROD": a * b * c, "MAX": np.maximum(np.maximum(a, b), c)}[op]
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-6)
    check_gradient(text, [a, b, c], step=1e-3)


def test_silence():
    layer, bottom, top = make_layer('type: "Silence"', [r(2, 2)], n_top=0)
    bottom[0].diff[...] = 5
    layer.backward(top, [True], bottom)
    assert not bottom[0].diff.any()


def test_batch_norm():
    x = r(4, 3, 2, 2) * 3 + 1
    layer, bottom, top = make_layer('type: "BatchNorm"', [x], phase=pb.TRAIN)
    forward(layer, bottom, top)
    m, v = x.mean((0, 2, 3)), x.var((0, 2, 3))
    np.testing.assert_allclose(top[0].data, (x - m[None, :, None, None]) / np.sqrt(v + 1e-5)[None, :, None, None],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.blobs[0].data, m, rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].data, v * 16 / 15, rtol=1e-5)
    assert layer.blobs[2].data[0] == 1
    check_gradient('type: "BatchNorm"', [x], phase=pb.TRAIN, step=1e-3, tol=2e-2)
    # TEST uses the stored statistics
    layer2, bottom2, top2 = make_layer('type: "BatchNorm"', [x], phase=pb.TEST)
    for a, b in zip(layer2.blobs, layer.blobs):
        a.data[...] = b.data
    forward(layer2, bottom2, top2)
    np.testing.assert_allclose(top2[0].data, (x - m[None, :, None, None]) / np.sqrt(v * 16 / 15 + 1e-5)[None, :, None, None],
                               rtol=1e-4, atol=1e-5)


def test_scale_and_bias():
    x = r(2, 3, 4)
    text = ('type: "Scale" scale_param { bias_term: true filler { type: "gaussian" } '
            'bias_filler { type: "gaussian" } }')
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    s, b = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(top[0].data, x * s[None, :, None] + b[None, :, None], rtol=1e-6)
    check_gradient(text, [x])
    check_gradient('type: "Scale" scale_param { axis: 0 }', [x, r(2, 3, seed=4)])
    check_gradient('type: "Bias" bias_param { filler { type: "gaussian" } num_axes: 2 }', [x])
    check_gradient('type: "Bias"', [x, r(3, seed=5)])
