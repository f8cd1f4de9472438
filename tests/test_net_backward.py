"""Which layers and bottoms get gradients: Caffe's rules (params, loss, propagate_down, then
force_backward limited by each layer's allow_force_backward)."""
import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError


def net_from(text, phase=pb.TRAIN):
    return minicaffe.Net(io.parse_text(text, pb.NetParameter()), phase)


NO_LOSS = """
force_backward: true
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
"""


def test_force_backward_without_a_loss_gives_input_and_param_gradients():
    net = net_from(NO_LOSS)
    assert all(net.layer_need_backward)
    x = np.random.RandomState(0).randn(4, 3).astype(np.float32)
    h = net.forward(x=x)["h"].copy()
    dy = np.random.RandomState(1).randn(4, 5).astype(np.float32)
    dx = net.backward(h=dy)["x"]
    W = net.params["ip"][0].data
    g = dy * (h > 0)
    np.testing.assert_allclose(dx, g @ W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["ip"][0].diff, g.T @ x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.params["ip"][1].diff, g.sum(0), rtol=1e-5, atol=1e-6)


def test_without_force_backward_a_lossless_net_computes_nothing():
    net = net_from(NO_LOSS.replace("force_backward: true", ""))
    assert not any(net.layer_need_backward)
    net.forward(x=np.ones((4, 3), np.float32))
    assert not net.backward(h=np.ones((4, 5), np.float32))["x"].any()


WITH_LOSS = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "z" bottom: "y" top: "accuracy" }
"""


def test_force_backward_with_a_loss_skips_labels():
    net = net_from(WITH_LOSS)
    li = net.layer_names.index("loss")
    assert net.bottom_need_backward[li] == [True, False]     # never into the labels
    x = np.random.RandomState(0).randn(4, 3).astype(np.float32)
    out = net.forward(x=x, y=np.array([0, 1, 2, 1], np.float32))
    assert sorted(out) == ["accuracy", "loss"]
    diffs = net.backward()
    z = net.blobs["z"].data
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(4), [0, 1, 2, 1]] -= 1
    np.testing.assert_allclose(diffs["x"], (p / 4) @ net.params["ip"][0].data, rtol=1e-4, atol=1e-6)
    assert not diffs["y"].any()


def test_outputs_come_in_alphabetical_order_as_caffe_logs_them():
    text = WITH_LOSS.replace('top: "accuracy"', 'top: "a_acc"').replace('top: "loss"', 'top: "z_loss"')
    assert net_from(text).outputs == ["a_acc", "z_loss"]
    assert net_from(WITH_LOSS).outputs == ["accuracy", "loss"]


def test_input_needs_no_backward_unless_forced():
    net = net_from(WITH_LOSS.replace("force_backward: true", ""))
    li = net.layer_names.index("ip")
    assert net.layer_need_backward[li] and net.bottom_need_backward[li] == [False]


def test_propagate_down_false_and_lr_mult_zero():
    text = """
    layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "frozen" type: "InnerProduct" bottom: "h" top: "z" param { lr_mult: 0 } param { lr_mult: 1 }
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
    """
    net = net_from(text)
    net.forward(x=np.ones((4, 3), np.float32), y=np.zeros(4, np.float32))
    net.clear_param_diffs()
    net.backward()
    assert not net.params["frozen"][0].diff.any()       # lr_mult 0: no gradient, as in Caffe
    assert net.params["frozen"][1].diff.any() and net.params["ip1"][0].diff.any()
    cut = text.replace('bottom: "h" top: "z"', 'bottom: "h" top: "z" propagate_down: false')
    net = net_from(cut)
    assert not net.layer_need_backward[net.layer_names.index("ip1")]   # nothing reaches it now
    assert net.bottom_need_backward[net.layer_names.index("frozen")] == [False]


def test_propagate_down_count_must_match():
    with pytest.raises(CaffeError, match="propagate_down must be given once per bottom"):
        net_from(WITH_LOSS.replace('top: "loss" }', 'top: "loss" propagate_down: true }'))


def test_propagate_down_true_forces_a_gradient_into_an_input():
    """Caffe's AppendBottom: an explicit propagate_down replaces the blob's own need."""
    text = """
    layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "z" propagate_down: true
            inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
    """
    net = net_from(text)
    assert net.bottom_need_backward[net.layer_names.index("ip")] == [True]
    net.forward(x=np.ones((4, 3), np.float32), y=np.zeros(4, np.float32))
    assert net.backward()["x"].any()
