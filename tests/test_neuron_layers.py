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


@pytest.mark.parametrize("shared", ["false", "true"])
def test_prelu(shared):
    x = away_from_zero((2, 3, 4, 4))
    text = f'type: "PReLU" prelu_param {{ channel_shared: {shared} filler {{ type: "uniform" min: 0.1 max: 0.4 }} }}'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    a = layer.blobs[0].data
    a = a[0] if shared == "true" else a[None, :, None, None]
    np.testing.assert_allclose(top[0].data, np.where(x > 0, x, a * x), rtol=1e-6)
    check_gradient(text, [x])


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
