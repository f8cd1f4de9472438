"""Net construction: state rules, splits, loss weights, backward inference, sharing, pycaffe API, errors."""
import os

import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "models/lenet/lenet.prototxt")


def net_from(text, phase=pb.TRAIN, **kw):
    return minicaffe.Net(io.parse_text(text, pb.NetParameter()), phase, **kw)


SPLIT_NET = """
layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 3 dim: 4 } shape { dim: 3 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" param { name: "shared" } inner_product_param { num_output: 5 bias_term: false weight_filler { type: "gaussian" } } }
layer { name: "c" type: "InnerProduct" bottom: "a" top: "c" param { name: "shared" } inner_product_param { num_output: 5 bias_term: false } }
layer { name: "sum" type: "Eltwise" bottom: "b" bottom: "c" top: "s" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "s" bottom: "y" top: "loss" loss_weight: 2 }
layer { name: "only_test" type: "Accuracy" bottom: "s" bottom: "y" top: "acc" include { phase: TEST } }
"""


def test_state_rules_splits_sharing_and_gradients():
    net = net_from(SPLIT_NET)
    assert "only_test" not in net.layer_dict
    assert any(l.type_name == "Split" for l in net.layers)     # x feeds a and b
    assert net.params["b"][0] is net.params["c"][0]             # shared by name
    assert len(net.learnable_params) == 3                       # a.w, a.b, shared
    rs = np.random.RandomState(0)
    net.blobs["x"].data[...] = rs.randn(3, 4)
    net.blobs["y"].data[...] = [0, 1, 4]
    net.clear_param_diffs()
    loss = net.forward_backward()
    assert loss == pytest.approx(2 * float(net.blobs["loss"].data))
    # numeric gradient of the shared weight (used by two layers)
    w = net.params["b"][0]
    g = w.diff.copy()
    for idx in [(0, 0), (2, 3), (4, 1)]:
        old = w.data[idx]
        w.data[idx] = old + 1e-2
        lp = net.forward_from_to()
        w.data[idx] = old - 1e-2
        lm = net.forward_from_to()
        w.data[idx] = old
        assert g[idx] == pytest.approx((lp - lm) / 2e-2, rel=2e-2, abs=1e-3)
    test = net_from(SPLIT_NET, pb.TEST)
    assert "acc" in test.outputs


def test_backward_inference():
    text = """
    layer { name: "in" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
    layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "h" param { lr_mult: 0 } param { lr_mult: 0 }
            inner_product_param { num_output: 3 } }
    layer { name: "ip" type: "InnerProduct" bottom: "h" top: "z" inner_product_param { num_output: 2 } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "z" bottom: "y" top: "loss" }
    layer { name: "side" type: "InnerProduct" bottom: "x" top: "unused" inner_product_param { num_output: 2 } }
    """
    net = net_from(text)
    need = dict(zip(net.layer_names, net.layer_need_backward))
    assert need["ip"] and need["loss"]
    assert not need["frozen"] and not need["side"]
    forced = text.replace('layer { name: "in"', 'force_backward: true\nlayer { name: "in"', 1)
    net2 = net_from(forced)
    assert dict(zip(net2.layer_names, net2.layer_need_backward))["frozen"]


def test_pycaffe_api(tmp_path):
    net = minicaffe.Net(LENET, minicaffe.TEST)
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    x = np.random.rand(64, 1, 28, 28).astype(np.float32)
    out = net.forward(data=x)
    assert out["prob"].shape == (64, 10)
    np.testing.assert_allclose(out["prob"].sum(1), 1, rtol=1e-5)
    part = net.forward(end="pool1")
    assert list(part) == ["pool1"]
    net.blobs["prob"].diff[...] = 1
    diffs = net.backward()
    assert diffs["data"].shape == x.shape
    net.params["conv1"][0].data[...] = 0      # writable in place
    net.save(str(tmp_path / "w.caffemodel"))
    net2 = minicaffe.Net(LENET, str(tmp_path / "w.caffemodel"), minicaffe.TEST)
    assert not net2.params["conv1"][0].data.any()
    net2.blobs["data"].reshape(2, 1, 28, 28)
    net2.reshape()
    assert net2.blobs["prob"].shape == (2, 10)
    assert net2._layer_names[1] == "conv1" and net2.layer_dict["conv1"].type_name == "Convolution"


ERRORS = [
    ('layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
     'layer { name: "b" type: "ReLU" bottom: "nope" top: "y" }', "unknown bottom blob 'nope'"),
    ('layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
     'layer { name: "b" type: "Input" top: "x" input_param { shape { dim: 1 } } }', "top blob 'x'"),
    ('layer { name: "w" type: "WindowData" top: "x" }', "layer 'w'.*WindowData"),
]


@pytest.mark.parametrize("text,msg", ERRORS)
def test_bad_nets(text, msg):
    with pytest.raises(CaffeError, match=msg):
        net_from(text)


def test_weight_shape_mismatch(tmp_path):
    net = minicaffe.Net(LENET, minicaffe.TEST)
    p = net.to_proto()
    p.layer[1].blobs[0].shape.dim[0] = 21
    p.layer[1].blobs[0].data.extend([0.0] * 25)
    with pytest.raises(CaffeError, match=r"conv1.*\(21, 1, 5, 5\).*\(20, 1, 5, 5\)"):
        net.copy_trained_layers_from(p)


@pytest.mark.parametrize("path", sorted(
    os.path.join("models", d, f) for d in ("lenet", "cifar10", "digits")
    for f in os.listdir(os.path.join(ROOT, "models", d)) if f.endswith(".prototxt") and "solver" not in f))
def test_shipped_nets_build(path):
    """Every net in models/ builds (data layers stood in for), and its Cmp layers prune as declared."""
    from minicaffe.tools.time import stand_in_data
    for phase in (pb.TRAIN, pb.TEST):
        param = io.read_net(os.path.join(ROOT, path))
        param.state.phase = phase
        net = minicaffe.Net(stand_in_data(param, phase, 0, []), phase)
        for lp in net.param.layer:
            if lp.type.startswith("Cmp"):
                p = lp.convolution_param if "Conv" in lp.type else lp.inner_product_param
                if phase == pb.TRAIN and p.HasField("prune_end_iter"):
                    continue        # a gradual schedule prunes as the solver iterates, not at build
                from minicaffe.compress.mask import pruned_count
                w = net.params[lp.name][0].data
                if p.prune_granularity == pb.FILTER:      # whole filters: count the all-zero ones
                    zero = (np.abs(w.reshape(w.shape[0], -1)).sum(1) == 0).sum()
                    assert zero >= pruned_count(w.shape[0], p.sparse_ratio)
                else:
                    assert (w == 0).sum() >= pruned_count(w.size, p.sparse_ratio)


@pytest.mark.parametrize("path", sorted(
    os.path.join("models", d, f) for d in ("lenet", "cifar10", "digits")
    for f in os.listdir(os.path.join(ROOT, "models", d)) if "solver" in f and f.endswith(".prototxt")))
def test_shipped_solvers_parse(path):
    """Each solver's net ships, or a script beside it writes it (a Cmp prototxt from minicaffe prune)."""
    sp = io.read_solver(os.path.join(ROOT, path))
    folder = os.path.join(ROOT, os.path.dirname(path))
    scripts = "".join(open(os.path.join(folder, f)).read() for f in os.listdir(folder) if f.endswith(".sh"))
    assert sp.max_iter > 0
    assert os.path.exists(os.path.join(ROOT, sp.net)) or os.path.basename(sp.net) in scripts
