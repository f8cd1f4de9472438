"""Data-parallel training over MPI: every rank runs the same net on its own share of each batch,
and one allreduce per iteration averages the gradients, so all ranks keep identical weights."""
import os

import numpy as np

from minicaffe import log
from minicaffe.compress.sharing import WeightSharing
from minicaffe.errors import CaffeError

# Variables the common launchers (MPICH/Hydra, Open MPI, Intel MPI) set in every process they start.
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


def _launched_size():
    for v in _SIZE_VARS:
        try:
            return int(os.environ[v])
        except (KeyError, ValueError):
            pass
    return 1


def from_environment():
    """A Parallel when started by mpirun/mpiexec with more than one rank; else None (and mpi4py
    is never imported)."""
    if _launched_size() <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise CaffeError(f"started by mpirun with {_launched_size()} ranks, but mpi4py is not installed: "
                         'pip install "minicaffe[mpi]"') from None
    comm = MPI.COMM_WORLD
    if comm.Get_size() <= 1:
        return None
    return Parallel(comm, MPI)


class Parallel:
    def __init__(self, comm, mpi):
        self.comm, self.mpi = comm, mpi
        self.rank, self.count = comm.Get_rank(), comm.Get_size()
        self.root = self.rank == 0
        self.started = False
        self.buf = None
        if not self.root:
            log.quiet = True
        from minicaffe.pycaffe import _caffe     # Python data layers read caffe.solver_rank/count
        _caffe.set_solver_rank(self.rank)
        _caffe.set_solver_count(self.count)

    def start(self, solver):
        """Once, before the first iteration (after weights or a snapshot are loaded): every rank
        takes rank 0's weights, solver history and data seeds, and reads its own share."""
        if self.started:
            return
        self.started = True
        for layer in solver.net.layers:
            if hasattr(layer, "indices"):          # BatchSource layers of the train net
                layer.seed = self.comm.bcast(layer.seed, root=0)
                layer.rank, layer.count = self.rank, self.count
        for b in solver.net.learnable_params:
            self.comm.Bcast(b.data, root=0)
            if b.mask is not None:                 # a one-shot mask made from this rank's own init
                self.comm.Bcast(b.mask, root=0)
        for layer in solver.net.layers:            # k-means clusters made from this rank's init:
            if getattr(layer, "sharing", None) is not None:    # remade from the shared values
                w = layer.blobs[0]
                layer.sharing = WeightSharing(w.peek, w.mask, layer.sharing.k)
        for hs in solver.history:
            for h in hs:
                self.comm.Bcast(h, root=0)
        sizes = [b.diff.size for b in solver.net.learnable_params]
        self.buf = np.empty(sum(sizes) + 1, np.float32)     # the diffs, then the loss
        self.slices = np.cumsum([0] + sizes)

    def average(self, solver, loss):
        """One allreduce: every learnable diff and the loss, averaged over the ranks."""
        buf, params = self.buf, solver.net.learnable_params
        for b, lo, hi in zip(params, self.slices[:-1], self.slices[1:]):
            buf[lo:hi] = b.diff.ravel()
        buf[-1] = loss
        self.comm.Allreduce(self.mpi.IN_PLACE, buf, op=self.mpi.SUM)
        buf *= np.float32(1.0 / self.count)
        for b, lo, hi in zip(params, self.slices[:-1], self.slices[1:]):
            b.diff[...] = buf[lo:hi].reshape(b.diff.shape)
        return float(buf[-1])

    def decide(self, request):
        """Rank 0's signal request (stop, snapshot or None) for all ranks, so they act together."""
        return self.comm.bcast(request, root=0)
