"""`import caffe`: pycaffe's Net and Solver names and behaviour over minicaffe's engine."""
import time
from collections import OrderedDict

import numpy as np
import pytest

import caffe
from minicaffe import io
from minicaffe.errors import CaffeError

NET = """name: 'pynet' force_backward: true
layer { type: 'DummyData' name: 'data' top: 'data' top: 'label'
  dummy_data_param { num: 5 channels: 2 height: 3 width: 4 num: 5 channels: 1 height: 1 width: 1
    data_filler { type: 'gaussian' std: 1 } data_filler { type: 'constant' } } }
layer { type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
  convolution_param { num_output: 6 kernel_size: 2 pad: 1
    weight_filler { type: 'gaussian' std: 1 } bias_filler { type: 'constant' value: 2 } }
  param { decay_mult: 1 } param { decay_mult: 0 } }
layer { type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
  inner_product_param { num_output: 7 weight_filler { type: 'gaussian' std: 2.5 }
    bias_filler { type: 'constant' value: -3 } } }
layer { type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label' top: 'loss' }
"""


@pytest.fixture
def net_path(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    return str(p)


@pytest.fixture
def net(net_path):
    n = caffe.Net(net_path, caffe.TRAIN)
    n.blobs["label"].data[...] = np.random.RandomState(0).randint(7, size=n.blobs["label"].shape)
    return n


def test_names_dicts_and_layers(net):
    assert net.inputs == [] and net.outputs == ["loss"]
    assert net.top_names == OrderedDict([("data", ["data", "label"]), ("conv", ["conv"]),
                                         ("ip", ["ip_blob"]), ("loss", ["loss"])])
    assert net.bottom_names == OrderedDict([("data", []), ("conv", ["data"]), ("ip", ["conv"]),
                                            ("loss", ["ip_blob", "label"])])
    assert list(net.layer_dict) == list(net._layer_names)
    assert [layer.type for layer in net.layers] == ["DummyData", "Convolution", "InnerProduct",
                                                    "SoftmaxWithLoss"]
    assert net._blob_names == ["data", "label", "conv", "ip_blob", "loss"]
    assert net.blob_loss_weights["loss"] == 1
    assert net.layers[1].blobs[0] is net.params["conv"][0]


def test_forward_start_end_and_backward(net):
    conv = net.blobs["conv"]
    conv.data[...] = np.random.RandomState(1).rand(*conv.shape)
    out = net.forward(start="ip", end="ip")
    assert set(out) == {"ip_blob"}
    W, b = net.params["ip"]
    np.testing.assert_allclose(out["ip_blob"], conv.data.reshape(5, -1) @ W.data.T + b.data, rtol=1e-4)
    net.forward()
    net.backward()
    assert net.params["conv"][0].diff.any() and net.blobs["data"].diff.any()   # force_backward
    d = net.params["conv"][0].diff
    net.clear_param_diffs()
    assert not d.any()
    diffs = net.backward(start="ip", end="ip", diffs=["conv"])
    assert set(diffs) == {"conv"}


def test_save_load_binaryproto_and_hdf5(net, net_path, tmp_path):
    w = tmp_path / "w"           # names without the usual suffixes, as pycaffe's tests use
    net.save(str(w))
    for other in (caffe.Net(net_path, str(w), caffe.TRAIN), caffe.Net(net_path, caffe.TRAIN, weights=str(w))):
        for name in net.params:
            for a, b in zip(net.params[name], other.params[name]):
                assert np.array_equal(a.data, b.data)
    h = tmp_path / "h"
    net.save_hdf5(str(h))
    other = caffe.Net(net_path, caffe.TRAIN)
    other.load_hdf5(str(h))
    assert np.array_equal(other.params["ip"][0].data, net.params["ip"][0].data)


def test_weights_of_another_net_are_an_error(net_path, tmp_path):
    (tmp_path / "other.prototxt").write_text(
        "layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 1 dim: 3 } } }\n"
        "layer { name: 'fc' type: 'InnerProduct' bottom: 'x' top: 'y' inner_product_param { num_output: 2 } }")
    caffe.Net(str(tmp_path / "other.prototxt"), caffe.TEST).save(str(tmp_path / "other.caffemodel"))
    with pytest.raises(CaffeError, match="none of its 2 layer"):
        caffe.Net(net_path, caffe.TEST, weights=str(tmp_path / "other.caffemodel"))


def test_levels_and_stages(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text("""
layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 1 dim: 4 } } }
layer { name: "all" type: "InnerProduct" bottom: "data" top: "all" inner_product_param { num_output: 1 } }
layer { name: "l1" type: "InnerProduct" bottom: "data" top: "l1" include { min_level: 1 } inner_product_param { num_output: 1 } }
layer { name: "A" type: "InnerProduct" bottom: "data" top: "A" include { stage: "A" } inner_product_param { num_output: 1 } }
layer { name: "AB" type: "InnerProduct" bottom: "data" top: "AB" include { stage: "A" stage: "B" } inner_product_param { num_output: 1 } }
""")
    names = lambda n: [b for b in n.blobs if "data" not in b]     # noqa: E731
    assert names(caffe.Net(str(p), caffe.TEST)) == ["all"]
    assert names(caffe.Net(str(p), caffe.TEST, level=1)) == ["all", "l1"]
    assert names(caffe.Net(str(p), caffe.TEST, stages=["A", "B"])) == ["all", "A", "AB"]


def test_forward_all_and_forward_backward_all(tmp_path):
    p = tmp_path / "n.prototxt"
    p.write_text("force_backward: true\n"
                 "layer { name: 'in' type: 'Input' top: 'x' input_param { shape { dim: 4 dim: 3 } } }\n"
                 "layer { name: 'fc' type: 'InnerProduct' bottom: 'x' top: 'y' "
                 "inner_product_param { num_output: 2 weight_filler { type: 'gaussian' } } }")
    net = caffe.Net(str(p), caffe.TEST)
    x = np.random.RandomState(0).randn(10, 3).astype(np.float32)      # 10 items, batches of 4
    W = net.params["fc"][0].data
    out = net.forward_all(x=x)
    assert out["y"].shape == (10, 2)
    np.testing.assert_allclose(out["y"], x @ W.T, rtol=1e-5, atol=1e-6)
    dy = np.ones((10, 2), np.float32)
    outs, diffs = net.forward_backward_all(x=x, y=dy)
    np.testing.assert_allclose(diffs["x"], dy @ W, rtol=1e-5)
    assert outs["y"].shape == (10, 2)


def test_solver_api(net_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sp = tmp_path / "solver.prototxt"
    sp.write_text(f"net: '{net_path}'\ntest_iter: 2 test_interval: 10 base_lr: 0.01 momentum: 0.9\n"
                  "weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75\n"
                  "display: 100 max_iter: 20 snapshot_after_train: false snapshot_prefix: 'model'")
    solver = caffe.SGDSolver(str(sp))
    assert isinstance(caffe.get_solver(str(sp)), caffe.Solver)
    assert len(solver.test_nets) == 1 and solver.iter == 0
    data = solver.net.layers[1].blobs[0].data[...]
    data[...] = 0
    solver.net.layers[1].blobs[0].diff[...] = 1
    solver.apply_update()
    np.testing.assert_allclose(data, -0.01, atol=1e-7)       # lr 0.01 at iteration 0
    seen = []
    solver.add_callback(lambda: seen.append("start"), lambda: seen.append("grads"))
    solver.step(2)
    assert seen == ["start", "grads"] * 2 and solver.iter == 2
    solver.solve()
    assert solver.iter == 20
    solver.snapshot()
    assert (tmp_path / "model_iter_20.caffemodel").is_file()
    assert (tmp_path / "model_iter_20.solverstate").is_file()
    other = caffe.Net(net_path, caffe.TEST)
    solver.share_weights(other)
    assert other.params["ip"][0].data is solver.net.params["ip"][0].data


def test_module_level_names(capsys):
    assert "Python" in caffe.layer_type_list() and "Convolution" in caffe.layer_type_list()
    assert caffe.has_nccl() is False and isinstance(caffe.__version__, str)
    caffe.set_mode_cpu()
    caffe.set_random_seed(3)
    caffe.set_solver_count(2)
    assert caffe.solver_count() == 2
    caffe.set_solver_count(1)
    caffe.set_solver_rank(0)
    assert caffe.solver_rank() == 0
    caffe.set_multiprocess(False)
    caffe.set_device(0)
    caffe.set_mode_gpu()
    caffe.set_mode_gpu()
    err = capsys.readouterr().err
    assert err.count("running on the CPU") == 2           # each request said once
    t = caffe.Timer()
    t.start()
    t.stop()
    assert t.ms >= 0
    from caffe.proto import caffe_pb2
    assert caffe_pb2.NetParameter is caffe.Net.__init__.__globals__["pb"].NetParameter


def test_timer_start_while_running_keeps_the_first_start():
    t = caffe.Timer()
    t.start()
    time.sleep(0.02)
    t.start()                    # as Caffe's Timer::Start: no restart while running
    assert t.ms >= 15
    assert t.ms == t.ms          # stopped by reading, so it stays


def test_blob_legacy_accessors_count_missing_axes_as_one(net):
    ip = net.blobs["ip_blob"]                     # (5, 7)
    assert (ip.num, ip.channels, ip.height, ip.width) == (5, 7, 1, 1)
    loss = net.blobs["loss"]                      # a 0-axis blob
    assert loss.shape == () and (loss.num, loss.channels, loss.height, loss.width) == (1, 1, 1, 1)
    data = net.blobs["data"]
    assert (data.num, data.channels, data.height, data.width) == (5, 2, 3, 4)
    data.reshape(2, 1, 3, 4, 5)
    with pytest.raises(CaffeError, match="at most 4 axes"):
        data.num


def test_private_views_and_index_passes(net):
    """pycaffe's underscored Net members its own Python code is written on."""
    assert net._blobs == list(net.blobs.values())
    assert net._blob_loss_weights == [0, 0, 0, 0, 1]
    assert net._inputs == [] and net._outputs == [net._blob_names.index("loss")]
    loss = net._forward(0, len(net.layers) - 1)
    assert loss == pytest.approx(float(net.blobs["loss"].data))
    net.clear_param_diffs()
    net._backward(len(net.layers) - 1, 0)
    assert net.params["conv"][0].diff.any()


def test_layer_callbacks_run_around_every_layer(tmp_path):
    """before/after_forward and before/after_backward get the layer index for every layer of the
    pass, also one that needs no backward (the data layer here), as Caffe's Net callbacks."""
    p = tmp_path / "n.prototxt"
    p.write_text(NET.replace("force_backward: true", ""))
    net = caffe.Net(str(p), caffe.TRAIN)
    net.blobs["label"].data[...] = 1
    seen = []
    for kind in ("before_forward", "after_forward", "before_backward", "after_backward"):
        getattr(net, kind)(lambda i, kind=kind: seen.append((kind, i)))
    net.forward()
    assert seen == [(k, i) for i in range(4) for k in ("before_forward", "after_forward")]
    del seen[:]
    net.backward()
    assert not net.layer_need_backward[0]
    assert seen == [(k, i) for i in (3, 2, 1, 0) for k in ("before_backward", "after_backward")]


def test_constructor_keywords_level_and_stages_as_pycaffe(tmp_path):
    """Net(network_file=..., phase=...) works by name; from a file the level is always set (0 by
    default, over the file's own state) and the stages are added to the file's own."""
    p = tmp_path / "n.prototxt"
    p.write_text("""state { level: 2 stage: "A" }
layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 1 dim: 4 } } }
layer { name: "l2" type: "InnerProduct" bottom: "data" top: "l2" include { min_level: 2 } inner_product_param { num_output: 1 } }
layer { name: "AB" type: "InnerProduct" bottom: "data" top: "AB" include { stage: "A" stage: "B" } inner_product_param { num_output: 1 } }
""")
    names = lambda n: [b for b in n.blobs if b != "data"]     # noqa: E731
    net = caffe.Net(network_file=str(p), phase=caffe.TEST)
    assert net.phase == caffe.TEST and names(net) == []
    assert names(caffe.Net(str(p), caffe.TEST, level=2)) == ["l2"]
    assert names(caffe.Net(str(p), caffe.TEST, stages=["B"])) == ["AB"]        # A from the file
    param = io.read_net(str(p))       # a NetParameter keeps its state unless told otherwise
    assert names(caffe.Net(param, caffe.TEST)) == ["l2"]


def test_solver_classes_get_solver_and_nccl(net_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sp = tmp_path / "solver.prototxt"
    sp.write_text(f"net: '{net_path}'\nbase_lr: 0.01 lr_policy: 'fixed' max_iter: 2 type: 'Adam'")
    s = caffe.get_solver(str(sp))
    assert type(s) is caffe.AdamSolver and isinstance(s, caffe.Solver) and s.param.type == "Adam"
    s = caffe.SGDSolver(str(sp))         # the class's rule, whatever the file says
    assert type(s) is caffe.SGDSolver and s.param.type == "SGD"
    assert isinstance(caffe.NesterovSolver(str(sp)), caffe.NesterovSolver)
    # python/train.py with one device: NCCL does nothing, and add_callback/after_backward take it
    uid = caffe.NCCL.new_uid()
    assert isinstance(uid, bytes)
    nccl = caffe.NCCL(s, uid)
    nccl.bcast()
    s.add_callback(nccl)
    s.net.after_backward(nccl)
    s.step(2)
    assert s.iter == 2
    with pytest.raises(TypeError):
        s.add_callback(lambda: None)
    caffe.set_solver_count(2)
    try:
        with pytest.raises(RuntimeError, match="2 solvers"):
            caffe.NCCL(s, uid)
    finally:
        caffe.set_solver_count(1)


def test_snapshot_prefix_directory_takes_the_solver_name(net_path, tmp_path):
    (tmp_path / "snaps").mkdir()
    sp = tmp_path / "my_solver.prototxt"
    sp.write_text(f"net: '{net_path}'\nbase_lr: 0.01\nlr_policy: 'fixed'\nmax_iter: 1\n"
                  f"snapshot_prefix: '{tmp_path / 'snaps'}'")
    solver = caffe.SGDSolver(str(sp))
    model, state = solver.snapshot()
    assert model == str(tmp_path / "snaps" / "my_solver_iter_0.caffemodel")


def test_memory_data_takes_arrays_untransformed(tmp_path):
    p = tmp_path / "m.prototxt"
    p.write_text("layer { name: 'd' type: 'MemoryData' top: 'data' top: 'label' transform_param { scale: 0.5 } "
                 "memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }")
    net = caffe.Net(str(p), caffe.TEST)
    x = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net.set_input_arrays(x, np.arange(4, dtype=np.float32))
    assert np.array_equal(net.forward()["data"], x[:2])
    assert np.array_equal(net.forward()["data"], x[2:])


def test_debug_info_logs_per_layer_means(net_path, tmp_path, monkeypatch):
    import io as _io
    from minicaffe import log
    out = _io.StringIO()
    monkeypatch.setattr(log, "stream", out)
    sp = tmp_path / "s.prototxt"
    sp.write_text(f"net: '{net_path}'\nbase_lr: 0.01\nlr_policy: 'fixed'\nmax_iter: 2\ndisplay: 1\n"
                  "debug_info: true\nsnapshot_after_train: false")
    caffe.SGDSolver(str(sp)).step(1)
    text = out.getvalue()
    assert "[Forward] Layer conv, top blob conv data:" in text
    assert "[Forward] Layer ip, param blob 1 data:" in text
    assert "[Backward] Layer ip, bottom blob conv diff:" in text
    assert "[Backward] Layer conv, param blob 0 diff:" in text
