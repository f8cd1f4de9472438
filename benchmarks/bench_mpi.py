"""Data-parallel training over MPI: time per iteration and the allreduce's share of it for K = 1, 2
ranks on this machine, for LeNet (batch 64 per rank) and cifar10_quick (batch 100 per rank), with
random stand-in data (as minicaffe time). Each rank gets cores/K threads. Prints figures; never
asserts. Needs pip install -e ".[mpi]". Usage: python benchmarks/bench_mpi.py [iterations]."""
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETS = [("lenet", "models/lenet/lenet_train_test.prototxt"),
        ("cifar10_quick", "models/cifar10/cifar10_quick_train_test.prototxt")]
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def worker(iters):
    """Run under mpiexec: every rank trains; rank 0 prints one line per net."""
    from bench_nets import solver       # the same stand-in-data solver bench_nets times
    from minicaffe import log
    log.quiet = True
    for name, path in NETS:
        s = solver(path)                    # built and warmed up (Numba, the first allreduce)
        spent = [0.0]
        if s.parallel:
            average = s.parallel.average

            def timed(slv, loss):
                t = time.perf_counter()
                out = average(slv, loss)
                spent[0] += time.perf_counter() - t
                return out
            s.parallel.average = timed
            s.parallel.comm.Barrier()
        t = time.perf_counter()
        s.step(iters)
        ms = (time.perf_counter() - t) / iters * 1e3
        k = s.parallel.count if s.parallel else 1
        if not s.parallel or s.parallel.root:
            batch = s.net.blobs[s.net.inputs[0] if s.net.inputs else "data"].shape[0]
            n = sum(b.data.size for b in s.net.learnable_params)
            share = spent[0] / iters * 1e3
            print(f"{name:14s} K={k}  batch {batch}/rank ({k * batch} in all)  {ms:8.1f} ms/iter  "
                  f"{k * batch / ms * 1e3:8.0f} images/s  allreduce {share:6.2f} ms "
                  f"({100 * share / ms:4.1f}%) of {n} floats", flush=True)


def main():
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    mpiexec = here if os.path.isfile(here) else shutil.which("mpiexec")
    if not mpiexec:
        sys.exit('mpiexec not found: pip install -e ".[mpi]"')
    cores = os.cpu_count() or 1
    for k in (1, 2):
        env = dict(os.environ, **{v: str(max(1, cores // k)) for v in THREAD_VARS})
        subprocess.run([mpiexec, "-n", str(k), sys.executable, os.path.abspath(__file__),
                        "--worker", str(iters)], env=env, check=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(int(sys.argv[2]))
    else:
        main()
