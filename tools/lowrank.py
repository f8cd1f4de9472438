"""minicaffe lowrank: replace large InnerProduct/Convolution layers by two smaller ones (truncated SVD)."""
import numpy as np

import minicaffe
from minicaffe import log
from minicaffe.compress.lowrank import SCHEMES, choose_ranks, lowrank, parse_ranks
from minicaffe.compress.netedit import NetEdit
from minicaffe.errors import CaffeError

HELP = "factorize InnerProduct/Convolution layers into two low-rank layers (truncated SVD)"


def add_arguments(p):
    p.add_argument("--model", required=True, help="the net's .prototxt")
    p.add_argument("--weights", required=True, help="its trained .caffemodel")
    p.add_argument("--rank", default="", help="rank per layer: ip1=32,conv2=16")
    p.add_argument("--energy", type=float, default=None,
                   help="instead of --rank: per layer the smallest rank keeping this share of the "
                        "squared singular values (every layer where that saves parameters, or --layers)")
    p.add_argument("--layers", default="", help="with --energy: only these layers (conv2,ip1)")
    p.add_argument("--scheme", choices=SCHEMES, default="channel",
                   help="convolutions: KxK to r channels then 1x1 (channel), or kx1 then 1xk (spatial)")
    p.add_argument("-o", "--output", required=True,
                   help="output prefix: writes OUTPUT.prototxt and OUTPUT.caffemodel")


def costs(param, weights):
    """Per layer with weights: (parameters, FLOPs per image = 2 x weights x output positions), FLOPs
    None where the TEST net cannot be built (e.g. its data is missing)."""
    params = {name: sum(a.size for a in arrays) for name, arrays in weights.items()}
    try:
        net = minicaffe.Net(param, minicaffe.TEST)
    except (CaffeError, OSError):
        return {n: (p, None) for n, p in params.items()}
    flops = {}
    for name, layer, tops in zip(net.layer_names, net.layers, net.top_vecs):
        if name in weights and layer.blobs:
            conv = layer.blobs[0].data.ndim > 2 and layer.type.endswith("Convolution")
            positions = int(np.prod(tops[0].shape[2:])) if conv else 1
            flops[name] = 2 * layer.blobs[0].data.size * positions
    return {n: (p, flops.get(n)) for n, p in params.items()}


def run(a):
    if bool(a.rank) == (a.energy is not None):
        raise CaffeError("give either --rank layer=r,... or --energy E")
    edit = NetEdit.load(a.model, a.weights)
    saved, log.quiet = log.quiet, True
    try:
        before = costs(edit.net, edit.blobs)
        if a.rank:
            ranks = parse_ranks(a.rank)
        else:
            ranks = choose_ranks(edit, a.energy, [n for n in a.layers.split(",") if n], a.scheme)
        done = lowrank(edit, ranks, a.scheme)
        after = costs(edit.net, edit.blobs)
    finally:
        log.quiet = saved
    print(f"{'layer':<12} {'rank':>10} {'parameters':>21} {'FLOPs/image':>25}")
    totals = [0, 0, 0, 0]
    for name, (p0, f0) in before.items():
        if name in done:
            r, full, new = done[name]
            rank = f"{r}/{full}"
            p1 = sum(after[n][0] for n in new)
            f1 = None if f0 is None else sum(after[n][1] for n in new)
        else:
            rank = "-" if name not in ranks else "kept"
            p1, f1 = after[name]
        fl = f"{f0:>11} -> {f1:<11}" if f0 is not None else f"{'?':>11}    {'':<11}"
        print(f"{name:<12} {rank:>10} {p0:>9} -> {p1:<9} {fl}")
        totals = [t + (v or 0) for t, v in zip(totals, (p0, p1, f0, f1))]
    p0, p1, f0, f1 = totals
    print(f"{'total':<12} {'':>10} {p0:>9} -> {p1:<9} {f0:>11} -> {f1:<11} "
          f"({p0 / max(p1, 1):.2f}x fewer parameters, {f0 / max(f1, 1):.2f}x fewer FLOPs)")
    for name, (r, full, new) in done.items():
        p0, p1 = before[name][0], sum(after[n][0] for n in new)
        print(f"{name}: rank {r} of {full} -> {' + '.join(new)}, {p0 / p1:.2f}x fewer parameters")
    model, weights = edit.save(a.output)
    print(f"wrote {model} and {weights}")
