"""Pruning: mask exactness, pruned weights stay 0 under every solver, sharing keeps <= K trained values."""
import numpy as np
import pytest

import minicaffe
from gradcheck import check_gradient, make_layer
from minicaffe import io
from minicaffe.compress.mask import magnitude_mask
from minicaffe.compress.sharing import kmeans_1d
from nets import TINY_NET, write_tiny

CMP_NET = TINY_NET.replace('type: "Convolution" bottom: "data" top: "conv1"\n  convolution_param {',
                           'type: "CmpConvolution" bottom: "data" top: "conv1"\n  convolution_param { sparse_ratio: 0.5') \
                  .replace('type: "InnerProduct" bottom: "conv1" top: "ip1"\n  inner_product_param {',
                           'type: "CmpInnerProduct" bottom: "conv1" top: "ip1"\n  inner_product_param { sparse_ratio: 0.7')
assert CMP_NET.count("sparse_ratio") == 2


def test_mask_is_exact_and_never_revives():
    w = np.random.RandomState(0).randn(7, 13).astype(np.float32)
    for r in (0.0, 0.33, 0.5, 0.9):
        m = magnitude_mask(w, r)
        assert (m == 0).sum() == int(w.size * r)
        kept, cut = np.abs(w[m == 1]), np.abs(w[m == 0])
        assert not len(cut) or cut.max() <= kept.min()
    ties = np.ones((4, 5), np.float32)
    assert (magnitude_mask(ties, 0.35) == 0).sum() == 7          # ties: exactly int(n * ratio)
    w2 = w * magnitude_mask(w, 0.6)
    assert (magnitude_mask(w2, 0.2) == 0).sum() == int(w.size * 0.6)   # lower ratio revives nothing
    assert (magnitude_mask(w2, 0.8) == 0).sum() == int(w.size * 0.8)   # higher ratio prunes further


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
@pytest.mark.parametrize("reg", ["L2", "L1"])
def test_pruned_weights_stay_zero(tmp_path, kind, reg):
    path = write_tiny(tmp_path, f'type: "{kind}"\nregularization_type: "{reg}"\n', net=CMP_NET,
                      max_iter=100, display=0, test_interval=0, snapshot_after_train="false",
                      weight_decay=0.01, momentum=0.9, iter_size=2)
    s = minicaffe.get_solver(path)
    masks = {n: (s.net.params[n][0].data == 0) for n in ("conv1", "ip1")}
    assert masks["conv1"].sum() == int(masks["conv1"].size * 0.5)
    assert masks["ip1"].sum() == int(masks["ip1"].size * 0.7)
    before = {n: s.net.params[n][0].data.copy() for n in masks}
    s.step(100)
    for n, m in masks.items():
        w = s.net.params[n][0].data
        assert (w[m] == 0).all()
        assert not np.array_equal(w[~m], before[n][~m])      # the kept weights did train


def test_pruned_weights_survive_snapshot_and_resume(tmp_path):
    path = write_tiny(tmp_path, "", net=CMP_NET, max_iter=40, snapshot=20, display=0,
                      test_interval=0, snapshot_after_train="false")
    s = minicaffe.get_solver(path)
    s.step(20)
    r = minicaffe.get_solver(path)
    r.restore(str(tmp_path / "tiny_iter_20.solverstate"))
    r.step(20)
    s.step(20)
    for n in ("conv1", "ip1"):
        np.testing.assert_array_equal(r.net.params[n][0].data, s.net.params[n][0].data)
        w = r.net.params[n][0].data
        assert (w == 0).sum() == int(w.size * (0.5 if n == "conv1" else 0.7))


def test_loading_trained_weights_prunes_them(tmp_path):
    dense = minicaffe.get_solver(write_tiny(tmp_path, "", max_iter=5, display=0, test_interval=0))
    dense.step(5)
    dense.net.save(str(tmp_path / "dense.caffemodel"))
    net = minicaffe.Net(io.parse_text(CMP_NET, minicaffe.proto.NetParameter()), minicaffe.TRAIN)
    net.copy_from(str(tmp_path / "dense.caffemodel"))
    w, dw = net.params["ip1"][0].data, dense.net.params["ip1"][0].data
    assert (w == 0).sum() == int(w.size * 0.7)
    np.testing.assert_array_equal(w[w != 0], dw[w != 0])
    assert np.abs(dw[w == 0]).max() <= np.abs(dw[w != 0]).min()


@pytest.mark.parametrize("name,ratio", [("ip1", 0.7), ("conv1", 0.5)])
def test_weight_sharing_trains_the_shared_values(tmp_path, name, ratio):
    net = CMP_NET.replace(f"sparse_ratio: {ratio}", f"sparse_ratio: {ratio} quantize_term: true class_num: 4")
    s = minicaffe.get_solver(write_tiny(tmp_path, "", net=net, max_iter=60, display=0, test_interval=0,
                                        weight_decay=0.001))
    layer = s.net.layer_dict[name]
    start = layer.sharing.initial.copy()
    w0 = s.net.params[name][0].data
    assert len(np.unique(w0[w0 != 0])) <= 4
    s.step(60)
    w = s.net.params[name][0].data
    values = np.unique(w[w != 0])
    assert len(values) <= 4 and (w == 0).sum() == int(w.size * ratio)
    used = np.unique(layer.sharing.assign)
    moved = np.abs(layer.sharing.centroids_of(w)[used] - start[used])
    assert (moved > 1e-3).all()                               # every shared value trained
    # and every member of a cluster still holds exactly its cluster's value
    np.testing.assert_array_equal(layer.sharing.centroids_of(w)[layer.sharing.assign],
                                  w.ravel()[layer.sharing.index])


def test_kmeans_linear_init_and_idempotence():
    v = np.random.RandomState(1).randn(500).astype(np.float32)
    c, a = kmeans_1d(v, 8)
    assert len(c) == 8 and a.max() < 8
    shared = c[a]
    c2, a2 = kmeans_1d(shared, 8)
    np.testing.assert_array_equal(c2[a2], shared)


@pytest.mark.parametrize("text", [
    'type: "CmpConvolution" convolution_param { num_output: 3 kernel_size: 3 pad: 1 sparse_ratio: 0.5 '
    'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }',
    'type: "CmpInnerProduct" inner_product_param { num_output: 5 sparse_ratio: 0.6 '
    'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }'])
def test_gradient_with_mask(text):
    x = np.random.RandomState(2).randn(2, 3, 5, 5).astype(np.float32)
    layer, bottom, top = make_layer(text, [x])
    w = layer.blobs[0]
    assert (w.data == 0).mean() > 0.45
    check_gradient(text, [x])   # kept weights, bias and bottom; pruned weights checked below
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    top[0].diff[...] = 1
    w.diff[...] = 0
    layer.backward(top, [True], bottom)
    assert (w.diff[w.mask == 0] == 0).all() and (w.diff[w.mask == 1] != 0).any()
