"""Caffe's solvers: one Solver class whose update rule is chosen by `type:` in the solver file."""
from .solver import Solver, get_solver  # noqa: F401


def _typed(name):
    """pycaffe's SGDSolver(path) & co.: the given update rule, whatever the file says."""
    def make(path, **kw):
        return Solver(path, solver_type=name, **kw)
    make.__name__ = f"{name}Solver"
    return make


SGDSolver = _typed("SGD")
NesterovSolver = _typed("Nesterov")
AdaGradSolver = _typed("AdaGrad")
RMSPropSolver = _typed("RMSProp")
AdaDeltaSolver = _typed("AdaDelta")
AdamSolver = _typed("Adam")
