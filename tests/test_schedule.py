"""Gradual pruning (AGP): the cubic schedule, masks remade at each step for every granularity, and a
resumed run that continues the schedule bit for bit."""
import numpy as np
import pytest

import minicaffe
from minicaffe.compress.schedule import Schedule
from minicaffe.errors import CaffeError
from nets import write_tiny

NET = """
name: "agp"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 4 dim: 6 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 3.99 } } }
layer { name: "floor" type: "Power" bottom: "label" top: "label" power_param { shift: -0.5 } }
layer { name: "conv1" type: "CmpConvolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "xavier" }
    bias_filler { type: "constant" value: 0.1 } GRAN
    sparse_ratio: 0.5 prune_start_iter: 4 prune_end_iter: 16 prune_interval: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "CmpInnerProduct" bottom: "conv1" top: "ip1"
  inner_product_param { num_output: 6 weight_filler { type: "xavier" } GRAN
    sparse_ratio: 0.75 initial_sparse_ratio: 0.1 prune_start_iter: 4 prune_end_iter: 16 prune_interval: 4 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
FINAL = {"conv1": 0.5, "ip1": 0.75}
AXIS = {"weight": None, "filter": 0, "channel": 1}


def net_text(granularity):
    return NET.replace("GRAN", f"prune_granularity: {granularity.upper()} prune_norm: L2")


def pruned_units(w, granularity):
    """How many units (weights, filters or input channels) are all zero."""
    if granularity == "weight":
        return int((w == 0).sum()), w.size
    a = np.moveaxis(w, AXIS[granularity], 0).reshape(w.shape[AXIS[granularity]], -1)
    return int((a == 0).all(axis=1).sum()), a.shape[0]


def test_cubic_schedule_and_steps():
    s = Schedule(0.8, 0.2, start=10, end=40, interval=10)
    assert s.ratio(0) == s.ratio(9) == 0.2 and s.ratio(40) == s.ratio(99) == 0.8
    for t in (10, 17, 25, 33):
        assert s.ratio(t) == pytest.approx(0.8 + (0.2 - 0.8) * (1 - (t - 10) / 30) ** 3)
    assert [t for t in range(50) if s.is_step(t)] == [10, 20, 30, 40]
    assert s.ratio_in_force(9) == 0.2 and s.ratio_in_force(25) == s.ratio(20)
    assert s.ratio_in_force(45) == 0.8
    ragged = Schedule(0.5, start=0, end=10, interval=4)      # the end is always a step
    assert [t for t in range(20) if ragged.is_step(t)] == [0, 4, 8, 10]
    assert all(np.diff([s.ratio(t) for t in range(50)]) >= 0)
    for bad in [dict(end=10, start=10), dict(end=10, interval=0), dict(end=10, initial=0.9)]:
        with pytest.raises(ValueError):
            Schedule(0.5, **bad)


@pytest.mark.parametrize("granularity", ["weight", "filter", "channel"])
def test_sparsity_follows_the_schedule(tmp_path, granularity):
    s = minicaffe.get_solver(write_tiny(tmp_path, net=net_text(granularity), max_iter=24, display=0,
                                        test_interval=0, test_iter=0, snapshot_after_train="false"))
    sched = {n: s.net.layer_dict[n].schedule for n in FINAL}
    before = {n: None for n in FINAL}
    for it in range(24):
        s.step(1)              # now at it + 1, with the masks of that iteration
        for n in FINAL:
            w = s.net.params[n][0].data
            cut, units = pruned_units(w, granularity)
            ratio = sched[n].ratio_in_force(it + 1)
            assert cut == int(units * ratio), (n, it, cut)
            zero = w == 0
            if before[n] is not None:
                assert not (before[n] & ~zero).any()         # what was pruned stays pruned
            before[n] = zero
            mask = s.net.params[n][0].mask
            assert (mask is None) == (ratio == 0)
    assert pruned_units(s.net.params["conv1"][0].data, granularity)[0] > 0


@pytest.mark.parametrize("granularity", ["weight", "filter", "channel"])
@pytest.mark.parametrize("at", [2, 10, 12, 16])
def test_resume_continues_the_schedule_exactly(tmp_path, granularity, at):
    """At 2 nothing is pruned in conv1 (s_i = 0) and ip1 is at s_i; 10 is between steps; 12 and 16
    are steps (16 the last)."""
    path = write_tiny(tmp_path, net=net_text(granularity), max_iter=24, display=0, test_interval=0,
                      test_iter=0, snapshot_after_train="false", snapshot=at)
    straight = minicaffe.get_solver(path)
    straight.step(at)
    resumed = minicaffe.get_solver(path)
    resumed.restore(str(tmp_path / f"tiny_iter_{at}.solverstate"))
    resumed.step(24 - at)
    straight.step(24 - at)
    for n in ("conv1", "ip1", "ip2"):
        for a, b in zip(straight.net.params[n], resumed.net.params[n]):
            np.testing.assert_array_equal(a.data, b.data)
    for n, r in FINAL.items():
        cut, units = pruned_units(resumed.net.params[n][0].data, granularity)
        assert cut == int(units * np.float32(r))


def test_test_phase_uses_the_final_ratio_and_bad_params(tmp_path):
    write_tiny(tmp_path, net=net_text("filter"))
    net = minicaffe.Net(str(tmp_path / "net.prototxt"), minicaffe.TEST)
    assert pruned_units(net.params["conv1"][0].data, "filter") == (4, 8)
    assert pruned_units(net.params["ip1"][0].data, "filter") == (int(6 * np.float32(0.75)), 6)

    def build(text):
        (tmp_path / "bad.prototxt").write_text(text)
        return minicaffe.Net(str(tmp_path / "bad.prototxt"), minicaffe.TRAIN)
    cases = [(net_text("weight").replace("prune_end_iter: 16 ", "", 1), "without prune_end_iter"),
             (net_text("weight").replace("prune_end_iter: 16", "prune_end_iter: 4", 1), "after"),
             (net_text("weight").replace("initial_sparse_ratio: 0.1", "initial_sparse_ratio: 0.9"),
              "only rises"),
             (net_text("weight").replace("sparse_ratio: 0.5", "sparse_ratio: 0.5 quantize_term: true"),
              "quantize_term"),
             (net_text("channel").replace("kernel_size: 3", "kernel_size: 3 group: 2"), "group 1")]
    for text, msg in cases:
        with pytest.raises(CaffeError, match=msg):
            build(text)
