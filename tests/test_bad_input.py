"""Bad files given to the commands (issue 12): binary for text, swapped flags, empty, forged, truncated.
Each ends with one line `minicaffe <cmd>: error: ...` on stderr, a non-zero exit and no traceback."""
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe.compress import mcz
from minicaffe import minicaffe_pb2 as pb
from minicaffe.cli import main
from minicaffe.errors import CaffeError
from nets import TINY_NET, write_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny net's prototxt, solver and weights, and an assortment of bad files beside them."""
    d = tmp_path_factory.mktemp("bad")
    solver = write_tiny(d)
    net = minicaffe.Net(str(d / "net.prototxt"), minicaffe.TEST)
    net.save(str(d / "w.caffemodel"))
    mcz.write(str(d / "w.mcz"), net.to_proto())
    (d / "empty.prototxt").write_bytes(b"")
    (d / "empty.caffemodel").write_bytes(b"")
    (d / "stray.prototxt").write_bytes(TINY_NET.encode().replace(b'"tiny"', b'"tiny"\n# caf\xe9'))
    (d / "short.mcz").write_bytes((d / "w.mcz").read_bytes()[:100])
    huge = io.read_weights(str(d / "w.caffemodel"))
    next(lp for lp in huge.layer if lp.name == "conv1").blobs[0].shape.dim[:] = [10 ** 12, 3]
    (d / "huge.caffemodel").write_bytes(huge.SerializeToString())
    return {"dir": d, "solver": solver, **{p.name: str(p) for p in d.iterdir()}}


def one_error_line(err, cmd, pattern):
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"minicaffe {cmd}: error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_through_the_command_line(files):
    """The issue's cases as a user meets them, in processes of their own, run side by side."""
    f = files
    cases = [(["test", f"--model={f['w.caffemodel']}", f"--weights={f['w.caffemodel']}"],
              r"w\.caffemodel:\d+:\d+: byte 0x[0-9a-f]{2} is not text: the file looks binary"),
             (["test", f"--model={f['w.caffemodel']}", f"--weights={f['net.prototxt']}"],    # swapped
              r"w\.caffemodel:\d+:\d+: .*looks binary"),
             (["train", f"--solver={f['w.caffemodel']}"], r"w\.caffemodel:\d+:\d+: .*looks binary"),
             (["train", f"--solver={f['empty.prototxt']}"], r"exactly one train net"),
             (["test", f"--model={f['empty.prototxt']}", f"--weights={f['w.caffemodel']}"], r"empty"),
             (["time", f"--model={f['empty.prototxt']}"], r"empty")]
    procs = [subprocess.Popen([sys.executable, "-m", "minicaffe.cli", *args], cwd=ROOT, text=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for args, _ in cases]
    for p, (args, pattern) in zip(procs, cases):
        err = p.communicate(timeout=120)[1]
        assert p.returncode != 0, args
        one_error_line(err, args[0], pattern)


@pytest.mark.parametrize("cmd,pattern", [
    ("test --model=stray.prototxt --weights=w.caffemodel",
     r"stray\.prototxt:3:6: byte 0xe9 is not text: a stray binary byte"),
    ("test --model=net.prototxt --weights=net.prototxt",
     r"not a valid caffemodel file; it looks like a text"),
    ("test --model=net.prototxt --weights=empty.caffemodel", r"empty\.caffemodel: the file is empty"),
    ("test --model=net.prototxt --weights=huge.caffemodel",
     r"layer 'conv1' blob 0: shape \(1000000000000, 3\) of 3000000000000 values, beyond the 2147483647"),
    ("test --model=net.prototxt --weights=short.mcz", r"short\.mcz: checksum mismatch"),
    ("train --solver=solver --snapshot=w.caffemodel", r"w\.caffemodel: holds nothing a solverstate holds"),
    ("train --solver=solver --weights=solver", r"not a valid caffemodel file; it looks like a text"),
    ("test --model=net.prototxt --weights=/dev/zero", r"cannot read /dev/zero: not a regular file"),
])
def test_in_process(files, capsys, cmd, pattern):
    args = [a.split("=")[0] + "=" + files.get(a.split("=")[1], a.split("=")[1]) if "=" in a else a
            for a in cmd.split()]
    assert main(args) == 1
    one_error_line(capsys.readouterr().err, args[0], pattern)


# ---------------------------------------------------------------- readers
def test_text_errors_name_line_and_column(tmp_path):
    p = tmp_path / "n.prototxt"
    for data, pattern in [(b'name: "x"\nlayer {\n  name: "\xff"', r"n\.prototxt:3:10: byte 0xff .*stray"),
                          (b"\x00\x01\x02\x03" * 50, r"n\.prototxt:1:1: byte 0x00 .*looks binary"),
                          (b'name: "\xc3\xa9t\xc3\xa9" \x07', r"n\.prototxt:1:13: byte 0x07")]:
        p.write_bytes(data)
        with pytest.raises(CaffeError, match=pattern):
            io.read_net(str(p))
    p.write_bytes(b'\xef\xbb\xbfname: "bom"')        # a byte order mark is not an error
    assert io.read_net(str(p)).name == "bom"
    p.write_bytes('name: "été"'.encode())
    assert io.read_net(str(p)).name == "été"


def blob_file(tmp_path, **kw):
    shape = kw.pop("shape", None)
    data = kw.pop("data", [])
    bp = pb.BlobProto(**kw)
    if shape is not None:
        bp.shape.dim.extend(shape)
    bp.data.extend(data)
    p = tmp_path / "b.binaryproto"
    p.write_bytes(bp.SerializeToString())
    return str(p)


@pytest.mark.parametrize("kw,pattern", [
    (dict(shape=[2, 3], data=[1] * 5), r"shape \(2, 3\) needs 6 values, the file holds 5"),
    (dict(shape=[10 ** 12, 10 ** 12], data=[1]), r"of 1000000000000000000000000 values, beyond"),
    (dict(shape=[2 ** 24, 2 ** 26, 2 ** 26, 0]), r"of \d+ values, beyond"),      # zero values, yet too big
    (dict(shape=[3, 0], data=[1]), r"needs 0 values, the file holds 1"),
    (dict(shape=[-2, -3], data=[1] * 6), r"negative dimension"),
    (dict(shape=[2 ** 32, 2 ** 32], data=[1]), r"of 18446744073709551616 values"),   # wraps to 0 in int64
    (dict(num=-1, channels=-1, height=1, width=1, data=[1]), r"negative dimension"),
    (dict(num=2, channels=3, data=[1] * 6), r"\(2, 3, 0, 0\) needs 0 values"),
    (dict(shape=[1] * 40, data=[1]), r"40 axes"),
    (dict(shape=[2], data=[1, 2], diff=[1]), r"needs 2 diff values, the file holds 1"),
])
def test_forged_blob_shapes_are_refused(tmp_path, kw, pattern):
    with pytest.raises(CaffeError, match=r"b\.binaryproto: .*" + pattern):
        io.read_blobproto(blob_file(tmp_path, **kw))


def test_double_data_wins_as_in_caffe(tmp_path):
    bp = pb.BlobProto()
    bp.shape.dim.extend([2])
    bp.data.extend([1, 2, 3])          # ignored: Caffe reads double_data when there is any
    bp.double_data.extend([4, 5])
    np.testing.assert_array_equal(io.blob_to_array(bp), [4, 5])


def test_hdf5_datasets_are_checked_before_reading(tmp_path):
    p = str(tmp_path / "w.caffemodel.h5")

    def make(fill):
        with h5py.File(p, "w") as f:
            fill(f)
        return p
    cases = [
        (lambda f: f.create_dataset("data/ip/0", shape=(40000, 40000), dtype="f4"),
         r"claims shape \(40000, 40000\) \(6400000000 bytes\), more than the file"),  # no storage: fill value
        (lambda f: f.create_dataset("data/ip/0", shape=(10 ** 6, 10 ** 6), dtype="f4"),
         r"beyond the 2147483647 a blob can hold"),
        (lambda f: f.create_dataset("data/ip/0", data=np.array([b"ab", b"cd"])), r"holds \|S2"),
        (lambda f: f.create_group("data/ip/0"), r"'/data/ip/0' is not a dataset"),
        (lambda f: f.create_dataset("data", data=np.zeros(3)), r"'/data' is not a group"),
        (lambda f: f.create_group("nodata"), r"no 'data' in /"),
        (lambda f: f.__setitem__("data", h5py.ExternalLink("/etc/passwd", "/")), r"'/data' is a link"),
    ]
    for fill, pattern in cases:
        with pytest.raises(CaffeError, match=r"w\.caffemodel\.h5: .*" + pattern):
            io.read_weights(make(fill))
    s = str(tmp_path / "s.solverstate.h5")
    with h5py.File(s, "w") as f:
        f["iter"] = np.int64(2 ** 40)
        f["learned_net"] = b"w.caffemodel"
        f["current_step"] = 0
        f.create_group("history")
    with pytest.raises(CaffeError, match=r"'iter' is not an integer"):
        io.read_solverstate(s)


def test_caffe_hdf5_solverstate_with_one_element_arrays(tmp_path):
    """Caffe's hdf5_save_int writes a one-element array, not a scalar."""
    s = str(tmp_path / "s.solverstate.h5")
    with h5py.File(s, "w") as f:
        f["iter"] = np.array([7], np.int32)
        f["learned_net"] = b"w.caffemodel"
        f["current_step"] = np.array([1], np.int32)
        f["history/0"] = np.ones((2, 3), np.float32)
    st = io.read_solverstate(s)
    assert (st.iter, st.learned_net, st.current_step) == (7, "w.caffemodel", 1)
    assert io.blob_to_array(st.history[0]).shape == (2, 3)


def test_hdf5_model_under_another_name(files, tmp_path):
    net = minicaffe.Net(files["net.prototxt"], minicaffe.TEST)
    net.save(str(tmp_path / "w.caffemodel.h5"))
    os.rename(tmp_path / "w.caffemodel.h5", tmp_path / "w.caffemodel")
    other = minicaffe.Net(files["net.prototxt"], str(tmp_path / "w.caffemodel"), minicaffe.TEST)
    np.testing.assert_array_equal(other.params["ip1"][0].data, net.params["ip1"][0].data)


def test_variable_length_string_heap_is_read_safely(tmp_path):
    """Older minicaffe wrote learned_net as a variable-length string; it still reads. HDF5 itself
    loops forever on a global heap whose first object is zeroed: minicaffe finds the string itself."""
    s = tmp_path / "s.solverstate.h5"
    with h5py.File(s, "w") as f:
        f["iter"] = 3
        f["learned_net"] = "dir/é.caffemodel".encode()       # bytes: a variable-length string
        f["current_step"] = 0
        f.create_group("history")
    assert io.read_solverstate(str(s)).learned_net == "dir/é.caffemodel"
    data = bytearray(s.read_bytes())
    heap = data.find(b"GCOL\x01")
    data[heap + 16:heap + 32] = bytes(16)          # object 0 of size 0: HDF5's reader never advances
    s.write_bytes(data)
    with pytest.raises(CaffeError, match="'/learned_net': its string is not in the heap"):
        io.read_solverstate(str(s))


def test_string_fields_that_are_not_utf8(tmp_path):
    net = pb.NetParameter()
    net.layer.add(name="ip", type="InnerProduct")
    raw = net.SerializeToString().replace(b"ip", b"i\xff")
    p = tmp_path / "w.caffemodel"
    p.write_bytes(raw)
    with pytest.raises(CaffeError, match="the name field of a LayerParameter is not UTF-8"):
        io.read_weights(str(p))


def encoded(fmt, size=(7, 6), mode="RGB"):
    from PIL import Image
    import io as _io
    buf = _io.BytesIO()
    Image.new(mode, size, 90).save(buf, fmt)
    return buf.getvalue()


def forged_png(width, height):
    """A small PNG whose header claims another size (its checksum fixed up)."""
    import struct
    import zlib
    data = bytearray(encoded("PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


@pytest.mark.parametrize("d,pattern", [
    (pb.Datum(channels=3, height=2, width=2, data=bytes(11)), r"3x2x2 needs 12 values, it holds 11"),
    (pb.Datum(channels=0, height=2, width=2), r"0x2x2 .*each must be > 0"),
    (pb.Datum(channels=-1, height=-4, width=2, data=bytes(8)), r"each must be > 0"),
    (pb.Datum(channels=2 ** 31 - 1, height=2 ** 31 - 1, width=2, data=bytes(8)),
     r"needs \d+ values, it holds 8"),
    (pb.Datum(encoded=True, data=b"not an image"), r"does not decode as an image"),
    (pb.Datum(encoded=True, data=encoded("PNG")[:40]), r"does not decode as an image"),
    (pb.Datum(encoded=True, data=forged_png(8000, 8000)), r"claims a 8000x8000 image"),
    (pb.Datum(encoded=True, data=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
     r"does not decode"),                  # EPS would run Ghostscript: not a format Caffe reads
])
def test_bad_datums(d, pattern):
    from minicaffe.transform import decode_datum
    with pytest.raises(CaffeError, match=pattern):
        decode_datum(d)


def test_solverstate_learned_net_must_be_a_path(tmp_path):
    p = tmp_path / "s.solverstate"
    p.write_bytes(pb.SolverState(iter=1, learned_net="a\nb.caffemodel").SerializeToString())
    with pytest.raises(CaffeError, match=r"learned_net 'a\\nb.caffemodel' is not a file name"):
        io.read_solverstate(str(p))


def test_data_layer_names_the_bad_entry(tmp_path):
    good = io.datum(np.zeros((1, 4, 4), np.uint8), 0).SerializeToString()
    bad = pb.Datum(channels=1, height=4, width=4, data=bytes(15)).SerializeToString()
    io.write_lmdb(str(tmp_path / "db"), [(b"000", good), (b"001", bad)])
    net = io.parse_text(f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ '
                        f'source: "{tmp_path}/db" batch_size: 2 backend: LMDB }} }}', pb.NetParameter())
    with pytest.raises(CaffeError, match=r"layer 'd' \(Data\): LMDB .*db': the entry b'001': a Datum of "
                                         r"shape 1x4x4 needs 16 values, it holds 15"):
        minicaffe.Net(net, minicaffe.TRAIN)


def test_labels_and_fillers_out_of_range_are_clear_errors():
    from gradcheck import forward, make_layer
    from minicaffe.filler import fill
    x = np.zeros((3, 4), np.float32)
    for label in (np.nan, 7, -2):
        for t in ('type: "SoftmaxWithLoss"', 'type: "Accuracy"'):
            layer, bottom, top = make_layer(t, [x, np.array([0, label, 1], np.float32)])
            with pytest.raises(CaffeError, match=r"label .* is outside \[0, 4\)"):
                forward(layer, bottom, top)
    with pytest.raises(CaffeError, match="std must not be negative"):
        fill(pb.FillerParameter(type="gaussian", std=-1), (2, 2))
    assert fill(pb.FillerParameter(type="xavier"), (0, 3)).shape == (0, 3)
