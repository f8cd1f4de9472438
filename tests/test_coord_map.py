"""caffe.coord_map: offsets between NetSpec tops through conv, pool, deconv and crop, computed by
hand here, and the cropped FCN-style net running in minicaffe."""
import numpy as np
import pytest

import caffe
from caffe.coord_map import (AxisMismatchException, UndefinedMapException, conv_params, coord_map,
                             coord_map_from_to, crop, crop_params)
from caffe.net_spec import NetSpec
from caffe.net_spec import layers as L
from caffe.net_spec import params as P


def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    """data -> conv -> max pool -> deconv (kernel twice its stride), as FCN upsamples."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.aux = L.Input(shape=dict(dim=[2, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=np.array(dstride) * 2, stride=dstride,
                               pad=dpad)
    return n


def map_of(ks=1, stride=1, pad=0, deconv=False):
    """One layer's map by the formula: an input pixel x lines up with output pixel y = a*x + b where
    the kernel's centre, x = stride*y - pad + (ks-1)/2, sits (the inverse for deconvolution)."""
    a, b = 1 / stride, (pad - (ks - 1) / 2) / stride
    return (stride, -b * stride) if deconv else (a, b)


def chain(*maps):
    """The map of the layers in order: y = a*x + b through each."""
    a, b = 1.0, 0.0
    for a2, b2 in maps:
        a, b = a2 * a, a2 * b + b2
    return a, b


def test_conv_pool_deconv_by_hand():
    for ks, stride, pad, pool, dpad in [(3, 1, 0, 2, 0), (5, 1, 2, 2, 0), (3, 1, 0, 4, 0), (7, 2, 3, 2, 1)]:
        n = conv_pool_deconv(ks, stride, pad, pool, pool, dpad)
        a, b = chain(map_of(ks, stride, pad), map_of(pool, pool), map_of(2 * pool, pool, dpad, deconv=True))
        ax, a_got, b_got = coord_map_from_to(n.data, n.deconv)      # data -> deconv
        assert ax == 1 and a_got == pytest.approx(a) and b_got == pytest.approx(b)
        ax, a_back, b_back = coord_map_from_to(n.deconv, n.data)    # deconv -> data, the inverse
        assert a_back == pytest.approx(1 / a) and b_back == pytest.approx(-b / a)
    # the cases pycaffe's test names: 2x pool and deconv are the identity, 4x shift by one
    n = conv_pool_deconv()
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, 0)
    n = conv_pool_deconv(pool=4, dstride=4)
    assert coord_map_from_to(n.deconv, n.data) == (1, 1, -1)


def test_padding_shifts_and_cancels():
    n = conv_pool_deconv()
    base = coord_map_from_to(n.deconv, n.data)[2]
    for pad in (1, 4, 7):
        n = conv_pool_deconv(pad=pad)
        assert coord_map_from_to(n.deconv, n.data)[2] == base - pad
        n = conv_pool_deconv(dpad=pad)
        assert coord_map_from_to(n.deconv, n.data)[2] == base + pad
        n = conv_pool_deconv(pad=pad, dpad=pad)
        assert coord_map_from_to(n.deconv, n.data)[2] == base


def test_pass_through_and_1x1_are_identity_and_dilation_widens_the_kernel():
    n = conv_pool_deconv()
    ref = coord_map_from_to(n.deconv, n.data)
    n.relu = L.ReLU(n.deconv)
    n.drop = L.Dropout(n.relu, in_place=True)
    n.conv1x1 = L.Convolution(n.drop, num_output=10, kernel_size=1)
    for top in (n.relu, n.drop, n.conv1x1):
        assert coord_map_from_to(top, n.data) == ref
    assert coord_map(n.relu.fn) == (None, 1, 0)
    dil = L.Convolution(n.data, num_output=1, kernel_size=3, dilation=2, pad=1)   # extent 5
    assert coord_map_from_to(dil, n.data)[1:] == (1, 1)
    assert conv_params(dil.fn)[2] == [5]


def test_several_bottoms_map_alike_and_rectangular_maps_are_per_axis():
    n = conv_pool_deconv()
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=10, kernel_size=5, stride=2)
    # conv y = x/2 - 1, so x = 2y + 2
    assert coord_map_from_to(n.conv_data, n.data) == coord_map_from_to(n.conv_aux, n.aux) == (1, 2, 2)
    square3, square5 = conv_pool_deconv(3, 1, 0), conv_pool_deconv(5, 2, 10)
    rect = conv_pool_deconv(ks=[3, 5], stride=[1, 2], pad=[0, 10], dstride=[2, 2])
    ax, a, b = coord_map_from_to(rect.deconv, rect.data)
    for i, sq in enumerate((square3, square5)):
        _, a_sq, b_sq = coord_map_from_to(sq.deconv, sq.data)
        assert a[i] == a_sq and b[i] == b_sq


def test_nd_convolution():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 3, 20, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=[3, 3, 3], stride=[1, 1, 1], pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.deconv = L.Deconvolution(n.pool, num_output=4, kernel_size=4, stride=2)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and list(a) == [1, 1, 1] and list(b) == [0, -1, -2]


def test_crop_maps_and_crop_of_crop():
    n = conv_pool_deconv(pool=4, dstride=4)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=3)
    assert coord_map(n.crop.fn) == (1, 1, -3)
    assert crop_params(n.crop.fn) == (2, [3])
    assert coord_map_from_to(n.crop, n.data) == (ax, a, b + 3)
    n.crop2 = L.Crop(n.crop, n.data, crop_param=dict(offset=[1, 2]))    # the second bottom is not walked
    _, a2, b2 = coord_map_from_to(n.crop2, n.data)
    assert list(b2) == [b + 4, b + 5]


def test_crop_helper_gives_pycaffes_layer():
    n = conv_pool_deconv(pool=4, dstride=4)
    n.score = crop(n.deconv, n.data)
    layer = n.to_proto().layer[-1]
    assert str(layer) == '''name: "score"
type: "Crop"
bottom: "deconv"
bottom: "data"
top: "score"
crop_param {
  axis: 2
  offset: 1
}
'''


def fcn(size=32):
    """FCN's pattern: pad 100 in the first conv, score with 1x1, upsample 2x, crop back to the input.
    By hand: conv y = x + 99, pool y = x/2 - 1/4, 1x1 identity, deconv y = 2x + 3/2, so the
    upsampled score sits 100 pixels into its own grid."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, size, size]))
    n.conv1 = L.Convolution(n.data, num_output=3, kernel_size=3, pad=100, weight_filler=dict(type="gaussian"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.score_fr = L.Convolution(n.pool1, num_output=2, kernel_size=1, weight_filler=dict(type="gaussian"))
    n.upscore = L.Deconvolution(n.score_fr, convolution_param=dict(
        num_output=2, kernel_size=4, stride=2, bias_term=False, weight_filler=dict(type="gaussian")))
    n.score = crop(n.upscore, n.data)
    return n


def load(tmp_path, n):
    path = tmp_path / "fcn.prototxt"
    path.write_text(str(n.to_proto()))
    return caffe.Net(str(path), caffe.TEST)


def test_fcn_offset_by_hand_and_the_cropped_net_runs(tmp_path):
    n = fcn()
    assert coord_map_from_to(n.upscore, n.data) == (1, 1, -100)
    crop_layer = n.to_proto().layer[-1].crop_param
    assert crop_layer.axis == 2 and list(crop_layer.offset) == [100]
    caffe.set_random_seed(1)
    net = load(tmp_path, n)
    net.blobs["data"].data[...] = np.random.RandomState(0).randn(1, 2, 32, 32)
    net.forward()
    up = net.blobs["upscore"].data
    assert up.shape == (1, 2, 232, 232)                 # (ceil((230-2)/2)+1 - 1) * 2 + 4
    np.testing.assert_array_equal(net.blobs["score"].data, up[:, :, 100:132, 100:132])


def test_the_crop_aligns_the_score_with_the_input(tmp_path):
    """All-ones 3-wide kernels and average pooling spread a point evenly about the spot the map
    gives it (for stride 2 as well), so an impulse in the data must come out centred on the same
    pixel of the cropped score. By hand: conv y = x + 99, pool (3, stride 2, pad 1) y = x/2,
    deconv (3, stride 2) y = 2x + 1: offset 100."""
    ones = dict(type="constant", value=1)
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 32, 32]))
    n.conv1 = L.Convolution(n.data, num_output=1, kernel_size=3, pad=100, weight_filler=ones)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.AVE, kernel_size=3, stride=2, pad=1)
    n.upscore = L.Deconvolution(n.pool1, convolution_param=dict(
        num_output=1, kernel_size=3, stride=2, bias_term=False, weight_filler=ones))
    n.score = crop(n.upscore, n.data)
    assert list(n.to_proto().layer[-1].crop_param.offset) == [100]
    net = load(tmp_path, n)
    for r, c in [(9, 21), (16, 16), (4, 27)]:
        net.blobs["data"].data[...] = 0
        net.blobs["data"].data[0, 0, r, c] = 1
        net.forward()
        score = net.blobs["score"].data[0, 0].astype(np.float64)
        rows, cols = np.indices(score.shape)
        centre = (rows * score).sum() / score.sum(), (cols * score).sum() / score.sum()
        assert centre == pytest.approx((r, c), abs=1e-5)


def test_errors():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match="connected by spatial layers"):
        coord_map_from_to(n.ip, n.data)
    with pytest.raises(UndefinedMapException):
        coord_map(n.ip.fn)
    with pytest.raises(AssertionError, match="scale mismatch"):
        n = conv_pool_deconv(pool=3, dstride=2)
        crop(n.deconv, n.data)
    with pytest.raises(AssertionError, match="negative offset"):
        n = conv_pool_deconv(dpad=10)
        crop(n.deconv, n.data)
    with pytest.raises(AssertionError, match="noninteger"):
        n = conv_pool_deconv(ks=2)
        crop(n.deconv, n.data)
    with pytest.raises(AssertionError, match="legacy"):
        x = L.Input(shape=dict(dim=[1, 1, 8, 8]))
        coord_map_from_to(L.Convolution(x, num_output=1, kernel_h=3, kernel_w=3), x)
    with pytest.raises(AxisMismatchException):
        x = L.Input(shape=dict(dim=[1, 1, 8, 8]))
        cropped = L.Crop(L.Convolution(x, num_output=1, kernel_size=3), x, axis=3)
        coord_map_from_to(cropped, x)
