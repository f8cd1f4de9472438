"""`import caffe`: pycaffe's public names over minicaffe's engine (no engine of its own here)."""
from minicaffe.net import Net  # noqa: F401
from minicaffe.solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                               RMSPropSolver, SGDSolver, Solver, get_solver)

from ._caffe import (NCCL, Layer, Timer, __version__, has_nccl, init_log,  # noqa: F401
                     layer_type_list, set_device, set_mode_cpu, set_mode_gpu, set_multiprocess,
                     set_random_seed, set_solver_count, set_solver_rank, solver_count, solver_rank)
from ._caffe import log_info as log  # noqa: F401
from .proto.caffe_pb2 import TEST, TRAIN  # noqa: F401
from .net_spec import NetSpec, layers, params, to_proto  # noqa: F401
from . import io  # noqa: F401,E402
from .classifier import Classifier  # noqa: F401,E402
from .detector import Detector  # noqa: F401,E402
