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
import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from minicaffe import kernels
from minicaffe import minicaffe_pb2 as pb

from .mask import out_axis

QMAX = 127
TYPES = ("Convolution", "CmpConvolution", "InnerProduct", "CmpInnerProduct")


# ---------------------------------------------------------------- the numbers

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
        self._packed = None

    @property
    def dequantized(self):
        """Made when asked, not kept: a record holds one byte a weight."""
        return dequantize(self.q, self.scales, self.axis)

    def rows(self, channel_last=False):
        """(M, K) int8 weights, output channel first; channel_last: a convolution's K in (kernel
        row, kernel column, input channel) order, as the VNNI im2row lays out the patches."""
        q = np.moveaxis(self.q, self.axis, 0)
        if channel_last:
            q = q.transpose(0, 2, 3, 1)
        return np.ascontiguousarray(q.reshape(q.shape[0], -1))

    def multipliers(self):
        return (np.float32(self.input_scale) * self.scales).astype(np.float32)

    def packed(self, channel_last=False):
        if self._packed is None or self._packed[0] != channel_last:
            self._packed = (channel_last, gemm_weights(self.rows(channel_last)))
        return self._packed[1]


LOADED = {}      # layer name -> recent Int8 records read from .mcz files (newest last)
KEEP = 2


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
        if r.q.shape == blob.shape and np.array_equal(r.dequantized, blob.peek):
            rec = r
            break
    layer._int8_seen = (blob, blob.version, rec)
    return rec


# ---------------------------------------------------------------- the integer product
def _has_vnni():
    """Whether the code Numba makes for this host may use vpdpbusd: the CPU has it (the flag
    avx512_vnni in /proc/cpuinfo, as LLVM sees it) and Numba targets the host CPU, not a generic
    one (LLVM would then abort on the instruction, not raise)."""
    try:
        import llvmlite.binding as llvm
        from numba.core import config
        features = llvm.get_host_cpu_features()
        host = config.CPU_NAME in (None, "host") and not config.CPU_FEATURES
        return host and bool(features.get("avx512vnni")) and bool(features.get("avx512bw"))
    except Exception:
        return False


VNNI = None      # None: not tried yet; then True when the kernel compiled and checked out


def _vnni_ready():
    global VNNI
    if VNNI is None:
        VNNI = _has_vnni() and _vnni_works()
    return VNNI


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
    if _vnni_ready():
        return _vnni_gemm(xq, pw)
    w = pw["w"]
    return np.matmul(xq.astype(np.float64), w.T.astype(np.float64)).astype(np.int32)


def requantize(acc, rec, bias):
    """float32(acc) * (s_in * s_w[c]) + bias[c], channels on the last axis."""
    y = acc.astype(np.float32)
    y *= rec.multipliers()
    y += bias
    return y


# ---------------------------------------------------------------- the layers' int8 forwards
def inner_product(layer, rec, bottom, top):
    x = bottom[0].data.reshape(-1, layer.k)
    if VNNI:
        pw = rec.packed()
        xu = _padded_u8(x.shape[0], pw["k4"])
        _split(1, x.shape[0], x.size, x, np.float32(rec.input_scale), xu)
        _split(3, x.shape[0], x.shape[0] * layer.num_output, _vnni_acc(xu, pw), pw["offset"],
               rec.multipliers(), _bias(layer), top[0].data.reshape(-1, layer.num_output, 1))
        return
    acc = int8_gemm(quantize_input(x, rec.input_scale), rec.packed())
    y = requantize(acc, rec, _bias(layer))
    top[0].data.reshape(-1, layer.num_output)[...] = y


def convolution(layer, rec, bottom, top):
    m, oh, ow = layer.num_output, layer.oh, layer.ow
    ck = layer.channels * layer.kh * layer.kw
    bias = _bias(layer)
    for b, t in zip(bottom, top):
        n = b.shape[0]
        if VNNI:
            pw = rec.packed(channel_last=True)
            xu = _padded_u8(n * oh * ow, pw["k4"])
            _split(2, n, xu.size, b.data, np.float32(rec.input_scale), *layer.geometry(), oh, ow, xu)
            _split(3, n, t.count, _vnni_acc(xu, pw), pw["offset"], rec.multipliers(), bias,
                   t.data.reshape(n, m, oh * ow))
            continue
        # the integers as floats through the float im2col (zero padding is the integer 0)
        xi = quantize_input(b.data, rec.input_scale).astype(np.float32)
        col = np.empty((ck, n, oh * ow), np.float32)
        kernels.im2col(xi, *layer.geometry(), oh, ow, col)
        rows = np.ascontiguousarray(col.reshape(ck, -1).T).astype(np.int8)
        acc = int8_gemm(rows, rec.packed())                 # (n * oh * ow, m)
        y = requantize(acc, rec, bias)
        t.data[...] = y.reshape(n, oh, ow, m).transpose(0, 3, 1, 2)


def _bias(layer):
    return layer.blobs[1].peek if layer.bias_term else np.zeros(layer.num_output, np.float32)


def forward_int8(layer, bottom, top):
    """The hook every Convolution/InnerProduct forward calls: True when the int8 path ran. Returns
    at once in TRAIN or when no .mcz brought int8 weights."""
    if not LOADED or layer.phase != pb.TEST or not layer.blobs or getattr(layer, "group", 1) != 1:
        return False
    rec = int8_of(layer)
    if rec is None:
        return False
    _vnni_ready()
    layer.path = "int8"
    (convolution if hasattr(layer, "kh") else inner_product)(layer, rec, bottom, top)
    return True


# ---------------------------------------------------------------- the VNNI kernel
_MB = 32         # output channels a tile keeps in registers (two vectors of 16 int32 sums)
_RB = 8          # input rows a tile keeps (8 x 2 sums: 16 of the 32 vector registers)


@intrinsic
def tile(typingctx, x, w, out, p0, m0):
    """out[p0:p0+8, m0:m0+32] = sum over k of x[p, k] (u8) * w[k // 4, m, k % 4] (s8): per
    step of four k, two 64-byte weight loads, eight 4-byte broadcasts of x, 16 vpdpbusd."""
    def codegen(context, builder, sig, args):
        xa, wa, oa = (context.make_array(t)(context, builder, a) for t, a in zip(sig.args[:3], args[:3]))
        p0, m0 = args[3], args[4]
        i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
        v32, v8 = ir.VectorType(i32, 16), ir.VectorType(i8, 64)
        dp = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v32, [v32, v8, v8]),
                                            "llvm.x86.avx512.vpdpbusd.512")
        ldx = cgutils.unpack_tuple(builder, xa.shape, 2)[1]
        k4n, mp = cgutils.unpack_tuple(builder, wa.shape, 3)[:2]
        ldo = cgutils.unpack_tuple(builder, oa.shape, 2)[1]
        xp = builder.bitcast(xa.data, i8.as_pointer())
        wp = builder.bitcast(wa.data, i8.as_pointer())
        acc = [[cgutils.alloca_once_value(builder, ir.Constant(v32, [0] * 16)) for _ in range(2)]
               for _ in range(_RB)]
        with cgutils.for_range(builder, k4n) as loop:
            k4 = loop.index
            wrow = builder.mul(builder.add(builder.mul(k4, mp), m0), ir.Constant(i64, 4))
            wv = [builder.load(builder.bitcast(builder.gep(wp, [builder.add(wrow, ir.Constant(i64, 64 * v))]),
                                               v8.as_pointer()), align=1) for v in range(2)]
            for r in range(_RB):
                off = builder.add(builder.mul(builder.add(p0, ir.Constant(i64, r)), ldx),
                                  builder.mul(k4, ir.Constant(i64, 4)))
                xs = builder.load(builder.bitcast(builder.gep(xp, [off]), i32.as_pointer()), align=1)
                splat = builder.shuffle_vector(builder.insert_element(ir.Constant(v32, None), xs,
                                                                      ir.Constant(i32, 0)),
                                               ir.Constant(v32, None), ir.Constant(v32, [0] * 16))
                xb = builder.bitcast(splat, v8)
                for v in range(2):
                    builder.store(builder.call(dp, [builder.load(acc[r][v]), xb, wv[v]]), acc[r][v])
        op = oa.data
        for r in range(_RB):
            row = builder.mul(builder.add(p0, ir.Constant(i64, r)), ldo)
            for v in range(2):
                at = builder.gep(op, [builder.add(row, builder.add(m0, ir.Constant(i64, 16 * v)))])
                builder.store(builder.load(acc[r][v]), builder.bitcast(at, v32.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.none(x, w, out, types.int64, types.int64), codegen

jit = nb.njit(cache=True, nogil=True)
U = np.uint64

@jit
def gemm(lo, hi, x, w, out):
    """Tiles lo to hi (row blocks of _RB, each through every channel block)."""
    for t in range(lo, hi):
        for m0 in range(0, w.shape[1], _MB):
            tile(x, w, out, t * _RB, m0)

@jit
def pack_rows(lo, hi, x, scale, out):
    """out[p, k] = clamp(rint(x[p, k] / scale), -127, 127) + 128 (u8); padding stays 128."""
    for p in range(lo, hi):
        for k in range(x.shape[1]):
            v = min(max(np.rint(x[p, k] / scale), np.float32(-127)), np.float32(127))
            out[p, k] = np.uint8(np.int32(v) + 128)

@jit
def im2row(lo, hi, x, scale, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, out):
    """The quantized input's patches as rows of u8 (offset 128), in (kernel row, kernel
    column, channel) order, through a padded channel-last copy of each image (padding 128,
    the zero): with dilation 1 a kernel row of a patch is one run of kw * c bytes."""
    n, c, h, wd = x.shape
    hp, wp = h + 2 * ph, wd + 2 * pw
    ld = out.shape[1]
    of = out.reshape(-1)
    q = np.empty(hp * wp * c, np.uint8)
    run = kw * c
    for img in range(lo, hi):
        q[:] = 128
        xf = x.reshape(-1)
        for ch in range(c):
            for i in range(h):
                src, dst = U(((img * c + ch) * h + i) * wd), U(((i + ph) * wp + pw) * c + ch)
                for j in range(wd):
                    v = min(max(np.rint(xf[src + U(j)] / scale), np.float32(-127)), np.float32(127))
                    q[dst + U(j * c)] = np.uint8(np.int32(v) + 128)
        for y in range(oh):
            for xo in range(ow):
                d = U(((img * oh + y) * ow + xo) * ld)
                for i in range(kh):
                    src = U(((y * sh + i * dh) * wp + xo * sw) * c)
                    if dw == 1:      # unsigned offsets: no wraparound test, a vector copy
                        for e in range(run):
                            of[d + U(e)] = q[src + U(e)]
                    else:
                        for j in range(kw):
                            for ch in range(c):
                                of[d + U(j * c + ch)] = q[src + U(j * dw * c + ch)]
                    d += U(run)

@jit
def finish(lo, hi, acc, offset, mult, bias, out):
    """out[n, m, s] = float32(acc[n * S + s, m] - offset[m]) * mult[m] + bias[m]."""
    m, sp, la = out.shape[1], out.shape[2], acc.shape[1]
    af, of = acc.reshape(-1), out.reshape(-1)
    for img in range(lo, hi):
        for c in range(m):
            o, k, b = offset[c], mult[c], bias[c]
            d, a = U((img * m + c) * sp), U(img * sp * la + c)
            for s in range(sp):
                of[d + U(s)] = np.float32(af[a + U(s * la)] - o) * k + b


_KERNEL = (gemm, pack_rows, im2row, finish)      # by _split's index


def _vnni_works():
    """Build the kernel and check it against the exact product on awkward sizes."""
    try:
        rng = np.random.default_rng(0)
        for p, m, k in ((3, 5, 7), (19, 40, 129)):
            x = rng.integers(-127, 128, (p, k)).astype(np.int8)
            w = rng.integers(-127, 128, (m, k)).astype(np.int8)
            want = x.astype(np.int64) @ w.T.astype(np.int64)
            if not np.array_equal(_vnni_gemm(x, gemm_weights(w)), want):
                return False
        return True
    except Exception:          # an LLVM without the intrinsic: the exact fallback serves
        return False


def _padded_u8(p, k4):
    return np.full((-(-p // _RB) * _RB, 4 * k4), 128, np.uint8)


def _split(i, n, size, *args):
    """Kernel i over range(n), split over the cores when it is worth a hand-off."""
    kernels.split(_KERNEL[i], n, kernels.THREADS if size >= SPLIT_ABOVE else 1, *args)


SPLIT_ABOVE = 1 << 16     # bytes written (or multiply-adds / 64) below which one thread does it


def _vnni_acc(xu, pw):
    """The raw sums (offset 128 on x), padded rows and channels included."""
    out = np.empty((xu.shape[0], pw["packed"].shape[1]), np.int32)
    _split(0, xu.shape[0] // _RB, out.size * pw["k4"] // 16, xu, pw["packed"], out)
    return out


def _vnni_gemm(xq, pw):
    p, k = xq.shape
    xu = _padded_u8(p, pw["k4"])
    xu[:p, :k] = (xq.astype(np.int16) + 128).astype(np.uint8)
    return _vnni_acc(xu, pw)[:p, :pw["w"].shape[0]] - pw["offset"]


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
        for b in net.bottom_vecs[i] if i in seen else ():      # a convolution's every bottom
            x = np.abs(b.peek)
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
        out[net.layer_names[i]] = (out_axis(layer.param),
                                   float(activation_scale(vals, percentile)))
    return out
