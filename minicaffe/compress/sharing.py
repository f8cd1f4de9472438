"""k-means weight sharing (Deep Compression): the kept weights of a pruned blob take K values."""
import numpy as np


def kmeans_1d(values, k, iters=30):
    """Centroids initialized linearly between min and max (Deep Compression), then Lloyd steps.

    Returns (centroids, assignment). Values that already take at most k distinct levels keep them,
    so re-running on shared weights (a resume, a reload) changes nothing.
    """
    levels = np.unique(values)
    if len(levels) <= k:
        return levels.astype(np.float32), np.searchsorted(levels, values).astype(np.int32)
    c = np.linspace(values.min(), values.max(), k).astype(np.float64)
    v = values.astype(np.float64)
    assign = None
    for _ in range(iters):
        mid = (c[1:] + c[:-1]) / 2
        new = np.searchsorted(mid, v).astype(np.int32)
        if assign is not None and np.array_equal(new, assign):
            break
        assign = new
        sums = np.bincount(assign, weights=v, minlength=k)
        counts = np.bincount(assign, minlength=k)
        filled = counts > 0
        c[filled] = sums[filled] / counts[filled]
        c = np.sort(c)
    mid = (c[1:] + c[:-1]) / 2
    assign = np.searchsorted(mid, v).astype(np.int32)
    return c.astype(np.float32), assign


class WeightSharing:
    """Kept weights share K values; each value's gradient is the sum of its members' (Eq. 3 of
    Deep Compression), handed to every member so that any elementwise solver keeps them equal."""

    def __init__(self, w, mask, k):
        self.index = np.flatnonzero(mask.ravel())
        self.centroids, self.assign = kmeans_1d(w.ravel()[self.index], k)
        self.initial = self.centroids.copy()
        self.k = len(self.centroids)

    def quantize(self, w):
        w.ravel()[self.index] = self.centroids[self.assign]

    def centroids_of(self, w):
        """The shared values as they are now (they move as the net trains)."""
        vals = np.zeros(self.k, np.float32)
        vals[self.assign] = w.ravel()[self.index]
        return vals

    def shared_grad(self, dw, mode="sum"):
        g = dw.ravel()
        per = np.bincount(self.assign, weights=g[self.index], minlength=self.k)
        if mode == "mean":
            per /= np.maximum(np.bincount(self.assign, minlength=self.k), 1)
        g[self.index] = per[self.assign]
