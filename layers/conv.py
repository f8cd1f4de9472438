"""Convolution and Deconvolution: batched im2col + one GEMM per group (DESIGN.md speed rules); and
Im2col, the column matrix itself as a layer."""
import numpy as np

from minicaffe import gemm, kernels
from minicaffe import minicaffe_pb2 as pb
from minicaffe.sparse import SparseChooser
from minicaffe.compress.quantize import forward_int8
from minicaffe.filler import fill
from minicaffe.layer import Layer, canonical_axis, prod, register

CHUNK_BYTES = 8 << 20


def spatial_geometry(cp, n, layer):
    """kernel, pad, stride, dilation for n spatial axes by Caffe's rules: each repeated field given
    once for all axes or once per axis; the _h/_w fields only in 2-D and not beside their
    repeated form."""
    def per_axis(name, hw, default):
        vals = list(getattr(cp, name))
        if hw and (cp.HasField(hw + "_h") or cp.HasField(hw + "_w")):
            if n != 2:
                raise layer.error(f"{hw}_h and {hw}_w are only for 2-D, not {n} spatial axes")
            if vals:
                raise layer.error(f"give either {name} or {hw}_h and {hw}_w, not both")
            return getattr(cp, hw + "_h"), getattr(cp, hw + "_w")
        if not vals:
            if default is None:
                raise layer.error(f"{name} is required")
            return (default,) * n
        if len(vals) not in (1, n):
            raise layer.error(f"{name} takes 1 or {n} values (once per spatial axis), got {len(vals)}")
        return tuple(vals) if len(vals) == n else (vals[0],) * n
    geo = (per_axis("kernel_size", "kernel", None), per_axis("pad", "pad", 0),
           per_axis("stride", "stride", 1), per_axis("dilation", None, 1))
    if min(geo[0] + geo[2] + geo[3]) <= 0:
        raise layer.error("kernel, stride and dilation must be positive")
    return geo


def group_matmul(a, b, out, g, ta=False, tb=False, b_cols=False, accumulate=False, threads=None):
    """out (+)= op(a) @ op(b) block-diagonally: the rows of a, b (or b's columns) and out split
    into g groups."""
    ra, ro = a.shape[0] // g, out.shape[0] // g
    rb = b.shape[1 if b_cols else 0] // g
    for i in range(g):
        x = a[i * ra:(i + 1) * ra]
        y = b[:, i * rb:(i + 1) * rb] if b_cols else b[i * rb:(i + 1) * rb]
        gemm.matmul(x.T if ta else x, y.T if tb else y, out[i * ro:(i + 1) * ro], accumulate, threads)


class ConvBase(Layer):
    n_bottom = None
    min_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        cp = self.param.convolution_param
        if len(bottom) != len(top):
            raise self.error("needs as many tops as bottoms")
        if bottom[0].data.ndim != 4 or cp.axis not in (1, -3):
            raise self.error(f"only 2-D spatial convolution of 4-D (N,C,H,W) blobs is supported; "
                             f"bottom has shape {bottom[0].shape}")
        (self.kh, self.kw), (self.ph, self.pw), (self.sh, self.sw), (self.dh, self.dw) = \
            spatial_geometry(cp, 2, self)
        self.group = cp.group
        self.num_output = cp.num_output
        self.channels = bottom[0].shape[1]
        if self.num_output <= 0:
            raise self.error("num_output must be positive")
        if self.channels % self.group or self.num_output % self.group:
            raise self.error(f"channels ({self.channels}) and num_output ({self.num_output}) "
                             f"must be divisible by group ({self.group})")
        self.bias_term = cp.bias_term
        self._last = {}     # thread -> (bottom, first image) of the block whose columns are in its _col
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

    def chunks(self, lo, hi, ck, p, nt):
        """The blocks of images lo to hi, for one of nt threads: the column block stays cache-sized
        (measured: the batch-100 column matrix of cifar10_quick's conv2 is 82 MB and its GEMMs ran
        2x slower than in 4 MB blocks). 8 MB in all rather than 4 or 16: steps 4-10% faster."""
        per = max(1, CHUNK_BYTES // nt // (4 * ck * p))
        return [(s, min(s + per, hi)) for s in range(lo, hi, per)]

    def threads(self, n):
        macs = n * self.channels * self.kh * self.kw * self.oh * self.ow * self.num_output // self.group
        return min(n, kernels.THREADS if macs >= gemm.SPLIT_ABOVE else 1)

    def each_thread(self, body, n, *args):
        """body(k, lo, hi, inner, nt, *args) for k < nt: thread k takes images lo to hi through
        every kernel on its own (inner = 1), one hand-off a pass instead of one a kernel (55 us
        each; cifar10_quick made ~90 a step). With nt = 1, inner = None lets each kernel split as
        its size says."""
        nt = self.threads(n)

        def part(k0, k1):
            for k in range(k0, k1):
                body(k, k * n // nt, (k + 1) * n // nt, 1 if nt > 1 else None, nt, *args)
        kernels.split(part, nt, nt)

    def forward(self, bottom, top):
        if forward_int8(self, bottom, top):      # weights read from an int8 .mcz
            return
        m = self.num_output
        csr = None
        if self.phase == pb.TEST and self.group == 1:
            if not hasattr(self, "sparse"):
                self.sparse = SparseChooser()
            csr = self.sparse.csr_of(self.blobs[0], m)
        w2 = self.blobs[0].peek.reshape(m, -1)
        self.path = "dense"
        for i, (b, t) in enumerate(zip(bottom, top)):
            if csr is None:
                self.each_thread(self._forward_images, b.shape[0], i, b, t, w2, None)
            else:       # the products measure their own thread counts
                self._forward_images(0, 0, b.shape[0], None, 1, i, b, t, w2, csr)

    def _forward_images(self, k, lo, hi, inner, nt, i, b, t, w2, csr):
        m, p = self.num_output, self.oh * self.ow
        ck = self.channels * self.kh * self.kw
        for s, e in self.chunks(lo, hi, ck, p, nt):
            nb = e - s
            col = self._buf(f"_col{k}", (ck, nb, p))
            kernels.im2col(b.data[s:e], *self.geometry(), self.oh, self.ow, col, inner)
            out = self._buf(f"_out{k}", (m, nb * p))
            col2 = col.reshape(ck, nb * p)
            if csr is not None:
                self.sparse.run(self, csr, col2, out, lambda: gemm.matmul(w2, col2, out))
            else:
                group_matmul(w2, col2, out, self.group, threads=inner)
            if self.bias_term:     # while the block is in cache
                out += self.blobs[1].peek[:, None]
            t.data[s:e] = out.reshape(m, nb, self.oh, self.ow).transpose(1, 0, 2, 3)
            self._last[k] = (i, s)

    def backward(self, top, propagate_down, bottom):
        n = bottom[0].shape[0]
        ck = self.channels * self.kh * self.kw
        m, g = self.num_output, self.group
        ko = ck // g
        wts = self.blobs[0].data.reshape(m, -1)
        nt = self.threads(n)
        # per thread: the weight gradient transposed, col @ dy^T, with dy^T laid out as rows (each
        # block's product adds into it and reads the columns once), and the bias gradient
        dwt = np.zeros((nt, ck, m // g), np.float32)
        db = np.zeros((nt, m), np.float32)
        for i in range(len(bottom) - 1, -1, -1):
            self.each_thread(self._backward_images, n, i, bottom[i], top[i], propagate_down[i],
                             wts, dwt, db)
        dw = np.ascontiguousarray(dwt.sum(0).reshape(g, ko, m // g).transpose(0, 2, 1)).reshape(m, ko)
        self.weight_grad_hook(dw)
        self.blobs[0].diff += dw.reshape(self.blobs[0].shape)
        if self.bias_term:
            self.blobs[1].diff += db.sum(0)

    def _backward_images(self, k, lo, hi, inner, nt, i, b, t, down, wts, dwt, db):
        m, g, p = self.num_output, self.group, self.oh * self.ow
        ck = self.channels * self.kh * self.kw
        # last block first: its columns are still in _col from forward, so they need no im2col.
        # The other blocks' are built again: keeping every block's (82 MB for cifar10_quick's
        # conv2) made steps 7% slower here than a second im2col from a cached input.
        for s, e in reversed(self.chunks(lo, hi, ck, p, nt)):
            nb = e - s
            col = self._buf(f"_col{k}", (ck, nb, p))
            if self._last.get(k) != (i, s):
                kernels.im2col(b.data[s:e], *self.geometry(), self.oh, self.ow, col, inner)
            self._last[k] = None       # dcol overwrites the columns below
            col2 = col.reshape(ck, nb * p)
            diff = t.diff[s:e].reshape(nb, m, p)
            dyt = self._buf(f"_dyt{k}", (nb, p, m))
            dyt[...] = diff.transpose(0, 2, 1)
            dyt2 = dyt.reshape(nb * p, m)
            if self.bias_term:     # ones @ dy^T, as Caffe's GEMV with ones; no OpenBLAS call here
                ones = self._buf(f"_ones{k}", (1, nb * p), fill=1)
                gemm.matmul(ones, dyt2, db[k:k + 1], accumulate=True, threads=inner)
            group_matmul(col2, dyt2, dwt[k], g, b_cols=True, accumulate=True, threads=inner)
            if down:     # dcol in place of the columns
                dy = self._buf(f"_dy{k}", (m, nb, p))
                dy[...] = diff.transpose(1, 0, 2)
                group_matmul(wts, dy.reshape(m, nb * p), col2, g, ta=True, threads=inner)
                kernels.col2im(col, *self.geometry(), self.oh, self.ow, b.diff[s:e], inner)


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


@register("Im2col")
class Im2col(Layer):
    """Caffe's Im2col: the axes before the channel axis are images, the channel axis becomes
    C * prod(kernel) (channel, then kernel offset in row-major order), the spatial axes become the
    output positions. backward is col2im: overlapping windows add up."""
    n_bottom = 1
    n_top = 1

    def setup(self, bottom, top):
        cp = self.param.convolution_param
        nd = bottom[0].data.ndim
        self.axis = canonical_axis(cp.axis, nd)
        if nd - self.axis - 1 < 1:
            raise self.error(f"needs a spatial axis after the channel axis {self.axis}; "
                             f"bottom has shape {bottom[0].shape}")
        self.kernel, self.pad, self.stride, self.dilation = spatial_geometry(cp, nd - self.axis - 1, self)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        a = self.axis
        self.images, self.channels, self.spatial = prod(shape[:a]), shape[a], shape[a + 1:]
        self.out = []
        for size, k, p, s, d in zip(self.spatial, self.kernel, self.pad, self.stride, self.dilation):
            extent = d * (k - 1) + 1
            if size + 2 * p < extent:
                raise self.error(f"kernel extent {extent} is larger than the padded input "
                                 f"({size} + 2 * {p}) of bottom shape {shape}")
            self.out.append((size + 2 * p - extent) // s + 1)
        top[0].reshape(shape[:a] + (self.channels * prod(self.kernel),) + tuple(self.out))

    def _planes(self, blob_array):
        """The 2-D case as one image of images * channels planes: the kernels' column layout
        (plane, kernel offset, position) is then the top's own layout, with no transpose."""
        return blob_array.reshape(1, self.images * self.channels, *self.spatial)

    def _geometry(self):
        """The 2-D kernels' arguments: kh, kw, ph, pw, sh, sw, dh, dw, oh, ow."""
        return (*self.kernel, *self.pad, *self.stride, *self.dilation, *self.out)

    def _windows(self):
        """For each kernel offset (row-major), the strided slice of the padded input it reads:
        the N-D case loops over the kernel's offsets, never over positions."""
        for offset in np.ndindex(*self.kernel):
            yield (slice(None), slice(None)) + tuple(
                slice(o * d, o * d + s * (n - 1) + 1, s)
                for o, d, s, n in zip(offset, self.dilation, self.stride, self.out))

    def forward(self, bottom, top):
        if len(self.spatial) == 2:
            kernels.im2col(self._planes(bottom[0].data), *self._geometry(),
                           top[0].data.reshape(-1, 1, prod(self.out)))
            return
        col = top[0].data.reshape(self.images, self.channels, -1, *self.out)
        padded = np.pad(bottom[0].data.reshape(self.images, self.channels, *self.spatial),
                        [(0, 0), (0, 0)] + [(p, p) for p in self.pad])
        for j, window in enumerate(self._windows()):
            col[:, :, j] = padded[window]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if len(self.spatial) == 2:
            kernels.col2im(top[0].diff.reshape(-1, 1, prod(self.out)), *self._geometry(),
                           self._planes(bottom[0].diff))
            return
        col = top[0].diff.reshape(self.images, self.channels, -1, *self.out)
        padded = np.zeros((self.images, self.channels) +
                          tuple(s + 2 * p for s, p in zip(self.spatial, self.pad)), np.float32)
        for j, window in enumerate(self._windows()):
            padded[window] += col[:, :, j]
        inner = (slice(None), slice(None)) + tuple(slice(p, p + s) for s, p in zip(self.spatial, self.pad))
        bottom[0].diff.reshape(padded.shape[:2] + self.spatial)[...] = padded[inner]
