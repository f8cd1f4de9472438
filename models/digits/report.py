"""Print the prune-and-share table: stage, test accuracy, sparsity, distinct values per layer."""
import sys

import numpy as np

import minicaffe
from minicaffe import log

NET = "models/digits/lenet_train_test.prototxt"
LAYERS = ["conv1", "conv2", "ip1", "ip2"]


def accuracy(net, batches=1):
    return float(np.mean([float(net.forward()["accuracy"]) for _ in range(batches)]))


def row(stage, weights):
    net = minicaffe.Net(NET, weights, minicaffe.TEST)
    cells = []
    total = zeros = 0
    for name in LAYERS:
        w = net.params[name][0].data
        total += w.size
        zeros += int((w == 0).sum())
        distinct = len(np.unique(w[w != 0]))
        cells.append(f"{name} {100 * (w == 0).mean():5.1f}% /{distinct:>6}")
    acc = accuracy(net)
    print(f"{stage:<22} {100 * acc:6.2f}%  {100 * zeros / total:5.1f}%   " + "  ".join(cells))
    return acc


def main(pairs):
    log.quiet = True
    print(f"{'stage':<22} {'test acc':>7}  {'sparse':>6}   per layer: sparsity / distinct non-zero values")
    for i in range(0, len(pairs), 2):
        row(pairs[i], pairs[i + 1])


if __name__ == "__main__":
    main(sys.argv[1:])
