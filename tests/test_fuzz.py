"""Mutation fuzz of every reader of user files (issue 12): a mutated or truncated prototxt, caffemodel
(binary and HDF5), solverstate (binary and HDF5), binaryproto, .mcz or LMDB Datum either loads or
raises CaffeError -- never another exception, never an allocation beyond a bound set by the file's
size, never a hang.

Hypothesis runs with a fixed seed and few examples in CI; MINICAFFE_FUZZ_EXAMPLES=5000 runs each
target that many times to hunt for new bugs, and MINICAFFE_FUZZ_RANDOM=1 with new random cases."""
import faulthandler
import io as _io
import os
import shutil
import signal
import struct
import tracemalloc
import zlib
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minicaffe
from minicaffe import io, log
from minicaffe.compress import mcz
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError
from nets import TINY_NET, write_tiny

EXAMPLES = int(os.environ.get("MINICAFFE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(derandomize=not os.environ.get("MINICAFFE_FUZZ_RANDOM"), max_examples=EXAMPLES,
                deadline=timedelta(seconds=5), database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
HANG = 10           # seconds: a read still running then is a hang
SLACK = 1 << 20     # bytes any read may allocate whatever the file's size (tables, names, messages)

# (what, position, byte, length); positions wrap round the data, so every op applies somewhere
MUTATIONS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "copy", "truncate"]),
                               st.integers(0, 1 << 20), st.integers(0, 255), st.integers(1, 16)),
                     min_size=1, max_size=6)


def mutate(data, ops):
    b = bytearray(data)
    for op, pos, byte, n in ops:
        i = pos % (len(b) + 1)
        if op == "flip" and i < len(b):
            b[i] ^= 1 << (byte & 7)
        elif op == "set" and i < len(b):
            b[i] = byte
        elif op == "insert":
            b[i:i] = bytes([byte]) * n
        elif op == "delete":
            del b[i:i + n]
        elif op == "copy":      # a run of the file's own bytes elsewhere: repeated fields, lengths
            j = byte * len(b) // 256
            b[i:i] = b[j:j + 4 * n]
        elif op == "truncate":
            del b[i:]
    return bytes(b)


class Hang(BaseException):
    """Not an Exception, so that no reader's error handling can swallow it."""


def _hang(signum, frame):
    raise Hang(f"a read ran over {HANG} s")


def loads_or_refuses(read, path, data, per_byte, slack=SLACK):
    """read(path) of `data` returns or raises CaffeError, within HANG seconds, allocating (as far as
    tracemalloc sees: Python objects and NumPy arrays) at most per_byte * len(data) + slack bytes."""
    with open(path, "wb") as f:
        f.write(data)
    old = signal.signal(signal.SIGALRM, _hang)
    signal.setitimer(signal.ITIMER_REAL, HANG)
    faulthandler.dump_traceback_later(3 * HANG, exit=True)   # a hang in C code, which the alarm cannot stop
    tracemalloc.start()
    try:
        read(str(path))
    except CaffeError as e:
        assert str(e)
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak <= per_byte * len(data) + slack, f"{peak} bytes allocated to read {len(data)}"


# ---------------------------------------------------------------- seeds, made once
LEGACY_NET = """
name: "old"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 4 input_dim: 4
layers { name: "d" type: DATA top: "x" top: "label" include { phase: TRAIN }
         data_param { source: "db" batch_size: 2 mean_file: "m" crop_size: 2 mirror: true } }
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 2
         weight_decay: 1 weight_decay: 0 convolution_param { num_output: 2 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
"""


def tiny_net():
    return minicaffe.Net(io.parse_text(TINY_NET, pb.NetParameter()), minicaffe.TEST)


def legacy_caffemodel(net):
    """The net's weights as a V1 caffemodel with 4-D num/channels/height/width blobs."""
    out = pb.NetParameter(name="tiny")
    for name, blobs in net.params.items():
        v1 = out.layers.add(name=name, type=pb.V1LayerParameter.INNER_PRODUCT)
        for b in blobs:
            shape = (1,) * (4 - b.data.ndim) + b.data.shape
            bp = v1.blobs.add(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
            bp.data.extend(b.data.ravel().tolist())
    return out.SerializeToString()


def pruned_proto(net):
    """The net's weights, conv1 shared over 4 values and ip1 80% zeros: every .mcz encoding."""
    w = net.params["conv1"][0].data
    w[...] = np.round(w * 2) / 2
    w = net.params["ip1"][0].data
    w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0
    return net.to_proto()


class Seeds(dict):
    def __repr__(self):       # hypothesis prints the arguments of a failing case: not all the seeds
        return "seeds"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    log.quiet = True
    s = Seeds(net=TINY_NET.encode(), legacy=LEGACY_NET.encode())
    solver = minicaffe.get_solver(write_tiny(d, max_iter=1, test_interval=0, display=0))
    s["solver"] = (d / "solver.prototxt").read_bytes()
    states = [solver.snapshot()[1]]
    solver.param.snapshot_format = pb.SolverParameter.HDF5
    states.append(solver.snapshot()[1])
    s["solverstate"], s["solverstate.h5"] = (open(p, "rb").read() for p in states)
    net = tiny_net()
    net.save(str(d / "w.caffemodel"))
    net.save(str(d / "w.caffemodel.h5"))
    s["caffemodel"] = (d / "w.caffemodel").read_bytes()
    s["caffemodel.h5"] = (d / "w.caffemodel.h5").read_bytes()
    s["legacy.caffemodel"] = legacy_caffemodel(net)
    mcz.write(str(d / "w.mcz"), pruned_proto(net))
    s["mcz"] = (d / "w.mcz").read_bytes()
    io.write_blobproto(str(d / "mean.binaryproto"), np.random.rand(1, 3, 4, 5).astype(np.float32))
    s["binaryproto"] = (d / "mean.binaryproto").read_bytes()
    img = (np.arange(3 * 6 * 7) % 251).astype(np.uint8).reshape(3, 6, 7)
    s["datum"] = io.datum(img, 3).SerializeToString()
    fd = pb.Datum(channels=3, height=6, width=7, label=1)
    fd.float_data.extend(img.ravel().astype(np.float32).tolist())
    s["float datum"] = fd.SerializeToString()
    from PIL import Image
    for fmt in ("PNG", "JPEG"):
        buf = _io.BytesIO()
        Image.fromarray(img.transpose(1, 2, 0)).save(buf, fmt)
        s[fmt] = io.datum(img, 2, encoded=buf.getvalue()).SerializeToString()
    s["solver obj"] = solver
    # every seed reads as it is; imports and compiled kernels are warm before memory is counted
    for name in ("net", "legacy", "solver"):
        (d / f"{name}.prototxt").write_bytes(s[name])
        (io.read_solver if name == "solver" else io.read_net)(str(d / f"{name}.prototxt"))
    (d / "legacy.caffemodel").write_bytes(s["legacy.caffemodel"])
    for name in ("w.caffemodel", "w.caffemodel.h5", "legacy.caffemodel", "w.mcz"):
        tiny_net().copy_trained_layers_from(str(d / name))
    for state in states:
        solver.restore(state)
    io.read_blobproto(str(d / "mean.binaryproto"))
    yield s
    log.quiet = False


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


# ---------------------------------------------------------------- prototxt
@FUZZ
@given(seed=st.sampled_from(["net", "legacy", "solver"]), ops=MUTATIONS)
def test_prototxt(seeds, work, seed, ops):
    read = io.read_solver if seed == "solver" else io.read_net
    loads_or_refuses(read, work / "x.prototxt", mutate(seeds[seed], ops), 200)


@FUZZ
@given(data=st.binary(max_size=300))
def test_prototxt_of_any_bytes(work, data):
    loads_or_refuses(io.read_net, work / "y.prototxt", data, 200)


# ---------------------------------------------------------------- weights and solver states
@FUZZ
@given(seed=st.sampled_from(["caffemodel", "legacy.caffemodel", "caffemodel.h5"]), ops=MUTATIONS)
def test_caffemodel(seeds, work, seed, ops):
    net = tiny_net()
    path = work / ("x.caffemodel.h5" if seed.endswith("h5") else "x.caffemodel")
    loads_or_refuses(net.copy_trained_layers_from, path, mutate(seeds[seed], ops), 8)


@FUZZ
@given(seed=st.sampled_from(["solverstate", "solverstate.h5"]), ops=MUTATIONS)
def test_solverstate(seeds, work, seed, ops):
    path = work / ("x.solverstate.h5" if seed.endswith("h5") else "x.solverstate")
    loads_or_refuses(seeds["solver obj"].restore, path, mutate(seeds[seed], ops), 8)


@FUZZ
@given(ops=MUTATIONS)
def test_binaryproto(seeds, work, ops):
    loads_or_refuses(io.read_blobproto, work / "x.binaryproto", mutate(seeds["binaryproto"], ops), 8)


def _recrc(data):
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4])) if len(data) >= 4 else data


@FUZZ
@given(ops=MUTATIONS, fix_checksum=st.booleans())
def test_mcz(seeds, work, ops, fix_checksum):
    """With the checksum fixed up after the mutation, the decoder's own checks are what stop it. A
    sparse blob may hold up to 2048 weights per byte (a gap code of one bit skips 255 zeros)."""
    data = mutate(seeds["mcz"], ops)
    net = tiny_net()
    loads_or_refuses(net.copy_trained_layers_from, work / "x.mcz", _recrc(data) if fix_checksum else data,
                     3 * 4 * 2048)


# ---------------------------------------------------------------- forged blob shapes
DIMS = st.one_of(st.integers(-2, 6),
                 st.sampled_from([10 ** 12, 2 ** 31 - 1, 2 ** 32 + 1, 2 ** 62, -10 ** 12]),
                 st.integers(-2 ** 63, 2 ** 63 - 1))


@FUZZ
@given(dims=st.lists(DIMS, max_size=40), legacy=st.booleans(), n=st.integers(0, 64),
       double=st.booleans(), ndiff=st.integers(0, 3))
def test_forged_blob_shapes(work, dims, legacy, n, double, ndiff):
    bp = pb.BlobProto()
    if legacy:
        num, c, h, w = (dims + [1] * 4)[:4]
        for f, v in zip(("num", "channels", "height", "width"), (num, c, h, w)):
            setattr(bp, f, max(-2 ** 31, min(v, 2 ** 31 - 1)))
    else:
        bp.shape.dim.extend(dims)
    (bp.double_data if double else bp.data).extend(range(n))
    bp.diff.extend(range(ndiff))

    def read(path):
        a = io.read_blobproto(path)
        assert a.size == n and a.dtype == np.float32
    loads_or_refuses(read, work / "f.binaryproto", bp.SerializeToString(), 8)


# ---------------------------------------------------------------- LMDB Datums through the Data layer
DATA_NET = """
layer {{ name: "d" type: "Data" top: "data" top: "label"
  transform_param {{ crop_size: 3 mirror: true {force} }}
  data_param {{ source: "{db}" batch_size: 2 backend: LMDB }} }}
"""


def _close_lmdbs():
    """The Data layer keeps read-only environments open by database; each case makes a new one."""
    for env in io._LMDB_ENVS.values():
        env.close()
    io._LMDB_ENVS.clear()


def _mutate_inside(value, ops):
    """A well-formed Datum whose image bytes (or pixels) and dims are mutated."""
    d = pb.Datum()
    d.ParseFromString(value)
    d.data = mutate(d.data, ops)
    if not d.encoded and ops[0][0] in ("set", "flip"):
        setattr(d, ("channels", "height", "width")[ops[0][1] % 3], ops[0][2] - 128)
    return d.SerializeToString()


@FUZZ
@given(seed=st.sampled_from(["datum", "float datum", "PNG", "JPEG"]), ops=MUTATIONS, inside=st.booleans(),
       force=st.sampled_from(["", "force_color: true", "force_gray: true"]))
def test_lmdb_datum(seeds, work, seed, ops, inside, force):
    """A Datum's bytes as the Data layer reads them from an LMDB: parsed, decoded, transformed. An
    encoded image may claim 1032 pixels per byte (deflate's limit), then float32 copies of them."""
    db = work / "db"
    _close_lmdbs()
    shutil.rmtree(db, ignore_errors=True)
    value = (_mutate_inside if inside else mutate)(seeds[seed], ops)
    io.write_lmdb(str(db), [(b"0", value)], map_size=1 << 22)
    net = pb.NetParameter()
    io.parse_text(DATA_NET.format(db=db, force=force), net)

    def read(path):
        minicaffe.Net(net, minicaffe.TRAIN)
    try:
        loads_or_refuses(read, work / "unused", value, 40 * 1032, 40 << 20)
    finally:
        _close_lmdbs()
