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


def spp_ref(x, height, method):
    """Loops over each level's bins, from the SPP paper's geometry as Caffe sets it."""
    n, c, h, w = x.shape
    flat = []
    for level in range(height):
        bins = 2 ** level
        geo = []
        for size in (h, w):
            k = int(np.ceil(size / bins))
            geo.append((k, (k * bins - size + 1) // 2, size))
        out = np.zeros((n, c, bins, bins))
        for i in range(bins):
            for j in range(bins):
                lo = [b * k - p for b, (k, p, _) in zip((i, j), geo)]
                hi = [min(s0 + k, size + p) for s0, (k, p, size) in zip(lo, geo)]
                win = x[:, :, max(lo[0], 0):min(hi[0], h), max(lo[1], 0):min(hi[1], w)]
                if method == "MAX":
                    out[:, :, i, j] = win.max(axis=(2, 3))
                else:
                    out[:, :, i, j] = win.sum(axis=(2, 3)) / ((hi[0] - lo[0]) * (hi[1] - lo[1]))
        flat.append(out)
    return flat[0] if height == 1 else np.concatenate([f.reshape(n, -1) for f in flat], axis=1)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("height,hw", [(1, (5, 7)), (2, (7, 9)), (3, (7, 9)), (3, (8, 8)), (4, (16, 15))])
def test_spp(method, height, hw):
    x = distinct((2, 3) + hw)
    text = f'type: "SPP" spp_param {{ pyramid_height: {height} pool: {method} }}'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    want = spp_ref(x.astype(np.float64), height, method)
    assert top[0].shape == want.shape
    np.testing.assert_allclose(top[0].data, want, rtol=1e-5)
    check_gradient(text, [x], samples=30)


def test_spp_follows_the_input_size():
    text = 'type: "SPP" spp_param { pyramid_height: 3 pool: MAX }'
    layer, bottom, top = make_layer(text, [distinct((1, 2, 8, 8))])
    x = distinct((2, 2, 7, 10), seed=1)
    bottom[0].reshape(x.shape)
    bottom[0].data[...] = x
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, spp_ref(x.astype(np.float64), 3, "MAX"), rtol=1e-5)


def test_spp_rejects_levels_caffe_cannot_pool():
    from minicaffe.errors import CaffeError
    with pytest.raises(CaffeError, match="pyramid level 2"):    # 4 bins over 5: kernel 2, pad 2
        make_layer('type: "SPP" spp_param { pyramid_height: 3 }', [distinct((1, 1, 5, 8))])
    with pytest.raises(CaffeError, match="STOCHASTIC"):        # 2 bins over 7: pad 1
        make_layer('type: "SPP" spp_param { pyramid_height: 2 pool: STOCHASTIC }',
                   [distinct((1, 1, 7, 8))])


def test_spp_levels_pool_in_caffes_default_phase():
    """Caffe's SPP builds its Pooling layers from a LayerParameter without a phase (TRAIN): a
    STOCHASTIC pyramid samples input values, in the TEST phase too, and has a backward."""
    x = np.random.RandomState(5).rand(2, 3, 8, 8).astype(np.float32) + 0.1
    text = 'type: "SPP" spp_param { pyramid_height: 2 pool: STOCHASTIC }'
    layer, bottom, top = make_layer(text, [x], phase=pb.TEST)
    forward(layer, bottom, top)
    assert top[0].shape == (2, 3 * 5)
    assert np.isin(top[0].data, x).all()           # samples, not activation-weighted averages
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff.sum(axis=(1, 2, 3)), 15)


STO = 'type: "Pooling" pooling_param {{ pool: STOCHASTIC kernel_size: {k} stride: {s} }}'


def sto_windows(h, w, k, s):
    oh, ow = int(np.ceil((h - k) / s)) + 1, int(np.ceil((w - k) / s)) + 1
    return [[(slice(i * s, min(i * s + k, h)), slice(j * s, min(j * s + k, w))) for j in range(ow)]
            for i in range(oh)]


def test_stochastic_pooling_test_phase():
    x = np.random.RandomState(2).rand(2, 3, 6, 7).astype(np.float32)
    x[0, 0, :3, :3] = 0                       # an all-zero window gives 0
    layer, bottom, top = make_layer(STO.format(k=3, s=2), [x], phase=pb.TEST)
    forward(layer, bottom, top)
    wins = sto_windows(6, 7, 3, 2)
    assert top[0].shape == (2, 3, len(wins), len(wins[0]))
    for i, row in enumerate(wins):
        for j, (ys, xs) in enumerate(row):
            v = x[:, :, ys, xs].astype(np.float64)
            s, q = v.sum(axis=(2, 3)), (v ** 2).sum(axis=(2, 3))
            np.testing.assert_allclose(top[0].data[:, :, i, j], np.where(s > 0, q / np.maximum(s, 1e-30), 0),
                                       rtol=1e-5)
    assert top[0].data[0, 0, 0, 0] == 0


@pytest.mark.parametrize("signed", [False, True])
def test_stochastic_pooling_follows_caffes_rule(signed):
    """Given the same uniform draws u in (0, 1], the first position of each window whose running
    sum reaches u * sum (the last if none does, as negative inputs allow); backward sends each
    output's gradient to that position."""
    from minicaffe import rng
    x = np.random.RandomState(3).rand(2, 3, 7, 6).astype(np.float32)
    x[x < 0.3] = 0
    if signed:
        x -= 0.5
    layer, bottom, top = make_layer(STO.format(k=3, s=2), [x])
    rng.seed(11)
    u = 1 - rng.get().random(top[0].shape, dtype=np.float32)
    rng.seed(11)
    forward(layer, bottom, top)
    dy = np.random.RandomState(4).randn(*top[0].shape).astype(np.float32)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    want_dx = np.zeros_like(x)
    for n in range(2):
        for c in range(3):
            for i, row in enumerate(sto_windows(7, 6, 3, 2)):
                for j, (ys, xs) in enumerate(row):
                    vals = x[n, c, ys, xs]
                    cum = np.cumsum(vals.ravel(), dtype=np.float32)
                    reach = cum >= u[n, c, i, j] * cum[-1]
                    r = int(np.argmax(reach)) if reach.any() else reach.size - 1
                    assert top[0].data[n, c, i, j] == vals.ravel()[r]
                    ry, rx = divmod(r, vals.shape[1])
                    want_dx[n, c, ys.start + ry, xs.start + rx] += dy[n, c, i, j]
    np.testing.assert_allclose(bottom[0].diff, want_dx, rtol=1e-6, atol=1e-7)


def test_stochastic_pooling_samples_in_proportion():
    from minicaffe import rng
    rng.seed(0)
    planes = 20000
    x = np.tile(np.array([[0, 1], [2, 5]], np.float32), (1, planes, 1, 1))
    layer, bottom, top = make_layer(STO.format(k=2, s=2), [x])
    forward(layer, bottom, top)
    picked = top[0].data.ravel()
    freq = np.array([(picked == v).mean() for v in (0, 1, 2, 5)])
    assert freq[0] == 0                                      # a zero activation is never drawn
    np.testing.assert_allclose(freq, [0, 1 / 8, 2 / 8, 5 / 8], atol=0.015)   # > 4 sigma
    top[0].diff[...] = 1
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff.reshape(planes, 4).mean(0), freq, atol=1e-6)
