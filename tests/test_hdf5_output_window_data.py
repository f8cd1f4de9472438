"""HDF5Output (Caffe's file, appended per forward, read back by HDF5Data) and WindowData (window file,
fg/bg sampling, context padding, OpenCV's bilinear warp, mean, scale, mirror)."""
import os

import h5py
import numpy as np
import pytest
from PIL import Image

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError
from minicaffe.layers.window_data import resize_linear, window_geometry


def net(text, phase=pb.TRAIN):
    return minicaffe.Net(io.parse_text(text, pb.NetParameter()), phase)


# ---------------------------------------------------------------- HDF5Output
def out_net(path, n=2):
    return net(f"""
    layer {{ name: "in" type: "Input" top: "data" top: "label"
      input_param {{ shape {{ dim: {n} dim: 3 dim: 2 }} shape {{ dim: {n} }} }} }}
    layer {{ name: "out" type: "HDF5Output" bottom: "data" bottom: "label"
      hdf5_output_param {{ file_name: "{path}" }} }}""")


def test_hdf5_output_writes_caffes_datasets_and_appends(tmp_path):
    path = tmp_path / "out.h5"
    n = out_net(path)
    with h5py.File(path, "r") as f:        # created at setup, as Caffe's H5Fcreate
        assert list(f) == []
    rs = np.random.RandomState(0)
    xs, ys = rs.randn(2, 2, 3, 2).astype(np.float32), np.array([[1, 2], [3, 4]], np.float32)
    n.forward(data=xs[0], label=ys[0])
    with h5py.File(path, "r") as f:        # one forward: exactly Caffe's file
        assert sorted(f) == ["data", "label"]
        assert f["data"].dtype == np.float32 and f["label"].dtype == np.float32
        assert f["data"].shape == (2, 3, 2, 1) and f["label"].shape == (2, 1, 1, 1)
        np.testing.assert_array_equal(f["data"][...][..., 0], xs[0])
    n.forward(data=xs[1], label=ys[1])
    with h5py.File(path, "r") as f:        # the second batch appended (Caffe fails here)
        np.testing.assert_array_equal(f["data"][...].reshape(4, 3, 2), xs.reshape(4, 3, 2))
        np.testing.assert_array_equal(f["label"][...].ravel(), [1, 2, 3, 4])
    assert os.listdir(tmp_path) == ["out.h5"]     # no temp file left behind

    (tmp_path / "list.txt").write_text(f"{path}\n")
    back = net(f"""layer {{ name: "d" type: "HDF5Data" top: "data" top: "label"
      hdf5_data_param {{ source: "{tmp_path}/list.txt" batch_size: 3 }} }}""")
    back.forward()
    np.testing.assert_array_equal(back.blobs["data"].data[..., 0], xs.reshape(4, 3, 2)[:3])
    np.testing.assert_array_equal(back.blobs["label"].data.ravel(), [1, 2, 3])


def test_hdf5_output_errors(tmp_path):
    with pytest.raises(CaffeError, match="file_name is required"):
        out_net("")
    n = net(f"""
    layer {{ name: "in" type: "Input" top: "data" top: "label"
      input_param {{ shape {{ dim: 2 dim: 3 }} shape {{ dim: 3 }} }} }}
    layer {{ name: "out" type: "HDF5Output" bottom: "data" bottom: "label"
      hdf5_output_param {{ file_name: "{tmp_path}/o.h5" }} }}""")
    with pytest.raises(CaffeError, match="same batch size, got 2 and 3"):
        n.forward()


# ---------------------------------------------------------------- WindowData
def bilinear_reference(img, oh, ow):
    """Plain float bilinear with half-pixel centres and clamped edges: OpenCV's up to its
    fixed-point rounding (at most 1 apart)."""
    h, w = img.shape[:2]
    out = np.zeros((oh, ow, img.shape[2]))
    for i in range(oh):
        for j in range(ow):
            y = min(max((i + 0.5) * h / oh - 0.5, 0), h - 1)
            x = min(max((j + 0.5) * w / ow - 0.5, 0), w - 1)
            y0, x0 = int(y), int(x)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1])
                         + fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))
    return out


@pytest.fixture
def images(tmp_path):
    rs = np.random.RandomState(3)
    rgb = [rs.randint(0, 256, s + (3,)).astype(np.uint8) for s in ((24, 30), (20, 20))]
    for i, a in enumerate(rgb):
        Image.fromarray(a).save(tmp_path / f"im{i}.png")
    return [a[:, :, ::-1].astype(np.float32) for a in rgb]       # BGR, as Caffe reads them


def window_net(tmp_path, windows, batch=4, fg_fraction=0.25, extra="", transform="crop_size: 8"):
    text = ""
    for i, ws in enumerate(windows):
        text += f"# {i}\nim{i}.png\n3\n24\n30\n{len(ws)}\n"
        text += "".join(" ".join(map(str, w)) + "\n" for w in ws)
    (tmp_path / "windows.txt").write_text(text)
    return net(f"""layer {{ name: "w" type: "WindowData" top: "data" top: "label"
      transform_param {{ {transform} }}
      window_data_param {{ source: "{tmp_path}/windows.txt" root_folder: "{tmp_path}/" batch_size: {batch}
        fg_threshold: 0.5 bg_threshold: 0.3 fg_fraction: {fg_fraction} {extra} }} }}""")


def test_window_data_sampling_and_labels(tmp_path, images):
    windows = [[(3, 0.8, 2, 3, 13, 17), (5, 0.1, 0, 0, 9, 9), (4, 0.4, 1, 1, 5, 5)],   # fg, bg, neither
               [(1, 0.9, 4, 4, 15, 15), (2, 0.2, 10, 10, 19, 19)]]
    n = window_net(tmp_path, windows, batch=10, fg_fraction=0.25)
    labels = []
    for _ in range(6):
        n.forward()
        assert n.blobs["data"].shape == (10, 3, 8, 8) and n.blobs["label"].shape == (10,)
        lab = n.blobs["label"].data.copy()
        np.testing.assert_array_equal(lab[:8], 0)         # int(10 * 0.25) = 2 fg, bg first, bg label 0
        assert set(lab[8:]) <= {1, 3}
        labels += list(lab[8:])
    assert set(labels) == {1, 3}                           # both fg windows get drawn, class 4 never


def test_window_data_warp_contents(tmp_path, images):
    # a 6x9 window warped to 8x8, scaled and mean-subtracted; only fg windows drawn
    n = window_net(tmp_path, [[(2, 0.9, 3, 5, 8, 13)], []], batch=2, fg_fraction=1.0,
                   extra="scale: 0.5", transform="crop_size: 8 mean_value: 10 mean_value: 20 mean_value: 30")
    n.forward()
    patch = resize_linear(images[0][5:14, 3:9].astype(np.uint8), 8, 8).astype(np.float32)
    want = (patch - [10, 20, 30]) * 0.5
    for k in range(2):
        np.testing.assert_allclose(n.blobs["data"].data[k], want.transpose(2, 0, 1), rtol=1e-6)
    np.testing.assert_array_equal(n.blobs["label"].data, [2, 2])
    np.testing.assert_allclose(patch, bilinear_reference(images[0][5:14, 3:9], 8, 8), atol=1.0)


def test_window_data_scale_is_window_data_params_only(tmp_path, images):
    """Caffe's load_batch scales by window_data_param.scale (default 1), never transform_param's."""
    n = window_net(tmp_path, [[(2, 0.9, 3, 5, 8, 13)], []], batch=1, fg_fraction=1.0,
                   transform="crop_size: 8 scale: 0.5")
    n.forward()
    patch = resize_linear(images[0][5:14, 3:9].astype(np.uint8), 8, 8).astype(np.float32)
    np.testing.assert_array_equal(n.blobs["data"].data[0], patch.transpose(2, 0, 1))


def test_window_data_thresholds_compare_floats_fg_first(tmp_path, images):
    """Overlaps are read into floats: 0.3 meets a 0.3 fg_threshold (in double it would fall
    short of the float 0.3); a window meeting both thresholds is foreground only (else-if)."""
    (tmp_path / "windows.txt").write_text("# 0\nim0.png\n3\n24\n30\n2\n"
                                          "1 0.3 0 0 5 5\n2 0.35 2 2 9 9\n")
    n = net(f"""layer {{ name: "w" type: "WindowData" top: "data" top: "label"
      transform_param {{ crop_size: 4 }}
      window_data_param {{ source: "{tmp_path}/windows.txt" root_folder: "{tmp_path}/" batch_size: 4
        fg_threshold: 0.3 bg_threshold: 0.4 fg_fraction: 1 }} }}""")
    layer = n.layers[0]
    assert len(layer.fg) == 2 and len(layer.bg) == 0


def test_resize_is_identity_and_exact_halving():
    rs = np.random.RandomState(4)
    img = rs.randint(0, 256, (6, 10, 3)).astype(np.uint8)
    np.testing.assert_array_equal(resize_linear(img, 6, 10), img)
    half = img.astype(int).reshape(3, 2, 5, 2, 3).sum((1, 3))
    np.testing.assert_array_equal(resize_linear(img, 3, 5), (half + 2) // 4)
    big = resize_linear(img, 11, 17)
    assert np.abs(big.astype(float) - bilinear_reference(img.astype(float), 11, 17)).max() <= 1


def test_context_padding_geometry_by_hand():
    # box 6x6 at the corner, crop 8, pad 1: context scale 8/6 makes it 9x9 from -1 to 7, of which
    # 8x8 lie in the image; warped by 8/9 to 7x7 after a padding of round(8/9) = 1
    assert window_geometry((0, 0, 5, 5), 20, 20, 8, 1, False, False) == ((0, 0, 7, 7), (7, 7), (1, 1))
    # mirrored: the padding moves to the side the image does not run out on (none there)
    assert window_geometry((0, 0, 5, 5), 20, 20, 8, 1, False, True) == ((0, 0, 7, 7), (7, 7), (1, 0))
    # square: a 4 wide, 8 tall box becomes 8x8 around its centre (4, 7)
    assert window_geometry((2, 3, 5, 10), 20, 20, 8, 0, True, False) == ((0, 3, 8, 11), (8, 8), (0, 0))
    assert window_geometry((2, 3, 5, 10), 20, 20, 8, 0, False, False) == ((2, 3, 5, 10), (8, 8), (0, 0))


def test_context_pad_mirror_and_mean_file(tmp_path, images):
    mean = np.random.RandomState(6).rand(1, 3, 12, 12).astype(np.float32) * 40
    io.write_blobproto(str(tmp_path / "mean.binaryproto"), mean)
    n = window_net(tmp_path, [[(1, 0.9, 0, 0, 5, 5)], []], batch=8, fg_fraction=1.0,
                   extra="context_pad: 1",
                   transform=f'crop_size: 8 mirror: true mean_file: "{tmp_path}/mean.binaryproto"')
    patch = resize_linear(images[0][0:8, 0:8].astype(np.uint8), 7, 7).transpose(2, 0, 1).astype(np.float32)
    m = mean[0, :, 2:10, 2:10]                       # mean_off = (12 - 8) / 2
    plain = np.zeros((3, 8, 8), np.float32)
    plain[:, 1:, 1:] = patch - m[:, 1:, 1:]
    flipped = np.zeros((3, 8, 8), np.float32)
    flipped[:, 1:, :7] = patch[:, :, ::-1] - m[:, 1:, :7]
    seen = set()
    for _ in range(3):
        n.forward()
        for x in n.blobs["data"].data:
            if np.allclose(x, plain, atol=1e-4):
                seen.add("plain")
            else:
                np.testing.assert_allclose(x, flipped, atol=1e-4)
                seen.add("flipped")
    assert seen == {"plain", "flipped"}


def test_window_file_errors(tmp_path, images):
    def layer(text):
        (tmp_path / "w.txt").write_text(text)
        return net(f"""layer {{ name: "w" type: "WindowData" top: "data" top: "label"
          transform_param {{ crop_size: 4 }}
          window_data_param {{ source: "{tmp_path}/w.txt" root_folder: "{tmp_path}/" batch_size: 2
            fg_fraction: 1 }} }}""")
    for text, match in [
            ("# 0\nim0.png\n3 24 30\n1\n1 0.9 a 2 3 4\n", "w.txt:5: expected x1, got 'a'"),
            ("im0.png\n3 24 30\n1\n1 0.9 1 2 3 4\n", "w.txt:1: expected '# image_index', got 'im0.png'"),
            ("# 1\nim0.png\n3 24 30\n1\n1 0.9 1 2 3 4\n", "image index 1, expected 0"),
            ("# 0\nim0.png\n3 24 30\n1\n1 0.9 1 2 3\n", "ends where y2 was expected"),
            ("\n", "is empty"),
            ("# 0\nim0.png\n3 24 30\n1\n1 0.1 1 2 3 4\n", "no foreground"),
            ("# 0\nim0.png\n3 24 30\n1\n1 0.9 20 2 31 4\n", "outside its 30x24 image")]:
        with pytest.raises(CaffeError, match=match):
            layer(text)
    with pytest.raises(CaffeError, match="cannot read window file"):
        net(f"""layer {{ name: "w" type: "WindowData" top: "data" top: "label"
          transform_param {{ crop_size: 4 }}
          window_data_param {{ source: "{tmp_path}/nope.txt" batch_size: 2 }} }}""")
