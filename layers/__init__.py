"""Every layer type; importing this package registers them all."""
from . import (accuracy, cmp, conv, data, distillation, eltwise, embed, hdf5_output,  # noqa: F401
               inner_product, input, loss, lrn, neuron, normalization, pooling, python_layer,
               recurrent, reduction, select, shape, softmax, window_data)
