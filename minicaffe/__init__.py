"""minicaffe: Caffe's nets, solvers and file formats in Python, with pruning built in."""
import os

from .cpu import cpuinfo, openblas_coretype

# OpenBLAS's workers spin 2^28 cycles (~0.1 s) after each GEMM by default, halving the cores of the
# Numba kernel that follows (minicaffe/kernels.py); 2^12 cycles made a cifar10_quick step 109 -> 89
# ms and LeNet 15 -> 13 ms. Read when OpenBLAS loads, so only if numpy was not imported before us.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")
# Likewise Numba's OpenMP workers (the sparse vector product, minicaffe/sparse.py) spin ~6 ms after
# each use by default: a 1024x4096 GEMM right after one took 7.8-9.3 ms instead of 4.0. 10^4 spins
# (~0.2 ms) cost it nothing and still hand work over in microseconds, where a sleeping thread's
# wake-up costs 65-110 us here. Read when the OpenMP runtime loads, at the first parallel call.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
_coretype = openblas_coretype(cpuinfo())
if _coretype:
    os.environ.setdefault("OPENBLAS_CORETYPE", _coretype)
from . import layers  # noqa: F401  (registers every layer type)
from . import minicaffe_pb2 as proto
from .blob import Blob
from .errors import CaffeError
from .net import Net
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                      RMSPropSolver, SGDSolver, Solver, get_solver)

TRAIN, TEST = proto.TRAIN, proto.TEST

__all__ = ["Net", "Blob", "CaffeError", "TRAIN", "TEST", "proto", "Solver", "get_solver"]
