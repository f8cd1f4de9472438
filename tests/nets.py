"""Small nets and solvers the tests build on, written as prototxt text."""
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
