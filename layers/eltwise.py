"""Eltwise: element-wise PROD, SUM (with coefficients) or MAX of several bottoms."""
import numpy as np

from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import Layer, register

OP = pb.EltwiseParameter


@register("Eltwise")
class Eltwise(Layer):
    min_bottom = 2
    n_top = 1

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = p.operation
        self.coeff = list(p.coeff) or [1.0] * len(bottom)
        if len(self.coeff) != len(bottom):
            raise self.error("coeff must be given once per bottom")
        if p.coeff and self.op != OP.SUM:
            raise self.error("coeff applies only to the SUM operation")

    def reshape(self, bottom, top):
        for b in bottom[1:]:
            if b.shape != bottom[0].shape:
                raise self.error(f"bottoms must have the same shape: {bottom[0].shape} vs {b.shape}")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        xs = [b.data for b in bottom]
        if self.op == OP.SUM:
            out = sum(c * x for c, x in zip(self.coeff, xs))
        elif self.op == OP.PROD:
            out = np.prod(np.stack(xs), axis=0)
        else:
            st = np.stack(xs)
            self.argmax = st.argmax(axis=0)
            out = st.max(axis=0)
        top[0].data[...] = out

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        for i, (b, pd) in enumerate(zip(bottom, propagate_down)):
            if not pd:
                continue
            if self.op == OP.SUM:
                b.diff[...] = self.coeff[i] * dy
            elif self.op == OP.PROD:
                others = [x.data for j, x in enumerate(bottom) if j != i]
                b.diff[...] = dy * np.prod(np.stack(others), axis=0)
            else:
                b.diff[...] = dy * (self.argmax == i)
