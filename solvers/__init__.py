"""Caffe's solvers: one Solver class whose update rule is chosen by `type:` in the solver file,
and pycaffe's SGDSolver(path) & co., which take their own rule whatever the file says."""
from minicaffe import io

from .solver import Solver


class TypedSolver(Solver):
    solver_type = None

    def __init__(self, solver, **kw):
        Solver.__init__(self, solver, solver_type=self.solver_type, **kw)


def _typed(name):
    return type(f"{name}Solver", (TypedSolver,), {"solver_type": name, "__module__": __name__})


SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver, AdamSolver = (
    _typed(n) for n in ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"))
BY_TYPE = {c.solver_type: c for c in TypedSolver.__subclasses__()}


def get_solver(path, **kw):
    """The solver of the file's `type`, as an instance of its class (SGDSolver, ...); an unknown
    type goes to Solver, which says which types exist."""
    cls = BY_TYPE.get(io.read_solver(str(path)).type, Solver)
    return cls(path, **kw)
