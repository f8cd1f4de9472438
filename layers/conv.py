"""Convolution and Deconvolution: batched im2col + one GEMM per group (DESIGN.md speed rules)."""
import numpy as np

from minicaffe import gemm, kernels
from minicaffe import minicaffe_pb2 as pb
from minicaffe.sparse import SparseChooser
from minicaffe.filler import fill
from minicaffe.layer import Layer, register

CHUNK_BYTES = 8 << 20


def _pair(rep, h, w, default, name, layer):
    if h is not None:
        return h, w
    vals = list(rep)
    if not vals:
        if default is None:
            raise layer.error(f"{name} is required")
        return default, default
    if len(vals) == 1:
        return vals[0], vals[0]
    if len(vals) == 2:
        return vals[0], vals[1]
    raise layer.error(f"{name} takes 1 or 2 values for 2-D convolution, got {len(vals)}")


def group_matmul(a, b, out, g, ta=False, tb=False, b_cols=False, accumulate=False):
    """out (+)= op(a) @ op(b) block-diagonally: the rows of a, b (or b's columns) and out split
    into g groups."""
    ra, ro = a.shape[0] // g, out.shape[0] // g
    rb = b.shape[1 if b_cols else 0] // g
    for i in range(g):
        x = a[i * ra:(i + 1) * ra]
        y = b[:, i * rb:(i + 1) * rb] if b_cols else b[i * rb:(i + 1) * rb]
        gemm.matmul(x.T if ta else x, y.T if tb else y, out[i * ro:(i + 1) * ro], accumulate)


class ConvBase(Layer):
    n_bottom = None
    min_bottom = 1
    min_top = 1

    def layer_setup(self, bottom, top):
        cp = self.param.convolution_param
        if len(bottom) != len(top):
            raise self.error("needs as many tops as bottoms")
        if bottom[0].data.ndim != 4 or cp.axis not in (1, -3):
            raise self.error(f"only 2-D spatial convolution of 4-D (N,C,H,W) blobs is supported; "
                             f"bottom has shape {bottom[0].shape}")
        has = cp.HasField
        kh = cp.kernel_h if has("kernel_h") else None
        self.kh, self.kw = _pair(cp.kernel_size, kh, cp.kernel_w, None, "kernel_size", self)
        ph = cp.pad_h if (has("pad_h") or has("pad_w")) else None
        self.ph, self.pw = _pair(cp.pad, ph, cp.pad_w, 0, "pad", self)
        sh = cp.stride_h if (has("stride_h") or has("stride_w")) else None
        self.sh, self.sw = _pair(cp.stride, sh, cp.stride_w, 1, "stride", self)
        self.dh, self.dw = _pair(cp.dilation, None, None, 1, "dilation", self)
        if min(self.kh, self.kw, self.sh, self.sw, self.dh, self.dw) <= 0:
            raise self.error("kernel, stride and dilation must be positive")
        self.group = cp.group
        self.num_output = cp.num_output
        self.channels = bottom[0].shape[1]
        if self.num_output <= 0:
            raise self.error("num_output must be positive")
        if self.channels % self.group or self.num_output % self.group:
            raise self.error(f"channels ({self.channels}) and num_output ({self.num_output}) "
                             f"must be divisible by group ({self.group})")
        self.bias_term = cp.bias_term
        self._last = None   # (bottom, first image) of the block whose columns are in _col
        wshape = self.weight_shape()
        self.new_param(wshape).data[...] = fill(cp.weight_filler, wshape)
        if self.bias_term:
            self.new_param((self.num_output,)).data[...] = fill(cp.bias_filler, (self.num_output,))

    def conv_out(self, h, w):
        oh = (h + 2 * self.ph - (self.dh * (self.kh - 1) + 1)) // self.sh + 1
        ow = (w + 2 * self.pw - (self.dw * (self.kw - 1) + 1)) // self.sw + 1
        return oh, ow

    def geometry(self):
        return (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh, self.dw)

    def check_channels(self, bottom):
        for b in bottom:
            if b.data.ndim != 4 or b.shape[1] != self.channels:
                raise self.error(f"bottom shape {b.shape} does not have the {self.channels} "
                                 "channels the layer was set up with")

    def weight_grad_hook(self, dw):
        """Where Cmp layers mask (and share) the weight gradient."""

    def _buf(self, name, shape, fill=None):
        """A scratch array kept between calls; `fill` sets it when it is (re)allocated."""
        b = getattr(self, name, None)
        if b is None or b.shape != shape:
            b = np.empty(shape, np.float32) if fill is None else np.full(shape, fill, np.float32)
            setattr(self, name, b)
        return b


@register("Convolution")
class Convolution(ConvBase):
    def weight_shape(self):
        return (self.num_output, self.channels // self.group, self.kh, self.kw)

    def reshape(self, bottom, top):
        self.check_channels(bottom)
        n, c, h, w = bottom[0].shape
        self.oh, self.ow = self.conv_out(h, w)
        if self.oh <= 0 or self.ow <= 0:
            raise self.error(f"kernel larger than padded input {h}x{w}")
        for b, t in zip(bottom, top):
            if b.shape != bottom[0].shape:
                raise self.error("all bottoms must have the same shape")
            t.reshape(n, self.num_output, self.oh, self.ow)

    def chunks(self, n, ck, p):
        """Images per block: the column block stays cache-sized (measured: the batch-100 column
        matrix of cifar10_quick's conv2 is 82 MB and its GEMMs ran 2x slower than in 4 MB blocks).
        8 MB rather than 4: half the GEMM calls and thread hand-offs; steps 4-7% faster on all three
        benchmark nets (alternating steps in one process), 16 MB no faster again."""
        per = max(1, CHUNK_BYTES // (4 * ck * p))
        return [(s, min(s + per, n)) for s in range(0, n, per)]

    def forward(self, bottom, top):
        n, c, h, w = bottom[0].shape
        p = self.oh * self.ow
        ck = c * self.kh * self.kw
        m = self.num_output
        w2 = self.blobs[0].peek.reshape(m, -1)
        csr = None
        if self.phase == pb.TEST and self.group == 1:
            if not hasattr(self, "sparse"):
                self.sparse = SparseChooser()
            csr = self.sparse.csr_of(self.blobs[0], m)
        self.path = "dense"
        for i, (b, t) in enumerate(zip(bottom, top)):
            for s, e in self.chunks(n, ck, p):
                nb = e - s
                col = self._buf("_col", (ck, nb, p))
                kernels.im2col(b.data[s:e], *self.geometry(), self.oh, self.ow, col)
                out = self._buf("_out", (m, nb * p))
                col2 = col.reshape(ck, nb * p)
                if csr is not None:
                    self.sparse.run(self, csr, col2, out, lambda: gemm.matmul(w2, col2, out))
                else:
                    group_matmul(w2, col2, out, self.group)
                if self.bias_term:     # while the block is in cache
                    out += self.blobs[1].peek[:, None]
                t.data[s:e] = out.reshape(m, nb, self.oh, self.ow).transpose(1, 0, 2, 3)
                self._last = (i, s)

    def backward(self, top, propagate_down, bottom):
        n, c, h, w = bottom[0].shape
        p = self.oh * self.ow
        ck = c * self.kh * self.kw
        m, g = self.num_output, self.group
        ko = ck // g
        wts = self.blobs[0].data.reshape(m, -1)
        # the weight gradient transposed, col @ dy^T, with dy^T laid out as rows: each block's
        # product adds into it, and reads the columns once
        dwt = np.zeros((ck, m // g), np.float32)
        # last block first: its columns are still in _col from forward, so they need no im2col.
        # The other blocks' are built again: keeping every block's (82 MB for cifar10_quick's
        # conv2) made steps 7% slower here than a second im2col from a cached input.
        for i in range(len(bottom) - 1, -1, -1):
            b, t = bottom[i], top[i]
            for s, e in reversed(self.chunks(n, ck, p)):
                nb = e - s
                col = self._buf("_col", (ck, nb, p))
                if self._last != (i, s):
                    kernels.im2col(b.data[s:e], *self.geometry(), self.oh, self.ow, col)
                self._last = None       # dcol overwrites the columns below
                col2 = col.reshape(ck, nb * p)
                diff = t.diff[s:e].reshape(nb, m, p)
                dyt = self._buf("_dyt", (nb, p, m))
                dyt[...] = diff.transpose(0, 2, 1)
                dyt2 = dyt.reshape(nb * p, m)
                if self.bias_term:     # a GEMV with ones, as Caffe does: 3x numpy's sum here
                    self.blobs[1].diff += self._buf("_ones", (nb * p,), fill=1) @ dyt2
                group_matmul(col2, dyt2, dwt, g, b_cols=True, accumulate=True)
                if propagate_down[i]:     # dcol in place of the columns
                    dy = self._buf("_dy", (m, nb, p))
                    dy[...] = diff.transpose(1, 0, 2)
                    group_matmul(wts, dy.reshape(m, nb * p), col2, g, ta=True)
                    kernels.col2im(col, *self.geometry(), self.oh, self.ow, b.diff[s:e])
        dw = np.ascontiguousarray(dwt.reshape(g, ko, m // g).transpose(0, 2, 1)).reshape(m, ko)
        self.weight_grad_hook(dw)
        self.blobs[0].diff += dw.reshape(self.blobs[0].shape)


@register("Deconvolution")
class Deconvolution(ConvBase):
    """Convolution run backwards: forward is conv's data gradient, backward is conv's forward."""

    def weight_shape(self):
        return (self.channels, self.num_output // self.group, self.kh, self.kw)

    def reshape(self, bottom, top):
        self.check_channels(bottom)
        n, c, h, w = bottom[0].shape
        self.oh = self.sh * (h - 1) + self.dh * (self.kh - 1) + 1 - 2 * self.ph
        self.ow = self.sw * (w - 1) + self.dw * (self.kw - 1) + 1 - 2 * self.pw
        if self.oh <= 0 or self.ow <= 0:
            raise self.error("output size would be empty")
        for b, t in zip(bottom, top):
            t.reshape(n, self.num_output, self.oh, self.ow)

    def _weights_as_conv(self):
        """(C_in, M/g, k, k) seen as conv weights from M to C_in: rows = C_in, cols = M/g*k*k."""
        return self.blobs[0].data.reshape(self.channels, -1)

    def forward(self, bottom, top):
        n, c, h, w = bottom[0].shape
        p = h * w
        m = self.num_output
        mk = m * self.kh * self.kw
        g = self.group
        wts = self._weights_as_conv()
        for b, t in zip(bottom, top):
            x2 = np.ascontiguousarray(b.data.reshape(n, c, p).transpose(1, 0, 2)).reshape(c, n * p)
            col = np.empty((mk, n, p), np.float32)
            col2 = col.reshape(mk, n * p)
            group_matmul(wts, x2, col2, g, ta=True)
            # col2im over the output geometry: the "input" of the equivalent conv is the output here
            kernels.col2im(col, *self.geometry(), h, w, t.data)
            if self.bias_term:
                t.data += self.blobs[1].data[None, :, None, None]

    def backward(self, top, propagate_down, bottom):
        n, c, h, w = bottom[0].shape
        p = h * w
        m = self.num_output
        mk = m * self.kh * self.kw
        g = self.group
        wts = self._weights_as_conv()
        for i, (b, t) in enumerate(zip(bottom, top)):
            if self.bias_term:
                self.blobs[1].diff += t.diff.sum(axis=(0, 2, 3))
            col = np.empty((mk, n, p), np.float32)
            kernels.im2col(t.diff, *self.geometry(), h, w, col)
            col2 = col.reshape(mk, n * p)
            x2 = np.ascontiguousarray(b.data.reshape(n, c, p).transpose(1, 0, 2)).reshape(c, n * p)
            dw = np.empty_like(wts)
            group_matmul(x2, col2, dw, g, tb=True)
            self.weight_grad_hook(dw)
            self.blobs[0].diff += dw.reshape(self.blobs[0].shape)
            if propagate_down[i]:
                dx = np.empty((c, n * p), np.float32)
                group_matmul(wts, col2, dx, g)
                b.diff[...] = dx.reshape(c, n, h, w).transpose(1, 0, 2, 3)
