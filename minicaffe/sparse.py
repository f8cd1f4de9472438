"""Sparse inference: a CSR weight times a dense matrix, and the measured choice between products.

In the TEST phase a layer whose weights are mostly zero times the dense GEMM, the CSR product on
all cores and the CSR product on this thread alone (no hand-off: it wins on small layers at batch
1) once per input shape, and keeps the fastest (`layer.path` says which; `minicaffe time` prints it).
"""
import time

import numba as nb
import numpy as np

from . import kernels

MIN_SPARSITY = 0.5     # below this the dense product is not even tried against
TILE = 512             # output columns per pass: the accumulator row stays in L1
ONE, FOUR = np.uint64(1), np.uint64(4)


@nb.njit(cache=True, nogil=True, fastmath=True)
def _rows(r0, r1, indptr, indices, data, x, out):
    """out[r0:r1] = W[r0:r1] @ x, W (M, K) in CSR, x (K, P). Four non-zeros per pass: four
    independent sums for a vector, one load/store of the accumulator per four rows of x for a
    matrix. Positions are unsigned (indptr is uint64): no negative-index check on any access."""
    p = out.shape[1]
    if p == 1:
        xv = x.reshape(x.shape[0])       # contiguous, where x[:, 0] would be strided
        for r in range(r0, r1):
            a0 = a1 = a2 = a3 = np.float32(0.0)
            t, e = indptr[r], indptr[r + 1]
            while t + 4 <= e:
                a0 += data[t] * xv[indices[t]]
                a1 += data[t + 1] * xv[indices[t + 1]]
                a2 += data[t + 2] * xv[indices[t + 2]]
                a3 += data[t + 3] * xv[indices[t + 3]]
                t += FOUR
            while t < e:
                a0 += data[t] * xv[indices[t]]
                t += ONE
            out[r, 0] = (a0 + a1) + (a2 + a3)
        return
    acc = np.empty(min(p, TILE), np.float32)
    for j0 in range(0, p, TILE):           # tile-major: the tile of x is reused by every row
        j1 = min(j0 + TILE, p)
        n = j1 - j0
        for r in range(r0, r1):
            acc[:n] = 0.0
            t, e = indptr[r], indptr[r + 1]
            while t + 4 <= e:
                v0, v1, v2, v3 = data[t], data[t + 1], data[t + 2], data[t + 3]
                x0, x1 = x[indices[t], j0:j1], x[indices[t + 1], j0:j1]
                x2, x3 = x[indices[t + 2], j0:j1], x[indices[t + 3], j0:j1]
                for j in range(n):
                    acc[j] += (v0 * x0[j] + v1 * x1[j]) + (v2 * x2[j] + v3 * x3[j])
                t += FOUR
            while t < e:
                v0, x0 = data[t], x[indices[t], j0:j1]
                for j in range(n):
                    acc[j] += v0 * x0[j]
                t += ONE
            out[r, j0:j1] = acc[:n]


class CSR:
    def __init__(self, w2):
        self.source = w2.copy()
        mask = w2 != 0
        self.indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.uint64)
        rows, cols = np.nonzero(mask)
        # unsigned and as narrow as the columns allow: no negative-index check, fewer bytes
        self.indices = cols.astype(np.uint16 if w2.shape[1] <= 1 << 16 else np.uint32)
        self.data = w2[rows, cols].astype(np.float32)

    def matmul(self, x, out, threads=True):
        # no size rule here: the layer measures both and keeps the faster
        kernels.split(_rows, out.shape[0], kernels.THREADS if threads else 1,
                      self.indptr, self.indices, self.data, x, out)


class SparseChooser:
    """Per layer: the CSR of its current weights, and which product each input shape runs fastest.

    The weights are compared with the CSR's copy only when their blob says they may have changed
    (Blob.version); while a CSR depends on them they are frozen, so no earlier reference can
    change them unseen."""

    def __init__(self):
        self.seen = None      # (blob, version) that the CSR (or its absence) was made for
        self.csr = None       # None while the weights are not sparse enough to try
        self.choice = {}

    def csr_of(self, blob, rows):
        if self.seen == (blob, blob.version) and (self.csr is None or blob.frozen):
            return self.csr   # unchanged; or dense, where a stale answer is still a right one
        w2 = blob.peek.reshape(rows, -1)
        if self.csr is None or self.csr.source.shape != w2.shape or not np.array_equal(self.csr.source, w2):
            self.csr = CSR(w2) if (w2 == 0).mean() >= MIN_SPARSITY else None
            self.choice = {}
        if self.csr is not None:
            blob.freeze()
        self.seen = (blob, blob.version)
        return self.csr

    def run(self, layer, csr, x, out, dense):
        """out = W @ x, by whichever product was measured fastest for this shape."""
        products = {"dense": dense, "sparse": lambda: csr.matmul(x, out),
                    "sparse-1t": lambda: csr.matmul(x, out, threads=False)}
        key = x.shape
        if key not in self.choice:
            def timed(f):
                f()
                best = float("inf")
                for _ in range(3):
                    t = time.perf_counter()
                    f()
                    best = min(best, time.perf_counter() - t)
                return best
            self.choice[key] = min(products, key=lambda k: timed(products[k]))
        layer.path = self.choice[key]
        products[layer.path]()
