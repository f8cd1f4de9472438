"""What pycaffe's compiled extension (_caffe) exports, over minicaffe: modes, seeds, solver
counts, the layer list, the solver classes. There is no GPU here: asking for one says so once and
stays on the CPU."""
import time

from minicaffe import log, rng
from minicaffe.layer import REGISTRY, Layer  # noqa: F401  (caffe.Layer: Python layers subclass it)

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
    """pycaffe's multi-GPU gradient sharing. pycaffe built without NCCL (has_nccl() False, as
    here) makes NCCL(solver, uid) an object that does nothing; so does this one for a single
    solver, where there is nothing to share: bcast(), solver.add_callback(nccl) and
    net.after_backward(nccl) are no-ops, so python/train.py runs with one device. Several solver
    processes cannot share gradients here: that is an error."""

    def __init__(self, solver, uid):
        if solver_count() > 1:
            raise RuntimeError(f"NCCL cannot share gradients among {solver_count()} solvers: "
                               "minicaffe runs on the CPU without NCCL (has_nccl() is False)")
        self.solver, self.uid = solver, uid

    @staticmethod
    def new_uid():
        return b""

    def bcast(self):
        """Send the root solver's weights to the others: there are none."""

    def __call__(self, layer_index):
        """As net.after_backward(nccl): nothing to reduce."""

    def on_start(self):
        """As solver.add_callback(nccl): nothing to share."""

    def on_gradients_ready(self):
        pass


class Timer:
    """pycaffe's Timer: start/stop, milliseconds, seconds."""

    def __init__(self):
        self._start, self._elapsed, self.running = None, 0.0, False

    def start(self):
        if not self.running:     # as Caffe's: start while running keeps the first start
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
