"""Softmax and loss layers: values against direct formulas, gradients by finite differences."""
import numpy as np
import pytest

from gradcheck import check_gradient, forward, make_layer


def scores_labels(n=4, c=5, seed=0):
    rs = np.random.RandomState(seed)
    return rs.randn(n, c).astype(np.float32), rs.randint(0, c, n).astype(np.float32)


def test_softmax():
    x = np.random.RandomState(0).randn(2, 4, 3).astype(np.float32)
    layer, bottom, top = make_layer('type: "Softmax"', [x])
    forward(layer, bottom, top)
    e = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(top[0].data, e / e.sum(1, keepdims=True), rtol=1e-5)
    check_gradient('type: "Softmax"', [x], step=1e-3)


@pytest.mark.parametrize("extra,norm", [("", "valid"), ("loss_param { ignore_label: 2 }", "valid"),
                                        ("loss_param { normalization: FULL ignore_label: 2 }", "full"),
                                        ("loss_param { normalization: NONE }", "none"),
                                        ("loss_param { normalize: false }", "batch")])
def test_softmax_with_loss(extra, norm):
    x, y = scores_labels(6, 4, seed=1)
    y[0] = 2
    text = f'type: "SoftmaxWithLoss" {extra}'
    layer, bottom, top = make_layer(text, [x, y])
    forward(layer, bottom, top)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    valid = (y != 2) if "ignore" in extra else np.ones(6, bool)
    total = -np.log(p[np.arange(6), y.astype(int)])[valid].sum()
    div = {"valid": valid.sum(), "full": 6, "none": 1, "batch": 6}[norm]
    assert np.isclose(top[0].data, total / div, rtol=1e-5)
    check_gradient(text, [x, y], check_bottom=[0], loss=True)


def test_softmax_with_loss_spatial():
    rs = np.random.RandomState(2)
    x = rs.randn(2, 3, 2, 2).astype(np.float32)
    y = rs.randint(0, 3, (2, 1, 2, 2)).astype(np.float32)
    check_gradient('type: "SoftmaxWithLoss"', [x, y], check_bottom=[0], loss=True, step=1e-3)


def test_sigmoid_cross_entropy():
    rs = np.random.RandomState(3)
    x = rs.randn(4, 3).astype(np.float32)
    t = rs.randint(0, 2, (4, 3)).astype(np.float32)
    layer, bottom, top = make_layer('type: "SigmoidCrossEntropyLoss"', [x, t])
    forward(layer, bottom, top)
    s = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.isclose(top[0].data, -(t * np.log(s) + (1 - t) * np.log(1 - s)).sum() / 4, rtol=1e-5)
    check_gradient('type: "SigmoidCrossEntropyLoss"', [x, t], check_bottom=[0], loss=True, step=1e-3)


def test_euclidean():
    rs = np.random.RandomState(4)
    a, b = rs.randn(5, 3).astype(np.float32), rs.randn(5, 3).astype(np.float32)
    layer, bottom, top = make_layer('type: "EuclideanLoss"', [a, b])
    forward(layer, bottom, top)
    assert np.isclose(top[0].data, ((a - b) ** 2).sum() / 5 / 2, rtol=1e-5)
    check_gradient('type: "EuclideanLoss"', [a, b], loss=True)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge(norm):
    x, y = scores_labels(5, 4, seed=5)
    text = f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}'
    layer, bottom, top = make_layer(text, [x, y])
    forward(layer, bottom, top)
    d = x.astype(np.float64).copy()
    d[np.arange(5), y.astype(int)] *= -1
    m = np.maximum(0, 1 + d)
    assert np.isclose(top[0].data, (m.sum() if norm == "L1" else (m ** 2).sum()) / 5, rtol=1e-5)
    check_gradient(text, [x, y], check_bottom=[0], loss=True, step=1e-3)


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive(legacy):
    rs = np.random.RandomState(6)
    a, b = rs.rand(6, 3).astype(np.float32), rs.rand(6, 3).astype(np.float32)
    sim = np.array([1, 0, 1, 0, 0, 1], np.float32)
    text = f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 1.0 legacy_version: {legacy} }}'
    layer, bottom, top = make_layer(text, [a, b, sim])
    forward(layer, bottom, top)
    d2 = ((a - b).astype(np.float64) ** 2).sum(1)
    dis = np.maximum(1 - d2, 0) if legacy == "true" else np.maximum(1 - np.sqrt(d2), 0) ** 2
    assert np.isclose(top[0].data, np.where(sim > 0, d2, dis).sum() / 12, rtol=1e-5)
    check_gradient(text, [a, b, sim], check_bottom=[0, 1], loss=True, step=1e-3)


def test_accuracy_top_k_and_ignore():
    x = np.array([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.3, 0.3, 0.4]], np.float32)
    y = np.array([2, 0, 1, 0], np.float32)
    layer, bottom, top = make_layer('type: "Accuracy"', [x, y], n_top=2)
    forward(layer, bottom, top)
    assert np.isclose(top[0].data, 0.25)
    np.testing.assert_allclose(top[1].data, [0.5, 0, 0])
    layer, bottom, top = make_layer('type: "Accuracy" accuracy_param { top_k: 2 }', [x, y])
    forward(layer, bottom, top)
    assert np.isclose(top[0].data, 0.75)   # the tie in row 4 counts against label 0
    layer, bottom, top = make_layer('type: "Accuracy" accuracy_param { ignore_label: 0 }', [x, y])
    forward(layer, bottom, top)
    assert np.isclose(top[0].data, 0.0)


def test_argmax():
    x = np.array([[1, 5, 3, 2], [9, 1, 2, 8]], np.float32)
    layer, bottom, top = make_layer('type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }', [x])
    forward(layer, bottom, top)
    assert top[0].shape == (2, 2, 2)          # Caffe pads a 2-D bottom's top to 3 axes, not 4
    np.testing.assert_array_equal(top[0].data[:, 0], [[1, 2], [0, 3]])
    np.testing.assert_array_equal(top[0].data[:, 1], [[5, 3], [9, 8]])
    layer, bottom, top = make_layer('type: "ArgMax" argmax_param { axis: 1 }', [x])
    forward(layer, bottom, top)
    np.testing.assert_array_equal(top[0].data, [[1], [0]])
