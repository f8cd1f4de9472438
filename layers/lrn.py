"""Local response normalization, across channels or within a channel (Numba kernels)."""
import numpy as np

from minicaffe import kernels
from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import Layer, register


@register("LRN")
class LRN(Layer):
    n_bottom = 1
    n_top = 1

    def setup(self, bottom, top):
        p = self.param.lrn_param
        if p.local_size % 2 == 0:
            raise self.error("local_size must be odd")
        if bottom[0].data.ndim != 4:
            raise self.error(f"needs a 4-D bottom, got shape {bottom[0].shape}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.across = p.norm_region == pb.LRNParameter.ACROSS_CHANNELS

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        self.scale = np.empty_like(x)
        if self.across:
            kernels.lrn_across_fwd(x, self.size, self.alpha, self.beta, self.k, self.scale, top[0].data)
        else:
            kernels.lrn_within_fwd(x, self.size, self.alpha, self.beta, self.scale, top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, y, dy = bottom[0].data, top[0].data, top[0].diff
        dx = np.empty_like(x)
        if self.across:
            kernels.lrn_across_bwd(x, y, self.scale, dy, self.size, self.alpha, self.beta, dx)
        else:
            kernels.lrn_within_bwd(x, self.scale, dy, self.size, self.alpha, self.beta, dx)
        bottom[0].diff[...] = dx
