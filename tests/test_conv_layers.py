"""Convolution, Deconvolution, InnerProduct: forward against direct loops, backward by finite differences."""
import numpy as np
import pytest

from gradcheck import check_gradient, forward, make_layer

pytestmark = pytest.mark.usefixtures("kernel_threads")


def conv_ref(x, w, b, stride, pad, dil, group):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - (dil * (kh - 1) + 1)) // stride + 1
    ow = (wd + 2 * pad - (dil * (kw - 1) + 1)) // stride + 1
    out = np.zeros((n, m, oh, ow))
    mg = m // group
    for o in range(m):
        g = o // mg
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg, i * stride:i * stride + dil * (kh - 1) + 1:dil,
                           j * stride:j * stride + dil * (kw - 1) + 1:dil]
                out[:, o, i, j] = (patch * w[o]).sum(axis=(1, 2, 3)) + (b[o] if b is not None else 0)
    return out


CONV = """type: "Convolution" convolution_param {{ num_output: {m} kernel_size: {k} stride: {s} pad: {p}
 dilation: {d} group: {g} bias_term: {bias} weight_filler {{ type: "gaussian" std: 0.5 }}
 bias_filler {{ type: "uniform" min: -1 max: 1 }} }}"""


@pytest.mark.parametrize("m,k,s,p,d,g,bias", [
    (4, 3, 1, 0, 1, 1, "true"), (4, 3, 2, 1, 1, 2, "true"), (2, 2, 1, 1, 2, 1, "false"),
    (6, 5, 1, 2, 1, 3, "true")])
def test_convolution(m, k, s, p, d, g, bias):
    rs = np.random.RandomState(1)
    x = rs.randn(2, 6, 7, 8).astype(np.float32)
    text = CONV.format(m=m, k=k, s=s, p=p, d=d, g=g, bias=bias)
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    b = layer.blobs[1].data if bias == "true" else None
    ref = conv_ref(x.astype(np.float64), layer.blobs[0].data, b, s, p, d, g)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-4, atol=1e-4)
    check_gradient(text, [x])


def test_convolution_kernel_hw():
    x = np.random.RandomState(2).randn(2, 2, 6, 7).astype(np.float32)
    text = """type: "Convolution" convolution_param { num_output: 3 kernel_h: 3 kernel_w: 2
      stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0 weight_filler { type: "xavier" } }"""
    layer, bottom, top = make_layer(text, [x])
    assert top[0].shape == (2, 3, 3, 6)
    check_gradient(text, [x])


@pytest.mark.parametrize("s,p,g", [(1, 0, 1), (2, 1, 1), (2, 0, 2)])
def test_deconvolution(s, p, g):
    rs = np.random.RandomState(3)
    x = rs.randn(2, 4, 4, 5).astype(np.float32)
    text = f"""type: "Deconvolution" convolution_param {{ num_output: 4 kernel_size: 3 stride: {s}
      pad: {p} group: {g} weight_filler {{ type: "gaussian" std: 0.5 }}
      bias_filler {{ type: "gaussian" }} }}"""
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    # Deconv forward is the adjoint of conv: <deconv(x), y> == <x, conv(y)> (without bias).
    y = rs.randn(*top[0].shape)
    w = layer.blobs[0].data.astype(np.float64)           # (C_in, M/g, k, k)
    cin, mg = w.shape[:2]
    cg = cin // g
    # the equivalent conv maps M -> C_in with weights regrouped to (C_in, M/g, k, k)
    conv_y = conv_ref(y, w, None, s, p, 1, g)
    lhs = ((top[0].data - layer.blobs[1].data[None, :, None, None]) * y).sum()
    rhs = (x * conv_y).sum()
    assert abs(lhs - rhs) < 1e-3 * max(1, abs(lhs)), (lhs, rhs, cg, mg)
    check_gradient(text, [x])


@pytest.mark.parametrize("transpose,axis", [("false", 1), ("true", 1), ("false", 2)])
def test_inner_product(transpose, axis):
    rs = np.random.RandomState(4)
    x = rs.randn(3, 4, 5).astype(np.float32)
    text = f"""type: "InnerProduct" inner_product_param {{ num_output: 6 transpose: {transpose}
      axis: {axis} weight_filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }}"""
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    w = layer.blobs[0].data
    w = w.T if transpose == "true" else w
    lead = x.shape[:axis]
    ref = x.reshape(int(np.prod(lead)), -1) @ w.T + layer.blobs[1].data
    np.testing.assert_allclose(top[0].data.reshape(ref.shape), ref, rtol=1e-5, atol=1e-5)
    assert top[0].shape == lead + (6,)
    check_gradient(text, [x])


def test_convolution_in_blocks_of_images(monkeypatch):
    """Blocking the batch for the cache must not change results."""
    from minicaffe.layers import conv
    x = np.random.RandomState(5).randn(5, 4, 6, 6).astype(np.float32)
    text = CONV.format(m=4, k=3, s=1, p=1, d=1, g=2, bias="true")
    layer, bottom, top = make_layer(text, [x])
    forward(layer, bottom, top)
    whole = top[0].data.copy()
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)      # one image per block
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, whole, rtol=1e-5, atol=1e-6)
    check_gradient(text, [x])


def test_convolution_two_bottoms_in_blocks(monkeypatch):
    """Two bottoms share the weights; backward must rebuild the columns the forward buffer lost."""
    from minicaffe.layers import conv
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
    rs = np.random.RandomState(6)
    a, b = rs.randn(3, 2, 5, 5).astype(np.float32), rs.randn(3, 2, 5, 5).astype(np.float32)
    check_gradient(CONV.format(m=3, k=3, s=1, p=1, d=1, g=1, bias="true"), [a, b], n_top=2)


def test_convolution_backward_twice(monkeypatch):
    """A second backward after one forward: the columns must not be the first one's dcol."""
    from minicaffe.layers import conv
    monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
    x = np.random.RandomState(7).randn(3, 2, 5, 5).astype(np.float32)
    layer, bottom, top = make_layer(CONV.format(m=3, k=3, s=1, p=1, d=1, g=1, bias="true"), [x])
    forward(layer, bottom, top)
    top[0].diff[...] = np.random.RandomState(8).randn(*top[0].shape)
    grads = []
    for _ in range(2):
        layer.blobs[0].diff[...] = 0
        layer.backward(top, [True], bottom)
        grads.append((layer.blobs[0].diff.copy(), bottom[0].diff.copy()))
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)
