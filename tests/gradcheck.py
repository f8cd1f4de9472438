"""A finite-difference gradient checker, as Caffe's GradientChecker: perturb each checked input
element by +-step, recompute L = sum(top * r) for fixed random r, and compare the slope with the
analytic gradient the layer's backward produced."""
import numpy as np
from google.protobuf import text_format

import minicaffe  # noqa: F401  (registers layers)
from minicaffe import minicaffe_pb2 as pb
from minicaffe.blob import Blob
from minicaffe.layer import create_layer


def make_layer(text, bottoms, phase=pb.TRAIN, n_top=1):
    lp = text_format.Parse(text, pb.LayerParameter())
    if not lp.name:
        lp.name = "under_test"
    layer = create_layer(lp, phase)
    bottom = []
    for b in bottoms:
        blob = Blob(b.shape)
        blob.data[...] = b
        bottom.append(blob)
    top = [Blob() for _ in range(n_top)]
    layer.set_up(bottom, top)
    if layer.blobs:
        layer.on_weights_set()       # as the Net does: Cmp layers compute their masks here
    return layer, bottom, top


def forward(layer, bottom, top):
    layer.reshape(bottom, top)
    layer.forward(bottom, top)


def check_gradient(text, bottoms, phase=pb.TRAIN, n_top=1, check_bottom=None, step=1e-2,
                   tol=2e-3, samples=40, seed=0, loss=False):
    """Raise AssertionError when analytic and numeric gradients disagree.

    check_bottom: indices of bottoms to check (default all); params are always checked.
    loss: the layer is a loss layer, whose top diff holds the loss weight (1).
    """
    rs = np.random.RandomState(seed)
    layer, bottom, top = make_layer(text, bottoms, phase, n_top)
    check_bottom = range(len(bottom)) if check_bottom is None else check_bottom
    forward(layer, bottom, top)
    weights = [np.ones(t.shape, np.float32) if loss else np.asarray(rs.randn(*t.shape), np.float32)
               for t in top]
    if loss:
        weights = weights[:1] + [np.zeros(t.shape, np.float32) for t in top[1:]]

    def objective():
        forward(layer, bottom, top)
        return sum(float((t.data.astype(np.float64) * w).sum()) for t, w in zip(top, weights))

    state = layer.__dict__.copy()
    objective()
    for t, w in zip(top, weights):
        t.diff[...] = w
    for p in layer.blobs:
        p.diff[...] = 0
    pd = [i in check_bottom for i in range(len(bottom))]
    layer.backward(top, pd, bottom)
    targets = [(f"bottom {i}", bottom[i], bottom[i].diff.copy()) for i in check_bottom]
    targets += [(f"param {i}", p, p.diff.copy()) for i, p in enumerate(layer.blobs)]
    checked = 0
    for name, blob, analytic in targets:
        flat = blob.data.reshape(-1)
        live = np.arange(flat.size) if getattr(blob, "mask", None) is None else \
            np.flatnonzero(blob.mask.reshape(-1))      # pruned weights are constants, not variables
        idx = rs.choice(live, min(samples, live.size), replace=False)
        for j in idx:
            orig = flat[j]
            flat[j] = orig + step
            plus = objective()
            flat[j] = orig - step
            minus = objective()
            flat[j] = orig
            numeric = (plus - minus) / (2 * step)
            a = float(analytic.reshape(-1)[j])
            scale = max(abs(a), abs(numeric), 1.0)
            assert abs(a - numeric) <= tol * scale, (
                f"{text.split(chr(10))[0]} {name}[{j}]: analytic {a:.6g} vs numeric {numeric:.6g}")
            checked += 1
    layer.__dict__.update(state)
    return checked
