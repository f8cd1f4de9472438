"""Sensitivity analysis: prune one layer at a time to each ratio and score the test net, to see how
far each layer can be pruned (Han et al. 2015, Fig. 6; Li et al. 2017, Fig. 2).

One TEST net serves every point: its data layers are read once and their batches kept, so a point
costs only the forward passes after them, and a layer's weights are restored after its sweep.
"""
import math
from io import BytesIO
from dataclasses import dataclass

import numpy as np

from minicaffe import io, sparse
from minicaffe.errors import CaffeError

from .mask import make_mask

CACHE_BYTES = 2 << 30      # the test batches kept in memory, at most


@dataclass
class Point:
    layer: str
    ratio: float
    accuracy: float
    loss: float
    sparsity: float        # of the layer's weights, measured


def _epoch(layer):
    """(items, batch size) of a data layer that reads a whole database, or None."""
    p = layer.param
    for attr, batch in (("keys", p.data_param.batch_size), ("items", p.image_data_param.batch_size),
                        ("arrays", p.hdf5_data_param.batch_size)):
        items = getattr(layer, attr, None)
        if items:
            return (len(items[0]) if attr == "arrays" else len(items)), batch
    return None


class Scorer:
    """Mean accuracy and loss of a TEST net over fixed batches, again and again.

    The batches are those of the net's leading data layers (the layers before the first that has a
    bottom): `iterations` of them, or by default one pass over the database, the last batch cut to
    what is left so that each test item counts once. Batches are weighted by their size."""

    def __init__(self, net, iterations=None):
        self.net = net
        self.start = next((i for i, b in enumerate(net.bottom_vecs) if b), len(net.layers))
        sources = net.layers[:self.start]
        accuracy = [lp.top[0] for lp in net.param.layer if lp.type == "Accuracy"]
        if not sources or not accuracy:
            raise CaffeError("sensitivity needs a TEST net that reads its data (Data, ImageData, "
                             "HDF5Data) and scores it with an Accuracy layer")
        self.accuracy = accuracy[0]
        self.iterations, self.last = iterations, None
        if iterations is None:
            epochs = {_epoch(layer) for layer in sources}
            if None in epochs or len(epochs) != 1:
                raise CaffeError("cannot tell the size of the test set from the data layers: give "
                                 "--iterations")
            (items, batch), = epochs
            self.iterations = math.ceil(items / batch)
            self.last = items - (self.iterations - 1) * batch
        self.batches = None

    def _read(self):
        tops = [t for vec in self.net.top_vecs[:self.start] for t in vec]
        batches, size = [], 0
        for k in range(self.iterations):
            self.net.forward_from_to(0, self.start - 1)
            n = self.last if k == self.iterations - 1 and self.last else None
            batches.append([t.peek[:n].copy() for t in tops])
            size += sum(a.nbytes for a in batches[-1])
            if size > CACHE_BYTES:
                raise CaffeError(f"{k + 1} test batches already take {size >> 20} MB: give fewer "
                                 "--iterations")
        for layer in self.net.layers[:self.start]:
            if hasattr(layer, "skip_batches"):
                layer.skip_batches(0)       # stops the prefetch thread: all is read
        return tops, batches

    def score(self):
        """(accuracy, loss), each averaged over the test items."""
        if self.batches is None:
            self.tops, self.batches = self._read()
        acc = loss = weight = 0.0
        with sparse.dense_only():          # new weights at every point: no CSR worth building
            for arrays in self.batches:
                for t, a in zip(self.tops, arrays):
                    t.reshape(a.shape)
                    t.data[...] = a
                n = len(arrays[0]) if self.last else 1
                loss += n * self.net.forward_from_to(self.start)
                acc += n * float(self.net.blobs[self.accuracy].peek.ravel()[0])
                weight += n
        return acc / weight, loss / weight


def sweep(net, layers, ratios, granularity="weight", norm="L1", iterations=None, report=None):
    """Points (layer, ratio, accuracy, loss, sparsity): for each layer of `layers` (name -> the
    weight axis of its output filters, as make_mask takes it), the net scored with only that layer
    pruned to each ratio; ratio 0 is the net as given. `report(point)` sees each as it comes."""
    scorer = Scorer(net, iterations)
    base = scorer.score()
    points = []

    def add(p):
        points.append(p)
        if report:
            report(p)
    for name, out_axis in layers.items():
        blob = net.layer_dict[name].blobs[0]
        original = blob.peek.copy()
        add(Point(name, 0.0, *base, float((original == 0).mean())))
        try:
            for r in ratios:
                if r == 0:
                    continue
                try:
                    mask = make_mask(original, r, granularity, norm, out_axis)
                except ValueError as e:
                    raise CaffeError(f"layer '{name}': {e}") from None
                np.multiply(original, mask, out=blob.data)
                add(Point(name, r, *scorer.score(), float((blob.peek == 0).mean())))
        finally:
            blob.data[...] = original
    return points


def propose(points, budget):
    """Per layer, the largest ratio before the first whose accuracy falls more than `budget`
    points (percentage points) below the net as given (ratio 0); 0 when even the first does."""
    out = {}
    for name in dict.fromkeys(p.layer for p in points):
        mine = sorted((p for p in points if p.layer == name), key=lambda p: p.ratio)
        base = next((p.accuracy for p in mine if p.ratio == 0), mine[0].accuracy)
        out[name] = 0.0
        for p in mine:
            if 100 * (base - p.accuracy) > budget + 1e-9:
                break
            out[name] = p.ratio
    return out


def ratio_flag(proposal):
    """The --sparse-ratio value of `minicaffe prune`: the layers to prune, name=ratio."""
    return ",".join(f"{n}={r:g}" for n, r in proposal.items() if r > 0)


def write_csv(path, points):
    rows = ["layer,ratio,accuracy,loss,sparsity"] + [
        f"{p.layer},{p.ratio:g},{p.accuracy:.6g},{p.loss:.6g},{p.sparsity:.6g}" for p in points]
    io.atomic_write(path, ("\n".join(rows) + "\n").encode())


def plot(path, points, title, budget=None, proposal=None):
    """Accuracy against the layer's sparsity, one line per layer (its own colour and marker, so that
    lines lying on one another still show), the accuracy as given dashed; the left panel spans every
    point, the right one zooms on the top, where the layers part. Stars: the proposed ratios."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = 100 * next(p.accuracy for p in points if p.ratio == 0)
    lowest = 100 * min(p.accuracy for p in points)
    layers = list(dict.fromkeys(p.layer for p in points))
    zoom = max(3.0, 4 * budget) if budget else 3.0
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    limits = [(max(0, 10 * (lowest // 10) - 5), 100), (base - zoom, min(100.5, base + zoom / 4))]
    for ax, (low, high) in zip(axes, limits):
        for i, name in enumerate(layers):
            mine = sorted((p for p in points if p.layer == name), key=lambda p: p.ratio)
            line, = ax.plot([100 * p.sparsity for p in mine], [100 * p.accuracy for p in mine],
                            marker="osD^vPXh"[i % 8], markersize=5, linewidth=1.6, alpha=0.85,
                            label=name, linestyle="-" if i < 10 else "--")
            if proposal and proposal.get(name):
                at = next(p for p in mine if p.ratio == proposal[name])
                ax.plot([100 * at.sparsity], [100 * at.accuracy], marker="*", markersize=16,
                        color=line.get_color(), markeredgecolor="black", zorder=5)
        ax.axhline(base, color="black", linestyle="--", linewidth=1,
                   label=f"weights as given {base:.2f}%")
        if budget:
            ax.axhline(base - budget, color="gray", linestyle=":", linewidth=1.2,
                       label=f"budget: {budget:g} point{'' if budget == 1 else 's'} below")
        ax.set_xlim(-2, 100)
        ax.set_ylim(low, high)
        ax.set_xlabel("sparsity of the pruned layer (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
    axes[0].set_title("one layer pruned at a time, the others as given")
    axes[1].set_title(f"zoom: the top {zoom:g} points" + ("  (* proposed ratio)" if proposal else ""))
    axes[1].legend(loc="lower left", fontsize=9, framealpha=0.9)
    fig.suptitle(title)
    fig.tight_layout()
    png = BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    io.atomic_write(path, png.getvalue())
