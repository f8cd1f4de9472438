"""Blob: the N-D float32 array pair (data, diff) that layers read and write, as in Caffe."""
import numpy as np


class Blob:
    __slots__ = ("data", "diff", "mask")

    def __init__(self, shape=()):
        self.data = np.zeros(shape, np.float32)
        self.diff = np.zeros(shape, np.float32)
        self.mask = None   # pruning: 0/1 array beside the weights; None means dense

    @property
    def shape(self):
        return self.data.shape

    @property
    def count(self):
        return self.data.size

    @property
    def num(self):
        return self.data.shape[0]

    @property
    def channels(self):
        return self.data.shape[1]

    @property
    def height(self):
        return self.data.shape[2]

    @property
    def width(self):
        return self.data.shape[3]

    def reshape(self, *shape):
        """Keep the arrays (and any view a user holds) when the shape is unchanged."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if shape != self.data.shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    def __repr__(self):
        return f"Blob{self.data.shape}"
