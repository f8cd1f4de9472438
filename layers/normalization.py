"""BatchNorm (Caffe's: statistics only, no affine), the Scale and Bias layers that follow it, and MVN."""
import numpy as np

from minicaffe import minicaffe_pb2 as pb
from minicaffe.filler import fill
from minicaffe.layer import Layer, canonical_axis, register


@register("BatchNorm")
class BatchNorm(Layer):
    n_bottom = 1
    n_top = 1
    frozen_params = True   # mean, variance, factor are statistics, never trained

    def setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global = p.use_global_stats if p.HasField("use_global_stats") else self.phase == pb.TEST
        self.maf, self.eps = p.moving_average_fraction, p.eps
        c = bottom[0].shape[1] if bottom[0].data.ndim > 1 else 1
        for shape in ((c,), (c,), (1,)):
            self.new_param(shape)
        for ps in self.param.param:
            if ps.lr_mult != 0:
                raise self.error("BatchNorm statistics are not learned; set lr_mult: 0 or omit param")

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def _axes(self, x):
        return (0,) + tuple(range(2, x.ndim))

    def _bc(self, v, x):
        return v.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.use_global:
            f = self.blobs[2].data[0]
            s = 0.0 if f == 0 else 1.0 / f
            mean, var = self.blobs[0].data * s, self.blobs[1].data * s
        else:
            ax = self._axes(x)
            mean = x.mean(axis=ax, dtype=np.float64).astype(np.float32)
            var = ((x - self._bc(mean, x)) ** 2).mean(axis=ax, dtype=np.float64).astype(np.float32)
            m = x.size // x.shape[1]
            self.blobs[2].data[0] = self.blobs[2].data[0] * self.maf + 1
            self.blobs[0].data[...] = mean + self.maf * self.blobs[0].data
            corr = m / (m - 1) if m > 1 else 1
            self.blobs[1].data[...] = corr * var + self.maf * self.blobs[1].data
        self.inv_std = 1.0 / np.sqrt(var + self.eps)
        self.y = (x - self._bc(mean, x)) * self._bc(self.inv_std, x)
        top[0].data[...] = self.y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff
        inv = self._bc(self.inv_std, dy)
        if self.use_global:
            bottom[0].diff[...] = dy * inv
            return
        ax = self._axes(dy)
        y = self.y
        bottom[0].diff[...] = (dy - dy.mean(axis=ax, keepdims=True)
                               - y * (dy * y).mean(axis=ax, keepdims=True)) * inv


class Affine(Layer):
    """Shared by Scale and Bias: a parameter broadcast over bottom[0] from `axis`."""
    min_bottom = 1
    n_top = 1

    def _setup_param(self, bottom, axis, num_axes, filler):
        x = bottom[0]
        if len(bottom) > 1:
            self.pshape = None
            return
        self.axis = canonical_axis(axis, x.data.ndim)
        end = x.data.ndim if num_axes == -1 else self.axis + num_axes
        self.pshape = x.shape[self.axis:end]
        fp = filler if filler.ByteSize() else pb.FillerParameter(type="constant", value=self.default_value)
        self.new_param(self.pshape).data[...] = fill(fp, self.pshape)

    def _operand(self, bottom):
        v = bottom[1].data if len(bottom) > 1 else self.blobs[0].data
        if len(bottom) > 1:
            a = self.param_axis(bottom)
            self.axis = a
        shape = (1,) * self.axis + v.shape + (1,) * (bottom[0].data.ndim - self.axis - v.ndim)
        return v.reshape(shape)

    def _reduce(self, g, v_shape, ndim):
        axes = tuple(i for i in range(ndim) if i < self.axis or i >= self.axis + len(v_shape))
        return g.sum(axis=axes).reshape(v_shape)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)


@register("Scale")
class Scale(Affine):
    default_value = 1.0

    def setup(self, bottom, top):
        p = self.param.scale_param
        self._setup_param(bottom, p.axis, p.num_axes, p.filler)
        self.bias_index = None
        if p.bias_term:
            self.bias_index = len(self.blobs)
            axis = canonical_axis(p.axis, bottom[0].data.ndim)
            shape = bottom[1].shape if len(bottom) > 1 else self.pshape
            self.bshape = shape
            self.new_param(shape).data[...] = fill(
                p.bias_filler if p.HasField("bias_filler") else pb.FillerParameter(), shape)
            self.axis = axis

    def param_axis(self, bottom):
        return canonical_axis(self.param.scale_param.axis, bottom[0].data.ndim)

    def forward(self, bottom, top):
        s = self._operand(bottom)
        self.x = bottom[0].data.copy() if top[0] is bottom[0] else bottom[0].data
        y = self.x * s
        if self.bias_index is not None:
            b = self.blobs[self.bias_index].data
            y = y + b.reshape(s.shape)
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        s = self._operand(bottom)
        nd = dy.ndim
        if self.bias_index is not None:
            bb = self.blobs[self.bias_index]
            bb.diff += self._reduce(dy, bb.shape, nd)
        v = bottom[1].data if len(bottom) > 1 else self.blobs[0].data
        gs = self._reduce(dy * self.x, v.shape, nd)
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff[...] = gs.reshape(bottom[1].shape)
        else:
            self.blobs[0].diff += gs.reshape(self.blobs[0].shape)
        if propagate_down[0]:
            bottom[0].diff[...] = dy * s


@register("Bias")
class Bias(Affine):
    default_value = 0.0

    def setup(self, bottom, top):
        p = self.param.bias_param
        self._setup_param(bottom, p.axis, p.num_axes, p.filler)

    def param_axis(self, bottom):
        return canonical_axis(self.param.bias_param.axis, bottom[0].data.ndim)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data + self._operand(bottom)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        self._operand(bottom)
        v = bottom[1].data if len(bottom) > 1 else self.blobs[0].data
        g = self._reduce(dy, v.shape, dy.ndim)
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].diff[...] = g.reshape(bottom[1].shape)
        else:
            self.blobs[0].diff += g.reshape(self.blobs[0].shape)
        if propagate_down[0]:
            bottom[0].diff[...] = dy


@register("MVN")
class MVN(Layer):
    """Mean (and variance) normalization per item, or per item and channel. Caffe divides by
    std + eps (not sqrt(var + eps)), and gives the top the bottom's legacy 4-D shape."""
    n_bottom = 1
    n_top = 1

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) > 4:
            raise self.error(f"takes a bottom of at most 4 axes (num, channels, height, width), "
                             f"got shape {shape}")
        shape = shape + (1,) * (4 - len(shape))
        if top[0] is bottom[0]:      # in place: keep the values, as Caffe's Reshape does
            top[0].share(top[0].data.reshape(shape), top[0].diff.reshape(shape))
        else:
            top[0].reshape(shape)
        self.groups = shape[0] if self.param.mvn_param.across_channels else shape[0] * shape[1]

    def forward(self, bottom, top):
        p = self.param.mvn_param
        x = bottom[0].data.reshape(self.groups, -1)
        y = x - x.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
        if p.normalize_variance:
            var = (y * y).mean(axis=1, keepdims=True, dtype=np.float64)
            self.std = (np.sqrt(var) + p.eps).astype(np.float32)
            y /= self.std
        self.y = y
        top[0].data.reshape(self.groups, -1)[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.groups, -1)
        if top[0] is bottom[0] and self.param.mvn_param.normalize_variance:
            dx = self._in_place_backward(dy)
        else:
            dx = dy - dy.mean(axis=1, keepdims=True)
            if self.param.mvn_param.normalize_variance:
                dx -= self.y * (dy * self.y).mean(axis=1, keepdims=True)
                dx /= self.std
        bottom[0].diff.reshape(self.groups, -1)[...] = dx

    def _in_place_backward(self, dy):
        """What Caffe's in-place backward computes, not the gradient: its steps write the bottom
        diff, which is the top diff. sum(y * dy) survives; the sum of dy it takes next is of y * that
        sum already; and axpby(1, top_diff, -1/dim, bottom_diff) on one array is, through the
        scal-then-axpy stand-in for axpby in Caffe's non-MKL builds, 2 * (-1/dim) * bottom_diff."""
        dx = self.y * (self.y * dy).sum(axis=1, keepdims=True)
        dx += dx.sum(axis=1, keepdims=True)
        dx *= 2 * np.float32(-1.0 / dx.shape[1])
        return dx / self.std
