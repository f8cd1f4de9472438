"""minicaffe test: caffe test --model=M --weights=W [--iterations=50]: average each output."""
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

    def each(i, vals):
        for n, v in zip(net.outputs, vals):
            for x in v:
                log.info(f"Batch {i}, {n} = {x:.6g}")
    loss, means = net.average_outputs(a.iterations, each)
    log.info(f"Loss: {loss:.6g}")
    for n, m in zip(net.outputs, means):
        for x in m:
            log.info(net.output_line(n, x))
