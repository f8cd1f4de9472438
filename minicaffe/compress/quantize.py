"""8-bit linear quantization: per-output-channel symmetric int8 weights, per-tensor activation
scales calibrated on the training data, and the integer forward of Convolution / InnerProduct.

Semantics (what `minicaffe test` on an int8 .mcz computes, as an int8 engine would):
  weights  w_q = clamp(rint(w / s_w[c]), -127, 127),  s_w[c] = max|w_c| / 127 (0 for a zero channel)
  inputs   x_q = clamp(rint(x / s_in), -127, 127)     (rint: to nearest, ties to even)
  acc      int32 sum of x_q * w_q                       (exact integers)
  output   float32(acc) * float32(s_in * s_w[c]) + bias[c]   (float32; biases stay float32)
The clamp is symmetric, so that -x quantizes to -x_q. A layer runs this in the TEST phase when
its weights are exactly the dequantized values of an int8 blob read from a .mcz in this process
(see `int8_of`); anything else, or weights changed since, runs the float path.

The product: with AVX-512 VNNI (vpdpbusd: u8 x s8 -> i32, 64 products an instruction) a Numba
kernel; the activations go in offset by 128 (u8) and 128 * sum_k w[c, k] comes off the sums.
Elsewhere a float64 BLAS product of the same integers, exact for any K below 2^38.
"""
import numpy as np

from minicaffe import minicaffe_pb2 as pb

QMAX = 127
TYPES = ("Convolution", "CmpConvolution", "InnerProduct", "CmpInnerProduct")


# ---------------------------------------------------------------- the numbers
def weight_axis(layer_type, param):
    """The weight axis of the output channels."""
    if layer_type.endswith("InnerProduct") and param.inner_product_param.transpose:
        return 1
    return 0


def quantize_weights(w, axis=0):
    """(int8 values, float32 scale per channel along `axis`); a pruned 0 stays exactly 0."""
    w = np.asarray(w, np.float32)
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scales = (np.abs(moved).max(axis=1, initial=0) / np.float32(QMAX)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1))
    q = np.clip(np.rint(moved / safe[:, None]), -QMAX, QMAX).astype(np.int8)
    q = np.moveaxis(q.reshape(np.moveaxis(w, axis, 0).shape), 0, axis)
    return np.ascontiguousarray(q), scales


def dequantize(q, scales, axis=0):
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q.astype(np.float32) * scales.reshape(shape)).astype(np.float32)


def quantize_input(x, scale):
    """int8 activations: to nearest, clamped to [-127, 127]."""
    return np.clip(np.rint(x / np.float32(scale)), -QMAX, QMAX).astype(np.int8)


def activation_scale(values, percentile=None):
    """The per-tensor scale from |x| samples: max, or the given percentile (outliers clip)."""
    a = np.abs(np.asarray(values, np.float32)).ravel()
    top = float(np.percentile(a, percentile)) if percentile is not None and a.size else float(a.max(initial=0))
    return np.float32(top / QMAX) if top > 0 else np.float32(1.0 / QMAX)


# ---------------------------------------------------------------- what a .mcz brought
class Int8:
    """One int8 weight blob as read: values, scales, the input scale, and its float image."""

    def __init__(self, q, scales, axis, input_scale):
        self.q, self.scales, self.axis, self.input_scale = q, scales, axis, np.float32(input_scale)
        self.dequantized = dequantize(q, scales, axis)
        self._packed = None

    def rows(self):
        """(M, K) int8 weights, output channel first."""
        return np.ascontiguousarray(np.moveaxis(self.q, self.axis, 0).reshape(self.q.shape[self.axis], -1))

    def multipliers(self):
        return (np.float32(self.input_scale) * self.scales).astype(np.float32)

    def packed(self):
        if self._packed is None:
            self._packed = gemm_weights(self.rows())
        return self._packed


LOADED = {}      # layer name -> recent Int8 records read from .mcz files (newest last)
KEEP = 4


def remember(name, rec):
    recs = LOADED.setdefault(name, [])
    recs.append(rec)
    del recs[:-KEEP]


def int8_of(layer):
    """The Int8 record the layer's weights are the dequantized image of, or None (float path).
    Checked again only when the weight blob may have changed (as the sparse path does)."""
    blob = layer.blobs[0]
    seen = getattr(layer, "_int8_seen", None)
    if seen is not None and seen[0] is blob and seen[1] == blob.version and (
            seen[2] is None or not blob.held_elsewhere()):
        return seen[2]
    rec = None
    for r in reversed(LOADED.get(layer.name, ())):
        if r.dequantized.shape == blob.shape and np.array_equal(r.dequantized, blob.peek):
            rec = r
            break
    layer._int8_seen = (blob, blob.version, rec)
    return rec


# ---------------------------------------------------------------- the integer product
def _has_vnni():
    try:
        with open("/proc/cpuinfo") as f:
            return "avx512_vnni" in f.read()
    except OSError:
        return False


VNNI = None      # None: not tried yet; then True when the kernel compiled and checked out


def gemm_weights(w):
    """Packing of the (M, K) int8 weights for int8_gemm, done once per blob."""
    m, k = w.shape
    k4, mp = -(-k // 4), -(-m // _MB) * _MB
    packed = np.zeros((k4, mp, 4), np.int8)
    wk = np.zeros((mp, 4 * k4), np.int8)
    wk[:m, :k] = w
    packed[...] = wk.reshape(mp, k4, 4).transpose(1, 0, 2)
    return dict(w=w, packed=packed, offset=128 * w.astype(np.int32).sum(axis=1), k4=k4)


def int8_gemm(xq, pw):
    """(P, M) int32 = xq (P, K) int8 @ w (M, K)^T, exactly."""
    global VNNI
    if VNNI is None:
        VNNI = _has_vnni() and _vnni_works()
    if VNNI:
        return _vnni_gemm(xq, pw)
    w = pw["w"]
    return np.matmul(xq.astype(np.float64), w.T.astype(np.float64)).astype(np.int32)


def requantize(acc, rec, bias):
    """float32(acc) * (s_in * s_w[c]) + bias[c], channels on the last axis."""
    y = acc.astype(np.float32)
    y *= rec.multipliers()
    if bias is not None:
        y += bias
    return y


# ---------------------------------------------------------------- the layers' int8 forwards
def inner_product(layer, rec, bottom, top):
    x = bottom[0].data.reshape(-1, layer.k)
    acc = int8_gemm(quantize_input(x, rec.input_scale), rec.packed())
    y = requantize(acc, rec, layer.blobs[1].peek if layer.bias_term else None)
    top[0].data.reshape(-1, layer.num_output)[...] = y


def convolution(layer, rec, bottom, top):
    from minicaffe import kernels
    m, oh, ow = layer.num_output, layer.oh, layer.ow
    ck = layer.channels * layer.kh * layer.kw
    bias = layer.blobs[1].peek if layer.bias_term else None
    for b, t in zip(bottom, top):
        n = b.shape[0]
        # the integers as floats through the float im2col (zero padding is the integer 0)
        xi = quantize_input(b.data, rec.input_scale).astype(np.float32)
        col = np.empty((ck, n, oh * ow), np.float32)
        kernels.im2col(xi, *layer.geometry(), oh, ow, col)
        rows = np.ascontiguousarray(col.reshape(ck, -1).T).astype(np.int8)
        acc = int8_gemm(rows, rec.packed())                 # (n * oh * ow, m)
        y = requantize(acc, rec, bias)
        t.data[...] = y.reshape(n, oh, ow, m).transpose(0, 3, 1, 2)


def forward_int8(layer, bottom, top):
    """The hook the layers call in the TEST phase: True when the int8 path ran."""
    if layer.phase != pb.TEST or not layer.blobs or getattr(layer, "group", 1) != 1:
        return False
    rec = int8_of(layer)
    if rec is None:
        return False
    layer.path = "int8"
    (convolution if hasattr(layer, "kh") else inner_product)(layer, rec, bottom, top)
    return True


# ---------------------------------------------------------------- VNNI kernel (filled below)
_MB = 32         # output channels a kernel call keeps in registers (two vectors of 16)


def _vnni_works():
    return False


def _vnni_gemm(xq, pw):
    raise NotImplementedError


# ---------------------------------------------------------------- calibration
def quantizable(net):
    """(index, layer) of the layers the int8 path runs: Convolution (group 1) and InnerProduct."""
    return [(i, layer) for i, layer in enumerate(net.layers)
            if layer.param.type in TYPES and layer.blobs and getattr(layer, "group", 1) == 1]


def calibrate(net, iterations, percentile=None):
    """{layer name: (weight axis, input scale)} from `iterations` forwards of `net` (TRAIN data):
    the largest |x| seen at each quantized layer's input, or the percentile of all of them."""
    layers = quantizable(net)
    seen = {i: [] for i, _ in layers}

    def record(i):          # at the layer's own turn: a later in-place layer may change its input
        if i in seen:
            x = np.abs(net.bottom_vecs[i][0].peek)
            seen[i].append(x.ravel().copy() if percentile is not None else x.max(initial=0))
    net.callbacks["before_forward"].append(record)
    try:
        for _ in range(iterations):
            net.forward()
    finally:
        net.callbacks["before_forward"].remove(record)
    out = {}
    for i, layer in layers:
        vals = np.concatenate(seen[i]) if percentile is not None else np.array(seen[i])
        out[net.layer_names[i]] = (weight_axis(layer.param.type, layer.param),
                                   float(activation_scale(vals, percentile)))
    return out
