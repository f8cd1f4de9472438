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


def softmax_ref(x, axis=1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def infogain_ref(x, y, h, ignore=None, norm="valid"):
    """Loops over the (N, C) rows: -sum_k H[y, k] log softmax(x)_k over the counted rows."""
    p = softmax_ref(x.astype(np.float64))
    total, count = 0.0, 0
    for i in range(len(y)):
        if ignore is not None and y[i] == ignore:
            continue
        total -= sum(h[int(y[i]), k] * np.log(p[i, k]) for k in range(x.shape[1]))
        count += 1
    return total / max(1, {"valid": count, "full": len(y), "batch": len(y), "none": 1}[norm])


def h_matrix(c, seed=7):
    return np.random.RandomState(seed).rand(c, c).astype(np.float32) + np.eye(c, dtype=np.float32)


def test_infogain_h_from_file(tmp_path):
    from minicaffe import io
    x, y = scores_labels(6, 4, seed=8)
    h = h_matrix(4)
    io.write_blobproto(str(tmp_path / "h.binaryproto"), h.reshape(1, 1, 4, 4))
    text = f'type: "InfogainLoss" infogain_loss_param {{ source: "{tmp_path / "h.binaryproto"}" }}'
    layer, bottom, top = make_layer(text, [x, y], n_top=2)
    forward(layer, bottom, top)
    assert np.isclose(top[0].data, infogain_ref(x, y, h), rtol=1e-5)
    np.testing.assert_allclose(top[1].data, softmax_ref(x), rtol=1e-5)
    check_gradient(text, [x, y], check_bottom=[0], loss=True, step=1e-3)


@pytest.mark.parametrize("extra,ignore,norm", [
    ("", None, "valid"), ("loss_param { ignore_label: 1 }", 1, "valid"),
    ("loss_param { ignore_label: 1 normalization: FULL }", 1, "full"),
    ("loss_param { normalization: BATCH_SIZE }", None, "batch"),
    ("loss_param { normalization: NONE }", None, "none")])
def test_infogain_h_from_bottom(extra, ignore, norm):
    x, y = scores_labels(6, 3, seed=9)
    y[:2] = 1
    h = h_matrix(3, seed=10)
    text = f'type: "InfogainLoss" {extra}'
    layer, bottom, top = make_layer(text, [x, y, h])
    forward(layer, bottom, top)
    assert np.isclose(top[0].data, infogain_ref(x, y, h, ignore, norm), rtol=1e-5)
    assert not layer.allow_force_backward(2)
    check_gradient(text, [x, y, h], check_bottom=[0], loss=True, step=1e-3)
    if ignore is not None:
        assert not bottom[0].diff[y == ignore].any()


def test_infogain_identity_is_softmax_with_loss():
    rs = np.random.RandomState(11)
    x = rs.randn(2, 4, 3, 2).astype(np.float32)
    y = rs.randint(0, 4, (2, 1, 3, 2)).astype(np.float32)
    results = []
    for text, bottoms in (('type: "InfogainLoss"', [x, y, np.eye(4, dtype=np.float32)]),
                          ('type: "SoftmaxWithLoss"', [x, y])):
        layer, bottom, top = make_layer(text, bottoms)
        forward(layer, bottom, top)
        top[0].diff[...] = 2.0
        layer.backward(top, [True, False, False][:len(bottoms)], bottom)
        results.append((float(top[0].data), bottom[0].diff.copy()))
    assert np.isclose(results[0][0], results[1][0], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)


def test_infogain_axis():
    rs = np.random.RandomState(12)
    x = rs.randn(2, 3, 4).astype(np.float32)           # classes on the last axis
    y = rs.randint(0, 4, (2, 3)).astype(np.float32)
    h = h_matrix(4, seed=13)
    text = 'type: "InfogainLoss" infogain_loss_param { axis: -1 }'
    layer, bottom, top = make_layer(text, [x, y, h])
    forward(layer, bottom, top)
    assert np.isclose(top[0].data, infogain_ref(x.reshape(6, 4), y.ravel(), h), rtol=1e-5)
    check_gradient(text, [x, y, h], check_bottom=[0], loss=True, step=1e-3)


def test_infogain_errors():
    from minicaffe.errors import CaffeError
    x, y = scores_labels(4, 3)
    with pytest.raises(CaffeError, match="source"):
        make_layer('type: "InfogainLoss"', [x, y])
    with pytest.raises(CaffeError, match="H must be 3 x 3"):
        make_layer('type: "InfogainLoss"', [x, y, np.eye(4, dtype=np.float32)])
    with pytest.raises(CaffeError, match="normalization"):
        make_layer('type: "InfogainLoss" loss_param { normalize: true }', [x, y, np.eye(3, dtype=np.float32)])
    layer, bottom, top = make_layer('type: "MultinomialLogisticLoss"', [x, y + 3])
    with pytest.raises(CaffeError, match="outside"):
        forward(layer, bottom, top)


def test_multinomial_logistic_loss():
    rs = np.random.RandomState(14)
    p = softmax_ref(rs.randn(5, 4)).astype(np.float32)
    y = rs.randint(0, 4, 5).astype(np.float32)
    p[0, int(y[0])] = 0                                  # held at 1e-20
    layer, bottom, top = make_layer('type: "MultinomialLogisticLoss"', [p, y])
    forward(layer, bottom, top)
    picked = [max(p[i, int(y[i])], 1e-20) for i in range(5)]
    assert np.isclose(top[0].data, -np.log(picked).sum() / 5, rtol=1e-5)
    top[0].diff[...] = 3.0
    layer.backward(top, [True, False], bottom)
    want = np.zeros_like(p)
    for i in range(5):
        want[i, int(y[i])] = -3.0 / 5 / picked[i]
    np.testing.assert_allclose(bottom[0].diff, want, rtol=1e-5)
    p[0, int(y[0])] = 0.3
    check_gradient('type: "MultinomialLogisticLoss"', [p, y], check_bottom=[0], loss=True, step=1e-3)
