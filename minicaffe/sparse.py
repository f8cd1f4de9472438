"""Sparse inference: a CSR weight times a dense matrix, and the measured choice between the two.

In the TEST phase a layer whose weights are mostly zero times both products once per input shape
and keeps the faster (`layer.path` says which; `minicaffe time` prints it)."""
import time

import numba as nb
import numpy as np

MIN_SPARSITY = 0.5     # below this the dense product is not even tried against


@nb.njit(cache=True, parallel=True, nogil=True, fastmath=True)
def csr_matmul(indptr, indices, data, x, out):
    """out (M, P) = W (M, K; CSR) @ x (K, P)."""
    m, p = out.shape
    if p == 1:
        xv = x[:, 0]
        for r in nb.prange(m):
            acc = np.float32(0.0)
            for t in range(indptr[r], indptr[r + 1]):
                acc += data[t] * xv[indices[t]]
            out[r, 0] = acc
        return
    for r in nb.prange(m):
        acc = np.zeros(p, np.float32)
        for t in range(indptr[r], indptr[r + 1]):
            v = data[t]
            base = indices[t]
            for j in range(p):
                acc[j] += v * x[base, j]
        out[r, :] = acc


class CSR:
    def __init__(self, w2):
        self.source = w2.copy()
        mask = w2 != 0
        self.indptr = np.concatenate([[0], np.cumsum(mask.sum(axis=1))]).astype(np.int64)
        rows, cols = np.nonzero(mask)
        self.indices = cols.astype(np.int32)
        self.data = w2[rows, cols].astype(np.float32)

    def matmul(self, x, out):
        csr_matmul(self.indptr, self.indices, self.data, x, out)


class SparseChooser:
    """Per layer: the CSR of its current weights, and which product each input shape runs fastest."""

    def __init__(self):
        self.csr = None
        self.choice = {}

    def csr_of(self, w2):
        if self.csr is None or self.csr.source.shape != w2.shape or not np.array_equal(self.csr.source, w2):
            self.csr = CSR(w2)
        return self.csr

    def run(self, layer, w2, x, out, dense):
        """out = w2 @ x, by whichever product was measured faster for this shape."""
        if (w2 == 0).mean() < MIN_SPARSITY:
            layer.path = "dense"
            return dense()
        csr = self.csr_of(w2)
        key = (w2.shape, x.shape)
        if key not in self.choice:
            def timed(f):
                f()
                best = float("inf")
                for _ in range(3):
                    t = time.perf_counter()
                    f()
                    best = min(best, time.perf_counter() - t)
                return best
            td, ts = timed(dense), timed(lambda: csr.matmul(x, out))
            self.choice[key] = "sparse" if ts < td else "dense"
        layer.path = self.choice[key]
        if layer.path == "sparse":
            csr.matmul(x, out)
        else:
            dense()
