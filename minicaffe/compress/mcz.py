"""The .mcz compressed model: pruned layers as Huffman-coded relative gaps, weight-shared layers
as a codebook plus Huffman-coded indices, every other blob exact (or float16 when asked).

Layout (little-endian; documented in README.md):
  b"MCZ\\0", u16 version, u16 flags (bit 0: float16 dense blobs), u32 layer count,
  layers..., u32 CRC-32 of everything before it.
  layer: str name, str type, u8 blob count, blobs...      (str = u16 length + UTF-8)
  blob:  u8 ndim, u32 dims..., u8 encoding, body
    0 float32: raw values            1 float16: raw values
    2 sparse:  u8 gap bits b, u32 entries, u32 kept, Huffman(gaps), float32 values of kept weights
    3 shared:  as 2, plus u16 K, float32 codebook[K], Huffman(indices) instead of the values
    4 int8:    u8 axis, f32 input scale, f32 scales[dims[axis]], i8 values[count]
    5 int8 sparse: u8 axis, f32 input scale, f32 scales[dims[axis]], u8 gap bits, u32 entries,
               u32 kept, Huffman(gaps), i8 values of kept weights
    (4, 5: value = i8 * scale of its channel along `axis`; the input scale is the layer's
    calibrated activation scale, 0 when there is none: see compress/quantize.py)
  Huffman(s) = u8 code lengths[alphabet], u32 byte count, bits.
  A gap symbol g < 2^b - 1 means "skip g zeros, then a kept weight"; 2^b - 1 means "skip 2^b - 1
  zeros, no weight" (a filler entry, when a gap overflows).
Nothing in the file is executed; every count is checked against the bytes that remain before
anything is allocated.
"""
import math
import struct
import zlib

import numpy as np

from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError

from . import huffman

MAGIC = b"MCZ\0"
VERSION = 1
RAW32, RAW16, SPARSE, SHARED, INT8, INT8_SPARSE = 0, 1, 2, 3, 4, 5


# ---------------------------------------------------------------- writing
def _str(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def _huff(symbols, alphabet):
    lengths = huffman.code_lengths(np.bincount(symbols, minlength=alphabet))
    data = huffman.encode(symbols, lengths)
    return lengths.tobytes() + struct.pack("<I", len(data)) + data


def gap_symbols(flat, bits):
    """Gap symbols of the non-zero positions of `flat`, with fillers where a gap overflows, and
    fillers for the trailing zeros too, so that the entries account for the whole blob."""
    nz = np.flatnonzero(flat)
    esc = (1 << bits) - 1
    gaps = np.diff(np.concatenate([[-1], nz])) - 1
    fillers = gaps // esc
    reps = fillers + 1
    out = np.full(int(reps.sum()), esc, np.int64)
    out[np.cumsum(reps) - 1] = gaps - fillers * esc
    trailing = (flat.size - (nz[-1] + 1 if len(nz) else 0)) // esc
    return np.concatenate([out, np.full(trailing, esc, np.int64)]), nz


def gap_stream(flat):
    """The shortest gap stream of `flat`'s non-zeros over gap widths 2..8 bits: (its bytes, the
    positions of the kept values)."""
    best = None
    for bits in range(2, 9):
        syms, nz = gap_symbols(flat, bits)
        body = struct.pack("<BII", bits, len(syms), len(nz)) + _huff(syms, 1 << bits)
        if best is None or len(body) < len(best[0]):
            best = (body, nz)
    return best


def encode_blob(a, float16=False):
    """The smallest of: dense, or sparse/shared with the best gap width. Pruned and shared blobs
    are always lossless; float16 applies only to blobs stored dense."""
    a = np.asarray(a, np.float32)
    head = struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape)
    flat = a.ravel()
    best = (head + (struct.pack("<B", RAW16) + flat.astype(np.float16).tobytes() if float16
                    else struct.pack("<B", RAW32) + flat.tobytes()), "dense")
    nnz = int(np.count_nonzero(flat))
    if flat.size < 16 or np.signbit(flat[flat == 0]).any():
        return best                      # tiny, or holds -0.0, which only dense keeps exact
    distinct = np.unique(flat[flat != 0])
    shared = 0 < len(distinct) <= 256
    if not shared and nnz > 0.5 * flat.size:
        return best
    tail = (struct.pack("<H", len(distinct)) + distinct.tobytes() +
            _huff(np.searchsorted(distinct, flat[flat != 0]), len(distinct))) if shared else None
    body, nz = gap_stream(flat)
    enc = head + (struct.pack("<B", SHARED) + body + tail if shared
                  else struct.pack("<B", SPARSE) + body + flat[nz].tobytes())
    return (enc, "shared" if shared else "sparse") if len(enc) < len(best[0]) else best


def encode_int8(a, axis, input_scale):
    """An int8 blob: per-channel scales along `axis`, dense or as a gap stream, the smaller
    (pruned zeros stay exact zeros)."""
    from .quantize import quantize_weights
    a = np.asarray(a, np.float32)
    q, scales = quantize_weights(a, axis)
    head = (struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}I", *a.shape))
    meta = struct.pack("<Bf", axis, input_scale) + scales.tobytes()
    best = (head + struct.pack("<B", INT8) + meta + q.tobytes(), "int8")
    flat = q.ravel()
    if np.count_nonzero(flat) <= 0.5 * flat.size:
        body, nz = gap_stream(flat)
        enc = head + struct.pack("<B", INT8_SPARSE) + meta + body + flat[nz].tobytes()
        if len(enc) < len(best[0]):
            best = (enc, "int8-sp")
    return best


def encode(net_param, float16=False, int8=None):
    """(file bytes, per-layer rows of (name, type, dense bytes, compressed bytes, weights, kind)).
    int8: {layer name: (weight axis, input scale)}: that layer's first blob is stored as int8."""
    int8 = int8 or {}
    layers = [lp for lp in net_param.layer if len(lp.blobs)]
    out = [MAGIC, struct.pack("<HHI", VERSION, 1 if float16 else 0, len(layers))]
    rows = []
    for lp in layers:
        part = [_str(lp.name), _str(lp.type), struct.pack("<B", len(lp.blobs))]
        dense = n = 0
        kinds = []
        for i, bp in enumerate(lp.blobs):
            a = io.blob_to_array(bp)
            enc, kind = (encode_int8(a, *int8[lp.name]) if i == 0 and lp.name in int8
                         else encode_blob(a, float16))
            part.append(enc)
            kinds.append(kind)
            dense += 4 * a.size
            n += a.size
        blob = b"".join(part)
        out.append(blob)
        rows.append((lp.name, lp.type, dense, len(blob), n, kinds[0]))
    data = b"".join(out)
    return data + struct.pack("<I", zlib.crc32(data)), rows


def write(path, net_param, float16=False, int8=None):
    data, rows = encode(net_param, float16, int8)
    io.atomic_write(path, data)
    return len(data), rows


# ---------------------------------------------------------------- reading
class _Reader:
    def __init__(self, data, path):
        self.data, self.pos, self.path = data, 0, path
        self.int8s = []

    def fail(self, what):
        raise CaffeError(f"{self.path}: {what} (at byte {self.pos})")

    def take(self, n):
        if n < 0 or self.pos + n > len(self.data):
            self.fail("truncated or corrupted: a field runs past the end of the file")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def string(self):
        (n,) = self.unpack("H")
        try:
            return self.take(n).decode()
        except UnicodeDecodeError:
            self.fail("a layer name is not valid UTF-8")

    def left(self):
        return len(self.data) - self.pos

    def huff(self, alphabet, n):
        lengths = np.frombuffer(self.take(alphabet), np.uint8)
        (nbytes,) = self.unpack("I")
        if lengths.max(initial=0) > huffman.MAX_LEN:
            self.fail("invalid Huffman code lengths")
        if n > 8 * nbytes:           # every symbol takes at least one bit
            self.fail(f"claims {n} symbols in {nbytes} bytes")
        out = huffman.decode(self.take(nbytes), n, lengths)
        if out is None:
            self.fail("invalid Huffman stream")
        if n and out.max() >= alphabet:
            self.fail("Huffman symbol out of range")
        return out

    def blob(self):
        (ndim,) = self.unpack("B")
        if ndim > 8:
            self.fail(f"a blob with {ndim} axes")
        shape = self.unpack(f"{ndim}I")
        problem = io.shape_problem(shape)
        if problem:
            self.fail(f"blob {problem}")
        count = math.prod(shape)
        (kind,) = self.unpack("B")
        if kind == RAW32:
            return np.frombuffer(self.take(4 * count), np.float32).reshape(shape).copy()
        if kind == RAW16:
            return np.frombuffer(self.take(2 * count), np.float16).astype(np.float32).reshape(shape)
        if kind in (INT8, INT8_SPARSE):
            return self.int8(shape, count, kind)
        if kind not in (SPARSE, SHARED):
            self.fail(f"unknown blob encoding {kind}")
        where, kept = self.gaps(count)
        if kind == SPARSE:
            values = np.frombuffer(self.take(4 * kept), np.float32)
        else:
            (k,) = self.unpack("H")
            codebook = np.frombuffer(self.take(4 * k), np.float32)
            values = codebook[self.huff(k, kept)] if k else self.fail("empty codebook")
        out = np.zeros(count, np.float32)
        out[where] = values
        return out.reshape(shape)

    def gaps(self, count):
        """The positions of the kept weights, from a gap stream."""
        bits, entries, kept = self.unpack("BII")
        if not 1 <= bits <= 8:
            self.fail(f"gap width {bits} bits")
        # every entry advances at most 2^bits positions and costs at least one bit; fewer than
        # 2^bits - 1 zeros are left implicit at the end
        if entries > 8 * self.left() or kept > entries or count > (entries + 1) << bits:
            self.fail(f"claims {count} weights ({kept} kept), more than the file can hold")
        syms = self.huff(1 << bits, entries).astype(np.int64)
        esc = (1 << bits) - 1
        step = syms + (syms != esc)
        pos = np.cumsum(step) - 1
        where = pos[syms != esc]
        end = int(step.sum())
        if len(where) != kept or end > count or count - end >= esc:
            self.fail("gap stream does not match the blob's size")
        return where, kept

    def int8(self, shape, count, kind):
        """Dequantized float32 values; the int8 record is kept in self.int8s for the layer."""
        from .quantize import Int8
        axis, input_scale = self.unpack("Bf")
        if axis >= len(shape):
            self.fail(f"int8 channel axis {axis} of a {len(shape)}-axis blob")
        scales = np.frombuffer(self.take(4 * shape[axis]), np.float32)
        top = np.finfo(np.float32).max / 127     # 127 steps of a scale stay finite
        if not ((scales >= 0).all() and (scales <= top).all() and 0 <= input_scale <= top):
            self.fail("int8 scales must be finite and not negative")
        if kind == INT8:
            q = np.frombuffer(self.take(count), np.int8).reshape(shape).copy()
        else:
            where, kept = self.gaps(count)
            q = np.zeros(count, np.int8)
            q[where] = np.frombuffer(self.take(kept), np.int8)
            q = q.reshape(shape)
        rec = Int8(q, scales.copy(), axis, input_scale)
        self.int8s.append(rec)
        return rec.dequantized


def decode(data, path="<mcz>"):
    if len(data) < 16 or data[:4] != MAGIC:
        raise CaffeError(f"{path}: not a minicaffe compressed model (wrong magic)")
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(data[:-4]) != crc:
        raise CaffeError(f"{path}: checksum mismatch: the file is truncated or corrupted")
    r = _Reader(data[:-4], path)
    r.take(4)
    version, flags, n_layers = r.unpack("HHI")
    if version != VERSION:
        raise CaffeError(f"{path}: format version {version}, this minicaffe reads version {VERSION}")
    if n_layers > r.left():
        r.fail(f"claims {n_layers} layers")
    net = pb.NetParameter()
    loaded = []
    for _ in range(n_layers):
        lp = net.layer.add(name=r.string(), type=r.string())
        (nb,) = r.unpack("B")
        for i in range(nb):
            r.int8s.clear()
            io.array_to_blob(r.blob(), lp.blobs.add())
            if r.int8s and i == 0 and r.int8s[0].input_scale > 0:
                loaded.append((lp.name, r.int8s[0]))
    if r.left():
        r.fail(f"{r.left()} bytes after the last of {n_layers} layers (layer count does not match)")
    from .quantize import remember
    for name, rec in loaded:         # only from a whole, valid file
        remember(name, rec)
    return net


def read(path):
    return decode(io.read_file(path), path)
