"""The convolutions' GEMM (minicaffe/gemm.py) against float64 products: every panel width, row
tiles of every height, tails, transposed and strided views, accumulation, one thread and two."""
import numpy as np
import pytest

from minicaffe import gemm, kernels

SHAPES = [(32, 800, 2560), (5, 7, 17), (13, 3, 100), (50, 500, 64), (1, 1, 16), (20, 25, 576),
          (800, 64, 32), (75, 300, 48), (64, 32, 112), (7, 9, 15), (30, 40, 2)]


def check(out, ref, a, b):
    scale = (np.abs(a).astype(np.float64) @ np.abs(b)).max()
    assert np.abs(out - ref).max() <= 1e-6 * scale


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matmul_matches_float64(monkeypatch, m, k, n, threads):
    monkeypatch.setattr(kernels, "THREADS", threads)
    monkeypatch.setattr(gemm, "SPLIT_ABOVE", 0 if threads > 1 else 1 << 62)
    rs = np.random.RandomState(m * 1000 + k + n)
    a = rs.randn(m, k).astype(np.float32)
    b = rs.randn(k, n).astype(np.float32)
    ref = a.astype(np.float64) @ b
    out = np.full((m, n), np.nan, np.float32)
    gemm.matmul(a, b, out)
    check(out, ref, a, b)
    at = np.ascontiguousarray(a.T).T                  # the same values, column-major
    out2 = np.ones((m, n), np.float32)
    gemm.matmul(at, b, out2, accumulate=True)
    check(out2 - 1, ref, a, b)


def test_matmul_on_views_of_larger_arrays():
    """Row strides wider than the rows (groups slice b's columns and out's rows)."""
    rs = np.random.RandomState(1)
    big_b = rs.randn(40, 200).astype(np.float32)
    big_a = rs.randn(60, 90).astype(np.float32)
    out = np.zeros((70, 150), np.float32)
    a, b = big_a[5:35, 10:50].T, big_b[:30, 7:135]        # (40, 30) transposed view, (30, 128)
    gemm.matmul(a, b, out[3:43, 11:139])
    check(out[3:43, 11:139], a.astype(np.float64) @ b, a, b)
    assert not out[:3].any() and not out[43:].any() and not out[:, :11].any() and not out[:, 139:].any()


def test_numpy_fallback_gives_the_same(monkeypatch):
    rs = np.random.RandomState(2)
    a, b = rs.randn(32, 75).astype(np.float32), rs.randn(75, 640).astype(np.float32)
    ours = np.empty((32, 640), np.float32)
    gemm.matmul(a, b, ours)
    monkeypatch.setattr(gemm, "AVAILABLE", False)
    theirs = np.zeros((32, 640), np.float32)
    gemm.matmul(a, b, theirs, accumulate=True)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def test_other_dtypes_go_to_numpy():
    a, b = np.ones((4, 8)), np.ones((8, 32))          # float64: the vector code reads float32 only
    out = np.zeros((4, 32))
    gemm.matmul(a, b, out)
    assert (out == 8).all()
