"""Each update rule against a hand computation; lr policies; iter_size; clipping; resume bit-exact."""
import math

import numpy as np
import pytest

import minicaffe
from minicaffe import minicaffe_pb2 as pb
from minicaffe.solvers.lr_policy import learning_rate
from minicaffe.solvers.updates import RULES
from nets import write_tiny


def run_rule(kind, steps=3, **params):
    sp = pb.SolverParameter(type=kind, **params)
    rule = RULES[kind](sp)
    w = np.array([1.0, -2.0, 0.5], np.float32)
    hist = [np.zeros_like(w) for _ in range(rule.n_history)]
    ws = []
    for it in range(steps):
        g = (w * 0.5 + 0.1).astype(np.float32)        # gradient of a fixed quadratic
        rule.compute(g, hist, 0.1, it)
        w = w - g
        ws.append(w.copy())
    return ws


def hand(kind, steps=3, momentum=0.9, delta=1e-8, rms_decay=0.99, momentum2=0.999):
    w = np.array([1.0, -2.0, 0.5])
    h1, h2 = np.zeros(3), np.zeros(3)
    out = []
    for it in range(steps):
        g = w * 0.5 + 0.1
        if kind == "SGD":
            h1 = momentum * h1 + 0.1 * g
            step = h1
        elif kind == "Nesterov":
            prev = h1
            h1 = momentum * h1 + 0.1 * g
            step = (1 + momentum) * h1 - momentum * prev
        elif kind == "AdaGrad":
            h1 = h1 + g * g
            step = 0.1 * g / (np.sqrt(h1) + delta)
        elif kind == "RMSProp":
            h1 = rms_decay * h1 + (1 - rms_decay) * g * g
            step = 0.1 * g / (np.sqrt(h1) + delta)
        elif kind == "AdaDelta":
            h1 = momentum * h1 + (1 - momentum) * g * g
            upd = g * np.sqrt((h2 + delta) / (h1 + delta))
            h2 = momentum * h2 + (1 - momentum) * upd * upd
            step = 0.1 * upd
        elif kind == "Adam":
            h1 = momentum * h1 + (1 - momentum) * g
            h2 = momentum2 * h2 + (1 - momentum2) * g * g
            t = it + 1
            step = 0.1 * math.sqrt(1 - momentum2 ** t) / (1 - momentum ** t) * h1 / (np.sqrt(h2) + delta)
        w = w - step
        out.append(w)
    return out


@pytest.mark.parametrize("kind,params", [
    ("SGD", dict(momentum=0.9)), ("Nesterov", dict(momentum=0.9)), ("AdaGrad", dict(delta=1e-8)),
    ("RMSProp", dict(rms_decay=0.99, delta=1e-8)), ("AdaDelta", dict(momentum=0.95, delta=1e-6)),
    ("Adam", dict(momentum=0.9, momentum2=0.999, delta=1e-8))])
def test_update_rules_match_hand_computation(kind, params):
    got = run_rule(kind, **params)
    want = hand(kind, **params)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_lr_policies():
    sp = pb.SolverParameter(base_lr=0.1, gamma=0.5, power=2, stepsize=10, max_iter=100)
    st = {"current_step": 0}
    sp.lr_policy = "fixed"
    assert learning_rate(sp, 55, st) == pytest.approx(0.1)
    sp.lr_policy = "step"
    assert learning_rate(sp, 25, st) == pytest.approx(0.1 * 0.25)
    sp.lr_policy = "exp"
    assert learning_rate(sp, 3, st) == pytest.approx(0.1 * 0.125)
    sp.lr_policy = "inv"
    assert learning_rate(sp, 4, st) == pytest.approx(0.1 * 3 ** -2)
    sp.lr_policy = "poly"
    assert learning_rate(sp, 50, st) == pytest.approx(0.1 * 0.25)
    sp.lr_policy = "sigmoid"
    assert learning_rate(sp, 10, st) == pytest.approx(0.05)
    sp.lr_policy = "multistep"
    sp.stepvalue.extend([5, 20])
    assert learning_rate(sp, 4, st) == pytest.approx(0.1)
    assert learning_rate(sp, 7, st) == pytest.approx(0.05)
    assert learning_rate(sp, 30, st) == pytest.approx(0.025) and st["current_step"] == 2


def test_training_reduces_loss(tmp_path):
    s = minicaffe.get_solver(write_tiny(tmp_path, "snapshot_after_train: false"))
    first = s.net.forward_from_to()
    s.step(20)
    assert s.iter == 20
    assert s.net.forward_from_to() < first * 0.5
    # the test net shares the train net's weights
    assert s.test_nets[0].params["ip1"][0].data is s.net.params["ip1"][0].data


def test_iter_size_averages(tmp_path):
    """With the same batch every time, iter_size 2 must take the same step as iter_size 1."""
    from nets import TINY_NET
    const = TINY_NET.replace('type: "gaussian" std: 1', 'type: "constant" value: 0.7')
    steps = []
    for n in (1, 2):
        s = minicaffe.get_solver(write_tiny(tmp_path, f"iter_size: {n}\nsnapshot_after_train: false",
                                            net=const, name=f"s{n}.prototxt"))
        w0 = [b.data.copy() for b in s.net.learnable_params]
        s.step(1)
        steps.append([b.data - w for b, w in zip(s.net.learnable_params, w0)])
    for a, b in zip(*steps):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
    assert any(np.abs(a).max() > 0 for a in steps[0])


def test_clip_gradients(tmp_path):
    s = minicaffe.get_solver(write_tiny(tmp_path, "clip_gradients: 0.001\nsnapshot_after_train: false",
                                        momentum=0, weight_decay=0))
    before = [b.data.copy() for b in s.net.learnable_params]
    s.step(1)
    step = np.sqrt(sum(((b.data - w) ** 2).sum() for b, w in zip(s.net.learnable_params, before)))
    assert step == pytest.approx(0.05 * 0.001, rel=1e-3)


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_resume_is_bit_exact(tmp_path, fmt):
    path = write_tiny(tmp_path, f"snapshot: 10\nsnapshot_format: {fmt}\nsnapshot_after_train: false")
    straight = minicaffe.get_solver(path)
    straight.step(20)
    first = minicaffe.get_solver(path)
    first.step(10)
    ext = ".h5" if fmt == "HDF5" else ""
    resumed = minicaffe.get_solver(path)
    resumed.restore(str(tmp_path / f"tiny_iter_10.solverstate{ext}"))
    assert resumed.iter == 10
    resumed.step(10)
    for a, b in zip(straight.net.learnable_params, resumed.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)


def test_solver_type_enum_and_typed_constructors(tmp_path):
    path = write_tiny(tmp_path, "solver_type: NESTEROV")
    assert minicaffe.get_solver(path).param.type == "Nesterov"
    s = minicaffe.AdamSolver(write_tiny(tmp_path, "", name="s2.prototxt"))
    assert s.param.type == "Adam" and len(s.history[0]) == 2
    s.step(2)
