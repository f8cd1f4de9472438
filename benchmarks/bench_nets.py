"""Time one training iteration (forward + backward + SGD update) of cifar10_quick (batch 100),
cifar10_full (batch 100) and LeNet (batch 64), and the same nets in PyTorch when it is installed
(pip install torch==2.13.0), on the same number of threads. Prints figures; never asserts."""
import os
import sys
import time

import numpy as np

import minicaffe
from minicaffe import io, log
from minicaffe import minicaffe_pb2 as pb
from minicaffe.tools.time import stand_in_data  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = [("cifar10_quick", "models/cifar10/cifar10_quick_train_test.prototxt", (100, 3, 32, 32)),
        ("cifar10_full", "models/cifar10/cifar10_full_train_test.prototxt", (100, 3, 32, 32)),
        ("lenet", "models/lenet/lenet_train_test.prototxt", (64, 1, 28, 28))]


def ours(path, iters):
    param = io.read_net(os.path.join(ROOT, path))
    param.state.phase = pb.TRAIN
    param = stand_in_data(param, pb.TRAIN, 0, [])
    sp = pb.SolverParameter(base_lr=0.001, momentum=0.9, weight_decay=0.004, lr_policy="fixed",
                            max_iter=10 ** 9, display=0, snapshot_after_train=False)
    sp.train_net_param.CopyFrom(param)
    s = minicaffe.Solver(sp)
    s.step(2)
    t = time.perf_counter()
    s.step(iters)
    return (time.perf_counter() - t) / iters * 1e3


def torch_net(name, torch):
    nn = torch.nn
    if name == "lenet":
        return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
                             nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))
    if name == "cifar10_quick":
        return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(),
                             nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
                             nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
                             nn.Flatten(), nn.Linear(1024, 64), nn.Linear(64, 10))
    lrn = nn.LocalResponseNorm(3, 5e-05, 0.75)   # across channels: the closest torch has
    return nn.Sequential(nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(3, 2, ceil_mode=True), nn.ReLU(), lrn,
                         nn.Conv2d(32, 32, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True), lrn,
                         nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.AvgPool2d(3, 2, ceil_mode=True),
                         nn.Flatten(), nn.Linear(1024, 10))


def theirs(name, shape, iters, torch):
    net = torch_net(name, torch)
    opt = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9, weight_decay=0.004)
    x = torch.rand(*shape)
    y = torch.randint(0, 10, (shape[0],))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t) / iters * 1e3


def main(iters=20):
    log.quiet = True
    try:
        import torch
        torch.set_num_threads(os.cpu_count())
    except ImportError:
        torch = None
    print(f"one training iteration, ms (threads: {os.cpu_count()}, iterations: {iters})")
    print(f"{'net':<15} {'batch':>5} {'minicaffe':>10} {'pytorch':>9} {'ratio':>6}")
    for name, path, shape in NETS:
        m = ours(path, iters)
        if torch is not None:
            p = theirs(name, shape, iters, torch)
            print(f"{name:<15} {shape[0]:>5} {m:>10.1f} {p:>9.1f} {m / p:>6.2f}")
        else:
            print(f"{name:<15} {shape[0]:>5} {m:>10.1f} {'-':>9} {'-':>6}   (torch not installed)")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
