"""minicaffe decompress: a .mcz back to a caffemodel with the same blobs."""
from minicaffe import io
from minicaffe.compress import mcz

HELP = "turn a .mcz back into a .caffemodel"


def add_arguments(p):
    p.add_argument("input", help=".mcz file")
    p.add_argument("-o", "--output", required=True, help="output .caffemodel (or .caffemodel.h5)")


def run(a):
    net = mcz.read(a.input)
    io.write_weights(a.output, net)
    print(f"wrote {a.output}: {len(net.layer)} layers")
