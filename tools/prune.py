"""minicaffe prune: one-shot pruning of a trained model, by weight magnitude or by whole filters or
input channels, per layer or one global ratio; writes the caffemodel and the Cmp prototxt that keeps
its zeros through finetuning."""
import os

import numpy as np

from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.compress.mask import GRANULARITIES, NORMS, PRUNABLE, make_mask, out_axis, pruned_count
from minicaffe.errors import CaffeError

HELP = "prune a trained model by weight magnitude or by filter/channel norm, without training"
CMP = {"Convolution": "CmpConvolution", "InnerProduct": "CmpInnerProduct"}
SCHEDULE = ("initial_sparse_ratio", "prune_start_iter", "prune_end_iter", "prune_interval")


def add_arguments(p):
    p.add_argument("--model", required=True, help="net .prototxt (gives the layer types)")
    p.add_argument("--weights", required=True, help="trained .caffemodel")
    p.add_argument("--sparse-ratio", "--sparse_ratio", dest="ratio", required=True,
                   help="conv1=0.33,ip1=0.9 per layer, or one number: a global magnitude threshold "
                        "(weight granularity) or that ratio in every layer (filter, channel)")
    p.add_argument("--granularity", default="weight", choices=GRANULARITIES,
                   help="prune single weights, whole output filters, or whole input channels")
    p.add_argument("--norm", default="L1", choices=NORMS, help="the norm ranking filters/channels")
    p.add_argument("-o", "--output", required=True, help="output .caffemodel")
    p.add_argument("--model-out", "--model_out", default=None,
                   help="the Cmp prototxt to write (default: the output with .prototxt)")


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


def model_out_path(a):
    path = a.model_out or (os.path.splitext(a.output)[0] if a.output.endswith(".caffemodel")
                           else a.output) + ".prototxt"
    if os.path.exists(path) and os.path.samefile(path, a.model):
        raise CaffeError(f"the Cmp prototxt would overwrite the input model {a.model}; "
                         "give another --model-out or -o")
    return path



def cmp_model(model, ratios, granularity, norm):
    """The input net with each pruned layer made a Cmp layer at its ratio, so finetuning keeps the
    zeros (a plain layer would train them back); Deconvolution has no Cmp type and stays."""
    out = pb.NetParameter()
    out.CopyFrom(model)
    for lp in out.layer:
        if lp.name not in ratios or lp.type == "Deconvolution":
            continue
        lp.type = CMP.get(lp.type, lp.type)
        p = lp.convolution_param if lp.type == "CmpConvolution" else lp.inner_product_param
        p.sparse_ratio = ratios[lp.name]
        p.prune_granularity = pb.PruneGranularity.Value(granularity.upper())
        p.prune_norm = pb.PruneNorm.Value(norm)
        for f in SCHEDULE:
            p.ClearField(f)
    return out


def run(a):
    ratios = parse_ratios(a.ratio)
    model = io.read_net(a.model)
    model_out = model_out_path(a)
    net = io.read_weights(a.weights)
    layer_of = {lp.name: lp for lp in net.layer}
    layer_of.update((lp.name, lp) for lp in model.layer)     # the model's type and params first
    layers = [lp for lp in net.layer if len(lp.blobs) and layer_of[lp.name].type in PRUNABLE]
    if isinstance(ratios, dict):
        unknown = set(ratios) - {lp.name for lp in layers}
        if unknown:
            raise CaffeError(f"no prunable layer named {', '.join(sorted(unknown))} in {a.weights}")
        chosen = [(lp, ratios[lp.name]) for lp in layers if lp.name in ratios]
    elif a.granularity != "weight":
        chosen = [(lp, ratios) for lp in layers]
    else:
        # one threshold across all layers: the k-th smallest |w| of all of them together
        allw = np.concatenate([np.abs(io.blob_to_array(lp.blobs[0])).ravel() for lp in layers])
        k = pruned_count(allw.size, ratios)
        thr = np.sort(allw)[k - 1] if k else -1
        chosen = [(lp, float((np.abs(io.blob_to_array(lp.blobs[0])) <= thr).mean())) for lp in layers]
    print(f"{'layer':<12} {'ratio':>6} {'weights':>9} {'pruned':>9}" +
          ("" if a.granularity == "weight" else f" {a.granularity + 's':>10}"))
    for lp, r in chosen:
        w = io.blob_to_array(lp.blobs[0])
        oa = out_axis(layer_of[lp.name])
        mask = make_mask(w, r, a.granularity, a.norm, oa)
        w = np.where(mask != 0, w, np.float32(0))
        bp = lp.blobs[0]
        bp.Clear()
        io.array_to_blob(w, bp)
        line = f"{lp.name:<12} {r:6.3f} {w.size:9d} {int((w == 0).sum()):9d}"
        if a.granularity != "weight":
            axis = oa if a.granularity == "filter" else 1 - oa
            units = np.moveaxis(mask, axis, 0).reshape(w.shape[axis], -1)
            line += f" {f'{int((units == 0).all(axis=1).sum())}/{w.shape[axis]}':>10}"
        print(line)
        if layer_of[lp.name].type == "Deconvolution":
            print(f"  note: {lp.name} is a Deconvolution, which has no Cmp type: finetuning "
                  "will not keep its zeros")
    io.write_weights(a.output, net)
    io.write_text(model_out, cmp_model(model, {lp.name: r for lp, r in chosen}, a.granularity, a.norm))
    print(f"wrote {a.output} and {model_out} (finetune with this prototxt to keep the zeros)")
