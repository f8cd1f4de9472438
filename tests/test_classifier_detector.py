"""caffe.Classifier and caffe.Detector, pycaffe's: against crops made by hand and run through a
plain Net with the same weights."""
import numpy as np
import pytest
from PIL import Image

import caffe

NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
MEAN = np.array([100.0, 120.0, 90.0])      # per channel, in the net's (BGR) order


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    net = caffe.Net(str(path), caffe.TEST)
    rs = np.random.RandomState(0)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rs.randn(*b.data.shape) * 0.3
    net.save(str(tmp_path / "tiny.caffemodel"))
    return str(path), str(tmp_path / "tiny.caffemodel")


def by_hand(model, crops):
    """The net's prob for each (H, W, 3) RGB crop in [0, 1], preprocessed step by step."""
    net = caffe.Net(model[0], caffe.TEST, weights=model[1])
    out = []
    for c in crops:
        if c.shape[:2] != (8, 8):
            c = caffe.io.resize_image(c, (8, 8))
        x = c.transpose(2, 0, 1)[[2, 1, 0]] * 255 - MEAN[:, None, None]
        out.append(net.forward(data=(x * 0.5)[None])["prob"][0].copy())
    return np.array(out)


def classifier(model, **kw):
    return caffe.Classifier(model[0], model[1], mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0),
                            input_scale=0.5, **kw)


def test_classifier_center_crop_and_oversample(model):
    rs = np.random.RandomState(1)
    images = [rs.rand(11, 13, 3).astype(np.float32) for _ in range(3)]
    clf = classifier(model, image_dims=(10, 12))
    assert isinstance(clf, caffe.Net) and clf.inputs == ["data"] and clf.outputs == ["prob"]
    resized = [caffe.io.resize_image(im, (10, 12)) for im in images]

    p = clf.predict(images, oversample=False)                 # centre (5, 6) -> rows 1:9, cols 2:10
    assert p.shape == (3, 5)
    np.testing.assert_allclose(p, by_hand(model, [r[1:9, 2:10] for r in resized]), rtol=1e-4, atol=1e-6)

    p = clf.predict(images)                                   # the 10 crops' average
    corners = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 2)]
    crops = [r[y:y + 8, x:x + 8][:, ::f] for r in resized for f in (1, -1) for y, x in corners]
    want = by_hand(model, crops).reshape(3, 10, 5).mean(1)
    assert p.shape == (3, 5)
    np.testing.assert_allclose(p, want, rtol=1e-4, atol=1e-6)


def test_classifier_default_dims_take_the_whole_image(model):
    rs = np.random.RandomState(2)
    images = [rs.rand(8, 8, 3).astype(np.float32) for _ in range(2)]
    clf = classifier(model)
    assert tuple(clf.image_dims) == (8, 8)
    np.testing.assert_allclose(clf.predict(images, oversample=False), by_hand(model, images),
                               rtol=1e-4, atol=1e-6)


@pytest.fixture
def image(tmp_path):
    rgb = np.random.RandomState(3).randint(0, 256, (20, 24, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "im.png")
    return str(tmp_path / "im.png"), rgb / np.float32(255)


def test_detector_windows(model, image):
    path, im = image
    det = caffe.Detector(model[0], model[1], mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0),
                         input_scale=0.5)
    windows = np.array([[2, 3, 12, 15], [0, 0, 8, 8], [5, 1, 19, 9]])
    found = det.detect_windows(zip([path], [windows]))         # a one-pass iterable, as py3's zip
    assert [d["filename"] for d in found] == [path] * 3
    for d, w in zip(found, windows):
        np.testing.assert_array_equal(d["window"], w)
    want = by_hand(model, [im[a:c, b:e] for a, b, c, e in windows])
    np.testing.assert_allclose(np.array([d["prediction"] for d in found]), want, rtol=1e-4, atol=1e-6)
    with pytest.raises(NotImplementedError, match="selective search is not available"):
        det.detect_selective_search([path])


def test_detector_context_crop_by_hand(model, image):
    _, im = image
    det = caffe.Detector(model[0], model[1], mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0),
                         context_pad=1)
    assert tuple(det.crop_dims) == (8, 8, 3)
    # window (0, 0, 6, 6): 7x7 scaled by 8/6 around (3.5, 3.5) is the box -1..8 (10 wide, so 8/10
    # of a pixel each); beyond the image one row/column of mean, then im[0:8] (pycaffe's exclusive
    # end) warped to round(9 * 0.8) = 7
    crop = det.crop(im, np.array([0, 0, 6, 6]))
    assert crop.shape == (8, 8, 3)
    rgb_mean = MEAN[::-1] / 255
    np.testing.assert_allclose(crop[0], np.tile(rgb_mean, (8, 1)), rtol=1e-6)
    np.testing.assert_allclose(crop[:, 0], np.tile(rgb_mean, (8, 1)), rtol=1e-6)
    np.testing.assert_allclose(crop[1:, 1:], caffe.io.resize_image(im[0:8, 0:8], (7, 7)), rtol=1e-6)
    inner = det.crop(im, np.array([6, 6, 12, 12]))            # inside: the box 5..14, warped whole
    np.testing.assert_allclose(inner, caffe.io.resize_image(im[5:14, 5:14], (8, 8)), rtol=1e-6)
