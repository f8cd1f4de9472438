"""Quantization-aware training: forward with the int8 grid's weights and inputs, gradients passed
straight through to the float weights."""
import numpy as np

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.compress import qat

from nets import write_tiny
from test_tools import run_cli

NET = """force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 5 dim: 5 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "c" top: "y"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" } } }
"""


def grid_weights(w):
    """Per output channel: the 255 levels k * max|w_c| / 127, k in [-127, 127]."""
    s = np.abs(w.reshape(len(w), -1)).max(1).reshape((-1,) + (1,) * (w.ndim - 1)) / 127
    return (np.round(w / s) * s).astype(np.float32)


def grid_inputs(x, top):
    s = np.float32(top / 127)
    return (np.clip(np.round(x / s), -127, 127) * s).astype(np.float32)


def nets():
    param = io.parse_text(NET, pb.NetParameter())
    fq, ref = minicaffe.Net(param, pb.TRAIN), minicaffe.Net(param, pb.TRAIN)
    for name in fq.params:
        for a, b in zip(fq.params[name], ref.params[name]):
            b.data[...] = a.data
    return fq, ref


def test_forward_and_backward_are_those_of_the_quantized_net():
    fq, ref = nets()
    scales = qat.enable(fq)
    x = np.random.RandomState(0).randn(2, 3, 5, 5).astype(np.float32)
    float_w = {n: fq.params[n][0].data.copy() for n in fq.params}
    y = fq.forward(x=x)["y"].copy()
    # the reference net, given the quantized weights and inputs by hand
    for n in ref.params:
        ref.params[n][0].data[...] = grid_weights(float_w[n])
    ref.forward(x=grid_inputs(x, np.abs(x).max()), end="conv")
    c = ref.blobs["c"].data
    assert scales["ip"][0] == np.abs(c).max()               # the first batch sets the range
    ref.blobs["c"].data[...] = grid_inputs(c, scales["ip"][0])
    np.testing.assert_allclose(y, ref.forward(start="ip")["y"], rtol=1e-5, atol=1e-6)
    for n in fq.params:                                   # the float weights are back
        assert np.array_equal(fq.params[n][0].data, float_w[n])
    dy = np.random.RandomState(1).randn(*y.shape).astype(np.float32)
    fq.clear_param_diffs()
    ref.clear_param_diffs()
    dx = fq.backward(y=dy)["x"].copy()
    ref.blobs["y"].diff[...] = dy
    ref.backward(start="ip", end="ip")
    np.testing.assert_allclose(fq.params["ip"][0].diff, ref.params["ip"][0].diff, rtol=1e-5, atol=1e-6)
    ref.backward(start="conv", end="conv")
    np.testing.assert_allclose(fq.params["conv"][0].diff, ref.params["conv"][0].diff, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, ref.blobs["x"].diff, rtol=1e-4, atol=1e-6)    # straight through


def test_input_scales_follow_training_and_test_nets_share_them():
    fq, _ = nets()
    scales = qat.enable(fq)
    rs = np.random.RandomState(2)
    fq.forward(x=rs.randn(2, 3, 5, 5).astype(np.float32))
    first = scales["conv"][0]
    fq.forward(x=10 * rs.randn(2, 3, 5, 5).astype(np.float32))
    assert first < scales["conv"][0] < 10 * first * 1.5         # a moving average, not the last max
    test = minicaffe.Net(io.parse_text(NET, pb.NetParameter()), pb.TEST)
    qat.enable(test, scales)
    before = list(scales["conv"])
    test.forward(x=100 * rs.randn(2, 3, 5, 5).astype(np.float32))
    assert scales["conv"] == before                             # TEST only uses them


def test_train_with_qat(tmp_path):
    solver = write_tiny(tmp_path, max_iter=10, display=5, test_interval=10)
    r = run_cli("train", f"--solver={solver}", "--qat")
    assert r.returncode == 0, r.stderr
    assert "Test net output" in r.stdout and (tmp_path / "tiny_iter_10.caffemodel").exists()
