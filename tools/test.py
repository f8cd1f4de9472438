"""minicaffe test: caffe test --model=M --weights=W [--iterations=50]: average each output."""
import numpy as np

from minicaffe import log
from minicaffe import minicaffe_pb2 as pb
from minicaffe.net import Net

from .common import add_net_state, phase, stages

HELP = "score a trained model"


def add_arguments(p):
    p.add_argument("--model", required=True, help="net .prototxt")
    p.add_argument("--weights", required=True, help="trained .caffemodel")
    p.add_argument("--iterations", type=int, default=50)
    add_net_state(p)


def run(a):
    net = Net(a.model, weights=a.weights, phase=phase(a, pb.TEST), level=a.level, stages=stages(a))
    log.info(f"Running for {a.iterations} iterations.")
    sums, loss = None, 0.0
    weights = {n: w for layer, names in zip(net.layers, net.top_names)
               for n, w in zip(names, layer.loss_weights)}
    for i in range(a.iterations):
        loss += net.forward_from_to()
        vals = [net.blobs[n].data.astype(np.float64).ravel().copy() for n in net.outputs]
        for n, v in zip(net.outputs, vals):
            for j, x in enumerate(v):
                log.info(f"Batch {i}, {n} = {x:.6g}")
        sums = vals if sums is None else [s + v for s, v in zip(sums, vals)]
    log.info(f"Loss: {loss / a.iterations:.6g}")
    for n, s in zip(net.outputs, sums or []):
        for x in s / a.iterations:
            w = weights.get(n, 0)
            extra = f" (* {w:g} = {w * x:.6g} loss)" if w else ""
            log.info(f"{n} = {x:.6g}{extra}")
