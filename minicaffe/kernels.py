"""Numba kernels for the hot loops: im2col/col2im, pooling, LRN. Compiled once, cached on disk.

im2col lays the columns out as (C*KH*KW, N, OH*OW) so that a whole batch is one GEMM and the
only transposes are of the (small) outputs, never of the column matrix.

Each kernel is a body over a range of rows or planes (`_name(lo, hi, ...)`), compiled without the
GIL, and `run` splits the range over one Python thread per core. Not Numba's parallel=True: its
OpenMP runtime fought OpenBLAS's threads for the cores, and its compilation took 0.7 s a kernel on
every fresh checkout (measured: the same split over threads runs as fast once the work is large).
Small arrays stay on the calling thread: a hand-off costs 40-110 us (by host), 10x a batch-1
im2col. The one exception is the sparse batch-1 product (sparse.py), where that hand-off was the
product's whole cost.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numba as nb
import numpy as np

jit = nb.njit(cache=True, fastmath=False, nogil=True)
SERIAL_BELOW = 1 << 15     # elements written; measured break-even is 20-50 k
THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_pool = None


def split(body, n, nt, *args):
    """body(lo, hi, *args) over range(n) in nt slices, the first on this thread."""
    global _pool
    nt = min(nt, n)
    if nt <= 1:
        body(0, n, *args)
        return
    if _pool is None or _pool[0] != os.getpid():     # a forked child gets no threads: start anew
        _pool = (os.getpid(), ThreadPoolExecutor(THREADS - 1, thread_name_prefix="minicaffe-kernel"))
    parts = [_pool[1].submit(body, b * n // nt, (b + 1) * n // nt, *args) for b in range(1, nt)]
    body(0, n // nt, *args)
    for p in parts:
        p.result()


def by_size(size):
    """All the cores, unless the calls write fewer than SERIAL_BELOW elements in all."""
    return 1 if size < SERIAL_BELOW else THREADS


def run(body, n, size, *args):
    split(body, n, by_size(size), *args)


# im2col and col2im go through a zero-padded copy of each (image, channel) plane: no bounds test on
# any element, and with stride 1 every output row is one contiguous copy (or add) that LLVM
# vectorizes (measured on cifar10_quick's convolutions: im2col 1.2-2.4x, col2im 1.7-3x faster).
# All kernels index flat arrays with unsigned offsets: Numba then drops its negative-index check on
# every load and makes no view per row (pooling 1.3-1.4x faster; im2col/col2im 1.1-1.7x again).
U = np.uint64


@jit
def _im2col(lo, hi, x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col):
    n_img, c_in, h, w = x.shape
    kk = kh * kw
    wp = w + 2 * pw
    pad = np.zeros((h + 2 * ph) * wp, np.float32)
    xf, cf = x.reshape(-1), col.reshape(-1)
    for nc in range(lo, hi):
        n = nc // c_in
        c = nc % c_in
        xb = U(nc * h * w)
        for i in range(h):
            pb, sb = U((i + ph) * wp + pw), xb + U(i * w)
            for j in range(w):
                pad[pb + U(j)] = xf[sb + U(j)]
        for r in range(kk):
            ki = r // kw
            kj = r % kw
            db = U(((c * kk + r) * n_img + n) * oh * ow)
            for y in range(oh):
                s = U((y * sh + ki * dh) * wp + kj * dw)
                d = db + U(y * ow)
                if sw == 1:
                    for xo in range(ow):
                        cf[d + U(xo)] = pad[s + U(xo)]
                else:
                    for xo in range(ow):
                        cf[d + U(xo)] = pad[s + U(xo * sw)]


@jit
def _col2im(lo, hi, col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, dx):
    n_img, c_in, h, w = dx.shape
    kk = kh * kw
    wp = w + 2 * pw
    pad = np.empty((h + 2 * ph) * wp, np.float32)
    xf, cf = dx.reshape(-1), col.reshape(-1)
    for nc in range(lo, hi):
        n = nc // c_in
        c = nc % c_in
        pad[:] = 0.0
        for r in range(kk):
            ki = r // kw
            kj = r % kw
            sb = U(((c * kk + r) * n_img + n) * oh * ow)
            for y in range(oh):
                d = U((y * sh + ki * dh) * wp + kj * dw)
                s = sb + U(y * ow)
                if sw == 1:
                    for xo in range(ow):
                        pad[d + U(xo)] += cf[s + U(xo)]
                else:
                    for xo in range(ow):
                        pad[d + U(xo * sw)] += cf[s + U(xo)]
        xb = U(nc * h * w)
        for i in range(h):
            pb, db = U((i + ph) * wp + pw), xb + U(i * w)
            for j in range(w):
                xf[db + U(j)] = pad[pb + U(j)]




@jit
def _max_pool_fwd(lo, hi, x, kh, kw, ph, pw, sh, sw, out, argmax):
    """Through a plane padded with -inf far enough for every window: one flat loop over a window's
    offsets, no clipping (1.7-2x faster than clipped loops over rows and columns)."""
    n_img, ch, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    wp = max((ow - 1) * sw + kw, w + pw)
    pad = np.full(max((oh - 1) * sh + kh, h + ph) * wp, -np.inf, np.float32)
    off = np.empty(kh * kw, np.uint64)     # window element -> offset in the padded plane
    rel = np.empty(kh * kw, np.int64)      # window element -> offset in the input plane
    for i in range(kh):
        for j in range(kw):
            off[i * kw + j] = U(i * wp + j)
            rel[i * kw + j] = i * w + j
    xf, of, af = x.reshape(-1), out.reshape(-1), argmax.reshape(-1)
    for nc in range(lo, hi):
        xb, o = U(nc * h * w), U(nc * oh * ow)
        for i in range(h):
            pb, sb = U((i + ph) * wp + pw), xb + U(i * w)
            for j in range(w):
                pad[pb + U(j)] = xf[sb + U(j)]
        for y in range(oh):
            for xo in range(ow):
                base = U(y * sh * wp + xo * sw)
                best = np.float32(-np.inf)
                q = -1
                for r in range(kh * kw):
                    v = pad[base + off[r]]
                    if v > best:      # the first maximum wins, as in Caffe
                        best = v
                        q = r
                of[o] = best
                af[o] = (y * sh - ph) * w + xo * sw - pw + rel[q] if q >= 0 else -1
                o += U(1)


@jit
def _max_pool_bwd(lo, hi, dy, argmax, dx):
    n_img, ch, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    df, af, xf = dy.reshape(-1), argmax.reshape(-1), dx.reshape(-1)
    for nc in range(lo, hi):
        xb, ob = U(nc * h * w), U(nc * oh * ow)
        for k in range(h * w):
            xf[xb + U(k)] = 0.0
        for k in range(oh * ow):
            idx = af[ob + U(k)]
            if idx >= 0:
                xf[xb + U(idx)] += df[ob + U(k)]


@jit
def _ave_pool_fwd(lo, hi, x, kh, kw, ph, pw, sh, sw, out):
    n_img, ch, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    xf, of = x.reshape(-1), out.reshape(-1)
    for nc in range(lo, hi):
        xb, ob = U(nc * h * w), U(nc * oh * ow)
        for y in range(oh):
            hs, he = y * sh - ph, min(y * sh - ph + kh, h + ph)
            for xo in range(ow):
                ws, we = xo * sw - pw, min(xo * sw - pw + kw, w + pw)
                size = (he - hs) * (we - ws)   # Caffe counts the padding in the divisor
                s = np.float32(0.0)
                for i in range(max(hs, 0), min(he, h)):
                    for j in range(max(ws, 0), min(we, w)):
                        s += xf[xb + U(i * w + j)]
                of[ob + U(y * ow + xo)] = s / np.float32(size)


@jit
def _ave_pool_bwd(lo, hi, dy, kh, kw, ph, pw, sh, sw, dx):
    n_img, ch, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    df, xf = dy.reshape(-1), dx.reshape(-1)
    for nc in range(lo, hi):
        xb, ob = U(nc * h * w), U(nc * oh * ow)
        for k in range(h * w):
            xf[xb + U(k)] = 0.0
        for y in range(oh):
            hs, he = y * sh - ph, min(y * sh - ph + kh, h + ph)
            for xo in range(ow):
                ws, we = xo * sw - pw, min(xo * sw - pw + kw, w + pw)
                g = df[ob + U(y * ow + xo)] / np.float32((he - hs) * (we - ws))
                for i in range(max(hs, 0), min(he, h)):
                    for j in range(max(ws, 0), min(we, w)):
                        xf[xb + U(i * w + j)] += g


# Stochastic pooling (Zeiler & Fergus), as Caffe's GPU kernels: windows clipped to the image (no
# padding), sums accumulated in float32 in row-major window order, so the sampled position and
# the test-phase value match Caffe's for the same uniform draws.
FLT_MIN = np.float32(np.finfo(np.float32).tiny)


@jit
def _sto_pool_train(lo, hi, x, kh, kw, sh, sw, u, out, idx):
    """Each window picks its first position whose running sum reaches u * (window sum), u in
    (0, 1]: a sample with probability proportional to the (non-negative) activation; the last
    position if none does (negative inputs). idx is the position in the input plane, as max
    pooling's argmax (so max_pool_bwd routes the gradient), -1 for a window outside the image.
    Through a zero-padded plane with no branch in the window loops (measured 2x faster than
    stopping at the pick, whose random place defeats branch prediction). A padded zero is never
    the first to reach the threshold: the sum before it would have reached it already."""
    n_img, ch, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    wp = max((ow - 1) * sw + kw, w)
    pad = np.zeros(max((oh - 1) * sh + kh, h) * wp, np.float32)
    kk = kh * kw
    off = np.empty(kk, np.uint64)     # window element -> offset in the padded plane
    rel = np.empty(kk, np.int64)      # window element -> offset in the input plane
    for i in range(kh):
        for j in range(kw):
            off[i * kw + j] = U(i * wp + j)
            rel[i * kw + j] = i * w + j
    xf, uf, of, idf = x.reshape(-1), u.reshape(-1), out.reshape(-1), idx.reshape(-1)
    for nc in range(lo, hi):
        xb, o = U(nc * h * w), U(nc * oh * ow)
        for i in range(h):
            pb, sb = U(i * wp), xb + U(i * w)
            for j in range(w):
                pad[pb + U(j)] = xf[sb + U(j)]
        for y in range(oh):
            for xo in range(ow):
                if y * sh >= h or xo * sw >= w:
                    idf[o] = -1
                    of[o] = 0.0
                    o += U(1)
                    continue
                base = U(y * sh * wp + xo * sw)
                total = np.float32(0.0)
                for r in range(kk):
                    total += pad[base + off[r]]
                thres = uf[o] * total
                cum = np.float32(0.0)
                hit = False
                q = 0                 # positions before the first running sum >= thres
                for r in range(kk):
                    cum += pad[base + off[r]]
                    hit |= cum >= thres
                    q += 1 - hit
                if q < kk:
                    p = y * sh * w + xo * sw + rel[q]
                else:
                    p = (min(y * sh + kh, h) - 1) * w + min(xo * sw + kw, w) - 1
                idf[o] = p
                of[o] = xf[xb + U(p)]
                o += U(1)


@jit
def _sto_pool_test(lo, hi, x, kh, kw, sh, sw, out):
    """The activation-weighted average sum(x^2) / sum(x); the sum starts at FLT_MIN, as Caffe's,
    so an all-zero window gives 0."""
    n_img, ch, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    xf, of = x.reshape(-1), out.reshape(-1)
    for nc in range(lo, hi):
        xb, o = U(nc * h * w), U(nc * oh * ow)
        for y in range(oh):
            hs = y * sh
            he = min(hs + kh, h)
            for xo in range(ow):
                ws = xo * sw
                we = min(ws + kw, w)
                s = FLT_MIN
                sq = np.float32(0.0)
                for i in range(hs, he):
                    for j in range(ws, we):
                        v = xf[xb + U(i * w + j)]
                        s += v
                        sq += v * v
                of[o] = sq / s
                o += U(1)


@jit
def _lrn_across_fwd(lo, hi, x, size, alpha, beta, k, scale, y):
    n_img, ch, h, w = x.shape
    pre = (size - 1) // 2
    a = alpha / size
    for n in range(lo, hi):
        for c in range(ch):
            c0, c1 = max(c - pre, 0), min(c - pre + size, ch)
            for i in range(h):
                for j in range(w):
                    s = 0.0
                    for cc in range(c0, c1):
                        v = x[n, cc, i, j]
                        s += v * v
                    sc = k + a * s
                    scale[n, c, i, j] = sc
                    y[n, c, i, j] = x[n, c, i, j] * sc ** (-beta)


@jit
def _lrn_across_bwd(lo, hi, x, y, scale, dy, size, alpha, beta, dx):
    n_img, ch, h, w = x.shape
    pre = (size - 1) // 2
    coef = 2.0 * alpha * beta / size
    for n in range(lo, hi):
        for c in range(ch):
            # channels whose window contains c
            c0, c1 = max(c - (size - 1 - pre), 0), min(c + pre + 1, ch)
            for i in range(h):
                for j in range(w):
                    acc = 0.0
                    for cc in range(c0, c1):
                        acc += dy[n, cc, i, j] * y[n, cc, i, j] / scale[n, cc, i, j]
                    dx[n, c, i, j] = (dy[n, c, i, j] * scale[n, c, i, j] ** (-beta)
                                      - coef * x[n, c, i, j] * acc)


@jit
def _box_sum(a, size, rows, out):
    """out = the sums of a over size x size windows centred on each element, zeros outside:
    a row pass then a column pass, 2*size reads an element instead of size^2."""
    h, w = a.shape
    pre = (size - 1) // 2
    for i in range(h):
        for j in range(w):
            s = 0.0
            for jj in range(max(j - pre, 0), min(j - pre + size, w)):
                s += a[i, jj]
            rows[i, j] = s
    for i in range(h):
        for j in range(w):
            s = 0.0
            for ii in range(max(i - pre, 0), min(i - pre + size, h)):
                s += rows[ii, j]
            out[i, j] = s


@jit
def _lrn_within_fwd(lo, hi, x, size, alpha, beta, scale, y):
    """Caffe's WITHIN_CHANNEL: scale = 1 + alpha * (average of x^2 over the zero-padded window)."""
    n_img, ch, h, w = x.shape
    a = alpha / (size * size)
    sq, rows, box = np.empty((h, w)), np.empty((h, w)), np.empty((h, w))
    for nc in range(lo, hi):
        n, c = nc // ch, nc % ch
        for i in range(h):
            for j in range(w):
                sq[i, j] = x[n, c, i, j] * x[n, c, i, j]
        _box_sum(sq, size, rows, box)
        for i in range(h):
            for j in range(w):
                sc = 1.0 + a * box[i, j]
                scale[n, c, i, j] = sc
                y[n, c, i, j] = x[n, c, i, j] * sc ** (-beta)


@jit
def _lrn_within_bwd(lo, hi, x, scale, dy, size, alpha, beta, dx):
    """The window sum is symmetric, so its adjoint is the same box sum."""
    n_img, ch, h, w = x.shape
    a = alpha / (size * size)
    g, rows, box = np.empty((h, w)), np.empty((h, w)), np.empty((h, w))
    for nc in range(lo, hi):
        n, c = nc // ch, nc % ch
        for i in range(h):
            for j in range(w):
                g[i, j] = dy[n, c, i, j] * x[n, c, i, j] * scale[n, c, i, j] ** (-beta - 1.0)
        _box_sum(g, size, rows, box)
        for i in range(h):
            for j in range(w):
                dx[n, c, i, j] = (dy[n, c, i, j] * scale[n, c, i, j] ** (-beta)
                                  - 2.0 * a * beta * x[n, c, i, j] * box[i, j])


# The entry points: the body, the length of its range, the size of what it writes.
# (threads: how many to split over; None: by size)
def im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, threads=None):
    split(_im2col, x.shape[0] * x.shape[1], threads or by_size(col.size),
          x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col)


def col2im(col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, dx, threads=None):
    split(_col2im, dx.shape[0] * dx.shape[1], threads or by_size(col.size),
          col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, dx)


def max_pool_fwd(x, kh, kw, ph, pw, sh, sw, out, argmax):
    run(_max_pool_fwd, x.shape[0] * x.shape[1], x.size, x, kh, kw, ph, pw, sh, sw, out, argmax)


def max_pool_bwd(dy, argmax, dx):
    run(_max_pool_bwd, dx.shape[0] * dx.shape[1], dx.size, dy, argmax, dx)


def ave_pool_fwd(x, kh, kw, ph, pw, sh, sw, out):
    run(_ave_pool_fwd, x.shape[0] * x.shape[1], x.size, x, kh, kw, ph, pw, sh, sw, out)


def ave_pool_bwd(dy, kh, kw, ph, pw, sh, sw, dx):
    run(_ave_pool_bwd, dx.shape[0] * dx.shape[1], dx.size, dy, kh, kw, ph, pw, sh, sw, dx)


def sto_pool_train(x, kh, kw, sh, sw, u, out, idx):
    run(_sto_pool_train, x.shape[0] * x.shape[1], x.size, x, kh, kw, sh, sw, u, out, idx)


def sto_pool_test(x, kh, kw, sh, sw, out):
    run(_sto_pool_test, x.shape[0] * x.shape[1], x.size, x, kh, kw, sh, sw, out)


def lrn_across_fwd(x, size, alpha, beta, k, scale, y):
    run(_lrn_across_fwd, x.shape[0], x.size, x, size, alpha, beta, k, scale, y)


def lrn_across_bwd(x, y, scale, dy, size, alpha, beta, dx):
    run(_lrn_across_bwd, x.shape[0], x.size, x, y, scale, dy, size, alpha, beta, dx)


def lrn_within_fwd(x, size, alpha, beta, scale, y):
    run(_lrn_within_fwd, x.shape[0] * x.shape[1], x.size, x, size, alpha, beta, scale, y)


def lrn_within_bwd(x, scale, dy, size, alpha, beta, dx):
    run(_lrn_within_bwd, x.shape[0] * x.shape[1], x.size, x, scale, dy, size, alpha, beta, dx)
