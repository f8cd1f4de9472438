"""Pooling: MAX, AVE, STOCHASTIC, with Caffe's rounded-up output size and padded AVE divisor."""
import math

import numpy as np

from minicaffe import kernels, rng
from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import Layer, register

PP = pb.PoolingParameter


@register("Pooling")
class Pooling(Layer):
    n_bottom = 1
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        pp = self.param.pooling_param
        if bottom[0].data.ndim != 4:
            raise self.error(f"needs a 4-D bottom, got shape {bottom[0].shape}")
        self.global_pooling = pp.global_pooling
        if pp.global_pooling:
            if pp.HasField("kernel_size") or pp.HasField("kernel_h"):
                raise self.error("with global_pooling, kernel size cannot be specified")
        elif pp.HasField("kernel_size"):
            self.kh = self.kw = pp.kernel_size
        elif pp.HasField("kernel_h") and pp.HasField("kernel_w"):
            self.kh, self.kw = pp.kernel_h, pp.kernel_w
        else:
            raise self.error("kernel_size (or kernel_h and kernel_w) is required")
        if pp.HasField("pad_h") or pp.HasField("pad_w"):
            self.ph, self.pw = pp.pad_h, pp.pad_w
        else:
            self.ph = self.pw = pp.pad
        if pp.HasField("stride_h") or pp.HasField("stride_w"):
            self.sh, self.sw = pp.stride_h, pp.stride_w
        else:
            self.sh = self.sw = pp.stride
        if self.global_pooling and (self.ph or self.pw or self.sh != 1 or self.sw != 1):
            raise self.error("with global_pooling, pad must be 0 and stride 1")
        self.method = pp.pool
        if (self.ph or self.pw) and self.method not in (PP.AVE, PP.MAX):
            raise self.error("padding is implemented only for AVE and MAX pooling")
        if not self.global_pooling and (self.ph >= self.kh or self.pw >= self.kw):
            raise self.error("pad must be smaller than the kernel")
        self.ceil = pp.round_mode == PP.CEIL
        if len(top) == 2 and self.method != PP.MAX:
            raise self.error("a second top (the argmax mask) exists only for MAX pooling")

    def reshape(self, bottom, top):
        n, c, h, w = bottom[0].shape
        if self.global_pooling:
            self.kh, self.kw = h, w
        rnd = math.ceil if self.ceil else math.floor
        oh = int(rnd((h + 2 * self.ph - self.kh) / self.sh)) + 1
        ow = int(rnd((w + 2 * self.pw - self.kw) / self.sw)) + 1
        # the last pooling window must start inside the image (Caffe's rule)
        if self.ph or self.pw:
            if (oh - 1) * self.sh >= h + self.ph:
                oh -= 1
            if (ow - 1) * self.sw >= w + self.pw:
                ow -= 1
        self.oh, self.ow = oh, ow
        for t in top:
            t.reshape(n, c, oh, ow)

    def geometry(self):
        return (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.method == PP.MAX:
            if getattr(self, "argmax", None) is None or self.argmax.shape != top[0].shape:
                self.argmax = np.empty(top[0].shape, np.int32)
            kernels.max_pool_fwd(x, *self.geometry(), top[0].data, self.argmax)
            if len(top) == 2:
                top[1].data[...] = self.argmax
        elif self.method == PP.AVE:
            kernels.ave_pool_fwd(x, *self.geometry(), top[0].data)
        else:
            self._stochastic_forward(x, top[0].data)

    def _windows(self, x):
        """(N, C, OH, OW, KH*KW) windows of a non-padded input (stochastic pooling only)."""
        n, c, h, w = x.shape
        xp = np.zeros((n, c, (self.oh - 1) * self.sh + self.kh, (self.ow - 1) * self.sw + self.kw),
                      np.float32)
        hh, ww = min(h, xp.shape[2]), min(w, xp.shape[3])
        xp[:, :, :hh, :ww] = x[:, :, :hh, :ww]
        s = xp.strides
        win = np.lib.stride_tricks.as_strided(
            xp, (n, c, self.oh, self.ow, self.kh, self.kw),
            (s[0], s[1], s[2] * self.sh, s[3] * self.sw, s[2], s[3]))
        return win.reshape(n, c, self.oh, self.ow, -1)

    def _stochastic_forward(self, x, out):
        # Activations are assumed non-negative (after ReLU), as in Caffe.
        win = self._windows(x)
        total = win.sum(axis=-1)
        if self.phase == pb.TRAIN:
            u = rng.get().random(total.shape).astype(np.float32) * total
            cum = np.cumsum(win, axis=-1)
            idx = np.minimum((cum < u[..., None]).sum(axis=-1), win.shape[-1] - 1)
            self.sidx = idx
            out[...] = np.take_along_axis(win, idx[..., None], axis=-1)[..., 0]
        else:
            sq = (win * win).sum(axis=-1)
            out[...] = np.where(total > 0, sq / np.where(total > 0, total, 1), 0)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.method == PP.MAX:
            kernels.max_pool_bwd(dy, self.argmax, dx)
        elif self.method == PP.AVE:
            kernels.ave_pool_bwd(dy, *self.geometry(), dx)
        else:
            dx[...] = 0
            n, c, h, w = dx.shape
            ki, kj = np.divmod(self.sidx, self.kw)
            iy = np.arange(self.oh)[None, None, :, None] * self.sh + ki
            ix = np.arange(self.ow)[None, None, None, :] * self.sw + kj
            nn = np.arange(n)[:, None, None, None]
            cc = np.arange(c)[None, :, None, None]
            np.add.at(dx, (nn, cc, np.minimum(iy, h - 1), np.minimum(ix, w - 1)), dy)
