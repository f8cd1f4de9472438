"""Blob: the N-D float32 array pair (data, diff) that layers read and write, as in Caffe."""
import numpy as np


class Blob:
    """`version` counts the times `data` was handed out or replaced: whoever keeps something derived
    from the values (a layer's CSR copy of its weights) can tell they may have changed without
    comparing them. `freeze()` makes the array read-only until the next `data`, so a reference
    taken earlier cannot change it behind that count either."""
    __slots__ = ("_data", "diff", "mask", "version", "frozen")

    def __init__(self, shape=()):
        self._data = np.zeros(shape, np.float32)
        self.diff = np.zeros(shape, np.float32)
        self.mask = None   # pruning: 0/1 array beside the weights; None means dense
        self.version = 0
        self.frozen = False

    def _thaw(self):
        if self.frozen:
            self._data.flags.writeable = True
            self.frozen = False
        self.version += 1

    @property
    def data(self):
        self._thaw()
        return self._data

    @data.setter
    def data(self, array):
        self._thaw()
        self._data = array

    @property
    def peek(self):
        """The values, for reading: not counted as a change."""
        return self._data

    def freeze(self):
        """Read-only until the next `data`; only an array that owns its memory can be guarded so
        (a view of another blob's array, as PERMISSIVE sharing makes, changes with that blob)."""
        if not self.frozen and self._data.flags.owndata:
            self._data.flags.writeable = False
            self.frozen = True

    @property
    def shape(self):
        return self._data.shape

    @property
    def count(self):
        return self._data.size

    @property
    def num(self):
        return self._data.shape[0]

    @property
    def channels(self):
        return self._data.shape[1]

    @property
    def height(self):
        return self._data.shape[2]

    @property
    def width(self):
        return self._data.shape[3]

    def reshape(self, *shape):
        """Keep the arrays (and any view a user holds) when the shape is unchanged."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if shape != self._data.shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    def __repr__(self):
        return f"Blob{self._data.shape}"
