"""Numba kernels for the hot loops: im2col/col2im, pooling, LRN. Compiled once, cached on disk.

im2col lays the columns out as (C*KH*KW, N, OH*OW) so that a whole batch is one GEMM and the
only transposes are of the (small) outputs, never of the column matrix.
"""
import numba as nb
import numpy as np

jit = nb.njit(cache=True, parallel=True, fastmath=False, nogil=True)


@jit
def im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col):
    n_img, c_in, h, w = x.shape
    kk = kh * kw
    for row in nb.prange(c_in * kk):
        c = row // kk
        ki = (row % kk) // kw
        kj = row % kw
        for n in range(n_img):
            for y in range(oh):
                iy = y * sh - ph + ki * dh
                base = y * ow
                if iy < 0 or iy >= h:
                    for xo in range(ow):
                        col[row, n, base + xo] = 0.0
                else:
                    for xo in range(ow):
                        ix = xo * sw - pw + kj * dw
                        if ix >= 0 and ix < w:
                            col[row, n, base + xo] = x[n, c, iy, ix]
                        else:
                            col[row, n, base + xo] = 0.0


@jit
def col2im(col, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, dx):
    n_img, c_in, h, w = dx.shape
    kk = kh * kw
    for nc in nb.prange(n_img * c_in):
        n = nc // c_in
        c = nc % c_in
        for i in range(h):
            for j in range(w):
                dx[n, c, i, j] = 0.0
        for r in range(kk):
            ki = r // kw
            kj = r % kw
            row = c * kk + r
            for y in range(oh):
                iy = y * sh - ph + ki * dh
                if iy < 0 or iy >= h:
                    continue
                base = y * ow
                for xo in range(ow):
                    ix = xo * sw - pw + kj * dw
                    if ix >= 0 and ix < w:
                        dx[n, c, iy, ix] += col[row, n, base + xo]


@jit
def max_pool_fwd(x, kh, kw, ph, pw, sh, sw, out, argmax):
    n_img, ch, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for nc in nb.prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for y in range(oh):
            hs = y * sh - ph
            he = min(hs + kh, h)
            hs = max(hs, 0)
            for xo in range(ow):
                ws = xo * sw - pw
                we = min(ws + kw, w)
                ws = max(ws, 0)
                best = -np.inf
                idx = -1
                for i in range(hs, he):
                    for j in range(ws, we):
                        v = x[n, c, i, j]
                        if v > best:
                            best = v
                            idx = i * w + j
                out[n, c, y, xo] = best
                argmax[n, c, y, xo] = idx


@jit
def max_pool_bwd(dy, argmax, dx):
    n_img, ch, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in nb.prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for i in range(h):
            for j in range(w):
                dx[n, c, i, j] = 0.0
        for y in range(oh):
            for xo in range(ow):
                idx = argmax[n, c, y, xo]
                if idx >= 0:
                    dx[n, c, idx // w, idx % w] += dy[n, c, y, xo]


@jit
def ave_pool_fwd(x, kh, kw, ph, pw, sh, sw, out):
    n_img, ch, h, w = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for nc in nb.prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for y in range(oh):
            hs = y * sh - ph
            he = min(hs + kh, h + ph)
            for xo in range(ow):
                ws = xo * sw - pw
                we = min(ws + kw, w + pw)
                size = (he - hs) * (we - ws)   # Caffe counts the padding in the divisor
                s = 0.0
                for i in range(max(hs, 0), min(he, h)):
                    for j in range(max(ws, 0), min(we, w)):
                        s += x[n, c, i, j]
                out[n, c, y, xo] = s / size


@jit
def ave_pool_bwd(dy, kh, kw, ph, pw, sh, sw, dx):
    n_img, ch, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    for nc in nb.prange(n_img * ch):
        n = nc // ch
        c = nc % ch
        for i in range(h):
            for j in range(w):
                dx[n, c, i, j] = 0.0
        for y in range(oh):
            hs = y * sh - ph
            he = min(hs + kh, h + ph)
            for xo in range(ow):
                ws = xo * sw - pw
                we = min(ws + kw, w + pw)
                g = dy[n, c, y, xo] / ((he - hs) * (we - ws))
                for i in range(max(hs, 0), min(he, h)):
                    for j in range(max(ws, 0), min(we, w)):
                        dx[n, c, i, j] += g


@jit
def lrn_across_fwd(x, size, alpha, beta, k, scale, y):
    n_img, ch, h, w = x.shape
    pre = (size - 1) // 2
    a = alpha / size
    for n in nb.prange(n_img):
        for c in range(ch):
            lo = max(c - pre, 0)
            hi = min(c - pre + size, ch)
            for i in range(h):
                for j in range(w):
                    s = 0.0
                    for cc in range(lo, hi):
                        v = x[n, cc, i, j]
                        s += v * v
                    sc = k + a * s
                    scale[n, c, i, j] = sc
                    y[n, c, i, j] = x[n, c, i, j] * sc ** (-beta)


@jit
def lrn_across_bwd(x, y, scale, dy, size, alpha, beta, dx):
    n_img, ch, h, w = x.shape
    pre = (size - 1) // 2
    coef = 2.0 * alpha * beta / size
    for n in nb.prange(n_img):
        for c in range(ch):
            # channels whose window contains c
            lo = max(c - (size - 1 - pre), 0)
            hi = min(c + pre + 1, ch)
            for i in range(h):
                for j in range(w):
                    acc = 0.0
                    for cc in range(lo, hi):
                        acc += dy[n, cc, i, j] * y[n, cc, i, j] / scale[n, cc, i, j]
                    dx[n, c, i, j] = (dy[n, c, i, j] * scale[n, c, i, j] ** (-beta)
                                      - coef * x[n, c, i, j] * acc)
