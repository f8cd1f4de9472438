"""minicaffe train: caffe train --solver=S [--weights=A,B | --snapshot=X.solverstate]."""
import sys

from minicaffe import io, log
from minicaffe.compress import qat
from minicaffe.errors import CaffeError
from minicaffe.solvers import Solver

from .common import add_net_state, stages

HELP = "train a net from a solver prototxt"


def add_arguments(p):
    p.add_argument("--solver", required=True, help="solver .prototxt")
    p.add_argument("--weights", default="", help="comma-separated caffemodels to finetune from")
    p.add_argument("--snapshot", default="", help=".solverstate to resume from")
    p.add_argument("--sigint_effect", default="stop", choices=["stop", "snapshot", "none"])
    p.add_argument("--sighup_effect", default="snapshot", choices=["stop", "snapshot", "none"])
    p.add_argument("--stop_on_nan", action="store_true",
                   help="stop at the first NaN or infinite loss, with a snapshot of the weights before it")
    p.add_argument("--qat", action="store_true",
                   help="quantization-aware: train with the int8 weights and inputs minicaffe quantize "
                        "makes (fake quantization, gradients passed straight through)")
    add_net_state(p)


def run(a):
    if a.weights and a.snapshot:
        raise CaffeError("give --weights or --snapshot, not both")
    sp = io.read_solver(a.solver)
    if a.level:
        sp.train_state.level = a.level
    for s in stages(a):
        sp.train_state.stage.append(s)
    solver = Solver(sp, sigint_effect=a.sigint_effect, sighup_effect=a.sighup_effect, source=a.solver)
    solver.progress = sys.stderr.isatty()     # a progress bar for people, never in logs
    solver.stop_on_nan = a.stop_on_nan
    weights = [w for w in a.weights.split(",") if w] or list(sp.weights)
    for w in weights:
        log.info(f"Finetuning from {w}")
        solver.net.copy_trained_layers_from(w)     # in place: the test nets share these blobs
    if a.qat:
        scales = qat.enable(solver.net)
        for net in solver.test_nets:
            qat.enable(net, scales)
    solver.solve(a.snapshot or None)
    if solver.requested == "stop_on_nan":
        raise CaffeError(f"the loss is not finite at iteration {solver.iter}: stopped (--stop_on_nan) "
                         f"with a snapshot of iteration {solver.iter}, before its update")
