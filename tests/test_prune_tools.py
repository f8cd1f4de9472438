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
