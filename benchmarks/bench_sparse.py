"""Dense vs sparse (sliced CSR) forward products at several sparsities, and the pruned digits
LeNet's whole forward pass with the sparse path allowed or not. Prints figures; never asserts.

`python benchmarks/bench_sparse.py --runs 10`: only the LeNet comparison, ten times in a row with
fresh nets, at batch 1 and 64 (is the pruned net ever slower than dense?)."""
import os
import time
from statistics import median

import minicaffe  # before numpy: sets how OpenBLAS's threads wait (minicaffe/__init__.py)
import numpy as np

from minicaffe import gemm, log, sparse
from minicaffe.sparse import SlicedCSR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def best_ms(f, reps=30):
    f()
    t = []
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return min(t) * 1e3


JUNK = np.zeros(96 << 20, np.uint8)       # three times this machine's L3


def cold_ms(f, reps=15):
    """Median time with the caches emptied first: a big weight as it is met in a deep net, where
    the other layers' weights have pushed it out since its last use."""
    t = []
    for _ in range(reps):
        np.add(JUNK, 1, out=JUNK)
        s = time.perf_counter()
        f()
        t.append(time.perf_counter() - s)
    return sorted(t)[reps // 2] * 1e3


def product_table():
    rs = np.random.RandomState(0)
    # (label, weight rows M, columns K, right-hand columns P)
    shapes = [("ip 800x500", 500, 800, 1), ("ip 800x500", 500, 800, 64),
              ("ip 1024x4096", 4096, 1024, 1), ("ip 1024x4096", 4096, 1024, 64),
              ("lenet conv2", 50, 500, 64 * 64), ("cifar_quick conv2", 32, 800, 100 * 256),
              ("cifar_quick conv3", 64, 800, 100 * 64)]
    print("sparse = the faster of the sparse product on all threads and on one "
          "(the layers measure both)")
    print(f"{'product':<18} {'P':>6} {'sparsity':>8} {'dense ms':>9} {'sparse ms':>10} {'speed-up':>8}"
          f"   {'cold: dense':>11} {'sparse':>7} {'speed-up':>8}")
    for label, m, k, p in shapes:
        x = rs.randn(k, p).astype(np.float32)
        out = np.empty((m, p), np.float32)
        for s in (0.0, 0.5, 0.8, 0.9, 0.95):
            w = rs.randn(m, k).astype(np.float32)
            w[rs.rand(m, k) < s] = 0
            csr = SlicedCSR(w)
            # the dense product each layer runs: numpy's for InnerProduct, gemm's for Convolution
            matmul = np.matmul if label.startswith("ip") else gemm.matmul
            dense = lambda: matmul(w, x, out=out)  # noqa: E731
            sparse_mt = lambda: csr.matmul(x, out)  # noqa: E731
            sparse_1t = lambda: csr.matmul(x, out, threads=False)  # noqa: E731
            d, sp = best_ms(dense), min(best_ms(sparse_mt), best_ms(sparse_1t))
            line = f"{label:<18} {p:>6} {100 * s:>7.0f}% {d:>9.3f} {sp:>10.3f} {d / sp:>7.2f}x"
            if label.startswith("ip"):
                dc, sc = cold_ms(dense), min(cold_ms(sparse_mt), cold_ms(sparse_1t))
                line += f"   {dc:>11.3f} {sc:>7.3f} {dc / sc:>7.2f}x"
            print(line)


def lenet_table():
    weights = os.path.join(ROOT, "models/digits/lenet_compressed.caffemodel")
    if not os.path.exists(weights):
        print("\n(models/digits/lenet_compressed.caffemodel missing: run models/digits/prune_finetune.sh)")
        return
    print(f"\npruned digits LeNet, whole forward pass\n{'batch':>5} {'dense ms':>9} {'sparse allowed ms':>18} {'speed-up':>8}  paths")
    for batch in (1, 64):
        net = minicaffe.Net(os.path.join(ROOT, "models/lenet/lenet.prototxt"), weights, minicaffe.TEST)
        x = np.random.rand(batch, 1, 28, 28).astype(np.float32)
        net.blobs["data"].reshape(x.shape)
        net.blobs["data"].data[...] = x
        sparse.MIN_SPARSITY = 2.0           # never sparse
        d = best_ms(lambda: net.forward_from_to(), 100)
        net = minicaffe.Net(os.path.join(ROOT, "models/lenet/lenet.prototxt"), weights, minicaffe.TEST)
        net.blobs["data"].reshape(x.shape)
        net.blobs["data"].data[...] = x
        sparse.MIN_SPARSITY = 0.5
        s = best_ms(lambda: net.forward_from_to(), 100)
        paths = " ".join(f"{n}:{getattr(l, 'path', '-')}" for n, l in net.layer_dict.items() if l.blobs)
        print(f"{batch:>5} {d:>9.3f} {s:>18.3f} {d / s:>7.2f}x  {paths}")


def fresh_net(weights, x):
    net = minicaffe.Net(os.path.join(ROOT, "models/lenet/lenet.prototxt"), weights, minicaffe.TEST)
    net.blobs["data"].reshape(x.shape)
    net.blobs["data"].data[...] = x
    return net


def dense_forward(net):
    with sparse.dense_only():
        net.forward_from_to()


def alternate(dense, pruned, reps):
    """A forward of each in turn, `reps` times: the two lists of times (s)."""
    td, tp = [], []
    for _ in range(reps):
        s = time.perf_counter()
        dense_forward(dense)
        m = time.perf_counter()
        pruned.forward_from_to()
        td.append(m - s)
        tp.append(time.perf_counter() - m)
    return td, tp


def lenet_runs(runs=10, reps=100):
    """The same pruned net dense and with the sparse products allowed, both fresh each run (so each
    run makes its own choices), timed in alternation, a forward of one then of the other: first the
    forwards in which the pruned net tries its products (sparse.TRIAL_CALLS, totals shown apart),
    then `reps` more (medians)."""
    weights = os.path.join(ROOT, "models/digits/lenet_compressed.caffemodel")
    if not os.path.exists(weights):
        print("\n(models/digits/lenet_compressed.caffemodel missing: run models/digits/prune_finetune.sh)")
        return
    n = sparse.TRIAL_CALLS
    print(f"\npruned digits LeNet, {runs} runs in a row, fresh nets each run; whole forward pass, median "
          f"of {reps} alternating forwards after {n} more (totals: the trial)\n"
          f"{'run':>3} {'batch':>5} {'dense ms':>9} {'pruned ms':>10} {'speed-up':>8}   "
          f"{'trial: dense ms':>15} {'pruned ms':>9}  paths")
    worst = {}
    for run in range(1, runs + 1):
        for batch in (1, 64):
            x = np.random.rand(batch, 1, 28, 28).astype(np.float32)
            dense, pruned = fresh_net(weights, x), fresh_net(weights, x)
            trial = [sum(t) * 1e3 for t in alternate(dense, pruned, n)]
            td, tp = alternate(dense, pruned, reps)
            d, p = median(td) * 1e3, median(tp) * 1e3
            worst[batch] = min(worst.get(batch, float("inf")), d / p)
            paths = " ".join(f"{n}:{getattr(l, 'path', '-')}"
                             for n, l in pruned.layer_dict.items() if l.blobs)
            print(f"{run:>3} {batch:>5} {d:>9.3f} {p:>10.3f} {d / p:>7.2f}x   {trial[0]:>15.2f} "
                  f"{trial[1]:>9.2f}  {paths}")
    print("worst speed-up: " + ", ".join(f"batch {b} {r:.2f}x" for b, r in worst.items()))


if __name__ == "__main__":
    import sys
    log.quiet = True
    if "--runs" in sys.argv:
        lenet_runs(int(sys.argv[sys.argv.index("--runs") + 1]))
    else:
        product_table()
        lenet_table()
