"""InnerProduct: y = x W^T + b over the axes from `axis` on, one GEMM."""
import numpy as np

from minicaffe import minicaffe_pb2 as pb
from minicaffe.filler import fill
from minicaffe.sparse import SparseChooser
from minicaffe.compress.quantize import forward_int8
from minicaffe.layer import Layer, canonical_axis, prod, register


@register("InnerProduct")
class InnerProduct(Layer):
    n_bottom = 1
    n_top = 1

    def setup(self, bottom, top):
        ip = self.param.inner_product_param
        self.num_output = ip.num_output
        if self.num_output <= 0:
            raise self.error("num_output must be positive")
        self.axis = canonical_axis(ip.axis, bottom[0].data.ndim)
        self.k = prod(bottom[0].shape[self.axis:])
        self.transpose = ip.transpose
        self.bias_term = ip.bias_term
        wshape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        self.new_param(wshape).data[...] = fill(ip.weight_filler, wshape)
        if self.bias_term:
            self.new_param((self.num_output,)).data[...] = fill(ip.bias_filler, (self.num_output,))

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        k = prod(shape[self.axis:])
        if k != self.k:
            raise self.error(f"input size {k} (shape {shape}) does not match the {self.k} inputs "
                             "the weights were made for")
        top[0].reshape(shape[:self.axis] + (self.num_output,))

    def weight_grad_hook(self, dw):
        """Where Cmp layers mask (and share) the weight gradient."""

    def forward(self, bottom, top):
        if forward_int8(self, bottom, top):      # weights read from an int8 .mcz
            return
        csr = None
        if self.phase == pb.TEST and not self.transpose:
            if not hasattr(self, "sparse"):
                self.sparse = SparseChooser()
            csr = self.sparse.csr_of(self.blobs[0], self.num_output)
        x = bottom[0].data.reshape(-1, self.k)
        w = self.blobs[0].peek
        y = top[0].data.reshape(-1, self.num_output)
        if csr is not None:
            # y^T = W x^T: the weight on the left, so a CSR weight can stand in for it
            xt = np.ascontiguousarray(x.T)
            yt = np.empty((self.num_output, x.shape[0]), np.float32)
            self.sparse.run(self, csr, xt, yt, lambda: np.matmul(w, xt, out=yt))
            y[...] = yt.T
        else:
            self.path = "dense"
            np.matmul(x, w if self.transpose else w.T, out=y)
        if self.bias_term:
            y += self.blobs[1].peek

    def backward(self, top, propagate_down, bottom):
        x = bottom[0].data.reshape(-1, self.k)
        dy = top[0].diff.reshape(-1, self.num_output)
        dw = x.T @ dy if self.transpose else dy.T @ x
        self.weight_grad_hook(dw)
        self.blobs[0].diff += dw
        if self.bias_term:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            w = self.blobs[0].data
            np.matmul(dy, w.T if self.transpose else w, out=bottom[0].diff.reshape(-1, self.k))
