"""Thinning (minicaffe/compress/thin.py over netedit.py): a filter-pruned net with its zero filters
removed computes what the pruned net computes, trains, and refuses what it cannot thin."""
import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.compress.netedit import NetEdit
from minicaffe.compress.thin import thin
from minicaffe.errors import CaffeError
from nets import LENET, SMALL_TRAIN_NET, random_net, same_outputs, trains_a_few_steps
from nets import quiet  # noqa: F401  (autouse: the log silenced)


def thinned(tmp_path, model, weights, keep=()):
    edit = NetEdit.load(model, weights)
    notes = thin(edit, keep)
    m, w = edit.save(str(tmp_path / "thin"))
    return minicaffe.Net(m, minicaffe.TEST, weights=w), notes


def shapes(net):
    return {name: tuple(blobs[0].data.shape) for name, blobs in net.params.items()}


def test_lenet_thinned_equals_pruned(tmp_path):
    rs = np.random.RandomState(1)
    zero = {"conv1": [1, 5, 7], "conv2": [0, 3, 10, 49], "ip1": rs.choice(500, 300, replace=False)}
    net, model, weights = random_net(tmp_path, LENET, zero=zero)
    small, notes = thinned(tmp_path, model, weights)
    assert notes == []
    assert shapes(small) == {"conv1": (17, 1, 5, 5), "conv2": (46, 17, 5, 5), "ip1": (200, 46 * 16),
                             "ip2": (10, 200)}
    x = rs.random_sample((64, 1, 28, 28)).astype(np.float32)
    same_outputs(net, small, x, ["ip2", "prob"])


def test_bias_folding_and_kept_constants(tmp_path):
    """A removed filter's bias flows through ReLU into the next layer's bias (one is added where the
    layer had none); where it would meet a padded convolution as a nonzero constant the filter
    stays, and where it is zero it goes anyway."""
    text = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 2 dim: 7 dim: 7 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1" convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "c3" type: "Convolution" bottom: "c1" top: "c3" convolution_param { num_output: 3 kernel_size: 2 bias_term: false } }
layer { name: "fc" type: "InnerProduct" bottom: "c3" top: "fc" inner_product_param { num_output: 4 } }
layer { name: "d1" type: "Convolution" bottom: "data" top: "d1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "d2" type: "Convolution" bottom: "d1" top: "d2" convolution_param { num_output: 3 kernel_size: 3 pad: 1 } }
"""
    net, model, weights = random_net(tmp_path, text, zero={"c1": [0, 2, 5], "d1": [1, 3]})
    net.params["c1"][1].data[[0, 2, 5]] = [0.7, -0.3, -0.2]    # ReLU: 0.7, 0, 0
    net.params["d1"][1].data[[1, 3]] = [0.5, 0]                 # 1 stays (d2 is padded), 3 goes
    net.save(weights)
    small, notes = thinned(tmp_path, model, weights)
    s = shapes(small)
    assert s["c1"] == (3, 2, 3, 3) and s["c3"] == (3, 3, 2, 2) and s["d1"] == (3, 2, 3, 3)
    assert len(small.params["c3"]) == 2 and small.params["c3"][1].data.any()
    assert notes == ["d1: 1 zero filter(s) kept: its nonzero constant output would reach the padded "
                     "convolution 'd2', whose borders see less of it"]
    x = np.random.RandomState(2).random_sample((2, 2, 7, 7)).astype(np.float32)
    same_outputs(net, small, x, ["c3", "fc", "d2"])


BRANCHY = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "CmpConvolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 sparse_ratio: 0.1 prune_granularity: FILTER } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "sc1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "pr1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2a" type: "Convolution" bottom: "conv1" top: "conv2a" convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "conv2b" type: "Convolution" bottom: "conv1" top: "conv2b" convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "cat" type: "Concat" bottom: "conv2a" bottom: "conv1" bottom: "conv2b" top: "cat" }
layer { name: "pool1" type: "Pooling" bottom: "cat" top: "pool1" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "conv3a" type: "Convolution" bottom: "pool1" top: "conv3a" convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "conv3b" type: "Convolution" bottom: "pool1" top: "conv3b" convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv3a" bottom: "conv3b" top: "sum" eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "relu3" type: "ReLU" bottom: "sum" top: "sum" relu_param { negative_slope: 0.1 } }
layer { name: "pool2" type: "Pooling" bottom: "sum" top: "pool2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "flat" type: "Flatten" bottom: "pool2" top: "flat" }
layer { name: "fc1" type: "CmpInnerProduct" bottom: "flat" top: "fc1" inner_product_param { num_output: 7 transpose: true } }
layer { name: "bn2" type: "BatchNorm" bottom: "fc1" top: "fc1" }
layer { name: "relu4" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "drop" type: "Dropout" bottom: "fc1" top: "fc1" }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param { num_output: 4 } }
"""


def test_concat_eltwise_batchnorm_scale_prelu_flatten(tmp_path):
    zero = {"conv1": [1, 4], "conv2a": [0, 3], "conv2b": [2], "conv3a": [1, 2], "conv3b": [2, 4],
            "fc1": [3]}
    net, model, weights = random_net(tmp_path, BRANCHY, zero=zero)
    small, notes = thinned(tmp_path, model, weights)
    s = shapes(small)
    assert s["conv1"] == (6, 3, 3, 3) and s["conv2a"] == (4, 6, 1, 1) and s["conv2b"] == (5, 6, 1, 1)
    assert s["conv3a"] == (4, 15, 1, 1) and s["conv3b"] == (4, 15, 1, 1)    # the union: 2 only
    assert s["fc1"] == (4 * 9, 6) and s["fc2"] == (4, 6)     # fc1 is transposed
    for name in ("bn1", "sc1", "pr1"):
        assert all(b.data.shape[0] in (6, 1) for b in small.params[name])
    assert small.params["bn2"][0].data.shape == (6,)
    assert sorted(notes) == ["conv3a: 1 zero filter(s) kept: the Eltwise 'sum' keeps that channel "
                             "of another bottom",
                             "conv3b: 1 zero filter(s) kept: the Eltwise 'sum' keeps that channel "
                             "of another bottom"]
    types = {lp.name: lp.type for lp in io.read_net(str(tmp_path / "thin.prototxt")).layer}
    assert types["conv1"] == "Convolution" and types["fc1"] == "InnerProduct"
    text = (tmp_path / "thin.prototxt").read_text()
    assert "sparse_ratio" not in text and "prune_granularity" not in text
    x = np.random.RandomState(3).random_sample((2, 3, 12, 12)).astype(np.float32)
    same_outputs(net, small, x, ["fc2"])


def test_refusals(tmp_path):
    head = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 1 } }
"""
    cases = {
        'layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 3 } }':
            r"layer 'norm1' \(LRN\) normalizes across channels.*--keep conv1",
        'layer { name: "g" type: "Convolution" bottom: "conv1" top: "g" '
        'convolution_param { num_output: 2 kernel_size: 1 group: 2 } }':
            r"layer 'g' \(Convolution\) is a grouped convolution \(group 2\)",
        'layer { name: "prob" type: "Softmax" bottom: "conv1" top: "prob" }':
            r"layer 'prob' \(Softmax\) reads every channel",
        'layer { name: "relu" type: "ReLU" bottom: "conv1" top: "conv1" }':
            r"blob 'conv1' is an output of the net.*--keep conv1",
        'layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "conv1" top: "cat" '
        'concat_param { axis: 2 } }':
            r"layer 'cat' \(Concat\) concatenates along axis 2",
    }
    for tail, message in cases.items():
        net, model, weights = random_net(tmp_path, head + tail, zero={"conv1": [2]})
        with pytest.raises(CaffeError, match=message):
            thinned(tmp_path, model, weights)
        small, _ = thinned(tmp_path, model, weights, keep=["conv1"])
        assert shapes(small)["conv1"] == (4, 4, 1, 1)
    with pytest.raises(CaffeError, match="no layer named 'nope'"):
        thinned(tmp_path, model, weights, keep=["nope"])


def test_thinned_train_test_net_trains(tmp_path):
    net, model, weights = random_net(tmp_path, SMALL_TRAIN_NET, zero={"conv1": [0, 3], "ip1": [1, 2, 6]})
    edit = NetEdit.load(model, weights)
    thin(edit)
    m, w = edit.save(str(tmp_path / "thin"))
    layers = io.read_net(m).layer
    assert [lp.type for lp in layers][:2] == ["DummyData", "DummyData"]
    assert [lp.type for lp in layers if lp.name in ("conv1", "ip1")] == ["Convolution", "InnerProduct"]
    assert trains_a_few_steps(tmp_path, m, w, "ip1") == (5, 4 * 4 * 4)


def test_cli_writes_both_files_and_a_table(tmp_path, capsys):
    from minicaffe import cli
    net, model, weights = random_net(tmp_path, LENET, zero={"conv1": [0, 1], "ip1": list(range(100))})
    out = str(tmp_path / "out")
    assert cli.main(["thin", "--model", model, "--weights", weights, "-o", out + ".caffemodel"]) == 0
    table = capsys.readouterr().out
    assert "conv1" in table and "20 -> 18" in table and "500 -> 400" in table
    small = io.read_weights(out + ".caffemodel")
    assert {lp.name: tuple(io.blob_shape(lp.blobs[0])) for lp in small.layer}["conv2"] == (50, 18, 5, 5)
    assert io.read_net(out + ".prototxt").layer[1].convolution_param.num_output == 18
    pb.NetParameter().ParseFromString(open(out + ".caffemodel", "rb").read())
    assert cli.main(["thin", "--model", model, "--weights", weights, "--keep", "ip9", "-o", out]) == 1


def test_netedit_replaces_a_layer_by_two(tmp_path):
    """The edit a low-rank factorization makes: ip1 (W = U V) becomes ip1_v then ip1_u."""
    net, model, weights = random_net(tmp_path, LENET)
    edit = NetEdit.load(model, weights)
    w, b = edit.weights("ip1")
    u, sv, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    old = edit.layer("ip1")
    first, second = pb.LayerParameter(), pb.LayerParameter()
    first.CopyFrom(old)
    first.name, first.top[0] = "ip1_v", "ip1_v"
    first.inner_product_param.num_output, first.inner_product_param.bias_term = len(sv), False
    del first.param[1:]
    second.CopyFrom(old)
    second.name, second.bottom[0] = "ip1_u", "ip1_v"
    edit.replace("ip1", [first, second], {"ip1_v": [sv[:, None] * vt], "ip1_u": [u, b]})
    m, w2 = edit.save(str(tmp_path / "lowrank"))
    names = [lp.name for lp in io.read_net(m).layer]
    assert names[names.index("pool2") + 1: names.index("pool2") + 3] == ["ip1_v", "ip1_u"]
    small = minicaffe.Net(m, minicaffe.TEST, weights=w2)
    x = np.random.RandomState(4).random_sample((64, 1, 28, 28)).astype(np.float32)
    same_outputs(net, small, x, ["ip1", "prob"])
