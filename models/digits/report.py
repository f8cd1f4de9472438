"""Print a table of compression stages: test accuracy, sparsity, non-zero parameters, FLOPs per
image (multiply-adds of the non-zero weights, x2), forward time at batch 64, and per layer the
sparsity / distinct non-zero values.

    python report.py STAGE WEIGHTS [STAGE WEIGHTS ...] [--net PROTOTXT STAGE WEIGHTS ...]

--net switches the prototxt (a train_test net reading the digits LMDBs) for the stages after it.
"""
import sys
import time

import numpy as np

import minicaffe
from minicaffe import io, log, sparse
from minicaffe import minicaffe_pb2 as pb

NET = "models/digits/lenet_train_test.prototxt"
BATCH = 64


def accuracy(net, batches=1):
    return float(np.mean([float(net.forward()["accuracy"]) for _ in range(batches)]))


def forward_ms(prototxt, weights, images, runs=30):
    """Median forward time of the TEST net with its data layer replaced by an Input of BATCH images."""
    param = io.read_net(prototxt)
    for lp in param.layer:
        if lp.type == "Data":
            keep = pb.LayerParameter(name=lp.top[0], type="Input", top=lp.top, include=lp.include)
            lp.CopyFrom(keep)
            lp.input_param.shape.add().dim.extend((BATCH,) + images.shape[1:])
            lp.input_param.shape.add().dim.extend([BATCH])
    net = minicaffe.Net(param, weights, minicaffe.TEST)
    net.blobs[param.layer[0].top[0]].data[...] = images[:BATCH]
    for _ in range(sparse.TRIAL_CALLS):     # warm up, and let sparse layers pick their product
        net.forward()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        net.forward()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def row(stage, prototxt, weights):
    net = minicaffe.Net(prototxt, weights, minicaffe.TEST)
    acc = accuracy(net)
    cells, total, zeros, nonzero_params, flops = [], 0, 0, 0, 0
    for name, layer, tops in zip(net.layer_names, net.layers, net.top_vecs):
        if not layer.blobs:
            continue
        w = layer.blobs[0].data
        nz = int((w != 0).sum())
        total += w.size
        zeros += w.size - nz
        nonzero_params += sum(int((b.data != 0).sum()) for b in layer.blobs)
        flops += 2 * nz * int(np.prod(tops[0].shape[2:]))     # per output position (1 for ip)
        cells.append(f"{name} {100 * (1 - nz / w.size):4.1f}%/{len(np.unique(w[w != 0]))}")
    images = next(b.data for b in net.blobs.values() if b.data.ndim == 4)
    ms = forward_ms(prototxt, weights, images)
    print(f"{stage:<26} {100 * acc:6.2f}%  {100 * zeros / total:5.1f}%  {nonzero_params:>7}  "
          f"{flops / 1e6:6.3f}  {ms:7.2f}   " + "  ".join(cells))
    return acc


def main(args):
    log.quiet = True
    print(f"{'stage':<26} {'test acc':>7}  {'sparse':>6}  {'params':>7}  {'MFLOP':>6}  "
          f"{'ms@' + str(BATCH):>7}   per layer: sparsity/distinct non-zero values")
    prototxt = NET
    while args:
        if args[0] == "--net":
            prototxt, args = args[1], args[2:]
            continue
        row(args[0], prototxt, args[1])
        args = args[2:]


if __name__ == "__main__":
    main(sys.argv[1:])
