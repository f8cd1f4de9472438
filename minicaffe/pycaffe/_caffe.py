"""What pycaffe's compiled extension (_caffe) exports, over minicaffe: modes, seeds, solver
counts, the layer list. There is no GPU here: asking for one says so once and stays on the CPU."""
import time

from minicaffe import log, rng
from minicaffe.layer import REGISTRY, Layer  # noqa: F401  (caffe.Layer: Python layers subclass it)
from minicaffe.solvers import get_solver  # noqa: F401

__version__ = "1.0.0"
_solver_count, _solver_rank, _multiprocess = 1, 0, False


def set_mode_cpu():
    pass


def set_mode_gpu():
    log.cpu_only("caffe.set_mode_gpu()")


def set_device(device_id):
    log.cpu_only(f"caffe.set_device({device_id})")


def set_random_seed(seed):
    rng.seed(seed)


def layer_type_list():
    return sorted(REGISTRY)


def init_log(level=0, stderr=False):
    log.quiet = level > 0


def log_info(msg):
    log.info(msg)


def has_nccl():
    return False


def solver_count():
    return _solver_count


def set_solver_count(n):
    global _solver_count
    _solver_count = int(n)


def solver_rank():
    return _solver_rank


def set_solver_rank(r):
    global _solver_rank
    _solver_rank = int(r)


def set_multiprocess(flag):
    global _multiprocess
    _multiprocess = bool(flag)


class NCCL:
    """pycaffe's multi-GPU helper; minicaffe has no GPUs, so building one is an error that says so."""

    def __init__(self, solver, uid):
        raise RuntimeError("NCCL needs GPUs; minicaffe runs on the CPU (has_nccl() is False)")

    @staticmethod
    def new_uid():
        return b""


class Timer:
    """pycaffe's Timer: start/stop, milliseconds, seconds."""

    def __init__(self):
        self._start, self._elapsed, self.running = None, 0.0, False

    def start(self):
        self._start, self.running = time.perf_counter(), True

    def stop(self):
        if self.running:
            self._elapsed = time.perf_counter() - self._start
            self.running = False

    @property
    def ms(self):
        self.stop()
        return self._elapsed * 1e3

    @property
    def seconds(self):
        return self.ms / 1e3
