"""Accuracy (top-k, ignore_label, optional per-class top) and ArgMax."""
import numpy as np

from minicaffe.layer import Layer, canonical_axis, prod, register

from .softmax import class_labels, label_geometry


@register("Accuracy")
class Accuracy(Layer):
    n_bottom = 2
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.ignore = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self.param.accuracy_param.axis, bottom[0].data.ndim)
        c = bottom[0].shape[self.axis]
        if self.top_k > c:
            raise self.error(f"top_k ({self.top_k}) must not exceed the number of classes ({c})")
        self.outer, self.inner = label_geometry(self, bottom[0], bottom[1], self.axis)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((c,))

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, -1, self.inner)
        c = x.shape[1]
        safe, valid = class_labels(self, bottom[1].data.reshape(self.outer, self.inner), c, self.ignore)
        true = np.take_along_axis(x, safe[:, None, :], axis=1)
        better = (x >= true).sum(axis=1) - 1          # classes scoring at least as high, ties count
        correct = (better < self.top_k) & valid
        n = int(valid.sum())
        top[0].data[...] = correct.sum() / n if n else 0.0
        if len(top) > 1:
            per = np.bincount(safe[valid], minlength=c)
            hit = np.bincount(safe[correct], minlength=c)
            top[1].data[...] = np.where(per > 0, hit / np.maximum(per, 1), 0)


@register("ArgMax")
class ArgMax(Layer):
    """Caffe's top-k: without axis, over each item's flattened values, giving (N, 1 or 2, top_k)
    padded with 1s to the bottom's rank (at least 3 axes); with axis, along that axis only. Equal
    values rank the higher index first (Caffe sorts (value, index) pairs descending)."""
    n_bottom = 1
    n_top = 1

    def reshape(self, bottom, top):
        p = self.param.argmax_param
        shape = list(bottom[0].shape)
        if p.top_k < 1:
            raise self.error("top_k must be at least 1")
        if p.HasField("axis"):
            self.axis = canonical_axis(p.axis, len(shape))
            if p.top_k > shape[self.axis]:
                raise self.error(f"top_k ({p.top_k}) exceeds the size of axis {self.axis} "
                                 f"({shape[self.axis]})")
            shape[self.axis] = p.top_k
        else:
            self.axis = None
            if p.top_k > prod(shape[1:]):
                raise self.error(f"top_k ({p.top_k}) exceeds the values per item ({prod(shape[1:])})")
            shape = [shape[0], 2 if p.out_max_val else 1, p.top_k] + [1] * (len(shape) - 3)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        p = self.param.argmax_param
        x = bottom[0].data
        k = p.top_k
        if self.axis is None:
            x = x.reshape(x.shape[0], -1)
        axis = 1 if self.axis is None else self.axis
        n = x.shape[axis]
        # a stable ascending sort read from the end: largest first, ties by the higher index
        idx = np.take(np.argsort(x, axis=axis, kind="stable"), np.arange(n - 1, n - 1 - k, -1), axis=axis)
        if self.axis is None:
            out = top[0].data.reshape(x.shape[0], -1, k)
            out[:, 0] = idx
            if p.out_max_val:
                out[:, 1] = np.take_along_axis(x, idx, axis=1)
        else:
            top[0].data[...] = np.take_along_axis(x, idx, axis=axis) if p.out_max_val else idx
