"""minicaffe sensitivity: prune one layer at a time to each ratio and score the TEST net; a CSV,
a plot, and per-layer ratios that keep the accuracy within a budget."""
import os
import time

from minicaffe import io, log
from minicaffe import minicaffe_pb2 as pb
from minicaffe.compress import sensitivity as sens
from minicaffe.compress.mask import GRANULARITIES, NORMS, PRUNABLE, out_axis
from minicaffe.errors import CaffeError
from minicaffe.net import Net


HELP = "test accuracy with one layer pruned at a time, at several ratios"
RATIOS = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,0.95"


def add_arguments(p):
    p.add_argument("--model", required=True, help="train_test .prototxt (its TEST phase is scored)")
    p.add_argument("--weights", required=True, help="trained .caffemodel (or .mcz)")
    p.add_argument("--layers", default="", help="comma-separated layers (default: every "
                   "Convolution, InnerProduct and Cmp layer)")
    p.add_argument("--ratios", default=RATIOS, help=f"fractions pruned, each in [0, 1) (default {RATIOS})")
    p.add_argument("--granularity", default="weight", choices=GRANULARITIES,
                   help="prune single weights, whole output filters, or whole input channels")
    p.add_argument("--norm", default="L1", choices=NORMS, help="the norm ranking filters/channels")
    p.add_argument("--iterations", type=int, default=None,
                   help="test batches per point (default: the whole test database once)")
    p.add_argument("-o", "--output", required=True, help="the CSV to write")
    p.add_argument("--plot", default=None, help="a PNG of accuracy against sparsity")
    p.add_argument("--budget", type=float, default=None,
                   help="propose per-layer ratios keeping the accuracy within this many points")


def parse_ratios(text):
    try:
        ratios = sorted({float(r) for r in text.split(",") if r.strip()})
    except ValueError:
        raise CaffeError(f"--ratios: '{text}' is not a comma-separated list of numbers") from None
    bad = [r for r in ratios if not 0 <= r < 1]
    if not ratios or bad:
        raise CaffeError(f"--ratios: each must be in [0, 1) (the fraction pruned); got {text}")
    return ratios


def chosen_layers(net, names):
    """name -> the weight axis of its output filters, for the prunable layers (or those named)."""
    prunable = {lp.name: out_axis(lp) for lp in net.param.layer
                if lp.type in PRUNABLE and net.layer_dict[lp.name].blobs}
    if not names:
        return prunable
    unknown = [n for n in names if n not in prunable]
    if unknown:
        raise CaffeError(f"--layers: no prunable layer named {', '.join(unknown)} (prunable: "
                         f"{', '.join(prunable)})")
    return {n: prunable[n] for n in names}


def run(a):
    ratios = parse_ratios(a.ratios)
    if a.iterations is not None and a.iterations < 1:
        raise CaffeError("--iterations must be at least 1")
    start = time.perf_counter()
    was, log.quiet = log.quiet, True        # the net's setup lines would bury the table
    try:
        net = Net(a.model, weights=a.weights, phase=pb.TEST)
    finally:
        log.quiet = was
    layers = chosen_layers(net, [n.strip() for n in a.layers.split(",") if n.strip()])
    print(f"{'layer':<12} {'ratio':>6} {'sparsity':>8} {'accuracy':>9} {'loss':>9}")

    def show(p):
        print(f"{p.layer:<12} {p.ratio:6.3g} {100 * p.sparsity:7.2f}% {100 * p.accuracy:8.2f}% "
              f"{p.loss:9.4g}", flush=True)
    points = sens.sweep(net, layers, ratios, a.granularity, a.norm, a.iterations, show)
    sens.write_csv(a.output, points)
    wrote = [a.output]
    proposal = None
    if a.budget is not None:
        proposal = sens.propose(points, a.budget)
        flag = sens.ratio_flag(proposal)
        base = os.path.splitext(a.output)[0]
        io.atomic_write(base + ".ratios", (flag + "\n").encode())
        wrote.append(base + ".ratios")
        print(f"\nwithin {a.budget:g} points of the accuracy as given, one layer at a time: "
              + ", ".join(f"{n} {r:g}" for n, r in proposal.items()))
        if flag:
            norm = "" if a.granularity == "weight" else f" --norm={a.norm}"
            print(f"  minicaffe prune --model={a.model} --weights={a.weights} --sparse-ratio={flag} "
                  f"--granularity={a.granularity}{norm} -o PRUNED.caffemodel")
            print("  (pruned together, the layers lose more than each alone: test, and finetune)")
        else:
            print("  no layer can be pruned within the budget")
    if a.plot:
        title = (f"{net.name or os.path.basename(a.model)}: sensitivity to {a.granularity} pruning "
                 f"({os.path.basename(a.weights)})")
        sens.plot(a.plot, points, title, a.budget, proposal)
        wrote.append(a.plot)
    print(f"wrote {', '.join(wrote)} in {time.perf_counter() - start:.1f} s")
