"""Blob: the N-D float32 array pair (data, diff) that layers read and write, as in Caffe."""
import os
import sys

import numpy as np

from .errors import CaffeError

from .errors import CaffeError

# Only CPython's reference counts tell whether anyone else holds an array (see Blob.held_elsewhere)
_COUNTS_REFS = sys.implementation.name == "cpython"


def physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


class BlobTooLarge(CaffeError):
    """A blob whose data and diff alone would not fit in the machine's memory; the Net names the
    layer that asked for it."""


def check_size(shape):
    """Refuse, before allocating, a negative shape or one whose data and diff would not fit."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise CaffeError(f"a blob cannot have a negative dimension: {shape}")
    count = 1
    for d in shape:
        count *= d
    if 2 * 4 * count > physical_memory():
        raise BlobTooLarge(f"a blob of shape {shape} needs {2 * 4 * count / 2**30:.1f} GiB (data and "
                           f"diff), more than this machine's {physical_memory() / 2**30:.1f} GiB")
    return shape


def zeros(shape):
    return np.zeros(check_size(shape), np.float32)


class Blob:
    """`version` counts the times `data` was handed out or replaced: whoever keeps something derived
    from the values (a layer's CSR copy of its weights) can tell they may have changed without
    comparing them, as long as nobody else holds the array (`held_elsewhere`): a reference taken
    earlier, as pycaffe scripts keep `W = net.params[name][0].data`, can change it at any time."""
    __slots__ = ("_data", "_diff", "mask", "version")

    def __init__(self, shape=()):
        self._data = zeros(shape)
        self._diff = np.zeros(shape, np.float32)
        self.mask = None   # pruning: 0/1 array beside the weights; None means dense
        self.version = 0

    @property
    def data(self):
        self.version += 1
        return self._data

    @data.setter
    def data(self, array):
        self._assign("data", array)

    @property
    def diff(self):
        return self._diff

    @diff.setter
    def diff(self, array):
        self._assign("diff", array)

    def _assign(self, field, array):
        """`blob.data = x` copies x in (pycaffe's blobs take no assignment; `blob.data[...] = x` is
        its idiom): the shape must be the blob's, or the error says so here, not inside a layer."""
        array = np.asarray(array)
        if array.shape != self._data.shape:
            raise CaffeError(f"cannot assign an array of shape {array.shape} to the {field} of a blob "
                             f"of shape {self._data.shape}; call blob.reshape{array.shape} first")
        self.version += field == "data"
        getattr(self, "_" + field)[...] = array

    def share(self, data, diff=None):
        """Caffe's ShareData/ShareDiff: this blob becomes a view of other arrays (Split, Reshape,
        Flatten, shared parameters)."""
        self.version += 1
        self._data = data
        if diff is not None:
            self._diff = diff

    @property
    def peek(self):
        """The values, for reading: not counted as a change."""
        return self._data

    def held_elsewhere(self):
        """Whether anything besides this blob holds the data array (or it is a view of another
        array): then its values may change without `version` moving."""
        if not _COUNTS_REFS or self._data.base is not None:
            return True
        return sys.getrefcount(self._data) > 2      # our slot and getrefcount's own argument

    @property
    def shape(self):
        return self._data.shape

    @property
    def count(self):
        return self._data.size

    def _legacy(self, axis):
        """Caffe's LegacyShape: an axis the blob does not have counts as 1 (a (N, C) blob has
        height 1); a blob of more than 4 axes has no legacy shape."""
        if self._data.ndim > 4:
            raise CaffeError(f"num/channels/height/width need at most 4 axes; the blob is "
                             f"{self._data.shape}: use .shape")
        return self._data.shape[axis] if axis < self._data.ndim else 1

    @property
    def num(self):
        return self._legacy(0)

    @property
    def channels(self):
        return self._legacy(1)

    @property
    def height(self):
        return self._legacy(2)

    @property
    def width(self):
        return self._legacy(3)

    def reshape(self, *shape):
        """Keep the arrays (and any view a user holds) when the shape is unchanged."""
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = shape[0]
        shape = tuple(int(s) for s in shape)
        if shape != self._data.shape:
            self.share(zeros(shape), np.zeros(shape, np.float32))

    def __repr__(self):
        return f"Blob{self._data.shape}"
