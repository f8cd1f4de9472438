"""Low-rank factorization (minicaffe/compress/lowrank.py over netedit.py): at full rank the factorized
net computes what the original computes; below it, the layer computes the truncated SVD's product;
the energy rule picks the smallest rank; what cannot be factorized is refused; the result trains."""
import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.compress.lowrank import choose_ranks, energy_rank, lowrank, parse_ranks
from minicaffe.compress.netedit import CAFFE_LAST_FIELD, NetEdit
from minicaffe.errors import CaffeError
from nets import LENET, SMALL_TRAIN_NET, random_net, same_outputs, trains_a_few_steps
from nets import quiet  # noqa: F401  (autouse: the log silenced)


def factorized(tmp_path, model, weights, ranks, scheme="channel"):
    edit = NetEdit.load(model, weights)
    done = lowrank(edit, ranks, scheme)
    m, w = edit.save(str(tmp_path / "lowrank"))
    return minicaffe.Net(m, minicaffe.TEST, weights=w), done


CONV_NET = """
name: "geometry"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 4 dim: 13 dim: 11 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_h: 3 kernel_w: 4 pad_h: 2 pad_w: 1 stride_h: 2 stride_w: 1
    dilation: 2 dilation: 1 } }
layer { name: "conv2" type: "CmpConvolution" bottom: "conv" top: "conv2"
  convolution_param { num_output: 5 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
  inner_product_param { num_output: 7 transpose: true } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def test_full_rank_lenet_equals_original(tmp_path):
    net, model, weights = random_net(tmp_path, LENET)
    small, done = factorized(tmp_path, model, weights, {"ip1": 500, "conv2": 50})
    assert done["ip1"][:2] == (500, 500) and done["conv2"][:2] == (50, 50)
    names = list(small.layer_names)
    assert names[names.index("conv2_v"):names.index("conv2_v") + 2] == ["conv2_v", "conv2_u"]
    assert small.params["ip1_v"][0].data.shape == (500, 800) and len(small.params["ip1_v"]) == 1
    assert small.params["ip1_u"][0].data.shape == (500, 500) and len(small.params["ip1_u"]) == 2
    assert small.params["conv2_v"][0].data.shape == (50, 20, 5, 5)
    assert small.params["conv2_u"][0].data.shape == (50, 50, 1, 1)
    x = np.random.RandomState(1).random_sample((64, 1, 28, 28)).astype(np.float32)
    same_outputs(net, small, x, ["conv2", "ip1", "prob"])


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_full_rank_conv_schemes_and_transposed_ip(tmp_path, scheme):
    net, model, weights = random_net(tmp_path, CONV_NET, seed=2)
    full = {"channel": {"conv": 6, "conv2": 5}, "spatial": {"conv": 12, "conv2": 15}}[scheme]
    small, done = factorized(tmp_path, model, weights, dict(full, ip=7), scheme)
    assert {n: done[n][1] for n in full} == full
    if scheme == "spatial":
        assert small.params["conv_v"][0].data.shape == (12, 4, 3, 1)
        assert small.params["conv_u"][0].data.shape == (6, 12, 1, 4)
    x = np.random.RandomState(3).standard_normal((3, 4, 13, 11)).astype(np.float32)
    same_outputs(net, small, x, ["conv", "conv2", "ip"])
    for lp in io.read_net(str(tmp_path / "lowrank.prototxt")).layer:     # plain Caffe only
        assert lp.type in ("Input", "Convolution", "InnerProduct", "Softmax")
        p = lp.convolution_param if lp.type == "Convolution" else lp.inner_product_param
        assert all(f.number <= CAFFE_LAST_FIELD[p.DESCRIPTOR.name] for f, _ in p.ListFields())


def truncated(m, r):
    u, s, vt = np.linalg.svd(m.astype(np.float64), full_matrices=False)
    return (u[:, :r] * s[:r]) @ vt[:r]


@pytest.mark.parametrize("scheme", ["channel", "spatial"])
def test_low_rank_is_the_truncated_svd(tmp_path, scheme):
    """Each factorized layer computes the original layer with its weight matrix replaced by the
    matrix's best rank-r approximation: checked by running that dense layer in the original net."""
    net, model, weights = random_net(tmp_path, CONV_NET, seed=4)
    w = {n: net.params[n][0].data.copy() for n in ("conv", "ip")}
    small, _ = factorized(tmp_path, model, weights, {"conv": 3, "ip": 2}, scheme)
    n, c, kh, kw = w["conv"].shape
    if scheme == "channel":
        net.params["conv"][0].data[...] = truncated(w["conv"].reshape(n, -1), 3).reshape(w["conv"].shape)
    else:
        m = truncated(w["conv"].transpose(1, 2, 0, 3).reshape(c * kh, n * kw), 3)
        net.params["conv"][0].data[...] = m.reshape(c, kh, n, kw).transpose(2, 0, 1, 3)
    net.params["ip"][0].data[...] = truncated(w["ip"].T, 2).T      # transpose: stored (K, N)
    x = np.random.RandomState(5).standard_normal((3, 4, 13, 11)).astype(np.float32)
    same_outputs(net, small, x, ["conv", "conv2", "ip"])
    assert not np.allclose(truncated(w["ip"].T, 2), w["ip"].T, atol=1e-2)   # rank 2 did change it
    # The singular values are split evenly: both factors have the same singular values.
    u, v = small.params["ip_u"][0].data, small.params["ip_v"][0].data
    assert np.allclose(np.linalg.svd(u, compute_uv=False), np.linalg.svd(v, compute_uv=False), rtol=1e-4)


def test_energy_rank_choice(tmp_path):
    s = np.array([4.0, 2.0, 1.0, 1.0])          # squares 16, 4, 1, 1 of 22
    assert [energy_rank(s, e) for e in (0.5, 16 / 22, 0.73, 0.9, 21 / 22, 0.99, 1.0)] == \
        [1, 1, 2, 2, 3, 4, 4]
    with pytest.raises(CaffeError, match="energy 1.5"):
        energy_rank(s, 1.5)
    net, model, weights = random_net(tmp_path, LENET)
    edit = NetEdit.load(model, weights)
    sv = np.linalg.svd(net.params["ip1"][0].data.astype(np.float64), compute_uv=False)
    r = choose_ranks(edit, 0.9, ["ip1"])["ip1"]
    share = np.cumsum(sv ** 2) / (sv ** 2).sum()
    assert share[r - 1] >= 0.9 > share[r - 2]
    every = choose_ranks(edit, 0.5)
    assert set(every) == {"conv1", "conv2", "ip1", "ip2"}
    for name, r in every.items():       # a rank that saves no parameters leaves the layer alone
        m = net.params[name][0].data.reshape(net.params[name][0].data.shape[0], -1)
        s = np.linalg.svd(m.astype(np.float64), compute_uv=False)
        best = energy_rank(s, 0.5)
        assert r == (best if best * sum(m.shape) < m.size else None), name
    assert every["ip1"] == int(np.searchsorted(share, 0.5) + 1)
    assert choose_ranks(edit, 0.999)["ip2"] is None         # rank 10 of 10 x 500 saves nothing


def test_refusals(tmp_path):
    net, model, weights = random_net(tmp_path, LENET)
    cases = {
        (("ip1", 501),): "rank 501 is out of range: its weight matrix is 500 x 800",
        (("ip1", 0),): "rank 0 is out of range",
        (("conv1", 26),): r"rank 26 is out of range: its weight matrix is 20 x 25",
        (("nope", 3),): "no layer named 'nope'",
        (("pool1", 3),): "layer 'pool1' is a Pooling",
        (("ip1", 10), ("ip9", 3)): "no layer named 'ip9'",
    }
    for items, message in cases.items():
        edit = NetEdit.load(model, weights)
        with pytest.raises(CaffeError, match=message):
            lowrank(edit, dict(items))
        assert [lp.name for lp in edit.net.layer].count("ip1") == 1     # nothing changed
    with pytest.raises(CaffeError, match="unknown scheme 'diagonal'"):
        lowrank(NetEdit.load(model, weights), {"ip1": 3}, "diagonal")
    with pytest.raises(CaffeError, match="expected layer=rank"):
        parse_ranks("ip1=32,conv2")
    assert parse_ranks(" ip1=32, conv2=16,") == {"ip1": 32, "conv2": 16}
    grouped = CONV_NET.replace("num_output: 5 kernel_size: 3", "num_output: 6 group: 2 kernel_size: 3")
    net, model, weights = random_net(tmp_path, grouped)
    with pytest.raises(CaffeError, match=r"'conv2' is a grouped convolution \(group 2\)"):
        lowrank(NetEdit.load(model, weights), {"conv2": 2})
    assert "conv2" not in choose_ranks(NetEdit.load(model, weights), 0.5)


def test_factorized_cmp_train_test_net_trains(tmp_path):
    net, model, weights = random_net(tmp_path, SMALL_TRAIN_NET)
    edit = NetEdit.load(model, weights)
    lowrank(edit, {"conv1": 3, "ip1": 4})
    m, w = edit.save(str(tmp_path / "lowrank"))
    layers = io.read_net(m).layer
    assert [lp.type for lp in layers if lp.name.startswith(("conv1", "ip1"))] == ["Convolution"] * 2 + \
        ["InnerProduct"] * 2
    assert all(not ps.name for lp in layers for ps in lp.param)     # the two halves share nothing
    assert [lp.name for lp in io.read_weights(w).layer] == ["conv1_v", "conv1_u", "ip1_v", "ip1_u", "ip2"]
    assert trains_a_few_steps(tmp_path, m, w, "ip1_v") == (4, 6 * 4 * 4)


def test_cli_table_and_files(tmp_path, capsys):
    from minicaffe import cli
    net, model, weights = random_net(tmp_path, LENET)
    out = str(tmp_path / "out")
    assert cli.main(["lowrank", "--model", model, "--weights", weights, "--rank", "ip1=32,conv2=16",
                     "-o", out + ".caffemodel"]) == 0
    table = capsys.readouterr().out
    assert "32/500" in table and "400500 -> 42100" in table and "800000 -> 83200" in table
    assert "16/50" in table and "25050 -> 8850" in table      # 16*20*25 + 50*16 + 50
    pb.NetParameter().ParseFromString(open(out + ".caffemodel", "rb").read())
    assert [lp.name for lp in io.read_net(out + ".prototxt").layer].count("ip1_u") == 1
    assert cli.main(["lowrank", "--model", model, "--weights", weights, "--energy", "0.8",
                     "--layers", "ip1", "-o", out]) == 0
    assert "ip1_v" in {lp.name for lp in io.read_net(out + ".prototxt").layer}
    capsys.readouterr()
    assert cli.main(["lowrank", "--model", model, "--weights", weights, "--rank", "ip1=900",
                     "-o", out]) == 1
    assert "rank 900 is out of range" in capsys.readouterr().err
    assert cli.main(["lowrank", "--model", model, "--weights", weights, "-o", out]) == 1
