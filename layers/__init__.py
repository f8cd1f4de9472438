"""Every layer type; importing this package registers them all."""
from . import (accuracy, cmp, conv, data, eltwise, input, inner_product, loss, lrn, neuron,  # noqa: F401
               normalization, pooling, shape, softmax)
