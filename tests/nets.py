"""Small nets and solvers the tests build on, written as prototxt text."""
import os

import pytest

TINY_NET = """
name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  include { phase: TRAIN }
  dummy_data_param { shape { dim: 8 dim: 1 dim: 6 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "data" type: "DummyData" top: "data" top: "label"
  include { phase: TEST }
  dummy_data_param { shape { dim: 4 dim: 1 dim: 6 dim: 6 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip1" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def write_tiny(tmp_path, solver_extra="", net=TINY_NET, name="solver.prototxt", **fields):
    """A solver for TINY_NET in tmp_path; keyword arguments override the default fields."""
    (tmp_path / "net.prototxt").write_text(net)
    f = dict(net=f'"{tmp_path}/net.prototxt"', base_lr=0.05, momentum=0.9, weight_decay=0.001,
             lr_policy='"fixed"', max_iter=20, display=5, test_iter=2, test_interval=10, random_seed=3,
             snapshot_prefix=f'"{tmp_path}/tiny"')
    f.update(fields)
    text = "".join(f"{k}: {v}\n" for k, v in f.items()) + solver_extra
    (tmp_path / name).write_text(text)
    return str(tmp_path / name)


def trains_a_few_steps(tmp_path, model, weights, param):
    """A rewritten net (thinned, factorized) trains like any: 5 SGD steps from its weights lower the
    loss and move `param`'s weights."""
    import numpy as np
    import minicaffe
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{model}"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 5\n'
                      f'display: 0\nsnapshot_prefix: "{tmp_path}/s"\nrandom_seed: 1\n')
    s = minicaffe.get_solver(str(solver))
    s.net.copy_from(weights)
    before = s.net.params[param][0].data.copy()
    losses = []
    for _ in range(5):
        s.step(1)
        losses.append(float(s.net.blobs["loss"].data))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert not np.array_equal(before, s.net.params[param][0].data)
    return before.shape


LENET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models/lenet/lenet.prototxt")


@pytest.fixture(autouse=True)
def quiet():
    """The log silenced in every test of a module that imports this."""
    from minicaffe import log
    saved, log.quiet = log.quiet, True
    yield
    log.quiet = saved


def random_net(tmp_path, model, seed=0, zero=None):
    """A TEST net from `model` (a path or prototxt text) with uniform random weights and biases
    (BatchNorm: positive variances, factor 0.8), the output channels in `zero` ({layer: indices})
    set to 0, saved: (net, model path, weights path)."""
    import numpy as np
    import minicaffe
    if not os.path.exists(model):
        (tmp_path / "net.prototxt").write_text(model)
        model = str(tmp_path / "net.prototxt")
    net = minicaffe.Net(model, minicaffe.TEST)
    rs = np.random.RandomState(seed)
    for name, blobs in net.params.items():
        for b in blobs:
            b.data[...] = rs.uniform(-0.5, 0.5, b.shape)
        if net.layer_dict[name].type == "BatchNorm":
            blobs[1].data[...] = rs.uniform(0.5, 2, blobs[1].shape)    # variances
            blobs[2].data[...] = 0.8                                    # the moving-average factor
    for name, filters in (zero or {}).items():
        w = net.params[name][0].data
        if net.layer_dict[name].param.inner_product_param.transpose:     # (inputs, outputs)
            w[:, filters] = 0
        else:
            w[filters] = 0
    weights = str(tmp_path / "net.caffemodel")
    net.save(weights)
    return net, model, weights


def same_outputs(a, b, x, blobs):
    """Nets a and b give the same `blobs` on input data x (to float32 rounding)."""
    import numpy as np
    a.forward(data=x)
    b.forward(data=x)
    for name in blobs:
        ya, yb = a.blobs[name].data, b.blobs[name].data
        assert ya.shape == yb.shape, name
        assert np.allclose(ya, yb, rtol=1e-4, atol=1e-5 * np.abs(ya).max()), \
            (name, np.abs(ya - yb).max())


SMALL_TRAIN_NET = """
name: "small"
layer { name: "data" type: "DummyData" top: "data" top: "label" include { phase: TRAIN }
  dummy_data_param { shape { dim: 16 dim: 1 dim: 10 dim: 10 } shape { dim: 16 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "data" type: "DummyData" top: "data" top: "label" include { phase: TEST }
  dummy_data_param { shape { dim: 4 dim: 1 dim: 10 dim: 10 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "conv1" type: "CmpConvolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 name: "c1w" } param { lr_mult: 2 name: "c1b" }
  convolution_param { num_output: 6 kernel_size: 3 sparse_ratio: 0.2 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "CmpInnerProduct" bottom: "pool1" top: "ip1" param { lr_mult: 1 } param { lr_mult: 2 }
  inner_product_param { num_output: 8 sparse_ratio: 0.3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
