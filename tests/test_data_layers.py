"""Data layers and the transformer: LMDB Data, ImageData, HDF5Data, MemoryData, mean/crop/mirror/scale."""
import os

import h5py
import numpy as np
import pytest
from PIL import Image

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError
from minicaffe.transform import Transformer


def net(text, phase=pb.TRAIN):
    return minicaffe.Net(io.parse_text(text, pb.NetParameter()), phase)


def make_lmdb(path, n=10, shape=(3, 6, 6)):
    rs = np.random.RandomState(0)
    imgs = rs.randint(0, 256, (n,) + shape).astype(np.uint8)
    io.write_lmdb(path, ((f"{i:05d}".encode(), io.datum(im, i).SerializeToString())
                         for i, im in enumerate(imgs)))
    return imgs


def test_lmdb_data_in_order_with_wraparound(tmp_path):
    imgs = make_lmdb(str(tmp_path / "db"))
    n = net(f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
      transform_param {{ scale: 0.5 }}
      data_param {{ source: "{tmp_path}/db" batch_size: 4 backend: LMDB }} }}""")
    labels = []
    for _ in range(3):
        out = n.forward()
        labels += n.blobs["label"].data.astype(int).tolist()
    assert labels == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    np.testing.assert_allclose(n.blobs["data"].data[2], imgs[0] * 0.5)   # batch 3 holds items 8,9,0,1
    assert set(out) == {"data", "label"}


def test_leveldb_and_missing_db_are_clear_errors(tmp_path):
    with pytest.raises(CaffeError, match="LEVELDB"):
        net(f'layer {{ name: "d" type: "Data" top: "data" data_param {{ source: "{tmp_path}/x" batch_size: 1 }} }}')
    with pytest.raises(CaffeError, match="not found"):
        net(f'layer {{ name: "d" type: "Data" top: "data" data_param {{ source: "{tmp_path}/x" '
            f'batch_size: 1 backend: LMDB }} }}')


def test_transformer_order_mean_crop_mirror_scale(tmp_path):
    rs = np.random.RandomState(1)
    x = rs.randint(0, 256, (4, 3, 8, 8)).astype(np.uint8)
    mean = rs.rand(1, 3, 8, 8).astype(np.float32) * 50
    io.write_blobproto(str(tmp_path / "mean.binaryproto"), mean)
    tp = pb.TransformationParameter(scale=0.1, crop_size=5, mean_file=str(tmp_path / "mean.binaryproto"))
    out = Transformer(tp, pb.TEST)(x, np.random.default_rng(0))
    np.testing.assert_allclose(out, ((x - mean)[:, :, 1:6, 1:6]) * 0.1, rtol=1e-5)   # center crop
    tp = pb.TransformationParameter(crop_size=5, mirror=True)
    tp.mean_value.extend([10, 20, 30])
    out = Transformer(tp, pb.TRAIN)(x, np.random.default_rng(3))
    centered = x.astype(np.float32) - np.array([10, 20, 30], np.float32)[:, None, None]
    for i in range(4):   # each output is some crop of its image, mirrored or not
        found = any(np.allclose(out[i], c[:, a:a + 5, b:b + 5])
                    for c in (centered[i], centered[i][:, :, ::-1]) for a in range(4) for b in range(4))
        assert found
    with pytest.raises(CaffeError, match="either mean_file or mean_value"):
        tp.mean_file = "m"
        Transformer(tp, pb.TRAIN)


def test_image_data(tmp_path):
    rs = np.random.RandomState(2)
    for i in range(3):
        Image.fromarray(rs.randint(0, 256, (5 + i, 7, 3)).astype(np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / "list.txt").write_text("0.png 7\n1.png 8\n2.png 9\n")
    n = net(f"""layer {{ name: "d" type: "ImageData" top: "data" top: "label"
      image_data_param {{ source: "{tmp_path}/list.txt" root_folder: "{tmp_path}/" batch_size: 2
        new_height: 6 new_width: 4 shuffle: true }} }}""")
    seen = []
    for _ in range(3):
        n.forward()
        assert n.blobs["data"].shape == (2, 3, 6, 4)
        seen += n.blobs["label"].data.astype(int).tolist()
    assert sorted(seen[:3]) == [7, 8, 9]      # each epoch visits every image once


def test_hdf5_data(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.arange(12, dtype=np.float32).reshape(6, 2)
        f["label"] = np.arange(6, dtype=np.float32)
    (tmp_path / "list.txt").write_text(f"{tmp_path}/a.h5\n")
    n = net(f"""layer {{ name: "d" type: "HDF5Data" top: "data" top: "label"
      hdf5_data_param {{ source: "{tmp_path}/list.txt" batch_size: 4 }} }}""")
    n.forward()
    n.forward()
    np.testing.assert_array_equal(n.blobs["label"].data, [4, 5, 0, 1])
    np.testing.assert_array_equal(n.blobs["data"].data[0], [8, 9])


def test_memory_data():
    n = net("""layer { name: "d" type: "MemoryData" top: "data" top: "label"
      memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }""")
    x = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    n.set_input_arrays(x, np.array([1, 2, 3, 4]))
    n.forward()
    n.forward()
    np.testing.assert_array_equal(n.blobs["data"].data, x[2:])
    np.testing.assert_array_equal(n.blobs["label"].data, [3, 4])


def test_digits_lenet_learns(trained_digits):
    """The default example's data and net, a short run: well above chance on the held-out split."""
    assert trained_digits[2] > 0.85
