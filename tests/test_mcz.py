"""The .mcz compressed format: lossless round trip, loading, and hostile files."""
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe.compress import mcz
from minicaffe.compress.mask import magnitude_mask
from minicaffe.compress.sharing import WeightSharing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "models/lenet/lenet.prototxt")
RATIOS = {"conv1": 0.34, "conv2": 0.88, "ip1": 0.92, "ip2": 0.81}   # the digits recipe


@pytest.fixture(scope="module")
def compressed_lenet(tmp_path_factory):
    """LeNet pruned as the digits recipe does, with weights shared in every layer."""
    d = tmp_path_factory.mktemp("mcz")
    net = minicaffe.Net(LENET, minicaffe.TEST)
    for name, r in RATIOS.items():
        w = net.params[name][0].data
        m = magnitude_mask(w, r)
        w[...] = np.where(m != 0, w, np.float32(0))
        WeightSharing(w, m, 256 if name.startswith("conv") else 32).quantize(w)
    path = str(d / "lenet.caffemodel")
    net.save(path)
    return net, path, d


def blobs(path):
    return {lp.name: [io.blob_to_array(b) for b in lp.blobs] for lp in io.read_weights(path).layer
            if len(lp.blobs)}


def run(*args):
    return subprocess.run([sys.executable, "-m", "minicaffe.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_round_trip_is_bit_exact_and_small(compressed_lenet):
    net, path, d = compressed_lenet
    r = run("compress", f"--model={LENET}", f"--weights={path}", "-o", str(d / "l.mcz"))
    assert r.returncode == 0, r.stderr
    assert "total" in r.stdout and "bits/w" in r.stdout
    r = run("decompress", str(d / "l.mcz"), "-o", str(d / "back.caffemodel"))
    assert r.returncode == 0, r.stderr
    a, b = blobs(path), blobs(str(d / "back.caffemodel"))
    assert a.keys() == b.keys()
    for name in a:
        for x, y in zip(a[name], b[name]):
            assert x.shape == y.shape
            np.testing.assert_array_equal(x.view(np.uint32), y.view(np.uint32))
    # the trained digits model gives 38x; these untrained weights give 50x
    assert os.path.getsize(path) / os.path.getsize(d / "l.mcz") > 35


def test_net_and_inspect_read_mcz(compressed_lenet):
    net, path, d = compressed_lenet
    out = str(d / "n.mcz")
    mcz.write(out, io.read_weights(path))
    other = minicaffe.Net(LENET, out, minicaffe.TEST)
    x = np.random.rand(64, 1, 28, 28).astype(np.float32)
    for name, ps in net.params.items():
        for a, b in zip(ps, other.params[name]):
            np.testing.assert_array_equal(a.data.view(np.uint32), b.data.view(np.uint32))
    # each net times dense against sparse products and may pick another: rounding may differ
    np.testing.assert_allclose(other.forward(data=x)["prob"], net.forward(data=x)["prob"], rtol=1e-5)
    r = run("inspect", out)
    assert r.returncode == 0 and "ip1" in r.stdout and "92.00%" in r.stdout


def test_float16_only_for_dense_blobs(tmp_path):
    net = minicaffe.Net(LENET, minicaffe.TEST)
    p = net.to_proto()
    data, _ = mcz.encode(p, float16=True)
    back = mcz.decode(data)
    w = io.blob_to_array(back.layer[0].blobs[0])
    assert np.allclose(w, net.params["conv1"][0].data, atol=1e-3)
    assert len(data) < 0.55 * len(p.SerializeToString())


def hostile(compressed_lenet):
    net, path, d = compressed_lenet
    good, _ = mcz.encode(io.read_weights(path))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x40

    def recrc(b):
        return b + struct.pack("<I", zlib.crc32(b))
    body = good[:-4]
    # a header that claims 10^12 weights in the first blob (checksum fixed up, so only the bounds check stops it)
    name_len = struct.unpack("<H", body[12:14])[0]
    off = 14 + name_len
    type_len = struct.unpack("<H", body[off:off + 2])[0]
    off += 2 + type_len + 1     # blob count
    huge = bytearray(body)
    assert huge[off] == 4                       # conv1's weights: 4 axes
    huge[off + 1:off + 17] = struct.pack("<IIII", 1000000, 1000000, 1, 1)
    more_layers = bytearray(body)
    more_layers[8:12] = struct.pack("<I", 5)
    fewer = bytearray(body)
    fewer[8:12] = struct.pack("<I", 3)
    return {
        "truncated": (good[:len(good) // 3], "checksum|truncated"),
        "flipped": (bytes(flipped), "checksum"),
        "magic": (b"XXXX" + good[4:], "wrong magic"),
        "huge": (recrc(bytes(huge)), "more than the file can hold|truncated|beyond the"),
        "layers+": (recrc(bytes(more_layers)), "truncated|layer"),
        "layers-": (recrc(bytes(fewer)), "layer count"),
    }


@pytest.mark.parametrize("case", ["truncated", "flipped", "magic", "huge", "layers+", "layers-"])
def test_hostile_files_fail_cleanly(compressed_lenet, case):
    data, msg = hostile(compressed_lenet)[case]
    d = compressed_lenet[2]
    p = d / f"{case}.mcz"
    p.write_bytes(data)
    r = run("decompress", str(p), "-o", str(d / "x.caffemodel"))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and __import__("re").search(msg, lines[0]), r.stderr


def test_layer_set_must_match_the_net(compressed_lenet, tmp_path):
    net, path, d = compressed_lenet
    p = io.read_weights(path)
    del p.layer[-2]          # drop a layer with weights
    mcz.write(str(tmp_path / "short.mcz"), p)
    r = run("test", f"--model={LENET}", f"--weights={tmp_path}/short.mcz", "--iterations=1")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "compressed model has 3 layer(s)" in r.stderr


@pytest.mark.parametrize("text,shape", [
    ('type: "CmpInnerProduct" inner_product_param { num_output: 30 sparse_ratio: 0.9 '
     'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }', (5, 40)),
    ('type: "CmpConvolution" convolution_param { num_output: 6 kernel_size: 3 pad: 1 sparse_ratio: 0.8 '
     'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }', (2, 4, 7, 7))])
def test_sparse_inference_matches_dense(text, shape):
    """Every product gives the same outputs, whichever the measurement picks."""
    from gradcheck import forward, make_layer
    from minicaffe import minicaffe_pb2 as pb
    x = np.random.RandomState(0).randn(*shape).astype(np.float32)
    layer, bottom, top = make_layer(text, [x], phase=pb.TEST)
    results = {}
    for path in ("dense", "sparse", "sparse-1t"):
        forward(layer, bottom, top)
        layer.sparse.forced = path
        forward(layer, bottom, top)
        assert layer.path == path
        results[path] = top[0].data.copy()
    np.testing.assert_allclose(results["sparse"], results["dense"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(results["sparse-1t"], results["sparse"])
    train, tb, tt = make_layer(text, [x], phase=pb.TRAIN)
    train.blobs[0].data[...] = layer.blobs[0].data
    train.blobs[1].data[...] = layer.blobs[1].data
    forward(train, tb, tt)
    np.testing.assert_allclose(results["sparse"], tt[0].data, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m,k,p", [(37, 50, 1), (37, 50, 3), (9, 300, 1100), (5, 20, 1), (64, 70, 1),
                                   (11, 70000, 1), (11, 70000, 2)])
def test_sparse_product(m, k, p):
    """Rows of odd and even lengths and an empty one, slices full and padded, one column, a few,
    several 64-column blocks and a remainder, and columns past 2^16 (32-bit indices)."""
    from minicaffe.sparse import SlicedCSR
    rs = np.random.RandomState(3)
    w = rs.randn(m, k).astype(np.float32)
    w[rs.rand(m, k) < 0.85] = 0
    w[0] = 0                                  # an empty row
    x = rs.randn(k, p).astype(np.float32)
    ref = w.astype(np.float64) @ x
    for threads in (True, False):
        out = np.full((m, p), np.nan, np.float32)
        SlicedCSR(w).matmul(x, out, threads)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_sparse_inference_sees_weight_changes():
    """The CSR follows the weights: after a fetch of `data`, and through a reference taken before it
    was built (pycaffe's `W = net.params[name][0].data; net.forward(); W[0, :] = 0.5` idiom)."""
    from gradcheck import forward, make_layer
    from minicaffe import minicaffe_pb2 as pb
    text = ('type: "InnerProduct" inner_product_param { num_output: 30 '
            'weight_filler { type: "gaussian" } bias_term: false }')
    x = np.random.RandomState(0).randn(4, 40).astype(np.float32)
    layer, bottom, top = make_layer(text, [x], phase=pb.TEST)
    blob = layer.blobs[0]
    w = blob.data
    w[np.random.RandomState(1).rand(*w.shape) < 0.9] = 0
    del w
    assert not blob.held_elsewhere()

    def sparse_forward():
        forward(layer, bottom, top)
        layer.sparse.forced = "sparse"
        forward(layer, bottom, top)
        assert layer.path == "sparse"
        return top[0].data

    np.testing.assert_allclose(sparse_forward(), x @ blob.peek.T, rtol=1e-5, atol=1e-5)
    held = blob.data                           # kept across forwards, as pycaffe scripts do
    assert blob.held_elsewhere()
    sparse_forward()
    held[0, :] = 0.5                           # written after the CSR was built: still seen
    np.testing.assert_allclose(sparse_forward(), x @ held.T, rtol=1e-5, atol=1e-5)
    view = held[3]
    del held
    view[:] = -1                               # through a view of the array, too
    np.testing.assert_allclose(sparse_forward()[:, 3], -x.sum(1), rtol=1e-5)
    del view
    csr = layer.sparse.csr
    blob.data[5, :] *= 2                       # a fresh fetch: version moves, the CSR follows
    assert layer.sparse.csr is csr
    np.testing.assert_allclose(sparse_forward(), x @ blob.peek.T, rtol=1e-5, atol=1e-5)
    assert layer.sparse.csr is not csr
    csr = layer.sparse.csr
    forward(layer, bottom, top)                # nothing changed, nobody holds it: no rebuild
    assert layer.sparse.csr is csr


def test_blob_assignment_checks_the_shape():
    from minicaffe.blob import Blob
    from minicaffe.errors import CaffeError
    b = Blob((2, 3))
    b.data = np.ones((2, 3))
    assert b.data.dtype == np.float32 and b.data.sum() == 6
    with pytest.raises(CaffeError, match=r"shape \(3, 2\).*shape \(2, 3\).*reshape"):
        b.data = np.ones((3, 2))


def test_sparse_vector_product_in_forked_child():
    """A child forked after the OpenMP pool was used gets the right product instead of an abort."""
    import os
    from minicaffe.sparse import SlicedCSR
    rs = np.random.RandomState(5)
    w = rs.randn(40, 60).astype(np.float32)
    w[rs.rand(40, 60) < 0.9] = 0
    x = rs.randn(60, 1).astype(np.float32)
    out = np.empty((40, 1), np.float32)
    csr = SlicedCSR(w)
    csr.matmul(x, out)
    pid = os.fork()
    if pid == 0:
        out[...] = np.nan
        csr.matmul(x, out)
        os._exit(0 if np.allclose(out, w @ x, atol=1e-4) else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
