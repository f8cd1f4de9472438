"""Caffe's solvers: one Solver class whose update rule is chosen by `type:` in the solver file."""
import numpy as np

from .solver import Solver, get_solver  # noqa: F401


def _typed(name):
    def make(path, **kw):
        s = Solver(path, **kw)
        if s.param.type != name:
            s.param.type = name
            from .updates import RULES
            s.rule = RULES[name](s.param)
            s.history = [[np.zeros_like(b.data) for _ in range(s.rule.n_history)]
                         for b in s.net.learnable_params]
        return s
    make.__name__ = f"{name}Solver"
    return make


SGDSolver = _typed("SGD")
NesterovSolver = _typed("Nesterov")
AdaGradSolver = _typed("AdaGrad")
RMSPropSolver = _typed("RMSProp")
AdaDeltaSolver = _typed("AdaDelta")
AdamSolver = _typed("Adam")
