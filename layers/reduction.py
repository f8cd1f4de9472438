"""Reduction: SUM, ASUM, SUMSQ, MEAN over the tail axes from `axis`."""
import numpy as np

from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import Layer, canonical_axis, prod, register

OPS = pb.ReductionParameter


@register("Reduction")
class Reduction(Layer):
    """The top keeps the axes before `axis` (axis 0 gives a 0-axis scalar), each value
    coeff * op(the tail), MEAN being SUM with coeff / tail size."""
    n_bottom = 1
    n_top = 1

    def setup(self, bottom, top):
        self.op = self.param.reduction_param.operation

    def reshape(self, bottom, top):
        p = self.param.reduction_param
        shape = bottom[0].shape
        axis = canonical_axis(p.axis, len(shape))
        top[0].reshape(shape[:axis])
        self.num, self.dim = prod(shape[:axis]), prod(shape[axis:])
        self.coeff = p.coeff / self.dim if self.op == OPS.MEAN and self.dim else p.coeff

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == OPS.ASUM:
            x = np.abs(x)
        elif self.op == OPS.SUMSQ:
            x = x * x
        top[0].data.reshape(self.num)[...] = x.sum(axis=1, dtype=np.float64) * self.coeff

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        g = top[0].diff.reshape(self.num, 1) * np.float32(self.coeff)
        dx = bottom[0].diff.reshape(self.num, self.dim)
        x = bottom[0].data.reshape(self.num, self.dim)
        if self.op == OPS.ASUM:
            np.multiply(np.sign(x), g, out=dx)
        elif self.op == OPS.SUMSQ:
            np.multiply(x, 2 * g, out=dx)
        else:
            dx[...] = g
