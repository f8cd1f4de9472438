"""minicaffe compress: a caffemodel -> .mcz (sparse gaps + codebook indices, Huffman-coded)."""
from minicaffe import io
from minicaffe.compress import mcz
from minicaffe.net import Net

HELP = "store a pruned / weight-shared model compactly (.mcz)"


def add_arguments(p):
    p.add_argument("--model", required=True, help="net .prototxt the weights belong to")
    p.add_argument("--weights", required=True, help="input .caffemodel")
    p.add_argument("-o", "--output", required=True, help="output .mcz")
    p.add_argument("--float16", action="store_true", help="store dense blobs as float16 (lossy)")


def run(a):
    net_param = io.read_weights(a.weights)
    names = {n for n, layer in zip(*_layers(a.model)) if layer}
    kept = [lp.name for lp in net_param.layer if len(lp.blobs) and lp.name in names]
    trimmed = type(net_param)()
    trimmed.name = net_param.name
    for lp in net_param.layer:
        if lp.name in kept:
            trimmed.layer.add().CopyFrom(lp)
    size, rows = mcz.write(a.output, trimmed, a.float16)
    print(f"{'layer':<12} {'encoding':<8} {'weights':>9} {'dense B':>10} {'compressed B':>13} {'ratio':>7} {'bits/w':>7}")
    for name, _, dense, comp, n, kind in rows:
        print(f"{name:<12} {kind:<8} {n:>9} {dense:>10} {comp:>13} {dense / comp:>6.1f}x {8 * comp / n:>7.2f}")
    dense = sum(r[2] for r in rows)
    n = sum(r[4] for r in rows)
    print(f"{'total':<12} {'':<8} {n:>9} {dense:>10} {size:>13} {dense / size:>6.1f}x {8 * size / n:>7.2f}")


def _layers(model):
    """(names, has-params) of the net's layers, from its prototxt, without building data layers."""
    from minicaffe.tools.time import stand_in_data
    from minicaffe import minicaffe_pb2 as pb
    param = stand_in_data(io.read_net(model), pb.TEST, 0, [])
    net = Net(param, pb.TEST)
    return net.layer_names, [bool(layer.blobs) for layer in net.layers]
