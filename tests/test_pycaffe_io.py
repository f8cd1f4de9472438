"""caffe.io, pycaffe's: blob/datum conversions, the Transformer, load_image, resize_image, oversample."""
import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.proto import caffe_pb2


# ---------------------------------------------------------------- blobs and datums
def test_blobproto_to_array_shapes():
    blob = caffe_pb2.BlobProto()
    blob.data.extend(np.arange(6.0))
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 2, 3          # legacy 4-D
    a = caffe.io.blobproto_to_array(blob)
    assert a.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(a.ravel(), np.arange(6))

    blob = caffe_pb2.BlobProto()
    blob.data.extend(np.arange(6.0))
    blob.diff.extend(-np.arange(6.0))
    blob.shape.dim.extend([3, 2])
    assert caffe.io.blobproto_to_array(blob).shape == (3, 2)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True),
                                  -np.arange(6.0).reshape(3, 2))

    blob = caffe_pb2.BlobProto()
    blob.data.extend(np.zeros(100))
    with pytest.raises(ValueError):                                          # no shape at all
        caffe.io.blobproto_to_array(blob)
    blob = caffe_pb2.BlobProto()
    blob.data.append(123)
    assert caffe.io.blobproto_to_array(blob) == 123                          # a scalar fits


def test_array_to_blobproto_and_vectors_round_trip():
    rs = np.random.RandomState(0)
    a, d = rs.randn(2, 3, 4).astype(np.float32), rs.randn(2, 3, 4).astype(np.float32)
    blob = caffe.io.array_to_blobproto(a, d)
    assert isinstance(blob, caffe_pb2.BlobProto)
    assert list(blob.shape.dim) == [2, 3, 4] and not blob.HasField("num")
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob), a)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), d)
    arrays = [a, rs.randn(5).astype(np.float32)]
    s = caffe.io.arraylist_to_blobprotovector_str(arrays)
    assert isinstance(s, bytes)
    back = caffe.io.blobprotovector_str_to_arraylist(s)
    assert len(back) == 2
    for x, y in zip(arrays, back):
        np.testing.assert_array_equal(x, y)
    assert caffe.io.arraylist_to_blobprotovecor_str(arrays) == s              # pycaffe's old spelling


def test_datums():
    u8 = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = caffe.io.array_to_datum(u8)
    assert (d.channels, d.height, d.width) == (2, 3, 4)
    assert d.data == u8.tobytes() and not len(d.float_data)
    assert not d.HasField("label")                                           # label=None leaves it unset
    back = caffe.io.datum_to_array(d)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, u8)

    f = np.linspace(-1, 1, 6).reshape(1, 2, 3)
    d = caffe.io.array_to_datum(f, label=7)
    assert d.label == 7 and not d.data
    np.testing.assert_allclose(caffe.io.datum_to_array(d), f, rtol=1e-6)   # stored as float32
    assert caffe.io.datum_to_array(d).dtype == np.float64

    with pytest.raises(ValueError):
        caffe.io.array_to_datum(np.zeros((2, 2)))
    enc = caffe_pb2.Datum(encoded=True, data=b"\xff\xd8not-really-a-jpeg", channels=3, height=2, width=2)
    with pytest.raises(ValueError, match="encoded"):
        caffe.io.datum_to_array(enc)


# ---------------------------------------------------------------- Transformer
def make_transformer(shape=(1, 3, 4, 5)):
    t = caffe.io.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_input_scale("data", 0.5)
    return t


def test_transformer_preprocess_by_hand_and_round_trip():
    rs = np.random.RandomState(1)
    img = rs.rand(4, 5, 3).astype(np.float32)
    for mean in (np.array([10.0, 20.0, 30.0]), rs.rand(3, 4, 5) * 50):
        t = make_transformer()
        t.set_mean("data", mean)
        kept = img.copy()
        x = t.preprocess("data", img)
        m = mean[:, None, None] if mean.ndim == 1 else mean
        want = (img.transpose(2, 0, 1)[[2, 1, 0]] * 255 - m) * 0.5
        assert x.shape == (3, 4, 5) and x.dtype == np.float32
        np.testing.assert_allclose(x, want, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(img, kept)                            # the caller's array intact
        np.testing.assert_allclose(t.deprocess("data", x[None]), img, atol=1e-5)


def test_transformer_resizes_to_the_input_dims():
    rs = np.random.RandomState(2)
    img = rs.rand(8, 10, 3).astype(np.float32)
    t = caffe.io.Transformer({"data": (2, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    x = t.preprocess("data", img)
    np.testing.assert_array_equal(x, caffe.io.resize_image(img, (4, 5)).transpose(2, 0, 1))


def test_transformer_checks():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    with pytest.raises(Exception, match="not one of the net inputs"):
        t.set_raw_scale("label", 2)
    with pytest.raises(Exception, match="Transpose order"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(Exception, match="Channel swap"):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError, match="Mean channels incompatible"):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ValueError, match="Mean shape invalid"):
        t.set_mean("data", np.zeros((1, 3, 4, 5)))
    with pytest.raises(ValueError, match="Mean shape incompatible"):
        t.set_mean("data", np.zeros((3, 5, 4)))
    gray = caffe.io.Transformer({"data": (1, 1, 4, 5)})
    gray.set_mean("data", np.ones((4, 5)))           # (H, W) stands for (1, H, W)
    assert gray.mean["data"].shape == (4, 5)


# ---------------------------------------------------------------- images
def test_load_image(tmp_path):
    rs = np.random.RandomState(3)
    rgba = rs.randint(0, 256, (5, 7, 4)).astype(np.uint8)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., 0]).save(tmp_path / "gray.png")
    rgb = rgba[..., :3] / 255.0

    im = caffe.io.load_image(str(tmp_path / "rgb.png"))
    assert im.shape == (5, 7, 3) and im.dtype == np.float32
    np.testing.assert_allclose(im, rgb, rtol=1e-6)
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / "rgba.png")), rgb, rtol=1e-6)
    g = caffe.io.load_image(str(tmp_path / "gray.png"))                      # grey tiled to 3
    assert g.shape == (5, 7, 3)
    np.testing.assert_allclose(g, np.repeat(rgba[..., :1] / 255.0, 3, axis=2), rtol=1e-6)
    g1 = caffe.io.load_image(str(tmp_path / "gray.png"), color=False)
    assert g1.shape == (5, 7, 1)
    lum = caffe.io.load_image(str(tmp_path / "rgb.png"), color=False)         # rgb2gray's weights
    np.testing.assert_allclose(lum[..., 0], rgb @ [0.2125, 0.7154, 0.0721], rtol=1e-6)


def test_resize_image_by_hand():
    ramp = np.array([0.0, 1.0], np.float32).reshape(1, 2, 1)
    # upsampling 2 -> 4: half-pixel centres at -0.25, 0.25, 0.75, 1.25, mirrored at the edges
    np.testing.assert_allclose(caffe.io.resize_image(ramp * 4 + 1, (1, 4))[0, :, 0], [2, 2, 4, 4])
    const = np.full((3, 3, 3), 7, np.float32)
    out = caffe.io.resize_image(const, (5, 2))
    assert out.shape == (5, 2, 3) and (out == 7).all()
    two = np.stack([ramp[..., 0] * 3, ramp[..., 0] * 3], -1).reshape(1, 2, 2)   # 2 channels: corners kept
    np.testing.assert_allclose(caffe.io.resize_image(two, (1, 4))[0, :, 0], [0, 1, 2, 3], atol=1e-6)
    rs = np.random.RandomState(4)
    big = rs.rand(20, 30, 3).astype(np.float32) * 200 - 50
    small = caffe.io.resize_image(big, (7, 11))
    assert small.shape == (7, 11, 3) and small.dtype == np.float32
    assert small.min() >= big.min() and small.max() <= big.max()
    with pytest.raises(NotImplementedError, match="interp_order 3"):
        caffe.io.resize_image(big, (7, 11), interp_order=3)


def test_resize_image_matches_scipy_as_skimage_calls_it():
    from scipy import ndimage as ndi     # a test dependency
    rs = np.random.RandomState(5)
    for t in range(40):
        h, w, oh, ow = rs.randint(1, 30, 4)
        im = rs.rand(h, w, 3).astype(np.float32)
        order = t % 2
        factors = np.array([h / oh, w / ow, 1.0])
        ref = im
        if oh < h or ow < w:
            ref = ndi.gaussian_filter(im, np.maximum(0, (factors - 1) / 2), mode="mirror")
        ref = ndi.zoom(ref, 1 / factors, order=order, mode="mirror", grid_mode=True)
        ref = np.clip(ref, im.min(), im.max())     # linear steps: the trip through [0, 1] cancels
        np.testing.assert_allclose(caffe.io.resize_image(im, (oh, ow), order), ref, atol=1e-5)


def test_oversample_order():
    ims = np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6, 1)
    crops = caffe.io.oversample(list(ims), (3, 4))
    assert crops.shape == (20, 3, 4, 1) and crops.dtype == np.float32
    corners = [(0, 0), (0, 2), (2, 0), (2, 2), (1, 1)]     # the centre of 5x6 is at (2.5, 3)
    for n, im in enumerate(ims):
        for k, (y, x) in enumerate(corners):
            np.testing.assert_array_equal(crops[10 * n + k], im[y:y + 3, x:x + 4])
            np.testing.assert_array_equal(crops[10 * n + 5 + k], im[y:y + 3, x:x + 4][:, ::-1])
