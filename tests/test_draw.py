"""caffe.draw and `minicaffe draw`: pycaffe's graph of a net through pydot and graphviz's dot.

graphviz is a system package (apt-get install graphviz); CI installs it, so a missing `dot` fails
these tests rather than skipping them.
"""
import argparse
import glob
import os
import shutil

import pytest

import caffe
import caffe.draw
from caffe.proto import caffe_pb2
from minicaffe import io
from minicaffe.cli import main
from minicaffe.errors import CaffeError
from minicaffe.tools import draw as draw_tool
from nets import TINY_NET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR = os.path.join(ROOT, "models", "cifar10", "cifar10_quick_train_test.prototxt")


def tiny():
    return io.parse_text(TINY_NET, caffe_pb2.NetParameter())


def nodes(graph):
    return {n.get_name(): n for n in graph.get_nodes()}


def edges(graph):
    return [(e.get_source(), e.get_destination(), e.get("label")) for e in graph.get_edges()]


def need_dot():
    assert shutil.which("dot"), "graphviz's dot is not installed: CI must `apt-get install graphviz`"


def test_nodes_and_edges_of_a_net():
    g = caffe.draw.get_pydot_graph(tiny(), "LR")
    assert g.get_name() == "tiny" and g.get("rankdir") == "LR"
    conv = r'"conv1\n(Convolution)\nkernel size: 3\nstride: 1\npad: 0"'
    layers = {r'"data\n(DummyData)"', conv, r'"relu1\n(ReLU)"', r'"ip1\n(InnerProduct)"',
              r'"accuracy\n(Accuracy)"', r'"loss\n(SoftmaxWithLoss)"'}
    blobs = {"data", "label", "conv1", "ip1", "accuracy", "loss"}
    got = nodes(g)
    assert set(got) == layers | blobs
    for b in blobs:
        assert got[b].get("shape") == "octagon"
    assert got[conv].get("shape") == "record" and got[conv].get("fillcolor") == "#FF5050"
    assert got[r'"ip1\n(InnerProduct)"'].get("fillcolor") == "#CC33FF"
    assert got[r'"relu1\n(ReLU)"'].get("fillcolor") == "#90EE90"      # in place
    assert got[r'"loss\n(SoftmaxWithLoss)"'].get("fillcolor") == "#6495ED"
    e = edges(g)
    assert (conv, "conv1", "3") in e and ("data", conv, '""') in e          # num_output on the way out
    assert ("conv1", r'"relu1\n(ReLU)"', '""') in e and (r'"relu1\n(ReLU)"', "conv1", '""') in e
    assert ("label", r'"loss\n(SoftmaxWithLoss)"', '""') in e
    assert len(e) == len(set(e)) == 14     # the TRAIN and TEST data layers share one node and edges
    unlabelled = caffe.draw.get_pydot_graph(tiny(), "LR", label_edges=False)
    assert all(lab == '""' for _, _, lab in edges(unlabelled))


def test_labels_follow_rankdir_and_pooling_and_lr_mult():
    net = io.parse_text('''name: "n"
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
        layer { name: "p" type: "Pooling" bottom: "x" top: "p"
                pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
        layer { name: "c" type: "Convolution" bottom: "p" top: "c" param { lr_mult: 0 } param { lr_mult: 2 }
                convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 } }
        layer { name: "f" type: "InnerProduct" bottom: "c" top: "f" param { lr_mult: 0 } param { lr_mult: 0 }
                inner_product_param { num_output: 2 } }''', caffe_pb2.NetParameter())
    pool, conv, ip = net.layer[1:]
    assert caffe.draw.get_layer_label(pool, "TB") == '"p (Pooling AVE) kernel size: 2 stride: 2 pad: 0"'
    assert caffe.draw.get_layer_label(conv, "LR") == r'"c\n(Convolution)\nkernel size: 3\nstride: 2\npad: 1"'
    assert caffe.draw.get_layer_label(conv, "BT", display_lrm=True) == \
        '"c (Convolution) kernel size: 3 stride: 2 pad: 1 lr mult: 0.0, 2.0"'
    assert caffe.draw.get_layer_label(ip, "TB", display_lrm=True) == '"f (InnerProduct)"'  # both 0
    assert caffe.draw.get_layer_lr_mult(net.layer[3]) == (0, 0)
    with pytest.raises(ValueError):
        caffe.draw.get_layer_lr_mult(pool)
    assert caffe.draw.get_edge_label(conv) == "4" and caffe.draw.get_edge_label(pool) == '""'
    g = caffe.draw.get_pydot_graph(net, "TB", display_lrm=True)
    assert g.get("rankdir") == "TB"
    assert '"c (Convolution) kernel size: 3 stride: 2 pad: 1 lr mult: 0.0, 2.0"' in nodes(g)


def test_phase_keeps_that_phases_layers():
    def layer_nodes(phase):
        return {n for n in nodes(caffe.draw.get_pydot_graph(tiny(), "TB", phase=phase)) if "(" in n}
    assert '"accuracy (Accuracy)"' in layer_nodes(None)
    assert '"accuracy (Accuracy)"' in layer_nodes(caffe.TEST)
    assert '"accuracy (Accuracy)"' not in layer_nodes(caffe.TRAIN)
    assert '"loss (SoftmaxWithLoss)"' in layer_nodes(caffe.TRAIN)
    net = tiny()
    net.layer[-1].exclude.add(phase=caffe.TRAIN)
    assert '"loss (SoftmaxWithLoss)"' not in nodes(caffe.draw.get_pydot_graph(net, "TB", phase=caffe.TRAIN))
    net.layer[-1].include.add(phase=caffe.TEST)
    with pytest.raises(ValueError, match="both include and exclude"):
        caffe.draw.get_pydot_graph(net, "TB", phase=caffe.TEST)


def test_draw_net_to_file_writes_png_svg_and_dot(tmp_path):
    need_dot()
    net = io.read_net(CIFAR)
    caffe.draw.draw_net_to_file(net, str(tmp_path / "n.png"))
    caffe.draw.draw_net_to_file(net, str(tmp_path / "n.svg"), "TB", caffe.TEST)
    caffe.draw.draw_net_to_file(net, str(tmp_path / "n.raw"), "TB", caffe.TRAIN)
    assert (tmp_path / "n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (tmp_path / "n.svg").read_text()
    assert "<svg" in svg and "pool1 (Pooling MAX)" in svg and "accuracy (Accuracy)" in svg
    raw = (tmp_path / "n.raw").read_text()
    assert raw.startswith("digraph CIFAR10_quick {") and "accuracy" not in raw
    assert caffe.draw.draw_net(net, "LR", "svg").startswith(b"<?xml")


def test_every_model_in_the_repo_draws():
    """As pycaffe's test_draw draws every net of its tree."""
    need_dot()
    files = [f for f in glob.glob(os.path.join(ROOT, "models", "**", "*.prototxt"), recursive=True)
             if "solver" not in f]
    assert files
    for f in files:
        assert caffe.draw.draw_net(io.read_net(f), "LR", "png")[:4] == b"\x89PNG", f


def test_missing_dot_or_bad_format_is_a_clear_error(tmp_path, monkeypatch):
    need_dot()
    with pytest.raises(CaffeError, match=r"could not draw the net as 'nope': Format: \"nope\" not recog"):
        caffe.draw.draw_net(tiny(), "LR", "nope")
    monkeypatch.setattr(shutil, "which", lambda prog: None)
    with pytest.raises(CaffeError, match="install graphviz"):
        caffe.draw.draw_net_to_file(tiny(), str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def test_blob_named_like_a_dot_keyword_stays_a_node():
    net = io.parse_text('''layer { name: "in" type: "Input" top: "node" input_param { shape { dim: 1 } } }
        layer { name: "r" type: "ReLU" bottom: "node" top: "graph" }''', caffe_pb2.NetParameter())
    text = caffe.draw.get_pydot_graph(net, "LR").to_string()
    assert "\nnode [" not in text and "\ngraph [" not in text


def run_tool(argv):
    p = argparse.ArgumentParser()
    draw_tool.add_arguments(p)
    return draw_tool.run(p.parse_args(argv))


def test_draw_tool(tmp_path, capsys):
    need_dot()
    run_tool([CIFAR, str(tmp_path / "q.png")])
    assert (tmp_path / "q.png").read_bytes()[:4] == b"\x89PNG"
    assert "Drawing net to" in capsys.readouterr().out
    run_tool([CIFAR, str(tmp_path / "q.svg"), "--rankdir", "TB", "--phase", "TRAIN"])
    svg = (tmp_path / "q.svg").read_text()
    assert "conv1 (Convolution) kernel size: 5 stride: 1 pad: 2" in svg and "Accuracy" not in svg
    with pytest.raises(CaffeError, match="--phase must be TRAIN, TEST or ALL"):
        run_tool([CIFAR, str(tmp_path / "q.png"), "--phase", "VAL"])
    with pytest.raises(CaffeError, match="extension"):
        run_tool([CIFAR, str(tmp_path / "q")])


def test_minicaffe_draw_command(tmp_path, capsys):
    need_dot()
    assert main(["draw", CIFAR, str(tmp_path / "c.png"), "--phase", "TEST"]) == 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["draw", str(tmp_path / "missing.prototxt"), str(tmp_path / "c.png")]) == 1
    assert "minicaffe draw: error: cannot read" in capsys.readouterr().err
