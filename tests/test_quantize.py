"""8-bit quantization (minicaffe/compress/quantize.py): the per-channel error bound, the .mcz int8
encodings, calibration, and the int8 forward against a float computation on the same integers."""
import argparse
import os
import struct
import zlib

import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.compress import mcz
from minicaffe.compress import quantize as Q
from minicaffe.errors import CaffeError
from nets import quiet  # noqa: F401  (autouse: the log silenced)


NET = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 3 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "c"
        convolution_param { num_output: 5 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "c" top: "y" inner_product_param { num_output: 7 } }
layer { name: "ipt" type: "InnerProduct" bottom: "y" top: "z"
        inner_product_param { num_output: 4 transpose: true } }
"""
SCALES = {"conv": 0.02, "ip": 0.05, "ipt": 0.1}


@pytest.fixture(autouse=True)
def restore_vnni():
    saved = Q.VNNI
    yield
    Q.VNNI = saved


def test_weight_error_is_half_a_step_per_channel():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32) * np.arange(1, 7)[:, None, None, None]
    w[2] = 0                                   # a pruned filter
    w[3, 0, 0, 0] = 0                          # a pruned weight
    for axis in (0, 1):
        q, s = Q.quantize_weights(w, axis)
        assert q.dtype == np.int8 and s.shape == (w.shape[axis],)
        err = np.abs(Q.dequantize(q, s, axis) - w)
        shape = [1] * 4
        shape[axis] = -1
        assert (err <= s.reshape(shape) / 2 * (1 + 1e-5) + 1e-12).all()
        amax = np.abs(np.moveaxis(q, axis, 0)).reshape(w.shape[axis], -1).max(1)
        nonzero = np.abs(np.moveaxis(w, axis, 0)).reshape(w.shape[axis], -1).max(1) > 0
        assert (amax[nonzero] == 127).all() and (amax[~nonzero] == 0).all()
        assert (q[w == 0] == 0).all()          # pruned stays exactly 0
    q, s = Q.quantize_weights(w, 0)
    assert s[2] == 0 and np.isclose(s[5], np.abs(w[5]).max() / 127)


def test_input_quantization_rounds_to_nearest_and_clamps_symmetrically():
    x = np.array([0.49, 0.5, 1.5, -2.6, 300, -300], np.float32)
    assert Q.quantize_input(x, 1.0).tolist() == [0, 0, 2, -3, 127, -127]
    assert Q.activation_scale([1.0, -254.0]) == np.float32(2.0)
    vals = np.concatenate([np.ones(999), [127000.0]])
    assert Q.activation_scale(vals, 99.0) == np.float32(1 / 127)


def random_net(tmp_path, sparse=False):
    (tmp_path / "net.prototxt").write_text(NET)
    net = minicaffe.Net(str(tmp_path / "net.prototxt"), minicaffe.TEST)
    rng = np.random.default_rng(1)
    for name, blobs in net.params.items():
        for b in blobs:
            b.data[...] = rng.standard_normal(b.shape).astype(np.float32) * 0.3
        if sparse:
            w = blobs[0].data
            w[rng.random(w.shape) < 0.8] = 0
    return net


def write_int8(tmp_path, net, scales=SCALES):
    axes = {"conv": 0, "ip": 0, "ipt": 1}
    path = str(tmp_path / "net.mcz")
    mcz.write(path, net.to_proto(), int8={n: (axes[n], s) for n, s in scales.items()})
    return path


def reference(layer, x, w, b, s_in, axis, conv):
    """The float computation on the same integers: x and w quantized, their products summed in
    float64 (exact), scaled in float32, the bias added; the convolution by explicit patches."""
    xq = Q.quantize_input(x, s_in).astype(np.float64)
    q, s_w = Q.quantize_weights(w, axis)
    wq = np.moveaxis(q, axis, 0).astype(np.float64)
    if conv:
        n, c, h, wd = x.shape
        pad = np.pad(xq, ((0, 0), (0, 0), (1, 1), (1, 1)))
        oh, ow = (h + 2 - 3) // 2 + 1, (wd + 2 - 3) // 2 + 1
        acc = np.zeros((n, wq.shape[0], oh, ow))
        for i in range(oh):
            for j in range(ow):
                patch = pad[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
                acc[:, :, i, j] = np.einsum("nckl,mckl->nm", patch, wq)
        mult = (np.float32(s_in) * s_w).astype(np.float32)[None, :, None, None]
        return acc.astype(np.float32) * mult + b[None, :, None, None]
    acc = xq.reshape(len(x), -1) @ wq.reshape(wq.shape[0], -1).T
    return acc.astype(np.float32) * (np.float32(s_in) * s_w).astype(np.float32) + b


@pytest.mark.parametrize("vnni", [False, True])
def test_int8_forward_equals_float_computation_on_the_integers(tmp_path, vnni):
    if vnni and not (Q._has_vnni() and Q._vnni_works()):
        pytest.skip("no AVX-512 VNNI here")
    net = random_net(tmp_path)
    float_w = {n: [b.data.copy() for b in bl] for n, bl in net.params.items()}
    path = write_int8(tmp_path, net)
    qnet = minicaffe.Net(str(tmp_path / "net.prototxt"), minicaffe.TEST, weights=path)
    Q.VNNI = vnni
    x = np.random.default_rng(2).standard_normal((3, 3, 9, 9)).astype(np.float32)
    out = qnet.forward(x=x)
    assert {n: qnet.layer_dict[n].path for n in SCALES} == dict.fromkeys(SCALES, "int8")
    ins = {"conv": x, "ip": qnet.blobs["c"].data, "ipt": qnet.blobs["y"].data}
    tops = {"conv": "c", "ip": "y", "ipt": "z"}
    for name, (w, b) in float_w.items():
        axis = 1 if name == "ipt" else 0
        want = reference(name, ins[name], w, b, SCALES[name], axis, name == "conv")
        got = qnet.blobs[tops[name]].data
        np.testing.assert_allclose(got, want.reshape(got.shape), rtol=1e-6, atol=1e-6)
    # far from the float net, but close to it
    fnet = random_net(tmp_path)
    ref = fnet.forward(x=x)["z"]
    assert 0 < np.abs(out["z"] - ref).max() < 0.1 * np.abs(ref).max()


def test_vnni_and_exact_products_agree_bit_for_bit(tmp_path):
    if not (Q._has_vnni() and Q._vnni_works()):
        pytest.skip("no AVX-512 VNNI here")
    rng = np.random.default_rng(3)
    for p, m, k in ((1, 1, 1), (9, 33, 130), (70, 64, 4)):
        x = rng.integers(-127, 128, (p, k)).astype(np.int8)
        w = rng.integers(-127, 128, (m, k)).astype(np.int8)
        assert np.array_equal(Q._vnni_gemm(x, Q.gemm_weights(w)), x.astype(np.int64) @ w.T.astype(np.int64))
    net = random_net(tmp_path)
    qnet = minicaffe.Net(str(tmp_path / "net.prototxt"), minicaffe.TEST, weights=write_int8(tmp_path, net))
    x = rng.standard_normal((3, 3, 9, 9)).astype(np.float32)
    outs = []
    for v in (True, False):
        Q.VNNI = v
        outs.append({k: a.copy() for k, a in qnet.forward(x=x, blobs=["c", "y"]).items()})
    for k in outs[0]:
        assert np.array_equal(outs[0][k], outs[1][k])


def test_changed_weights_or_train_phase_run_float(tmp_path):
    net = random_net(tmp_path)
    path = write_int8(tmp_path, net)
    qnet = minicaffe.Net(str(tmp_path / "net.prototxt"), minicaffe.TEST, weights=path)
    x = np.ones((3, 3, 9, 9), np.float32)
    qnet.forward(x=x)
    assert qnet.layer_dict["ip"].path == "int8"
    qnet.params["ip"][0].data[0, 0] += 1
    qnet.forward(x=x)
    assert qnet.layer_dict["ip"].path != "int8" and qnet.layer_dict["conv"].path == "int8"
    # the same file into a net built from a caffemodel of other weights: float
    other = minicaffe.Net(str(tmp_path / "net.prototxt"), minicaffe.TEST)
    other.forward(x=x)
    assert other.layer_dict["conv"].path != "int8"


def test_mcz_round_trip_of_int8_encodings(tmp_path):
    for sparse in (False, True):
        net = random_net(tmp_path, sparse)
        data, rows = mcz.encode(net.to_proto(), int8={"conv": (0, 0.02), "ip": (0, 0.05), "ipt": (1, 0.1)})
        kinds = {r[0]: r[5] for r in rows}
        assert set(kinds.values()) == ({"int8-sp"} if sparse else {"int8"})
        back = mcz.decode(data)
        for lp in back.layer:
            w = net.params[lp.name][0].data
            q, s = Q.quantize_weights(w, 1 if lp.name == "ipt" else 0)
            got = io.blob_to_array(lp.blobs[0])
            assert np.array_equal(got, Q.dequantize(q, s, 1 if lp.name == "ipt" else 0))
            assert np.array_equal(io.blob_to_array(lp.blobs[1]), net.params[lp.name][1].data)
            assert (got[w == 0] == 0).all()
            rec = Q.LOADED[lp.name][-1]
            assert np.array_equal(rec.q, q) and rec.input_scale == np.float32(SCALES[lp.name])
        # a file of other encodings reads as before
        plain, _ = mcz.encode(net.to_proto())
        assert mcz.decode(plain).layer[0].name == "conv"


def test_int8_is_four_times_smaller_and_a_bad_scale_is_refused(tmp_path):
    w = np.random.default_rng(4).standard_normal((64, 300)).astype(np.float32)
    enc, kind = mcz.encode_int8(w, 0, 0.5)
    assert kind == "int8" and 4 * w.size / len(enc) > 3.9
    param = pb.NetParameter()
    lp = param.layer.add(name="ip", type="InnerProduct")
    io.array_to_blob(w, lp.blobs.add())
    data, _ = mcz.encode(param, int8={"ip": (0, 0.5)})
    at = data.index(struct.pack("<f", 0.5)) + 4         # the first channel's scale
    bad = data[:at] + struct.pack("<f", float("nan")) + data[at + 4:-4]
    with pytest.raises(CaffeError, match="scales"):
        mcz.decode(bad + struct.pack("<I", zlib.crc32(bad)))


def test_calibration_takes_max_or_percentile_of_the_train_inputs(tmp_path):
    (tmp_path / "cal.prototxt").write_text("""
layer { name: "d" type: "DummyData" top: "x" include { phase: TRAIN }
        dummy_data_param { shape { dim: 4 dim: 10 } data_filler { type: "uniform" min: -3 max: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 3 } }
""")
    net = minicaffe.Net(str(tmp_path / "cal.prototxt"), minicaffe.TRAIN)
    seen = []
    net.callbacks["before_forward"].append(lambda i: i == 1 and seen.append(np.abs(net.blobs["x"].peek).copy()))
    scales = Q.calibrate(net, 3)
    assert len(seen) == 3
    assert scales["ip"] == (0, pytest.approx(max(a.max() for a in seen) / 127, rel=1e-6))
    assert Q.calibrate(net, 3, 50.0)["ip"][1] < scales["ip"][1] / 1.5


def test_digits_lenet_int8_accuracy_and_size(tmp_path, trained_digits):
    """A LeNet trained briefly on the digits (models/digits/quantize.sh measures the full one)."""
    from minicaffe.tools import quantize as tool
    _, model, _, weights = trained_digits
    out = str(tmp_path / "lenet.mcz")
    p = argparse.ArgumentParser()
    tool.add_arguments(p)
    tool.run(p.parse_args(["--model", model, "--weights", weights, "--calibration-iterations", "2",
                           "-o", out]))
    assert os.path.getsize(weights) / os.path.getsize(out) >= 3.9
    acc = {}
    for w in (weights, out):
        net = minicaffe.Net(model, minicaffe.TEST, weights=w)
        acc[w] = float(net.forward()["accuracy"])
    assert net.layer_dict["ip1"].path == "int8"
    assert acc[out] >= acc[weights] - 0.003
