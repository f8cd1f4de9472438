"""Local response normalization, across channels (Numba) or within a channel."""
import numpy as np

from minicaffe import kernels
from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import Layer, register


@register("LRN")
class LRN(Layer):
    n_bottom = 1
    n_top = 1

    def layer_setup(self, bottom, top):
        p = self.param.lrn_param
        if p.local_size % 2 == 0:
            raise self.error("local_size must be odd")
        if bottom[0].data.ndim != 4:
            raise self.error(f"needs a 4-D bottom, got shape {bottom[0].shape}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.across = p.norm_region == pb.LRNParameter.ACROSS_CHANNELS

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def _box(self, a):
        """Sum over a size x size window with zero padding, divided by size^2 (Caffe's AVE pool)."""
        s, pad = self.size, (self.size - 1) // 2
        n, c, h, w = a.shape
        p = np.zeros((n, c, h + 2 * pad + 1, w + 2 * pad + 1), np.float64)
        p[:, :, 1 + pad:1 + pad + h, 1 + pad:1 + pad + w] = a
        cs = p.cumsum(2).cumsum(3)
        box = cs[:, :, s:s + h, s:s + w] - cs[:, :, :h, s:s + w] - cs[:, :, s:s + h, :w] + cs[:, :, :h, :w]
        return (box / (s * s)).astype(np.float32)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.across:
            self.scale = np.empty_like(x)
            kernels.lrn_across_fwd(x, self.size, self.alpha, self.beta, self.k, self.scale, top[0].data)
        else:
            self.scale = 1.0 + self.alpha * self._box(x * x)
            top[0].data[...] = x * self.scale ** -self.beta

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy = bottom[0].data, top[0].data, top[0].diff
        if self.across:
            dx = np.empty_like(x)
            kernels.lrn_across_bwd(x, y, self.scale, dy, self.size, self.alpha, self.beta, dx)
            bottom[0].diff[...] = dx
        else:
            g = dy * x * (-self.beta) * self.scale ** (-self.beta - 1) * self.alpha
            # the window sum is symmetric, so its adjoint is the same box filter
            bottom[0].diff[...] = dy * self.scale ** -self.beta + self._box(g) * 2 * x
