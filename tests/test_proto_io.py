"""Schema drift, file formats (caffemodel, h5, solverstate, binaryproto), legacy upgrades."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_module_matches_schema(tmp_path):
    """Regenerate with the pinned protoc (grpcio-tools) and compare with the committed module."""
    pytest.importorskip("grpc_tools", reason="pip install -e .[test] installs the pinned grpcio-tools")
    subprocess.check_call([sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}/proto",
                           f"--python_out={tmp_path}", f"{ROOT}/proto/minicaffe.proto"])
    fresh = (tmp_path / "minicaffe_pb2.py").read_text()
    committed = open(os.path.join(ROOT, "minicaffe", "minicaffe_pb2.py")).read()
    assert fresh == committed, "proto/minicaffe.proto changed: regenerate minicaffe/minicaffe_pb2.py"


def test_field_numbers_of_caffe_and_pruning_fields():
    f = pb.ConvolutionParameter.DESCRIPTOR.fields_by_name
    assert (f["sparse_ratio"].number, f["class_num"].number, f["quantize_term"].number) == (19, 20, 21)
    assert f["class_num"].default_value == 256
    f = pb.InnerProductParameter.DESCRIPTOR.fields_by_name
    assert (f["sparse_ratio"].number, f["class_num"].number, f["quantize_term"].number) == (7, 8, 9)
    assert f["class_num"].default_value == 32
    lp = pb.LayerParameter.DESCRIPTOR.fields_by_name
    assert lp["convolution_param"].number == 106 and lp["inner_product_param"].number == 117
    assert pb.NetParameter.DESCRIPTOR.fields_by_name["layer"].number == 100
    assert pb.SolverParameter.DESCRIPTOR.fields_by_name["type"].number == 40


def test_caffemodel_bytes_as_caffe_writes_them(tmp_path):
    """A caffemodel encoded field by field on the wire (name=1, layer=100, blobs=7, shape=7, data=5)."""
    def varint(n):
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            out += bytes([b | (0x80 if n else 0)])
            if not n:
                return out

    def field(num, payload):
        return varint(num << 3 | 2) + varint(len(payload)) + payload
    data = np.arange(6, dtype="<f4")
    shape = field(1, varint(2) + varint(3))                      # packed int64 dims
    blob = field(5, data.tobytes()) + field(7, shape)     # C++ writes fields in number order
    layer = field(1, b"ip") + field(2, b"InnerProduct") + field(7, blob)
    raw = field(1, b"net") + field(100, layer)
    p = tmp_path / "m.caffemodel"
    p.write_bytes(raw)
    net = io.read_weights(str(p))
    assert net.layer[0].name == "ip"
    np.testing.assert_array_equal(io.blob_to_array(net.layer[0].blobs[0]), data.reshape(2, 3))
    assert net.SerializeToString() == raw   # and we write the same bytes back


def test_legacy_blob_and_double_data():
    bp = pb.BlobProto(num=1, channels=1, height=2, width=2)
    bp.double_data.extend([1, 2, 3, 4])
    assert io.blob_to_array(bp).shape == (1, 1, 2, 2)
    assert io.blob_to_array(bp).dtype == np.float32


def test_binaryproto_and_h5_round_trip(tmp_path):
    a = np.random.rand(1, 3, 4, 4).astype(np.float32)
    io.write_blobproto(str(tmp_path / "mean.binaryproto"), a)
    np.testing.assert_array_equal(io.read_blobproto(str(tmp_path / "mean.binaryproto")), a)
    net = minicaffe.Net(os.path.join(ROOT, "models/lenet/lenet.prototxt"), minicaffe.TEST)
    for ext in (".caffemodel", ".caffemodel.h5"):
        path = str(tmp_path / ("w" + ext))
        net.save(path)
        other = minicaffe.Net(os.path.join(ROOT, "models/lenet/lenet.prototxt"), path, minicaffe.TEST)
        for name in net.params:
            for x, y in zip(net.params[name], other.params[name]):
                np.testing.assert_array_equal(x.data, y.data)


def test_v1_layers_and_net_inputs_are_upgraded():
    text = """
    name: "old"
    input: "data"
    input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 4
    layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 2
             weight_decay: 1 weight_decay: 0
             convolution_param { num_output: 2 kernel_size: 3 } }
    layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
    """
    net = io.upgrade_net(io.parse_text(text, pb.NetParameter()))
    assert [l.type for l in net.layer] == ["Input", "Convolution", "ReLU"]
    assert net.layer[1].param[1].lr_mult == 2 and net.layer[1].param[1].decay_mult == 0
    n = minicaffe.Net(net, minicaffe.TEST)
    assert n.blobs["conv"].shape == (2, 2, 2, 2)


def test_bad_files_give_clear_errors(tmp_path):
    p = tmp_path / "bad.prototxt"
    p.write_text('name: "x"\nlayer {\n  nmae: "conv"\n}\n')
    with pytest.raises(CaffeError, match=r"bad.prototxt:3:\d+: .*nmae"):
        io.read_net(str(p))
    g = tmp_path / "garbage.caffemodel"
    g.write_bytes(b"\xff\xff\xff\xff")
    with pytest.raises(CaffeError, match="garbage.caffemodel"):
        io.read_weights(str(g))


@pytest.fixture
def umask():
    """Set the process umask for a test, and put the old one back."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


def test_written_files_get_the_umask_permissions(tmp_path, umask):
    """Caffe's files are 0644 under the usual umask 022, so others on a shared server can read
    snapshots; mkstemp's 0600 must not leak through the atomic write."""
    from minicaffe.compress import mcz
    net = minicaffe.Net(os.path.join(ROOT, "models/lenet/lenet.prototxt"), minicaffe.TEST)
    st = pb.SolverState(iter=1, learned_net="x")
    io.array_to_blob(np.zeros(3), st.history.add())
    writers = {"w.caffemodel": lambda p: net.save(p), "w.caffemodel.h5": lambda p: net.save(p),
               "s.solverstate": lambda p: io.write_solverstate(p, st),
               "s.solverstate.h5": lambda p: io.write_solverstate(p, st),
               "m.binaryproto": lambda p: io.write_blobproto(p, np.zeros((1, 2))),
               "w.mcz": lambda p: mcz.write(p, net.to_proto()),
               "n.prototxt": lambda p: io.write_text(p, pb.NetParameter(name="n"))}
    for mask, mode in ((0o022, 0o644), (0o077, 0o600), (0o002, 0o664)):
        umask(mask)
        assert io.umask() == mask
        for name, write in writers.items():
            path = str(tmp_path / f"{mask:o}-{name}")
            write(path)
            assert os.stat(path).st_mode & 0o777 == mode, (name, oct(mask))
