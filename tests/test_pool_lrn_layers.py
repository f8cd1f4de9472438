"""Pooling and LRN: Caffe's output sizes and divisors, forward against loops, backward by differences."""
import numpy as np
import pytest

from gradcheck import check_gradient, forward, make_layer
from minicaffe import minicaffe_pb2 as pb

pytestmark = pytest.mark.usefixtures("kernel_threads")


def distinct(shape, seed=0):
    """Values far apart so MAX pooling has no near-ties for finite differences to cross."""
    n = int(np.prod(shape))
    return (np.random.RandomState(seed).permutation(n).reshape(shape) * 0.1).astype(np.float32)


def pool_ref(x, k, s, p, method):
    n, c, h, w = x.shape
    oh = int(np.ceil((h + 2 * p - k) / s)) + 1
    ow = int(np.ceil((w + 2 * p - k) / s)) + 1
    if p:
        if (oh - 1) * s >= h + p:
            oh -= 1
        if (ow - 1) * s >= w + p:
            ow -= 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            size = (he - hs) * (we - ws)
            win = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
            out[:, :, i, j] = win.max(axis=(2, 3)) if method == "MAX" else win.sum(axis=(2, 3)) / size
    return out


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p,hw", [(3, 2, 0, (7, 8)), (2, 2, 0, (6, 6)), (3, 2, 1, (7, 6)),
                                      (3, 1, 1, (5, 5))])
def test_pooling(method, k, s, p, hw):
    x = distinct((2, 3) + hw)
    text = f'type: "Pooling" pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }}'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, pool_ref(x.astype(np.float64), k, s, p, method), rtol=1e-5)
    check_gradient(text, [x])     # values are 0.1 apart: a 0.01 step never reorders a MAX window


def test_pooling_rounds_up():
    # cifar10_quick: 32x32, kernel 3, stride 2 -> 16x16 (floor would give 15)
    x = np.zeros((1, 1, 32, 32), np.float32)
    layer, bottom, top = make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', [x])
    assert top[0].shape == (1, 1, 16, 16)


def test_global_and_stochastic_pooling():
    x = np.abs(distinct((2, 3, 4, 5))) + 0.1
    layer, bottom, top = make_layer('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [x])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data[..., 0, 0], x.mean(axis=(2, 3)), rtol=1e-5)
    text = 'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }'
    layer, bottom, top = make_layer(text, [x], phase=pb.TEST)
    forward(layer, bottom, top)
    win = x[:, :, :4, :4].reshape(2, 3, 2, 2, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 2, 4)
    np.testing.assert_allclose(top[0].data[..., :2], ((win ** 2).sum(-1) / win.sum(-1)), rtol=1e-5)
    layer, bottom, top = make_layer(text, [x], phase=pb.TRAIN)
    forward(layer, bottom, top)   # each output is one of its window's values
    for v, w in zip(top[0].data[..., :2].ravel(), win.reshape(-1, 4)):
        assert np.isclose(w, v).any()


def lrn_ref(x, size, alpha, beta, k):
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(ch - pre, 0), min(ch - pre + size, c)
        scale = k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)
        out[:, ch] = x[:, ch] * scale ** -beta
    return out


def test_lrn_across_channels():
    x = np.random.RandomState(0).randn(2, 7, 3, 3).astype(np.float32)
    text = 'type: "LRN" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, lrn_ref(x.astype(np.float64), 5, 0.5, 0.75, 2), rtol=1e-5)
    check_gradient(text, [x], step=1e-3)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn_within_channel(size):
    x = np.random.RandomState(1).randn(2, 2, 5, 4).astype(np.float32)
    text = f'type: "LRN" lrn_param {{ local_size: {size} alpha: 0.9 beta: 0.6 norm_region: WITHIN_CHANNEL }}'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    p = (size - 1) // 2
    xp = np.pad(x.astype(np.float64) ** 2, ((0, 0), (0, 0), (p, p), (p, p)))
    box = sum(xp[:, :, i:i + 5, j:j + 4] for i in range(size) for j in range(size)) / size ** 2
    np.testing.assert_allclose(top[0].data, x * (1 + 0.9 * box) ** -0.6, rtol=1e-5)
    check_gradient(text, [x], step=1e-3)


def test_kernels_split_over_threads_after_fork():
    """A forked child has none of its parent's threads; the kernels must not wait for them."""
    import multiprocessing
    from minicaffe import kernels
    x = distinct((4, 8, 64, 64))
    out, am = np.empty((4, 8, 32, 32), np.float32), np.empty((4, 8, 32, 32), np.int32)
    kernels.max_pool_fwd(x, 2, 2, 0, 0, 2, 2, out, am)          # large enough to split: pool started
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as p:
        res = p.apply_async(_pool_in_child, (x,))
        np.testing.assert_array_equal(res.get(timeout=20), out)


def _pool_in_child(x):
    from minicaffe import kernels
    out, am = np.empty((4, 8, 32, 32), np.float32), np.empty((4, 8, 32, 32), np.int32)
    kernels.max_pool_fwd(x, 2, 2, 0, 0, 2, 2, out, am)
    return out
