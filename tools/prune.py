"""minicaffe prune: one-shot magnitude pruning of a trained model, per layer or one global ratio."""
import numpy as np

from minicaffe import io
from minicaffe.errors import CaffeError
from minicaffe.compress.mask import magnitude_mask

HELP = "prune a trained model by weight magnitude, without training"
PRUNABLE = ("Convolution", "InnerProduct", "CmpConvolution", "CmpInnerProduct", "Deconvolution")


def add_arguments(p):
    p.add_argument("--model", required=True, help="net .prototxt (gives the layer types)")
    p.add_argument("--weights", required=True, help="trained .caffemodel")
    p.add_argument("--sparse-ratio", "--sparse_ratio", dest="ratio", required=True,
                   help="conv1=0.33,ip1=0.9 per layer, or one number for a global threshold")
    p.add_argument("-o", "--output", required=True, help="output .caffemodel")


def parse_ratios(text):
    """One ratio for all layers, or name=ratio pairs; each in [0, 1)."""
    def ratio(val, what):
        try:
            r = float(val)
        except ValueError:
            raise CaffeError(f"--sparse-ratio: {what}") from None
        if not 0 <= r < 1:
            raise CaffeError(f"--sparse-ratio: {r:g} is not in [0, 1) (the fraction of weights pruned)")
        return r
    if "=" not in text:
        return ratio(text, f"'{text}' is neither a number nor name=ratio pairs")
    out = {}
    for item in text.split(","):
        name, _, val = item.partition("=")
        out[name.strip()] = ratio(val, f"bad entry '{item}' (want name=ratio)")
    return out


def run(a):
    ratios = parse_ratios(a.ratio)
    types = {lp.name: lp.type for lp in io.read_net(a.model).layer}
    net = io.read_weights(a.weights)
    layers = [lp for lp in net.layer if len(lp.blobs) and types.get(lp.name, lp.type) in PRUNABLE]
    if isinstance(ratios, dict):
        unknown = set(ratios) - {lp.name for lp in layers}
        if unknown:
            raise CaffeError(f"no prunable layer named {', '.join(sorted(unknown))} in {a.weights}")
        chosen = [(lp, ratios[lp.name]) for lp in layers if lp.name in ratios]
    else:
        # one threshold across all layers: the k-th smallest |w| of all of them together
        allw = np.concatenate([np.abs(io.blob_to_array(lp.blobs[0])).ravel() for lp in layers])
        k = int(allw.size * ratios)
        thr = np.sort(allw)[k - 1] if k else -1
        chosen = [(lp, float((np.abs(io.blob_to_array(lp.blobs[0])) <= thr).mean())) for lp in layers]
    print(f"{'layer':<12} {'ratio':>6} {'weights':>9} {'pruned':>9}")
    for lp, r in chosen:
        w = io.blob_to_array(lp.blobs[0])
        w = np.where(magnitude_mask(w, r) != 0, w, np.float32(0))
        bp = lp.blobs[0]
        bp.Clear()
        io.array_to_blob(w, bp)
        print(f"{lp.name:<12} {r:6.3f} {w.size:9d} {int((w == 0).sum()):9d}")
    io.write_weights(a.output, net)
