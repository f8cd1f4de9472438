"""minicaffe inspect: per-layer sizes, sparsity and distinct values of a trained model."""
import math

import numpy as np

from minicaffe import io
from minicaffe.errors import CaffeError

HELP = "show per-layer sparsity, distinct values and sizes of a model"


def add_arguments(p):
    p.add_argument("weights", help=".caffemodel or .caffemodel.h5")
    p.add_argument("--model", default="", help="net .prototxt, for layer types when the file lacks them")
    p.add_argument("--plot", default="", help="write a weight histogram and sparsity bars to this PNG")


def sparse_bytes(w, gap_bits):
    """Bytes for Deep Compression's sparse format: per non-zero a relative index of `gap_bits` bits
    (a filler entry where a gap overflows) and a value: a ceil(log2 K)-bit index into a float32
    codebook when there are at most 256 distinct values, else the float32 itself."""
    flat = w.ravel()
    nz = np.flatnonzero(flat)
    if not len(nz):
        return 0
    gaps = np.diff(np.concatenate([[-1], nz]))
    fillers = int(((gaps - 1) // (1 << gap_bits)).sum())
    entries = len(nz) + fillers
    distinct = len(np.unique(flat[nz]))
    if distinct <= 256:
        value_bits = max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1
        codebook = 4 * distinct
    else:
        value_bits, codebook = 32, 0
    return math.ceil(entries * (gap_bits + value_bits) / 8) + codebook


def _squeeze_legacy(bp, a):
    """Old Caffe wrote every blob as 4-D (num, channels, height, width): (1, 1, 1, 20) is a bias of 20."""
    if bp.HasField("shape"):
        return a
    shape = list(a.shape)
    while len(shape) > 1 and shape[0] == 1:
        shape.pop(0)
    return a.reshape(shape)


def layer_rows(net_param, types):
    rows = []
    for lp in net_param.layer:
        if not len(lp.blobs):
            continue
        blobs = [_squeeze_legacy(b, io.blob_to_array(b)) for b in lp.blobs]
        t = types.get(lp.name) or lp.type or "?"
        w = blobs[0]
        n = sum(b.size for b in blobs)
        nnz = sum(int(np.count_nonzero(b)) for b in blobs)
        gap_bits = 8 if "Conv" in t else 5
        sb = sparse_bytes(w, gap_bits) + sum(4 * b.size for b in blobs[1:])
        rows.append(dict(name=lp.name, type=t, shapes=" ".join("x".join(map(str, b.shape)) for b in blobs),
                         params=n, nnz=nnz, sparsity=float((w == 0).mean()),
                         distinct=len(np.unique(w[w != 0])), dense=4 * n, sparse=sb, weights=w))
    return rows


def run(a):
    types = {lp.name: lp.type for lp in io.read_net(a.model).layer} if a.model else {}
    rows = layer_rows(io.read_weights(a.weights), types)
    if not rows:
        raise CaffeError(f"{a.weights} holds no parameter blobs")
    hdr = (f"{'layer':<12} {'type':<16} {'blobs':<22} {'params':>9} {'non-zero':>9} {'sparsity':>8} "
           f"{'distinct':>8} {'dense B':>10} {'sparse B':>10}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['name']:<12} {r['type']:<16} {r['shapes']:<22} {r['params']:>9} {r['nnz']:>9} "
              f"{100 * r['sparsity']:>7.2f}% {r['distinct']:>8} {r['dense']:>10} {r['sparse']:>10}")
    tp, tn = sum(r["params"] for r in rows), sum(r["nnz"] for r in rows)
    td, ts = sum(r["dense"] for r in rows), sum(r["sparse"] for r in rows)
    print("-" * len(hdr))
    print(f"{'total':<12} {'':<16} {'':<22} {tp:>9} {tn:>9} {100 * (1 - tn / tp):>7.2f}% {'':>8} "
          f"{td:>10} {ts:>10}   ({td / max(ts, 1):.1f}x)")
    if a.plot:
        plot(rows, a.plot)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (h, b) = plt.subplots(1, 2, figsize=(11, 4))
    for r in rows:
        w = r["weights"]
        h.hist(w[w != 0].ravel(), bins=100, histtype="step", label=r["name"])
    h.set_title("non-zero weights")
    h.set_yscale("log")
    h.legend(fontsize=7)
    b.bar([r["name"] for r in rows], [100 * r["sparsity"] for r in rows])
    b.set_ylabel("sparsity (%)")
    b.set_title("pruned weights per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
