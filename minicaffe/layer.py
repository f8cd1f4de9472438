"""The Layer base class and the registry of layer types by their Caffe type string."""
import numpy as np

from . import log
from .blob import Blob
from .errors import CaffeError

REGISTRY = {}


def register(*type_names):
    def wrap(cls):
        for t in type_names:
            REGISTRY[t] = cls
        cls.type_name = type_names[0]
        return cls
    return wrap


def create_layer(param, phase):
    cls = REGISTRY.get(param.type)
    if cls is None:
        raise CaffeError(
            f"layer '{param.name}': unknown or unsupported layer type '{param.type}'; "
            f"known types: {', '.join(sorted(REGISTRY))}")
    log.info(f"Creating layer {param.name}")
    return cls(param, phase)


class BlobVec(list):
    """A layer's param blobs; `add_blob` is how pycaffe's Python layers make theirs."""

    def add_blob(self, *shape):
        if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
            shape = tuple(shape[0])
        self.append(Blob(shape))
        return self[-1]


class Layer:
    """Caffe's contract: setup once, then reshape + forward, and backward into bottom diffs.

    Parameter gradients accumulate (+=) into blob.diff; the solver clears them each iteration,
    which is what makes iter_size work. Bottom gradients are overwritten.
    """
    type_name = "?"
    # Bottom/top count checks, as Caffe's ExactNumBottomBlobs & co.; None means any.
    n_bottom = None
    min_bottom = None
    n_top = None
    min_top = None
    max_top = None
    is_loss = False

    def __init__(self, param, phase=None):
        self.param = param
        self.phase = param.phase if phase is None else phase
        self.name = param.name
        self.blobs = BlobVec()   # learnable (or state) parameter blobs
        self.loss_weights = []

    @property
    def type(self):
        """The Caffe type string, as pycaffe's `layer.type`."""
        return self.param.type

    # -- overridden by layers --
    def setup(self, bottom, top):
        """Caffe's LayerSetUp: read the params, make the param blobs (pycaffe's Python layers
        override this same method)."""

    def reshape(self, bottom, top):
        raise NotImplementedError

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        pass

    def allow_force_backward(self, i):
        return True

    def on_weights_set(self):
        """Called after the param blobs receive values (fill or load); Cmp layers mask here."""

    # -- shared helpers --
    def check_blob_counts(self, bottom, top):
        def fail(what, want, got):
            raise CaffeError(f"layer '{self.name}' ({self.param.type}) takes {want} {what} blob(s), got {got}")
        if self.n_bottom is not None and len(bottom) != self.n_bottom:
            fail("bottom", self.n_bottom, len(bottom))
        if self.min_bottom is not None and len(bottom) < self.min_bottom:
            fail("bottom", f"at least {self.min_bottom}", len(bottom))
        if self.n_top is not None and len(top) != self.n_top:
            fail("top", self.n_top, len(top))
        if self.min_top is not None and len(top) < self.min_top:
            fail("top", f"at least {self.min_top}", len(top))
        if self.max_top is not None and len(top) > self.max_top:
            fail("top", f"at most {self.max_top}", len(top))

    def set_up(self, bottom, top):
        """Caffe's SetUp: check the blob counts, setup, reshape."""
        self.check_blob_counts(bottom, top)
        self.setup(bottom, top)
        self.reshape(bottom, top)

    def error(self, msg):
        return CaffeError(f"layer '{self.name}' ({self.param.type}): {msg}")

    def new_param(self, shape):
        return self.blobs.add_blob(shape)


def canonical_axis(axis, num_axes):
    if axis < -num_axes or axis >= max(num_axes, 1):
        raise CaffeError(f"axis {axis} out of range for a {num_axes}-D blob")
    return axis + num_axes if axis < 0 else axis


def prod(shape):
    return int(np.prod(shape, dtype=np.int64))
