"""minicaffe prune and inspect, on our caffemodels and on one laid out as Caffe writes it."""
import os
import re

import numpy as np
import pytest

from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.cli import main
from minicaffe.errors import CaffeError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENET = os.path.join(ROOT, "models/lenet/lenet.prototxt")


def lenet_weights(tmp_path):
    import minicaffe
    net = minicaffe.Net(LENET, minicaffe.TEST)
    path = str(tmp_path / "lenet.caffemodel")
    net.save(path)
    return net, path


def test_prune_per_layer_and_global(tmp_path, capsys):
    net, path = lenet_weights(tmp_path)
    out = str(tmp_path / "p.caffemodel")
    assert main(["prune", f"--model={LENET}", f"--weights={path}", "--sparse-ratio", "conv1=0.33,ip1=0.9",
                 "-o", out]) == 0
    p = {lp.name: io.blob_to_array(lp.blobs[0]) for lp in io.read_weights(out).layer if len(lp.blobs)}
    assert (p["conv1"] == 0).sum() == int(500 * 0.33) and (p["ip1"] == 0).sum() == int(400000 * 0.9)
    assert not (p["conv2"] == 0).any()
    assert main(["prune", f"--model={LENET}", f"--weights={path}", "--sparse-ratio=0.5", "-o", out]) == 0
    p = {lp.name: io.blob_to_array(lp.blobs[0]) for lp in io.read_weights(out).layer if len(lp.blobs)}
    total = sum(w.size for w in p.values())
    assert abs(sum((w == 0).sum() for w in p.values()) - total // 2) <= 1
    assert main(["prune", f"--model={LENET}", f"--weights={path}", "--sparse-ratio=nope=0.5", "-o", out]) == 1


def caffe_style(net_param):
    """Rewrite blobs with the legacy 4-D dims older Caffe wrote, and the layers' full parameters."""
    out = pb.NetParameter()
    out.CopyFrom(net_param)
    for lp in out.layer:
        for bp in lp.blobs:
            a = io.blob_to_array(bp)
            bp.Clear()
            dims = (1,) * (4 - a.ndim) + a.shape
            bp.num, bp.channels, bp.height, bp.width = dims
            bp.data.extend(a.ravel().tolist())
        lp.phase = pb.TEST
    return out


def table(capsys, *args):
    assert main(["inspect", *args]) == 0
    return capsys.readouterr().out


def test_inspect_reports_sparsity_and_matches_caffe_written_file(tmp_path, capsys):
    net, path = lenet_weights(tmp_path)
    pruned = str(tmp_path / "p.caffemodel")
    main(["prune", f"--model={LENET}", f"--weights={path}", "--sparse-ratio=conv1=0.33,conv2=0.8,ip1=0.9,ip2=0.8",
          "-o", pruned])
    capsys.readouterr()
    ours = table(capsys, pruned)
    for name, r in (("conv1", 33.0), ("conv2", 80.0), ("ip1", 90.0), ("ip2", 80.0)):
        assert re.search(rf"^{name}\s.*\s{r:.2f}%", ours, re.M), ours
    caffe_file = str(tmp_path / "caffe.caffemodel")
    io.write_weights(caffe_file, caffe_style(io.read_weights(pruned)))
    theirs = table(capsys, caffe_file)
    assert theirs == ours
    h5 = str(tmp_path / "p.caffemodel.h5")
    io.write_weights(h5, io.read_weights(pruned))
    assert table(capsys, h5, f"--model={LENET}") == ours     # .h5 keeps no layer types
    assert "total" in ours and re.search(r"\(\d+\.\dx\)", ours)
    png = str(tmp_path / "plot.png")
    table(capsys, pruned, f"--plot={png}")
    assert os.path.getsize(png) > 1000


@pytest.mark.parametrize("ratio", ["1.5", "-0.5", "conv1=1.5", "conv1=0.3,ip1=1"])
def test_prune_refuses_ratios_outside_0_1(ratio):
    from minicaffe.tools.prune import parse_ratios
    with pytest.raises(CaffeError, match=r"not in \[0, 1\)"):
        parse_ratios(ratio)


@pytest.mark.parametrize("ratio", [1.5, -0.5, 1.0])
def test_cmp_layer_refuses_sparse_ratio_outside_0_1(ratio):
    from gradcheck import make_layer
    x = np.ones((2, 4), np.float32)
    with pytest.raises(CaffeError, match=r"sparse_ratio .* not in \[0, 1\)"):
        make_layer(f'type: "CmpInnerProduct" inner_product_param {{ num_output: 3 sparse_ratio: {ratio} }}', [x])


def units_zero(w, axis):
    return int((np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1) == 0).all(axis=1).sum())


def test_prune_by_filter_and_channel_writes_the_cmp_prototxt(tmp_path, capsys):
    net, path = lenet_weights(tmp_path)
    out = str(tmp_path / "f.caffemodel")
    assert main(["prune", f"--model={LENET}", f"--weights={path}", "--granularity=filter", "--norm=L2",
                 "--sparse-ratio=conv1=0.3,conv2=0.5,ip1=0.6", "-o", out]) == 0
    assert "25/50" in capsys.readouterr().out
    p = {lp.name: io.blob_to_array(lp.blobs[0]) for lp in io.read_weights(out).layer if len(lp.blobs)}
    w0 = net.params["conv2"][0].data
    norms = np.sqrt((w0.astype(np.float64) ** 2).sum(axis=(1, 2, 3)))
    gone = (p["conv2"] == 0).all(axis=(1, 2, 3))
    assert gone.sum() == 25 and norms[gone].max() <= norms[~gone].min()        # the smallest L2 norms
    assert units_zero(p["conv1"], 0) == 6 and units_zero(p["ip1"], 0) == 300
    assert (p["conv2"][~gone] != 0).all() and not (p["ip2"] == 0).any()
    model = io.read_net(str(tmp_path / "f.prototxt"))
    layers = {lp.name: lp for lp in model.layer}
    assert [layers[n].type for n in ("conv1", "conv2", "ip1", "ip2")] == \
        ["CmpConvolution", "CmpConvolution", "CmpInnerProduct", "InnerProduct"]
    cp = layers["conv2"].convolution_param
    assert cp.sparse_ratio == np.float32(0.5) and cp.prune_granularity == pb.FILTER and cp.prune_norm == pb.L2
    assert layers["conv2"].convolution_param.num_output == 50           # the rest of the net as it was
    # loading the pair reproduces exactly the pruned weights
    import minicaffe
    again = minicaffe.Net(str(tmp_path / "f.prototxt"), out, minicaffe.TEST)
    for n, w in p.items():
        np.testing.assert_array_equal(again.params[n][0].data, w)

    cm = str(tmp_path / "c.caffemodel")
    assert main(["prune", f"--model={LENET}", f"--weights={path}", "--granularity=channel",
                 "--sparse-ratio=0.5", "-o", cm, "--model-out", str(tmp_path / "c_net.prototxt")]) == 0
    p = {lp.name: io.blob_to_array(lp.blobs[0]) for lp in io.read_weights(cm).layer if len(lp.blobs)}
    assert units_zero(p["conv2"], 1) == 10 and units_zero(p["conv2"], 0) == 0
    assert units_zero(p["ip1"], 1) == 400 and units_zero(p["conv1"], 1) == 0     # one input: int(0.5)
    assert io.read_net(str(tmp_path / "c_net.prototxt")).layer[1].type == "CmpConvolution"
    # never over the input model
    assert main(["prune", f"--model={LENET}", f"--weights={path}", "--sparse-ratio=0.5",
                 "-o", str(tmp_path / "x.caffemodel"), "--model-out", LENET]) == 1


def test_finetuning_with_the_written_prototxt_keeps_the_zeros(tmp_path):
    """The trap of issue 13: the pruned caffemodel with its plain prototxt trains the zeros back;
    with the prototxt prune writes, they stay."""
    import minicaffe
    from nets import write_tiny
    dense = minicaffe.get_solver(write_tiny(tmp_path, max_iter=10, display=0, test_interval=0))
    dense.step(10)
    dense.net.save(str(tmp_path / "dense.caffemodel"))
    out = str(tmp_path / "pruned.caffemodel")
    assert main(["prune", f"--model={tmp_path}/net.prototxt", f"--weights={tmp_path}/dense.caffemodel",
                 "--sparse-ratio=conv1=0.34,ip1=0.8", "--granularity=filter", "-o", out]) == 0
    plain, cmp = (open(f"{tmp_path}/{n}.prototxt").read() for n in ("net", "pruned"))
    for text, stays in ((plain, False), (cmp, True)):
        s = minicaffe.get_solver(write_tiny(tmp_path, net=text, name="ft.prototxt", max_iter=20,
                                            display=0, test_interval=0))
        s.net.copy_from(out)
        s.step(20)
        ip1 = s.net.params["ip1"][0].data
        assert (units_zero(ip1, 0) == int(4 * 0.8)) == stays
