"""minicaffe quantize: a trained model -> .mcz with int8 weights and calibrated activation scales."""
from minicaffe import io, log
from minicaffe import minicaffe_pb2 as pb
from minicaffe.compress import mcz, quantize
from minicaffe.errors import CaffeError
from minicaffe.net import Net

HELP = "8-bit quantization: int8 weights per output channel, activation scales from the train data"


def add_arguments(p):
    p.add_argument("--model", required=True, help="net .prototxt (its TRAIN phase data calibrates)")
    p.add_argument("--weights", required=True, help="trained .caffemodel (pruned or not)")
    p.add_argument("--calibration-iterations", type=int, default=10,
                   help="TRAIN-phase batches whose activations set the scales (default 10)")
    p.add_argument("--percentile", type=float, default=None,
                   help="scale each input by this percentile of |x| (e.g. 99.99), not its maximum")
    p.add_argument("-o", "--output", required=True, help="output .mcz")


def run(a):
    if a.calibration_iterations < 1:
        raise CaffeError("--calibration-iterations must be at least 1")
    if a.percentile is not None and not 0 < a.percentile <= 100:
        raise CaffeError(f"--percentile {a.percentile:g} is not in (0, 100]")
    net = Net(a.model, weights=a.weights, phase=pb.TRAIN)
    scales = quantize.calibrate(net, a.calibration_iterations, a.percentile)
    from .compress import _layers
    names = {n for n, has in zip(*_layers(a.model)) if has}
    src = io.read_weights(a.weights)
    trimmed = pb.NetParameter(name=src.name)
    for lp in src.layer:
        if len(lp.blobs) and lp.name in names:
            trimmed.layer.add().CopyFrom(lp)
    int8 = {n: (axis, s) for n, (axis, s) in scales.items() if n in names}
    size, rows = mcz.write(a.output, trimmed, int8=int8)
    log.info(f"calibrated on {a.calibration_iterations} TRAIN batch(es), "
             f"{'max |x|' if a.percentile is None else f'percentile {a.percentile:g} of |x|'}")
    print(f"{'layer':<12} {'encoding':<8} {'input scale':>12} {'weights':>9} {'dense B':>10} {'stored B':>9} {'ratio':>7}")
    for name, _, dense, comp, n, kind in rows:
        s = f"{int8[name][1]:.5g}" if name in int8 else "-"
        print(f"{name:<12} {kind:<8} {s:>12} {n:>9} {dense:>10} {comp:>9} {dense / comp:>6.2f}x")
    dense = sum(r[2] for r in rows)
    print(f"{'total':<12} {'':<8} {'':>12} {sum(r[4] for r in rows):>9} {dense:>10} {size:>9} {dense / size:>6.2f}x")
