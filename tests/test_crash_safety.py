"""Crash safety: `minicaffe train` killed with SIGKILL at random moments, many of them inside a
snapshot write, leaves every file under a final name whole, and the newest complete solverstate
resumes. Each run resumes from the snapshot the previous kill left, so resuming is killed too."""
import os
import signal
import subprocess
import sys
import time

import numpy as np

from minicaffe import io
from minicaffe.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ip1 holds 1M weights: a caffemodel and a solverstate of 4 MB each, ~15 ms to write, so most of a
# run's time is spent inside snapshot writes
NET = """
name: "crash"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 1000 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 1000 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SIZES = [1000 * 1000, 1000, 2 * 1000, 2]      # the four param blobs, and the four history blobs
RUNS = 8


def write_solver(d, name, max_iter, snapshot):
    (d / "net.prototxt").write_text(NET)
    (d / name).write_text(f'net: "{d}/net.prototxt"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\n'
                          f'max_iter: {max_iter}\ndisplay: 0\nsnapshot: {snapshot}\nrandom_seed: 1\n'
                          f'snapshot_prefix: "{d}/c"\n')
    return str(d / name)


def iteration(path):
    return int(os.path.basename(path).split("_iter_")[1].split(".")[0])


def snapshots(d, ext):
    return sorted((str(p) for p in d.glob(f"c_iter_*.{ext}")), key=iteration)


def check_whole(d):
    """Every caffemodel and solverstate under its final name reads back complete."""
    for m in snapshots(d, "caffemodel"):
        blobs = [b for layer in io.read_weights(m).layer for b in layer.blobs]
        assert [io.blob_to_array(b).size for b in blobs] == SIZES, m
    for s in snapshots(d, "solverstate"):
        st = io.read_solverstate(s)
        assert st.iter == iteration(s) and [io.blob_to_array(b).size for b in st.history] == SIZES, s
        assert st.learned_net == s.replace(".solverstate", ".caffemodel") and os.path.exists(st.learned_net)


def wait_for(cond, p, log, what, timeout=60):
    deadline = time.time() + timeout
    while not cond():
        assert p.poll() is None, f"train exited ({p.returncode}) before {what}: {log.read_text()[-2000:]}"
        assert time.time() < deadline, f"no {what} in {timeout} s"
        time.sleep(0.001)


def test_sigkill_during_snapshots_leaves_whole_resumable_files(tmp_path):
    solver = write_solver(tmp_path, "solver.prototxt", 10 ** 6, 2)
    rs = np.random.RandomState(5)
    resume, in_write = None, 0
    for run in range(RUNS):
        log = tmp_path / f"run{run}.log"
        start = iteration(resume) if resume else 0
        with open(log, "w") as f:
            p = subprocess.Popen([sys.executable, "-m", "minicaffe.cli", "train", f"--solver={solver}"] +
                                 ([f"--snapshot={resume}"] if resume else []),
                                 cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        try:
            # started and past its first snapshot, then killed after a random delay: at an odd run
            # as soon as the next write begins, at an even one wherever the delay ends
            wait_for(lambda: any(iteration(s) > start for s in snapshots(tmp_path, "solverstate")),
                     p, log, "first snapshot")
            time.sleep(rs.uniform(0, 0.25))
            if run % 2:
                wait_for(lambda: any(n.startswith(".tmp-") for n in os.listdir(tmp_path)), p, log, "write")
            p.send_signal(signal.SIGKILL)
            assert p.wait(timeout=60) == -signal.SIGKILL
        finally:
            if p.poll() is None:
                p.kill()
        if resume:
            assert f"Restoring previous solver status from {resume}" in log.read_text()
        leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]
        in_write += bool(leftovers)
        check_whole(tmp_path)
        resume = snapshots(tmp_path, "solverstate")[-1]
        assert iteration(resume) > start
        for n in leftovers:             # a killed write's temp file: harmless, hidden, removed here
            os.unlink(tmp_path / n)
        for s in snapshots(tmp_path, "solverstate")[:-1]:     # keep the disk use small
            os.unlink(s)
        for m in snapshots(tmp_path, "caffemodel"):
            if iteration(m) < iteration(resume):
                os.unlink(m)
    assert in_write >= 2, f"only {in_write} of {RUNS} kills landed inside a snapshot write"
    last = iteration(resume)
    short = write_solver(tmp_path, "short.prototxt", last + 3, 0)
    assert main(["train", f"--solver={short}", f"--snapshot={resume}"]) == 0
    st = io.read_solverstate(str(tmp_path / f"c_iter_{last + 3}.solverstate"))
    assert st.iter == last + 3
    w = io.read_weights(st.learned_net)
    assert all(np.isfinite(io.blob_to_array(b)).all() for layer in w.layer for b in layer.blobs)
