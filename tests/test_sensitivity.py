"""minicaffe sensitivity (minicaffe/compress/sensitivity.py, tools/sensitivity.py) on a small net
reading its own LMDB; and the warning when a pruned model is trained in plain layers."""
import argparse

import numpy as np
import pytest

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.compress import sensitivity as sens
from minicaffe.compress.mask import make_mask
from minicaffe.errors import CaffeError
from minicaffe.tools import sensitivity as tool

from nets import TINY_NET, write_tiny

N, BATCH = 50, 16          # four batches, the last of 2 items
LAYERS = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
"""


def softmax_loss(scores, labels):
    z = scores - scores.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A deploy net (Input of all N images) for the reference, the weights, and a train_test net
    reading an LMDB whose first BATCH items are labelled as the net predicts them and the rest not:
    accuracy over the whole set exactly 16/50; a wrapped-around last batch would give 30/64."""
    d = tmp_path_factory.mktemp("sens")
    imgs = np.random.RandomState(0).randint(0, 256, (N, 1, 6, 6)).astype(np.uint8)
    deploy = io.parse_text('layer { name: "data" type: "Input" top: "data" input_param { shape { '
                           f'dim: {N} dim: 1 dim: 6 dim: 6 }} }} }}' + LAYERS, pb.NetParameter())
    ref = minicaffe.Net(deploy, minicaffe.TEST)
    weights = str(d / "w.caffemodel")
    ref.save(weights)
    x = imgs.astype(np.float32) / 255
    pred = ref.forward(data=x)["ip1"].argmax(1)
    labels = np.where(np.arange(N) < BATCH, pred, (pred + 1) % 3)
    io.write_lmdb(str(d / "db"), ((f"{i:05d}".encode(), io.datum(im, lab).SerializeToString())
                                  for i, (im, lab) in enumerate(zip(imgs, labels))))
    model = d / "train_test.prototxt"
    model.write_text(f"""name: "small"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ scale: {1 / 255!r} }}
  data_param {{ source: "{d}/db" batch_size: {BATCH} backend: LMDB }} }}
{LAYERS}
layer {{ name: "acc" type: "Accuracy" bottom: "ip1" bottom: "label" top: "acc" include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }}
""")
    return dict(dir=d, deploy=deploy, x=x, labels=labels, weights=weights, model=str(model))


def reference(s, layer=None, ratio=0.0, granularity="weight"):
    """(accuracy, loss) of the deploy net over all items, `layer` pruned by make_mask."""
    net = minicaffe.Net(s["deploy"], s["weights"], minicaffe.TEST)
    if layer:
        w = net.params[layer][0].data
        w *= make_mask(w.copy(), ratio, granularity)
    scores = net.forward(data=s["x"])["ip1"].astype(np.float64)
    # Caffe's Accuracy: right when no other class scores as high as the label (a tie is wrong)
    right = (scores >= scores[np.arange(N), s["labels"]][:, None]).sum(1) == 1
    return float(right.mean()), softmax_loss(scores, s["labels"])


def test_scores_each_test_item_once(setup):
    net = minicaffe.Net(setup["model"], setup["weights"], minicaffe.TEST)
    scorer = sens.Scorer(net)
    assert scorer.iterations == 4
    acc, loss = scorer.score()
    assert acc == pytest.approx(16 / 50) and reference(setup) == pytest.approx((acc, loss), rel=1e-5)
    assert scorer.score() == pytest.approx((acc, loss), rel=1e-6)      # the same batches again
    # --iterations: Caffe's mean over that many batches (the first all right, the second all wrong)
    assert sens.Scorer(net, iterations=2).score()[0] == pytest.approx(0.5)


@pytest.mark.parametrize("granularity", ["weight", "filter", "channel"])
def test_sweep_prunes_one_layer_at_a_time_and_restores_it(setup, granularity):
    net = minicaffe.Net(setup["model"], setup["weights"], minicaffe.TEST)
    before = {n: p[0].data.copy() for n, p in net.params.items()}
    seen = []
    points = sens.sweep(net, {"conv1": 0, "ip1": 0}, [0.25, 0.5, 0.9], granularity, report=seen.append)
    assert seen == points
    assert [(p.layer, p.ratio) for p in points] == [(n, r) for n in ("conv1", "ip1")
                                                     for r in (0, 0.25, 0.5, 0.9)]
    for p in points:
        assert (p.accuracy, p.loss) == pytest.approx(reference(setup, p.layer, p.ratio, granularity),
                                                     rel=1e-4)
    # int(units * ratio) of the layer's units pruned: weights, filters or input channels
    units = {"conv1": {"weight": 36, "filter": 4, "channel": 1},
             "ip1": {"weight": 192, "filter": 3, "channel": 64}}
    for p in points:
        n = units[p.layer][granularity]
        assert p.sparsity == pytest.approx(int(n * p.ratio) / n)
    for n, w in before.items():
        np.testing.assert_array_equal(net.params[n][0].data, w)
    # every point ran dense: no CSR was built for weights that change at every point
    assert all(getattr(layer, "sparse", None) is None or layer.sparse.csr is None for layer in net.layers)


def test_propose_stops_at_the_first_ratio_over_budget():
    P = sens.Point
    pts = [P("a", 0, 0.98, 0, 0), P("a", 0.5, 0.978, 0, 0.5), P("a", 0.7, 0.96, 0, 0.7),
           P("a", 0.9, 0.979, 0, 0.9),     # back within budget after a drop: not proposed
           P("b", 0, 0.98, 0, 0), P("b", 0.3, 0.9, 0, 0.3)]
    assert sens.propose(pts, 0.5) == {"a": 0.5, "b": 0.0}
    assert sens.propose(pts, 2) == {"a": 0.9, "b": 0.0}
    assert sens.ratio_flag({"a": 0.5, "b": 0.0, "c": 0.95}) == "a=0.5,c=0.95"


def run_tool(*argv):
    p = argparse.ArgumentParser()
    tool.add_arguments(p)
    return tool.run(p.parse_args(list(argv)))


def test_tool_writes_csv_plot_and_proposal(setup, capsys):
    d = setup["dir"]
    out = str(d / "out" / "s.csv")
    run_tool("--model", setup["model"], "--weights", setup["weights"], "--ratios", "0.9,0.2,0.5",
             "-o", out, "--plot", str(d / "out" / "s.png"), "--budget", "3")
    text = capsys.readouterr().out
    rows = [line.split(",") for line in open(out).read().splitlines()]
    assert rows[0] == ["layer", "ratio", "accuracy", "loss", "sparsity"] and len(rows) == 1 + 2 * 4
    assert [r[1] for r in rows[1:5]] == ["0", "0.2", "0.5", "0.9"]
    points = [sens.Point(r[0], float(r[1]), float(r[2]), float(r[3]), float(r[4])) for r in rows[1:]]
    flag = sens.ratio_flag(sens.propose(points, 3))
    assert open(str(d / "out" / "s.ratios")).read().strip() == flag
    assert f"--sparse-ratio={flag}" in text if flag else "no layer can be pruned" in text
    assert open(str(d / "out" / "s.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_tool_errors(setup, tmp_path):
    base = ["--model", setup["model"], "--weights", setup["weights"], "-o", str(tmp_path / "s.csv")]
    with pytest.raises(CaffeError, match="no prunable layer named nope.*conv1, ip1"):
        run_tool(*base, "--layers", "conv1,nope")
    from minicaffe.cli import main
    assert main(["sensitivity", *base, "--layers", "nope"]) == 1
    with pytest.raises(CaffeError, match=r"\[0, 1\)"):
        run_tool(*base, "--ratios", "0.5,1.0")
    with pytest.raises(CaffeError, match="not a comma-separated list"):
        run_tool(*base, "--ratios", "0.5,x")
    text = open(setup["model"]).read().replace('type: "Accuracy"', 'type: "Softmax"').replace(
        'bottom: "ip1" bottom: "label" top: "acc"', 'bottom: "ip1" top: "acc"')
    (tmp_path / "noacc.prototxt").write_text(text)
    with pytest.raises(CaffeError, match="Accuracy layer"):
        run_tool("--model", str(tmp_path / "noacc.prototxt"), *base[2:])


# ---------------------------------------------------------------- training a pruned model, plainly

def tiny_solver(tmp_path, net=TINY_NET):
    return minicaffe.Solver(write_tiny(tmp_path, net=net, max_iter=2, test_interval=0))


def zero_half(solver, layer, fraction=0.6):
    w = solver.net.params[layer][0].data
    w.ravel()[:int(w.size * fraction)] = 0


def test_training_plain_layers_with_mostly_zero_weights_warns_once(tmp_path, capsys):
    s = tiny_solver(tmp_path)
    zero_half(s, "ip1")
    s.step(1)
    err = capsys.readouterr().err
    assert "layer 'ip1'" in err and "CmpInnerProduct" in err and "conv1" not in err
    s.step(1)
    assert "zero" not in capsys.readouterr().err
    # a Cmp layer keeps its zeros, a frozen weight too, and a net under half zeros says nothing
    for net in (TINY_NET.replace('"InnerProduct"', '"CmpInnerProduct"'),
                TINY_NET.replace('top: "ip1"\n', 'top: "ip1" param { lr_mult: 0 }\n'),
                TINY_NET):
        s = tiny_solver(tmp_path, net)
        zero_half(s, "ip1", 0.6 if net != TINY_NET else 0.4)
        s.step(1)
        assert "trains them back" not in capsys.readouterr().err


def test_train_from_pruned_weights_warns(tmp_path, capsys):
    from minicaffe.cli import main
    s = tiny_solver(tmp_path)
    zero_half(s, "conv1")
    s.net.save(str(tmp_path / "pruned.caffemodel"))
    solver = write_tiny(tmp_path, max_iter=2, test_interval=0)
    assert main(["train", f"--solver={solver}", f"--weights={tmp_path}/pruned.caffemodel"]) == 0
    err = capsys.readouterr().err
    assert "layer 'conv1'" in err and "trains them back" in err and "CmpConvolution" in err
