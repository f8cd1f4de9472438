"""Crop, Tile, Filter, BatchReindex, Im2col: forward against index-by-index references, backward by
finite differences, and the shape rules and errors Caffe has."""
import itertools

import numpy as np
import pytest

from gradcheck import check_gradient, forward, make_layer
from minicaffe.errors import CaffeError


def r(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


# -- Crop --

@pytest.mark.parametrize("params,ref_shape,starts", [
    ("", (1, 1, 4, 5), (0, 0, 0, 0)),                                  # axis 2, offsets 0
    ("offset: 1", (2, 3, 4, 5), (0, 0, 1, 1)),                         # one offset for all
    ("offset: 2 offset: 1", (5, 1, 3, 4), (0, 0, 2, 1)),               # one per cropped axis
    ("axis: 1 offset: 1 offset: 0 offset: 2", (2, 2, 5, 5), (0, 1, 0, 2)),
    ("axis: -3 offset: 1", (2, 2, 4, 6), (0, 1, 1, 1)),
    ("axis: 0", (1, 2, 3, 4), (0, 0, 0, 0)),
])
def test_crop(params, ref_shape, starts):
    x, ref = r(2, 3, 6, 7), r(*ref_shape, seed=1)
    text = f'type: "Crop" crop_param {{ {params} }}'
    layer, bottom, top = make_layer(text, [x, ref])
    forward(layer, bottom, top)
    axis = layer.axis
    shape = x.shape[:axis] + ref_shape[axis:]
    assert top[0].shape == shape
    expect = x[np.ix_(*[np.arange(s, s + n) for s, n in zip(starts, shape)])]
    np.testing.assert_array_equal(top[0].data, expect)
    check_gradient(text, [x, ref], check_bottom=[0])
    # backward: the crop's gradient in place, zeros around it; the reference's diff is left alone
    top[0].diff[...] = r(*shape, seed=2)
    bottom[0].diff[...] = 9
    bottom[1].diff[...] = 7
    layer.backward(top, [True, True], bottom)
    inside = np.zeros(x.shape, bool)
    inside[np.ix_(*[np.arange(s, s + n) for s, n in zip(starts, shape)])] = True
    np.testing.assert_array_equal(bottom[0].diff[inside], top[0].diff.ravel())
    assert not bottom[0].diff[~inside].any()
    assert (bottom[1].diff == 7).all()
    assert layer.allow_force_backward(0) and not layer.allow_force_backward(1)


@pytest.mark.parametrize("params,ref_shape", [
    ("offset: 3", (2, 3, 4, 5)),                   # 3 + 4 > 6
    ("offset: 0 offset: 3", (2, 3, 4, 5)),         # 3 + 5 > 7
    ("offset: 1 offset: 1 offset: 1", (2, 3, 4, 5)),   # 3 offsets for 2 cropped axes
    ("axis: 4", (2, 3, 4, 5)),
    ("", (2, 3, 7, 5)),                            # the reference is larger
    ("", (2, 3, 4)),                               # fewer axes than the data
])
def test_crop_errors(params, ref_shape):
    with pytest.raises(CaffeError):
        make_layer(f'type: "Crop" crop_param {{ {params} }}', [r(2, 3, 6, 7), r(*ref_shape)])


# -- Tile --

@pytest.mark.parametrize("axis,tiles", [(0, 2), (1, 3), (2, 2), (-1, 4), (3, 1)])
def test_tile(axis, tiles):
    x = r(2, 3, 2, 3)
    text = f'type: "Tile" tile_param {{ axis: {axis} tiles: {tiles} }}'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    a = axis % 4
    expect = np.concatenate([x] * tiles, axis=a)
    assert top[0].shape == expect.shape
    np.testing.assert_array_equal(top[0].data, expect)
    check_gradient(text, [x])
    dy = r(*expect.shape, seed=3)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    n = x.shape[a]
    parts = [np.take(dy, np.arange(t * n, (t + 1) * n), axis=a) for t in range(tiles)]
    np.testing.assert_allclose(bottom[0].diff, sum(parts), rtol=1e-6)


def test_tile_default_axis_and_errors():
    layer, bottom, top = make_layer('type: "Tile" tile_param { tiles: 2 }', [r(2, 3, 4)])
    assert top[0].shape == (2, 6, 4)
    for params in ["", "tiles: 0", "axis: 3 tiles: 2"]:
        with pytest.raises(CaffeError):
            make_layer(f'type: "Tile" tile_param {{ {params} }}', [r(2, 3, 4)])


# -- Filter --

def test_filter_two_bottoms():
    a, b = r(5, 3, 2), r(5, 4, seed=1)
    sel = np.array([0, 2.5, 0, -1, 1], np.float32).reshape(5, 1, 1, 1)
    text = 'type: "Filter"'
    layer, bottom, top = make_layer(text, [a, b, sel], n_top=2)
    assert [t.shape for t in top] == [(5, 3, 2), (5, 4)]     # the first reshape: all items
    forward(layer, bottom, top)
    kept = [i for i in range(5) if sel[i, 0, 0, 0] != 0]
    assert [t.shape for t in top] == [(3, 3, 2), (3, 4)]
    np.testing.assert_array_equal(top[0].data, np.stack([a[i] for i in kept]))
    np.testing.assert_array_equal(top[1].data, np.stack([b[i] for i in kept]))
    check_gradient(text, [a, b, sel], n_top=2, check_bottom=[0, 1])
    for t in top:
        t.diff[...] = r(*t.shape, seed=4)
    layer.backward(top, [True, True, False], bottom)
    for bb, t in zip(bottom, top):
        for i in range(5):
            want = t.diff[kept.index(i)] if i in kept else 0
            np.testing.assert_array_equal(bb.diff[i], want)
    with pytest.raises(CaffeError):
        layer.backward(top, [True, True, True], bottom)
    assert layer.allow_force_backward(1) and not layer.allow_force_backward(2)


def test_filter_none_selected_and_errors():
    a, sel = r(3, 2), np.zeros(3, np.float32)
    layer, bottom, top = make_layer('type: "Filter"', [a, sel])
    forward(layer, bottom, top)
    assert top[0].shape == (0, 2)
    bottom[0].diff[...] = 5
    layer.backward(top, [True, False], bottom)
    assert not bottom[0].diff.any()
    with pytest.raises(CaffeError):       # the selector is not (N, 1, ...)
        make_layer('type: "Filter"', [a, np.ones((3, 2), np.float32)])
    with pytest.raises(CaffeError):       # a bottom with another item count
        make_layer('type: "Filter"', [a, r(4, 2), np.ones(3, np.float32)], n_top=2)
    with pytest.raises(CaffeError):       # one top per filtered bottom
        make_layer('type: "Filter"', [a, np.ones(3, np.float32)], n_top=2)


# -- BatchReindex --

def test_batch_reindex():
    x = r(4, 3, 2)
    idx = np.array([3, 0, 3, 3, 1.7, 2], np.float32)     # repeats, and a fraction cut toward 0
    text = 'type: "BatchReindex"'
    layer, bottom, top = make_layer(text, [x, idx])
    forward(layer, bottom, top)
    assert top[0].shape == (6, 3, 2)
    for i, j in enumerate([3, 0, 3, 3, 1, 2]):
        np.testing.assert_array_equal(top[0].data[i], x[j])
    check_gradient(text, [x, idx], check_bottom=[0])
    dy = r(6, 3, 2, seed=5)
    top[0].diff[...] = dy
    layer.backward(top, [True, False], bottom)
    np.testing.assert_allclose(bottom[0].diff[3], dy[0] + dy[2] + dy[3], rtol=1e-6)
    np.testing.assert_array_equal(bottom[0].diff[[0, 1, 2]], dy[[1, 4, 5]])
    with pytest.raises(CaffeError):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1)


@pytest.mark.parametrize("idx", [[0, 4], [-0.5, 1], [np.nan]])
def test_batch_reindex_range(idx):
    layer, bottom, top = make_layer('type: "BatchReindex"', [r(4, 2), np.array(idx, np.float32)])
    with pytest.raises(CaffeError):
        forward(layer, bottom, top)


def test_batch_reindex_needs_1d_indices():
    with pytest.raises(CaffeError):
        make_layer('type: "BatchReindex"', [r(4, 2), np.zeros((2, 1), np.float32)])


# -- Im2col --

def im2col_ref(x, axis, k, p, s, d):
    """One output element at a time, by the definition: zero outside the input."""
    lead, c, sp = x.shape[:axis], x.shape[axis], x.shape[axis + 1:]
    xs = x.reshape((-1, c) + sp)
    out = [(n + 2 * pi - (di * (ki - 1) + 1)) // si + 1 for n, ki, pi, si, di in zip(sp, k, p, s, d)]
    offsets = list(itertools.product(*[range(ki) for ki in k]))
    res = np.zeros((xs.shape[0], c * len(offsets)) + tuple(out), np.float32)
    for img, ch in itertools.product(range(xs.shape[0]), range(c)):
        for j, off in enumerate(offsets):
            for pos in itertools.product(*[range(o) for o in out]):
                src = [po * si + ko * di - pi for po, ko, si, di, pi in zip(pos, off, s, d, p)]
                if all(0 <= q < n for q, n in zip(src, sp)):
                    res[(img, ch * len(offsets) + j) + pos] = xs[(img, ch) + tuple(src)]
    return res.reshape(lead + res.shape[1:])


@pytest.mark.usefixtures("kernel_threads")
@pytest.mark.parametrize("params,k,p,s,d", [
    ("kernel_size: 3", (3, 3), (0, 0), (1, 1), (1, 1)),
    ("kernel_size: 3 pad: 1 stride: 2", (3, 3), (1, 1), (2, 2), (1, 1)),
    ("kernel_size: 2 dilation: 2 pad: 2", (2, 2), (2, 2), (1, 1), (2, 2)),
    ("kernel_h: 3 kernel_w: 2 pad_h: 1 stride_h: 2 stride_w: 3", (3, 2), (1, 0), (2, 3), (1, 1)),
    ("kernel_size: 2 kernel_size: 3 dilation: 1 dilation: 2 pad: 0 pad: 1", (2, 3), (0, 1), (1, 1), (1, 2)),
])
def test_im2col(params, k, p, s, d):
    x = r(2, 3, 6, 7)
    text = f'type: "Im2col" convolution_param {{ {params} }}'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    expect = im2col_ref(x, 1, k, p, s, d)
    assert top[0].shape == expect.shape
    np.testing.assert_array_equal(top[0].data, expect)
    check_gradient(text, [x])


@pytest.mark.parametrize("shape,params,k,p,s,d", [
    ((2, 2, 3, 5, 6), "axis: 2 kernel_size: 2 stride: 2 pad: 1", (2, 2), (1, 1), (2, 2), (1, 1)),
    ((2, 3, 9), "kernel_size: 3 stride: 2 pad: 1 dilation: 2", (3,), (1,), (2,), (2,)),
    ((2, 2, 4, 5, 4), "kernel_size: 2 kernel_size: 3 kernel_size: 2 pad: 1 stride: 2 dilation: 1 "
                      "dilation: 1 dilation: 2", (2, 3, 2), (1, 1, 1), (2, 2, 2), (1, 1, 2)),
])
def test_im2col_other_axes(shape, params, k, p, s, d):
    """The channel axis elsewhere (the axes before it are images) and 1 or 3 spatial axes."""
    x = r(*shape)
    text = f'type: "Im2col" convolution_param {{ {params} }}'
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    axis = layer.axis
    expect = im2col_ref(x, axis, k, p, s, d)
    assert top[0].shape == expect.shape
    np.testing.assert_array_equal(top[0].data, expect)
    check_gradient(text, [x])


@pytest.mark.parametrize("params", [
    "", "kernel_size: 3 kernel_h: 3 kernel_w: 3", "kernel_size: 1 kernel_size: 2 kernel_size: 3",
    "kernel_size: 9", "kernel_size: 3 stride: 0", "kernel_size: 2 axis: 3"])
def test_im2col_errors(params):
    with pytest.raises(CaffeError):
        make_layer(f'type: "Im2col" convolution_param {{ {params} }}', [r(2, 3, 6, 7)])
