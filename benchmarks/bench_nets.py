"""Time one training iteration (forward + backward + SGD update) of cifar10_quick (batch 100),
cifar10_full (batch 100) and LeNet (batch 64), and the same nets in PyTorch when it is installed
(pip install torch==2.13.0), on the same number of threads. Prints figures; never asserts.
Usage: python benchmarks/bench_nets.py [iterations [rounds]]."""
import os
import sys
import time


import minicaffe
from minicaffe import io, log
from minicaffe import minicaffe_pb2 as pb
from minicaffe.tools.time import fill_stand_ins, stand_in_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = [("cifar10_quick", "models/cifar10/cifar10_quick_train_test.prototxt", (100, 3, 32, 32)),
        ("cifar10_full", "models/cifar10/cifar10_full_train_test.prototxt", (100, 3, 32, 32)),
        ("lenet", "models/lenet/lenet_train_test.prototxt", (64, 1, 28, 28))]


def solver(path):
    param = io.read_net(os.path.join(ROOT, path))
    param.state.phase = pb.TRAIN
    param = stand_in_data(param, pb.TRAIN, 0, [])
    sp = pb.SolverParameter(base_lr=0.001, momentum=0.9, weight_decay=0.004, lr_policy="fixed",
                            max_iter=10 ** 9, display=0, snapshot_after_train=False)
    sp.train_net_param.CopyFrom(param)
    s = minicaffe.Solver(sp)
    fill_stand_ins(s.net)
    s.step(2)
    return s


def ours(s, iters):
    t = time.perf_counter()
    s.step(iters)
    return (time.perf_counter() - t) / iters * 1e3


def torch_times(iters):
    """PyTorch in its own process, with its own thread settings (none of minicaffe's)."""
    import json
    import subprocess
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import json, os, sys; sys.path.insert(0, %r); import torch; torch.set_num_threads(os.cpu_count());"
            "import bench_torch as b; print(json.dumps(b.run(%d)))" % (os.path.dirname(__file__), iters))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(iters=20, rounds=5):
    """Each round times PyTorch (its own process), then us; the best round of each counts, since
    this machine's noise only ever adds time (a 1024^3 GEMM's rate swung 96-185 GFLOP/s between
    half-second windows here, so three rounds often caught no quiet one for one side)."""
    log.quiet = True
    solvers = {name: solver(path) for name, path, _ in NETS}
    best = {}
    for _ in range(rounds):
        theirs = torch_times(iters) or {}
        for name, _, _ in NETS:
            for who, ms in (("torch", theirs.get(name)), ("ours", ours(solvers[name], iters))):
                if ms is not None:
                    best[name, who] = min(best.get((name, who), ms), ms)
    print(f"one training iteration, ms (threads: {os.cpu_count()}, best of {rounds} rounds of {iters})")
    print(f"{'net':<15} {'batch':>5} {'minicaffe':>10} {'pytorch':>9} {'ratio':>6}")
    for name, _, shape in NETS:
        m, p = best[name, "ours"], best.get((name, "torch"))
        if p:
            print(f"{name:<15} {shape[0]:>5} {m:>10.1f} {p:>9.1f} {m / p:>6.2f}")
        else:
            print(f"{name:<15} {shape[0]:>5} {m:>10.1f} {'-':>9} {'-':>6}   (torch not installed)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
