"""Sparse inference: a sparse weight times a dense matrix, and the measured choice between products.

In the TEST phase a layer whose weights are mostly zero times the dense GEMM, the sparse product on
all cores and the sparse product on this thread alone (no hand-off: it wins on small layers at
batch 1) per input shape, in its own forward passes, and keeps the fastest (`layer.path` says
which; `minicaffe time` prints it): see Shape for how the choice stands up to a host that other
processes share, and SparseChooser.csr_of for why a layer that chose dense takes its own path.

The weight is stored as sliced CSR (SELL-8): rows sorted by length, in slices of eight, each slice
padded to its longest row and stored column by column, so that the eight rows of a slice advance
together. The inner loops are LLVM vector code (Numba intrinsics): Numba's own loops load one
value, one column and one x a non-zero, and reload the sums (1024x4096 at 90% on this 2-core
host: batch 1 0.29 -> 0.07 ms, batch 64 2.1 -> 0.9-1.4 ms; dense takes 0.24 and 3.5-4.4).
"""
import contextlib
import os
import time
from statistics import median

import numba as nb
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.core.errors import TypingError
from numba.extending import intrinsic

from . import kernels

MIN_SPARSITY = 0.5     # below this the dense product is not even tried against
ENABLED = True         # False: every layer runs dense (see dense_only)
TRIAL = 5              # timed calls of each product before a shape's product is chosen
MARGIN = 0.1           # a sparse product is chosen only if it takes at most 90% of dense's time
RECHECK = 32           # calls between two timings of dense against the chosen sparse product
CHECKS = 5             # pairs of those timings that confirm or overturn a choice
PROBE = 256            # forwards of a layer settled on dense between two looks at its input shape
TRIAL_CALLS = 3 * (TRIAL + 1)   # calls of a shape before its product is chosen: warm up this many
BLOCK = 64             # output columns a row's product keeps in registers (eight vectors)
LANES = 8              # rows per slice
U = np.uint64          # unsigned positions: no negative-index check on any access


def _vector_types(builder):
    """i32, i64, <8 x float> and the vector multiply-add, for the intrinsics below."""
    vec = ir.VectorType(ir.FloatType(), LANES)
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3),
                                         "llvm.fmuladd.v8f32")
    return ir.IntType(32), ir.IntType(64), vec, fma


@intrinsic
def _slice_sums(typingctx, t0, t1, indices, data, xv):
    """The eight sums of a slice, over its entries t0 to t1: data[t:t+8] * xv[indices[t:t+8]].

    A step is one vector load of eight values, two 64-bit loads of four 16-bit columns each (or
    four of two 32-bit ones), eight loads of x put together lane by lane and one multiply-add,
    where Numba's loop made three loads a non-zero on three load ports (one core: 0.17 -> 0.11 ms).
    Two sums in turn hide the multiply-add's latency. Plain LLVM vectors: any target lowers them."""
    tuple8 = types.UniTuple(types.float32, LANES)
    bits = indices.dtype.bitwidth              # 16, or 32 for more than 2^16 columns
    per_word = 64 // bits

    def codegen(context, builder, sig, args):
        t0, t1 = args[0], args[1]
        ind, dat, x = (context.make_array(ty)(context, builder, a).data
                       for ty, a in zip(sig.args[2:], args[2:]))
        i32, i64, vec, fma = _vector_types(builder)
        sums = [cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * LANES))
                for _ in range(2)]

        def step(t, acc):
            values = builder.load(builder.bitcast(builder.gep(dat, [t]), vec.as_pointer()), align=4)
            words = builder.bitcast(builder.gep(ind, [t]), i64.as_pointer())
            xs = ir.Constant(vec, None)
            for w in range(LANES // per_word):
                word = builder.load(builder.gep(words, [ir.Constant(i64, w)]), align=bits // 8)
                for j in range(per_word):
                    col = builder.and_(builder.lshr(word, ir.Constant(i64, bits * j)),
                                       ir.Constant(i64, (1 << bits) - 1))
                    xs = builder.insert_element(xs, builder.load(builder.gep(x, [col]), align=4),
                                                ir.Constant(i32, per_word * w + j))
            builder.store(builder.call(fma, [values, xs, builder.load(acc)]), acc)

        pair = ir.Constant(i64, 2 * LANES)
        pairs = builder.udiv(builder.sub(t1, t0), pair)
        with cgutils.for_range(builder, pairs) as loop:
            t = builder.add(t0, builder.mul(loop.index, pair))
            step(t, sums[0])
            step(builder.add(t, ir.Constant(i64, LANES)), sums[1])
        t = builder.add(t0, builder.mul(pairs, pair))
        with builder.if_then(builder.icmp_unsigned("<", t, t1)):
            step(t, sums[0])
        total = builder.fadd(builder.load(sums[0]), builder.load(sums[1]))
        return context.make_tuple(builder, tuple8, [
            builder.extract_element(total, ir.Constant(i32, i)) for i in range(LANES)])
    return tuple8(types.uint64, types.uint64, indices, data, xv), codegen


@nb.njit(cache=True, nogil=True)
def _vector_slices(s0, s1, sptr, rows, indices, data, xv, out):
    """out = W x for a vector x, slices s0 to s1."""
    m = U(out.shape[0])
    for s in range(s0, s1):
        sums = _slice_sums(sptr[s], sptr[s + 1], indices, data, xv)
        o = U(s) * U(LANES)
        for i in range(LANES):
            if o + U(i) < m:                   # the last slice may be padded with empty rows
                out[rows[o + U(i)]] = sums[i]


@nb.njit(cache=True, nogil=True, fastmath=True, parallel=True)
def _vector_parallel(nt, sptr, rows, indices, data, xv, out):
    """The vector product over all cores through Numba's OpenMP pool: its workers wait by spinning
    for a while, so a hand-off costs a few microseconds where a Python thread's costs 65-110 (a
    batch-1 product takes ~100)."""
    n = sptr.shape[0] - 1
    for b in nb.prange(nt):
        _vector_slices(b * n // nt, (b + 1) * n // nt, sptr, rows, indices, data, xv, out)


@intrinsic
def _row_block(typingctx, t, e, indices, data, x, j0, out, r):
    """out[r, j0:j0+64] = the sum over a row's entries t, t+8, ... before e of
    data[t] * x[indices[t], j0:j0+64], x and out C-contiguous.

    The 64 sums stay in eight vector registers for the whole row, so an entry costs eight vector
    loads of x and eight multiply-adds and nothing else (Numba's loop loaded and stored the sums
    for every few entries: 1024x4096 at 90% times 64 columns, 2.1 -> 1.4 ms)."""
    u64 = types.uint64

    def codegen(context, builder, sig, args):
        t, e, _, _, _, j0, _, r = args
        ind, dat, xa, oa = (context.make_array(sig.args[k])(context, builder, args[k])
                            for k in (2, 3, 4, 6))
        i32, i64, vec, fma = _vector_types(builder)
        x_cols = cgutils.unpack_tuple(builder, xa.shape)[1]
        out_cols = cgutils.unpack_tuple(builder, oa.shape)[1]
        sums = [cgutils.alloca_once_value(builder, ir.Constant(vec, [0.0] * LANES))
                for _ in range(BLOCK // LANES)]
        step = ir.Constant(i64, LANES)

        def vector_at(p, k, load=True):
            p = builder.bitcast(builder.gep(p, [ir.Constant(i64, k * LANES)]), vec.as_pointer())
            return builder.load(p, align=4) if load else p

        with cgutils.for_range(builder, builder.udiv(builder.sub(e, t), step)) as loop:
            at = builder.add(t, builder.mul(loop.index, step))
            col = builder.zext(builder.load(builder.gep(ind.data, [at])), i64)
            value = builder.load(builder.gep(dat.data, [at]))      # in every lane
            value = builder.insert_element(ir.Constant(vec, None), value, ir.Constant(i32, 0))
            value = builder.shuffle_vector(value, ir.Constant(vec, None),
                                           ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))
            row = builder.gep(xa.data, [builder.add(builder.mul(col, x_cols), j0)])
            for k, acc in enumerate(sums):
                builder.store(builder.call(fma, [value, vector_at(row, k), builder.load(acc)]), acc)
        dest = builder.gep(oa.data, [builder.add(builder.mul(r, out_cols), j0)])
        for k, acc in enumerate(sums):
            builder.store(builder.load(acc), vector_at(dest, k, load=False), align=4)
        return context.get_dummy_value()

    for a in (x, out):
        if not (isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"):
            raise TypingError("_row_block takes C-contiguous 2-D arrays")
    return types.void(u64, u64, indices, data, x, u64, out, u64), codegen


@nb.njit(cache=True, nogil=True)
def _slot(q, sptr, rows, lengths):
    """The row in slot q, and where its entries start and end (every eighth from the start)."""
    r = rows[q]
    t = sptr[q // LANES] + U(q % LANES)
    return r, t, t + U(lengths[r]) * U(LANES)


@nb.njit(cache=True, nogil=True, fastmath=True)
def _matrix_rows(q0, q1, sptr, rows, lengths, indices, data, x, out):
    """out = W @ x for x (K, P), the rows in slots q0 to q1: 64 columns at a time for every row
    (x's 64 columns, K x 256 bytes, stay in the core's cache), then the last P % 64 columns."""
    p = out.shape[1]
    full = p - p % BLOCK
    for j0 in range(0, full, BLOCK):
        for q in range(q0, q1):
            r, t, e = _slot(q, sptr, rows, lengths)
            _row_block(t, e, indices, data, x, U(j0), out, U(r))
    n = p - full
    if n == 0:
        return
    acc = np.empty(n, np.float32)
    for q in range(q0, q1):
        r, t, e = _slot(q, sptr, rows, lengths)
        acc[:] = 0.0
        while t < e:
            v, xr = data[t], x[indices[t], full:]
            for j in range(n):
                acc[j] += v * xr[j]
            t += U(LANES)
        out[r, full:] = acc


_openmp_pid = []


def _openmp_owner():
    """The process that may use the OpenMP pool: GNU OpenMP aborts a forked child that enters a
    parallel region once its parent has, so a child takes the one-thread product instead."""
    if not _openmp_pid:
        _openmp_pid.append(os.getpid())
    return _openmp_pid[0]


class SlicedCSR:
    def __init__(self, w2):
        self.source = w2.copy()
        m, k = w2.shape
        mask = w2 != 0
        lengths = mask.sum(axis=1)
        # rows longest first, so that a slice's rows are alike in length and little is padded
        # (1024x4096 at 90%, random: 13% padding in row order, under 1% sorted)
        order = np.argsort(-lengths, kind="stable")
        slot = np.empty(m, np.int64)
        slot[order] = np.arange(m)
        longest = np.zeros(-(-m // LANES) * LANES, np.int64)
        longest[:m] = lengths[order]
        sptr = np.concatenate([[0], np.cumsum(longest.reshape(-1, LANES).max(axis=1) * LANES)])
        rows, cols = np.nonzero(mask)              # row by row, columns in order
        first = np.concatenate([[0], np.cumsum(lengths)])[:-1]
        nth = np.arange(rows.size) - first[rows]   # the entry's place in its row
        q = slot[rows]
        at = sptr[q // LANES] + nth * LANES + q % LANES
        self.sptr, self.rows = sptr.astype(U), order.astype(np.uint32)
        self.lengths = lengths.astype(np.uint32)
        # unsigned and as narrow as the columns allow: no negative-index check, fewer bytes
        self.indices = np.zeros(sptr[-1], np.uint16 if k <= 1 << 16 else np.uint32)
        self.data = np.zeros(sptr[-1], np.float32)    # padding: weight 0 at column 0
        self.indices[at] = cols
        self.data[at] = w2[rows, cols]

    def matmul(self, x, out, threads=True):
        # no size rule here: the layer measures both and keeps the faster
        nt = kernels.THREADS if threads else 1
        arrays = (self.sptr, self.rows, self.indices, self.data)
        if x.shape[1] == 1:
            xv, ov = x.reshape(-1), out.reshape(-1)     # contiguous, where x[:, 0] would be strided
            if nt > 1 and _openmp_owner() == os.getpid():
                _vector_parallel(nt, *arrays, xv, ov)
            else:
                _vector_slices(0, self.sptr.shape[0] - 1, *arrays, xv, ov)
        else:
            kernels.split(_matrix_rows, out.shape[0], nt, self.sptr, self.rows, self.lengths,
                          self.indices, self.data, x, out)


def pick(samples):
    """The product to run, from each product's timed calls: dense, unless the sparse product on
    this thread beats it by MARGIN; the sparse product on all cores only if it beats both by
    MARGIN in turn (a hand-off to another thread costs 40-110 us, and far more when another
    process holds the other core). Medians, not minima: one lucky call decides a minimum, and a
    burst of load from another process shifts a median only when it lasts for half the calls."""
    best = "dense"
    for k in ("sparse-1t", "sparse"):
        if k in samples and median(samples[k]) < (1 - MARGIN) * median(samples[best]):
            best = k
    return best


def _timed(name, f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


class Shape:
    """Which product one input shape runs, measured in the net's own forward passes.

    First a trial: the products take turns, call by call (each one's first call untimed: caches,
    first-call costs), until each has TRIAL timed calls; then `pick`. Timed in place, between the
    net's other layers and spread over TRIAL forwards, not back to back in one call: measured that
    way (3 runs each, the fastest; or 5 alternating rounds, medians) a product that won alone lost
    in the net, the pruned LeNet's batch-64 forward 0.5-0.8x dense in 1 to 5 runs of 10 on this
    2-core host shared with other processes (all 10 at 1.05x or more since). Then, while a sparse
    product is chosen, every RECHECK-th call runs dense in its place (the same output), timed with
    the call of the chosen one just before; when over CHECKS such pairs the chosen one's median
    is no better than dense's, the trial starts again."""

    def __init__(self, names):
        self.names = list(names)
        self.start_trial()

    def start_trial(self):
        self.choice = None
        self.samples = {k: [] for k in self.names}
        self.calls = 0
        self.last = None      # the chosen product's time in the call before dense's turn
        self.pairs = []       # (chosen s, dense s)

    def plan(self):
        """The product for the next call, and whether to time it."""
        self.calls += 1
        if self.choice is None:
            return self.names[(self.calls - 1) % len(self.names)], self.calls > len(self.names)
        phase = self.calls % RECHECK
        if self.choice != "dense" and phase == RECHECK - 1:
            return self.choice, True
        if self.choice != "dense" and phase == 0 and self.last is not None:
            return "dense", True
        return self.choice, False

    def record(self, name, seconds):
        if self.choice is None:
            self.samples[name].append(seconds)
            if all(len(v) >= TRIAL for v in self.samples.values()):
                self.choice, self.calls = pick(self.samples), 0
        elif name != "dense":
            self.last = seconds
        else:
            self.pairs.append((self.last, seconds))
            self.last = None
            if len(self.pairs) == CHECKS:
                if median([s for s, _ in self.pairs]) >= median([d for _, d in self.pairs]):
                    self.start_trial()
                self.pairs = []


class SparseChooser:
    """Per layer: the CSR of its current weights, and which product each input shape runs (Shape).

    The CSR is trusted without a look at the weights only while their blob says they have not
    changed (Blob.version) and nobody else holds the array; otherwise (a pycaffe script keeps
    `W = net.params[name][0].data` and writes to it between forwards) the weights are compared
    with the CSR's copy, and a changed weight rebuilds it. Call it before taking references of
    your own to the weights, which would count as somebody else's."""

    def __init__(self):
        self.seen = None      # (blob, version) that the CSR (or its absence) was made for
        self.csr = None       # None while the weights are not sparse enough to try
        self.shapes = {}      # input shape -> its Shape
        self.native = 0       # forwards sent to the layer's own dense path
        self.forced = None    # a product name every shape runs (tests, benchmarks)
        self.time_call = _timed   # (name, f) -> seconds f() took; tests give scripted timings

    def csr_of(self, blob, rows):
        """The CSR to run the layer's products with, or None: the layer's own dense path, which
        is also where a layer whose every measured shape chose dense goes (its dense product
        between the CSR path's steps is slower: two thread hand-offs instead of one in a
        convolution, transposes in an InnerProduct), all but one forward in PROBE, which goes
        the CSR path so that run() sees the input shape: a new one is tried."""
        if not ENABLED:
            return None
        csr = self._current(blob, rows)
        settled = self.shapes and all(s.choice == "dense" for s in self.shapes.values())
        if csr is not None and settled:
            self.native += 1
            return None if self.native % PROBE else csr
        return csr

    def _current(self, blob, rows):
        if self.seen == (blob, blob.version) and (self.csr is None or not blob.held_elsewhere()):
            return self.csr   # unchanged; or dense, where a stale answer is still a right one
        w2 = blob.peek.reshape(rows, -1)
        if self.csr is None or self.csr.source.shape != w2.shape or not np.array_equal(self.csr.source, w2):
            self.csr = SlicedCSR(w2) if (w2 == 0).mean() >= MIN_SPARSITY else None
            self.shapes = {}
        self.seen = (blob, blob.version)
        return self.csr

    def run(self, layer, csr, x, out, dense):
        """out = W @ x, by the product this shape's Shape says; `layer.path` is its choice
        ("trial" while the products take turns)."""
        products = {"dense": dense, "sparse-1t": lambda: csr.matmul(x, out, threads=False),
                    "sparse": lambda: csr.matmul(x, out)}
        if self.forced:
            layer.path = self.forced
            products[self.forced]()
            return
        shape = self.shapes.get(x.shape)
        if shape is None:
            shape = self.shapes[x.shape] = Shape(products)
        name, timed = shape.plan()
        if timed:
            shape.record(name, self.time_call(name, products[name]))
        else:
            products[name]()
        layer.path = shape.choice or "trial"


@contextlib.contextmanager
def dense_only():
    """Every layer runs the dense product inside (sensitivity analysis, whose weights change at
    every point; a benchmark's dense reference); the CSRs and choices are kept for after."""
    global ENABLED
    was, ENABLED = ENABLED, False
    try:
        yield
    finally:
        ENABLED = was
