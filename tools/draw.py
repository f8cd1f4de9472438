"""minicaffe draw: a net's graph as an image, as Caffe's python/draw_net.py draws it."""
import os

from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError

HELP = "draw a net .prototxt as a graph (PNG, SVG, PDF, ... from the output's extension)"
PHASES = {"TRAIN": pb.TRAIN, "TEST": pb.TEST, "ALL": None}


def add_arguments(p):
    p.add_argument("net", help="net .prototxt")
    p.add_argument("output", help="image file; its extension picks graphviz's format (png, svg, pdf)")
    p.add_argument("--rankdir", default="LR",
                   help="graph direction: LR (left to right, the default), TB, BT or RL")
    p.add_argument("--phase", default="ALL",
                   help="draw the layers of TRAIN or TEST only; ALL (the default) draws every layer")
    p.add_argument("--display_lrm", action="store_true",
                   help="show the learning rate multipliers of convolution and inner product layers")


def run(a):
    phase = a.phase.upper()
    if phase not in PHASES:
        raise CaffeError(f"--phase must be TRAIN, TEST or ALL, got '{a.phase}'")
    if not os.path.splitext(a.output)[1]:
        raise CaffeError(f"{a.output}: give the output an extension (.png, .svg, .pdf) to pick its format")
    from caffe import draw  # pydot is imported only by the command that needs it
    net = io.read_net(a.net)
    print(f"Drawing net to {a.output}")
    draw.draw_net_to_file(net, a.output, a.rankdir, PHASES[phase], a.display_lrm)
