"""Element-wise layers (Caffe's NeuronLayer family). All may run in place (top == bottom)."""
import numpy as np

from minicaffe import rng
from minicaffe import minicaffe_pb2 as pb
from minicaffe.filler import fill
from minicaffe.layer import Layer, register


class Neuron(Layer):
    n_bottom = 1
    n_top = 1

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        self.saved_x = x.copy() if top[0] is bottom[0] and self.needs_input else None
        top[0].data[...] = self.f(x)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x = self.saved_x if self.saved_x is not None else bottom[0].data
            bottom[0].diff[...] = top[0].diff * self.df(x, top[0].data)

    needs_input = True  # the derivative reads x, so an in-place forward must keep a copy


@register("ReLU")
class ReLU(Neuron):
    needs_input = False  # sign of y equals sign of x for slope >= 0

    def setup(self, bottom, top):
        self.slope = self.param.relu_param.negative_slope
        self.needs_input = self.slope < 0

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.slope == 0:
            self.saved_x = None
            np.maximum(x, 0, out=top[0].data)
        else:
            Neuron.forward(self, bottom, top)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and self.slope == 0:
            np.multiply(top[0].diff, top[0].data > 0, out=bottom[0].diff)
        else:
            Neuron.backward(self, top, propagate_down, bottom)

    def f(self, x):
        return np.where(x > 0, x, x * self.slope)

    def df(self, x, y):
        src = x if self.needs_input else y
        return np.where(src > 0, 1.0, self.slope).astype(np.float32)


@register("ELU")
class ELU(Neuron):
    def setup(self, bottom, top):
        self.alpha = self.param.elu_param.alpha

    def f(self, x):
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0)))

    def df(self, x, y):
        return np.where(x > 0, 1.0, y + self.alpha)


@register("Sigmoid")
class Sigmoid(Neuron):
    needs_input = False

    def f(self, x):
        return 0.5 * np.tanh(0.5 * x) + 0.5

    def df(self, x, y):
        return y * (1 - y)


@register("TanH")
class TanH(Neuron):
    needs_input = False

    def f(self, x):
        return np.tanh(x)

    def df(self, x, y):
        return 1 - y * y


@register("AbsVal")
class AbsVal(Neuron):
    def f(self, x):
        return np.abs(x)

    def df(self, x, y):
        return np.sign(x)


@register("BNLL")
class BNLL(Neuron):
    def f(self, x):
        return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(-np.abs(x))))

    def df(self, x, y):
        e = np.exp(-np.abs(x))
        return np.where(x > 0, 1 / (1 + e), e / (1 + e))


@register("Power")
class Power(Neuron):
    """y = (shift + scale * x) ^ power."""

    def setup(self, bottom, top):
        p = self.param.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift

    def f(self, x):
        return (self.shift + self.scale * x) ** self.power

    def df(self, x, y):
        if self.power == 0 or self.scale == 0:
            return np.zeros_like(x)
        if self.power == 1:
            return np.full_like(x, self.scale)
        return self.power * self.scale * (self.shift + self.scale * x) ** (self.power - 1)


@register("Exp")
class Exp(Neuron):
    """y = base ^ (shift + scale * x); base -1 means e."""
    needs_input = False

    def setup(self, bottom, top):
        p = self.param.exp_param
        if p.base != -1 and p.base <= 0:
            raise self.error("base must be strictly positive (or -1 for e)")
        self.log_base = 1.0 if p.base == -1 else np.log(p.base)
        self.inner_scale, self.shift = self.log_base * p.scale, p.shift * self.log_base

    def f(self, x):
        return np.exp(self.shift + self.inner_scale * x)

    def df(self, x, y):
        return y * self.inner_scale


@register("Log")
class Log(Neuron):
    """y = log_base(shift + scale * x); base -1 means e."""

    def setup(self, bottom, top):
        p = self.param.log_param
        if p.base != -1 and p.base <= 0:
            raise self.error("base must be strictly positive (or -1 for e)")
        self.base_scale = 1.0 if p.base == -1 else 1.0 / np.log(p.base)
        self.scale, self.shift = p.scale, p.shift

    def f(self, x):
        return np.log(self.shift + self.scale * x) * self.base_scale

    def df(self, x, y):
        return self.scale * self.base_scale / (self.shift + self.scale * x)


@register("Threshold")
class Threshold(Neuron):
    def setup(self, bottom, top):
        self.t = self.param.threshold_param.threshold

    def f(self, x):
        return (x > self.t).astype(np.float32)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Threshold has no gradient; set propagate_down: false")


@register("Dropout")
class Dropout(Neuron):
    """Caffe's inverted dropout: scale kept units by 1/(1-p) in TRAIN, identity in TEST."""

    def setup(self, bottom, top):
        self.ratio = self.param.dropout_param.dropout_ratio
        if not 0 <= self.ratio < 1:
            raise self.error("dropout_ratio must be in [0, 1)")
        self.scale = 1.0 / (1.0 - self.ratio)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase == pb.TRAIN:
            self.mask = (rng.get().random(x.shape, dtype=np.float32) >= self.ratio).astype(np.float32) * self.scale
            top[0].data[...] = x * self.mask
        else:
            top[0].data[...] = x

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            if self.phase == pb.TRAIN:
                bottom[0].diff[...] = top[0].diff * self.mask
            else:
                bottom[0].diff[...] = top[0].diff


@register("Swish")
class Swish(Neuron):
    """y = x * sigmoid(beta * x); backward reads y and the kept sigmoid, so in place needs no copy."""
    needs_input = False

    def setup(self, bottom, top):
        self.beta = self.param.swish_param.beta

    def f(self, x):
        self.sig = 0.5 * np.tanh(0.5 * self.beta * x) + 0.5
        return x * self.sig

    def df(self, x, y):
        by = self.beta * y
        return by + self.sig * (1 - by)


@register("Clip")
class Clip(Neuron):
    """Gradient passes where min <= x <= max, both ends included, as Caffe's. Caffe's backward
    reads the bottom's data, which in place is the clipped output (always within [min, max]): so
    in place every gradient passes (none when min > max). Reproduced, not corrected."""
    needs_input = False

    def setup(self, bottom, top):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise self.error("clip_param needs both min and max")
        self.lo, self.hi = p.min, p.max

    def f(self, x):
        return np.maximum(np.minimum(x, self.hi), self.lo)   # Caffe's order: min wins if min > max

    def df(self, x, y):
        return (x >= self.lo) & (x <= self.hi)


@register("PReLU")
class PReLU(Layer):
    """Leaky ReLU with learned slopes: one per channel, or one scalar (a 0-axis blob, as Caffe's)
    when channel_shared."""
    n_bottom = 1
    n_top = 1

    def setup(self, bottom, top):
        p = self.param.prelu_param
        if bottom[0].data.ndim < 2:
            raise self.error(f"needs a bottom with a channel axis, got shape {bottom[0].shape}")
        self.shared = p.channel_shared
        shape = () if self.shared else (bottom[0].shape[1],)
        fp = p.filler if p.HasField("filler") else pb.FillerParameter(type="constant", value=0.25)
        self.new_param(shape).data[...] = fill(fp, shape)

    def reshape(self, bottom, top):
        if bottom[0].data.ndim < 2:
            raise self.error(f"needs a bottom with a channel axis, got shape {bottom[0].shape}")
        top[0].reshape(bottom[0].shape)

    def _slope(self, ndim):
        a = self.blobs[0].data
        return a.reshape(()) if self.shared else a.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, bottom, top):
        x = bottom[0].data
        self.x = x.copy() if top[0] is bottom[0] else x   # backward needs the input
        top[0].data[...] = np.where(x > 0, x, x * self._slope(x.ndim))

    def backward(self, top, propagate_down, bottom):
        x = self.x if top[0] is bottom[0] else bottom[0].data
        dy = top[0].diff          # read before bottom.diff (the same array in place) is written
        g = dy * np.minimum(x, 0)
        slope = self.blobs[0]
        slope.diff += g.sum() if self.shared else \
            g.sum(axis=tuple(i for i in range(x.ndim) if i != 1))
        if propagate_down[0]:
            bottom[0].diff[...] = dy * np.where(x > 0, 1, self._slope(x.ndim))
