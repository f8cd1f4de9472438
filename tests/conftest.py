import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture(params=["one thread", "threads"])
def kernel_threads(request, monkeypatch):
    """Run a test with the Numba kernels and convolutions on the calling thread (as small arrays
    are) and split over the threads (as large ones are)."""
    from minicaffe import gemm, kernels
    if request.param == "threads":
        monkeypatch.setattr(kernels, "SERIAL_BELOW", 0)
        monkeypatch.setattr(gemm, "SPLIT_ABOVE", 0)     # convolutions split their images too
