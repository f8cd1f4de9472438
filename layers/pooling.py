"""Pooling: MAX, AVE, STOCHASTIC, with Caffe's rounded-up output size and padded AVE divisor; and
spatial pyramid pooling (SPP) built from Pooling layers."""
import math

import numpy as np

from minicaffe import kernels, rng
from minicaffe import minicaffe_pb2 as pb
from minicaffe.blob import Blob
from minicaffe.layer import Layer, prod, register

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

    def _stochastic_forward(self, x, out):
        """Caffe's GPU kernels (its CPU build has none): TRAIN samples a position per window with
        probability proportional to the activation (meant for non-negative inputs, after ReLU);
        TEST gives the activation-weighted average."""
        if self.phase == pb.TRAIN:
            if getattr(self, "sampled", None) is None or self.sampled.shape != out.shape:
                self.sampled = np.empty(out.shape, np.int32)
            u = 1 - rng.get().random(out.shape, dtype=np.float32)     # (0, 1], as curand's
            kernels.sto_pool_train(x, self.kh, self.kw, self.sh, self.sw, u, out, self.sampled)
        else:
            kernels.sto_pool_test(x, self.kh, self.kw, self.sh, self.sw, out)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.method == PP.MAX:
            kernels.max_pool_bwd(dy, self.argmax, dx)
        elif self.method == PP.AVE:
            kernels.ave_pool_bwd(dy, *self.geometry(), dx)
        elif self.phase == pb.TRAIN:
            kernels.max_pool_bwd(dy, self.sampled, dx)     # to the sampled position, as to a max
        else:
            raise self.error("STOCHASTIC pooling has no backward in the TEST phase (nor in Caffe)")


@register("SPP")
class SPP(Layer):
    """Spatial pyramid pooling: level l pools the image into 2^l x 2^l bins with one Pooling layer,
    each flattened, all concatenated along axis 1 (with a single level, the pooled blob itself,
    unflattened, as in Caffe). The levels are rebuilt when the image size changes."""
    n_bottom = 1
    n_top = 1

    def setup(self, bottom, top):
        self.height = self.param.spp_param.pyramid_height
        if self.height < 1:
            raise self.error("spp_param.pyramid_height must be at least 1")
        self.size = None

    def _level(self, level, h, w):
        """A Pooling layer whose 2^level windows per side cover the image (Caffe's geometry). Its
        LayerParameter, as Caffe's, sets no phase, so it is TRAIN's default: STOCHASTIC levels
        sample in the TEST phase too."""
        bins = 2 ** level
        lp = pb.LayerParameter(name=f"{self.name} level {level}", type="Pooling")
        pp = lp.pooling_param
        pp.pool = self.param.spp_param.pool        # SPP's and Pooling's enums agree
        for axis, size in (("h", h), ("w", w)):
            kernel = -(-size // bins)
            pad = (kernel * bins - size + 1) // 2
            if pad >= kernel or (pad and pp.pool == PP.STOCHASTIC):
                raise self.error(
                    f"pyramid level {level} ({bins} bins) over {axis} = {size} needs kernel {kernel} "
                    f"and pad {pad}, which Caffe's pooling rejects (pad must be 0 for STOCHASTIC, "
                    f"below the kernel otherwise); use a smaller pyramid_height or another input size")
            setattr(pp, f"kernel_{axis}", kernel)
            setattr(pp, f"stride_{axis}", kernel)
            setattr(pp, f"pad_{axis}", pad)
        return Pooling(lp, pb.TRAIN)

    def reshape(self, bottom, top):
        if bottom[0].data.ndim != 4:
            raise self.error(f"needs a 4-D bottom, got shape {bottom[0].shape}")
        n, c, h, w = bottom[0].shape
        if self.size != (h, w):
            self.size = (h, w)
            self.levels = [(self._level(i, h, w), Blob()) for i in range(self.height)]
            for pool, out in self.levels:
                pool.set_up(bottom, [out])
        for pool, out in self.levels:
            pool.reshape(bottom, [out])
        if self.height == 1:
            top[0].reshape(self.levels[0][1].shape)
        else:
            top[0].reshape(n, sum(prod(out.shape[1:]) for _, out in self.levels))

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        y = top[0].data.reshape(n, -1)
        at = 0
        for pool, out in self.levels:
            pool.forward(bottom, [out])
            k = prod(out.shape[1:])
            y[:, at:at + k] = out.data.reshape(n, k)
            at += k

    def backward(self, top, propagate_down, bottom):
        """Each level's Pooling writes its gradient into the bottom diff; their sum is kept aside."""
        if not propagate_down[0]:
            return
        n = bottom[0].shape[0]
        dy = top[0].diff.reshape(n, -1)
        total, at = None, 0
        for pool, out in self.levels:
            k = prod(out.shape[1:])
            out.diff[...] = dy[:, at:at + k].reshape(out.shape)
            at += k
            pool.backward([out], [True], bottom)
            if total is None:
                total = bottom[0].diff.copy()
            else:
                total += bottom[0].diff
        bottom[0].diff[...] = total
