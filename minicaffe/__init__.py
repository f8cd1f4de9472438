"""minicaffe: Caffe's nets, solvers and file formats in Python, with pruning built in."""
import os

# Numba's OpenMP threads and OpenBLAS's threads take turns on the same cores; OpenMP's default
# spin-wait keeps idle workers busy and slowed a LeNet step 4x (49 -> 12.5 ms, `minicaffe time`).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from . import layers  # noqa: F401  (registers every layer type)
from . import minicaffe_pb2 as proto
from .blob import Blob
from .errors import CaffeError
from .net import Net
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                      RMSPropSolver, SGDSolver, Solver, get_solver)

TRAIN, TEST = proto.TRAIN, proto.TEST

__all__ = ["Net", "Blob", "CaffeError", "TRAIN", "TEST", "proto", "Solver", "get_solver"]
