"""Element-wise layers: forward against NumPy formulas, backward by finite differences."""
import numpy as np
import pytest

from gradcheck import check_gradient, forward, make_layer
from minicaffe import minicaffe_pb2 as pb


def away_from_zero(shape, seed=0):
    x = np.random.RandomState(seed).randn(*shape).astype(np.float32)
    return np.where(np.abs(x) < 0.1, 0.5, x).astype(np.float32)


CASES = [
    ('type: "ReLU"', lambda x: np.maximum(x, 0)),
    ('type: "ReLU" relu_param { negative_slope: 0.1 }', lambda x: np.where(x > 0, x, 0.1 * x)),
    ('type: "ELU" elu_param { alpha: 0.7 }', lambda x: np.where(x > 0, x, 0.7 * (np.exp(x) - 1))),
    ('type: "Sigmoid"', lambda x: 1 / (1 + np.exp(-x))),
    ('type: "TanH"', np.tanh),
    ('type: "AbsVal"', np.abs),
    ('type: "BNLL"', lambda x: np.log(1 + np.exp(x))),
    ('type: "Power" power_param { power: 2 scale: 0.5 shift: 3 }', lambda x: (3 + 0.5 * x) ** 2),
    ('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', lambda x: 2 ** (0.1 + 0.5 * x)),
    ('type: "Exp"', np.exp),
    ('type: "Log" log_param { base: 10 scale: 0.5 shift: 4 }', lambda x: np.log10(4 + 0.5 * x)),
    ('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', lambda x: x),   # TEST: identity
    ('type: "Swish"', lambda x: x / (1 + np.exp(-x))),
    ('type: "Swish" swish_param { beta: 1.7 }', lambda x: x / (1 + np.exp(-1.7 * x))),
    ('type: "Swish" swish_param { beta: -0.6 }', lambda x: x / (1 + np.exp(0.6 * x))),
    ('type: "Clip" clip_param { min: -0.45 max: 0.8 }', lambda x: np.minimum(np.maximum(x, -0.45), 0.8)),
]


@pytest.mark.parametrize("text,ref", CASES)
def test_forward_and_gradient(text, ref):
    x = away_from_zero((2, 3, 4, 5))
    layer, bottom, top = make_layer(text, [x], phase=pb.TEST)
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, ref(x.astype(np.float64)), rtol=1e-5, atol=1e-6)
    check_gradient(text, [x], phase=pb.TEST)
    check_gradient(text, [x], phase=pb.TRAIN) if "Dropout" not in text else None


def test_dropout_train_scales_kept_units():
    x = np.ones((100, 100), np.float32)
    layer, bottom, top = make_layer('type: "Dropout" dropout_param { dropout_ratio: 0.25 }', [x])
    forward(layer, bottom, top)
    kept = top[0].data != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(top[0].data[kept], 1 / 0.75, rtol=1e-6)
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, top[0].data)


def test_threshold():
    x = away_from_zero((3, 4))
    layer, bottom, top = make_layer('type: "Threshold" threshold_param { threshold: 0.2 }', [x])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, (x > 0.2).astype(np.float32))


def test_clip_boundaries_pass_gradient_and_min_wins():
    """Caffe passes the gradient where min <= x <= max, ends included; with min > max every
    output is min (max(min, min(x, max)))."""
    x = np.array([[-2, -0.5, -0.1, 0.3, 0.8, 1.5]], np.float32)
    layer, bottom, top = make_layer('type: "Clip" clip_param { min: -0.5 max: 0.8 }', [x])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, np.float32([[-0.5, -0.5, -0.1, 0.3, 0.8, 0.8]]))
    top[0].diff[...] = 3
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, [[0, 3, 3, 3, 3, 0]])
    layer, bottom, top = make_layer('type: "Clip" clip_param { min: 1 max: -1 }', [x])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, np.ones_like(x))


def test_clip_needs_min_and_max():
    from minicaffe.errors import CaffeError
    with pytest.raises(CaffeError, match="min and max"):
        make_layer('type: "Clip" clip_param { min: 1 }', [np.zeros((2, 2), np.float32)])


def run_in_place(text, x, dy):
    """Forward and backward with top == bottom; return (top data, bottom diff, param diffs)."""
    layer, bottom, _ = make_layer(text, [x])
    forward(layer, bottom, bottom)
    y = bottom[0].data.copy()
    bottom[0].diff[...] = dy
    layer.backward(bottom, [True], bottom)
    return y, bottom[0].diff.copy(), [p.diff.copy() for p in layer.blobs]


@pytest.mark.parametrize("text", [
    'type: "Swish" swish_param { beta: 1.3 }',
    'type: "PReLU"',
    'type: "PReLU" prelu_param { channel_shared: true }',
])
def test_in_place_matches_out_of_place(text):
    x = away_from_zero((2, 3, 4, 5), seed=3)
    dy = np.random.RandomState(4).randn(*x.shape).astype(np.float32)
    y, dx, dp = run_in_place(text, x, dy)
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(y, top[0].data)
    np.testing.assert_array_equal(dx, bottom[0].diff)
    for a, b in zip(dp, layer.blobs):
        np.testing.assert_allclose(a, b.diff, rtol=1e-6)
    assert not np.array_equal(dx, dy * (x > 0))     # the gradient really depends on the input


def test_clip_in_place_reads_the_clipped_data_as_caffe():
    """Caffe's Clip backward tests min <= bottom_data <= max; in place bottom_data is the output,
    clipped, so the whole gradient passes (and none of it when min > max)."""
    x = np.array([[-2, -0.5, -0.1, 0.3, 0.8, 1.5]], np.float32)
    dy = np.float32([[1, 2, 3, 4, 5, 6]])
    y, dx, _ = run_in_place('type: "Clip" clip_param { min: -0.5 max: 0.8 }', x, dy)
    np.testing.assert_array_equal(y, np.float32([[-0.5, -0.5, -0.1, 0.3, 0.8, 0.8]]))
    np.testing.assert_array_equal(dx, dy)
    _, dx, _ = run_in_place('type: "Clip" clip_param { min: 1 max: -1 }', x, dy)
    np.testing.assert_array_equal(dx, 0)


@pytest.mark.parametrize("shared", ["false", "true"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (5, 3)])
def test_prelu(shared, shape):
    x = away_from_zero(shape)
    text = f'type: "PReLU" prelu_param {{ channel_shared: {shared} filler {{ type: "uniform" min: 0.1 max: 0.4 }} }}'
    layer, bottom, top = make_layer(text, [x])
    assert layer.blobs[0].shape == (() if shared == "true" else (3,))   # Caffe's slope shapes
    forward(layer, bottom, top)
    a = layer.blobs[0].data
    a = a if shared == "true" else a.reshape((1, 3) + (1,) * (x.ndim - 2))
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, a * x), rtol=1e-6)
    check_gradient(text, [x])


def test_prelu_gradient_at_zero_takes_the_slope_and_accumulates():
    """Caffe: x <= 0 takes the slope (x == 0 included); the slope gradient adds to what is there."""
    x = np.array([[0.0, -1.0, 2.0]], np.float32).reshape(1, 1, 3)
    layer, bottom, top = make_layer('type: "PReLU" prelu_param { channel_shared: true }', [x])
    forward(layer, bottom, top)
    top[0].diff[...] = 1
    layer.blobs[0].diff[...] = 10
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, [[[0.25, 0.25, 1]]])
    assert layer.blobs[0].diff == 10 - 1


PRELU_NET = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "pr" type: "PReLU" bottom: "x" top: "y" prelu_param { channel_shared: true } }
"""


def _shared_prelu_weights(shape):
    """A weights file for PRELU_NET whose slope blob has `shape` (None: no shape field, as
    Caffe writes a 0-axis blob)."""
    from google.protobuf import text_format
    w = text_format.Parse('layer { name: "pr" type: "PReLU" blobs { data: 0.5 } }', pb.NetParameter())
    if shape is not None:
        w.layer[0].blobs[0].shape.SetInParent()
        w.layer[0].blobs[0].shape.dim.extend(shape)
    return w


def _load_shared_prelu(shape):
    from google.protobuf import text_format
    from minicaffe import Net
    net = Net(text_format.Parse(PRELU_NET, pb.NetParameter()), pb.TEST)
    net.copy_trained_layers_from(_shared_prelu_weights(shape))
    assert net.params["pr"][0].data.shape == ()
    assert float(net.params["pr"][0].data) == 0.5
    return net


def test_shared_prelu_loads_a_0_axis_blob_and_round_trips():
    net = _load_shared_prelu(())
    again = net.to_proto()
    net.copy_trained_layers_from(again)
    assert float(net.params["pr"][0].data) == 0.5


@pytest.mark.parametrize("shape", [(1,), None])
def test_shared_prelu_loads_a_1_value_blob(shape):
    _load_shared_prelu(shape)


def test_in_place_relu_through_net():
    """In-place layers (top == bottom) keep correct gradients."""
    from minicaffe import Net
    from google.protobuf import text_format
    net_text = """
    layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 5 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "elu" type: "ELU" bottom: "y" top: "y" }
    layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "x3" top: "l" }
    layer { name: "in3" type: "Input" top: "x3" input_param { shape { dim: 4 dim: 3 } } }
    """
    # the loss reads x3 before it exists: the net must refuse it, naming the blob
    from minicaffe.errors import CaffeError
    with pytest.raises(CaffeError, match="x3"):
        Net(text_format.Parse(net_text, pb.NetParameter()), pb.TRAIN)
