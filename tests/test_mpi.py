"""Data-parallel training: `mpiexec -n 2 minicaffe train` with batch 32 gives the weights one process
gets with batch 64 (SGD, Adam, a pruned CmpConvolution net), and its snapshot resumes on one rank."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minicaffe
from minicaffe import io

NET = """
name: "LeNetSmall"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param {{ source: "{d}/list.txt" batch_size: {b} shuffle: true }} }}
layer {{ name: "conv1" type: "{conv}" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 6 kernel_size: 5 {cmp} weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param {{ num_output: 32 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""

SOLVER = """net: "{net}"
type: "{kind}" base_lr: {lr} momentum: 0.9 {extra} weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001
power: 0.75 display: 0 max_iter: 20 snapshot: 10 snapshot_prefix: "{prefix}" random_seed: 3
"""

CASES = {"sgd": ("SGD", "0.01", "", "Convolution", ""),
         "adam": ("Adam", "0.001", "momentum2: 0.999", "Convolution", ""),
         "cmp": ("SGD", "0.01", "", "CmpConvolution", "sparse_ratio: 0.5")}


def _mpiexec():
    """mpich's wheel puts mpiexec beside the interpreter (or on PATH)."""
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.isfile(here) else shutil.which("mpiexec")


def _write(d, name, batch):
    kind, lr, extra, conv, cmp = CASES[name]
    net = d / f"{name}_{batch}.prototxt"
    net.write_text(NET.format(d=d, b=batch, conv=conv, cmp=cmp))
    solver = d / f"{name}_{batch}_solver.prototxt"
    solver.write_text(SOLVER.format(net=net, kind=kind, lr=lr, extra=extra, prefix=d / f"{name}_{batch}"))
    return solver


def _weights(path):
    return {lp.name: [io.blob_to_array(b) for b in lp.blobs] for lp in io.read_weights(str(path)).layer}


def _close(a, b):
    for name in a:
        for x, y in zip(a[name], b[name]):
            err = np.abs(x - y).max() / max(np.abs(y).max(), 1e-12)
            assert err < 1e-5, f"{name}: relative error {err:.3g}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each case trained by 2 ranks (batch 32) in one mpiexec, and by one process (batch 64)."""
    import h5py
    d = tmp_path_factory.mktemp("mpi")
    r = np.random.RandomState(0)
    with h5py.File(d / "data.h5", "w") as f:
        f["label"] = r.randint(0, 10, 640).astype(np.float32)
        f["data"] = (r.rand(640, 1, 16, 16) + f["label"][:][:, None, None, None] / 10).astype(np.float32)
    (d / "list.txt").write_text(f"{d}/data.h5\n")
    mpiexec = _mpiexec()
    if not mpiexec:
        pytest.fail('mpiexec not found: pip install -e ".[mpi]" (the mpich wheel provides it)')
    solvers2 = [_write(d, name, 32) for name in CASES]
    script = ("import sys\nfrom minicaffe.cli import main\n"
              "for s in sys.argv[1:]:\n    main(['train', '--solver=' + s])\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    try:
        p = subprocess.run([mpiexec, "-n", "2", sys.executable, "-c", script] + [str(s) for s in solvers2],
                           capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("mpiexec -n 2 did not finish in 120 s (can MPI start processes in this sandbox?)")
    if p.returncode:
        pytest.fail(f"mpiexec -n 2 failed (exit {p.returncode}); can MPI start here?\n{p.stderr[-3000:]}")
    minicaffe.log.quiet = True
    try:
        for name in CASES:
            minicaffe.get_solver(str(_write(d, name, 64))).solve()
        s = minicaffe.get_solver(str(d / "sgd_64_solver.prototxt"))
        s.param.snapshot_prefix = str(d / "resumed")
        s.solve(str(d / "sgd_32_iter_10.solverstate"))
    finally:
        minicaffe.log.quiet = False
    return d


@pytest.mark.parametrize("name", list(CASES))
def test_two_ranks_match_one_process_with_twice_the_batch(runs, name):
    two, one = _weights(runs / f"{name}_32_iter_20.caffemodel"), _weights(runs / f"{name}_64_iter_20.caffemodel")
    assert set(two) == set(one) and two["ip2"][0].shape == (10, 32)
    _close(two, one)
    first = _weights(runs / f"{name}_64_iter_10.caffemodel")
    assert np.abs(one["ip2"][0] - first["ip2"][0]).max() > 1e-4      # it did train
    if name == "cmp":
        assert ((two["conv1"][0] == 0) == (one["conv1"][0] == 0)).all()
        assert (one["conv1"][0] == 0).mean() >= 0.5


def test_snapshot_of_two_ranks_resumes_on_one(runs):
    _close(_weights(runs / "resumed_iter_20.caffemodel"), _weights(runs / "sgd_64_iter_20.caffemodel"))


def test_only_rank_zero_snapshots(runs):
    names = sorted(p.name for p in runs.glob("sgd_32_iter_*"))
    assert names == ["sgd_32_iter_10.caffemodel", "sgd_32_iter_10.solverstate",
                     "sgd_32_iter_20.caffemodel", "sgd_32_iter_20.solverstate"]


def test_mpirun_without_mpi4py_says_how_to_install(monkeypatch):
    from minicaffe.errors import CaffeError
    from minicaffe.solvers import parallel
    for v in parallel._SIZE_VARS:
        monkeypatch.delenv(v, raising=False)
    assert parallel.from_environment() is None          # one process: mpi4py is not needed
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)     # as if not installed
    with pytest.raises(CaffeError, match=r'pip install "minicaffe\[mpi\]"'):
        parallel.from_environment()


RANKS_AGREE = """
import sys
import numpy as np
import minicaffe
from minicaffe import io
sp = io.read_solver(sys.argv[1])
sp.ClearField("random_seed")               # each rank draws its own weights, masks and data seed
net = io.read_net(sp.net)                  # and, with weight sharing, its own k-means clusters
for lp in net.layer:
    if lp.type == "CmpConvolution":
        lp.convolution_param.quantize_term = True
        lp.convolution_param.class_num = 8
sp.ClearField("net")
sp.net_param.CopyFrom(net)
s = minicaffe.Solver(sp)
s.step(3)
comm = s.parallel.comm
shared = [layer.sharing.assign for layer in s.net.layers if getattr(layer, "sharing", None)]
assert shared, "the net shares weights"
mine = [s.net.layers[0].seed] + [b.data for b in s.net.learnable_params] + [s.net.learnable_params[0].mask]
mine += shared
theirs = comm.bcast(mine, root=0)
assert mine[0] == theirs[0], "data seeds differ"
for a, b in zip(mine[1:], theirs[1:]):
    assert np.array_equal(a, b), "weights, masks or shared-weight clusters differ between the ranks"
"""


def test_ranks_agree_without_a_random_seed(runs):
    p = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c", RANKS_AGREE, str(runs / "cmp_32_solver.prototxt")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
