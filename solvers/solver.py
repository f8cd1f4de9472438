"""The Solver: builds the train and test nets, runs iterations, tests, snapshots and restores."""
import os
import signal
import sys
import time

import numpy as np

from minicaffe import io, log, rng
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError
from minicaffe.net import Net

from . import parallel
from .lr_policy import learning_rate
from .updates import RULES

# What SIGINT / SIGHUP do, as caffe's --sigint_effect / --sighup_effect.
ACTIONS = ("stop", "snapshot", "none")


class Solver:
    def __init__(self, solver, sigint_effect="stop", sighup_effect="snapshot", solver_type=None,
                 source=None):
        if isinstance(solver, pb.SolverParameter):
            self.param, self.source = solver, source or "<solver>"
        else:
            self.param, self.source = io.read_solver(str(solver)), str(solver)
        sp = self.param
        if solver_type:
            sp.type = solver_type
        if sp.type not in RULES:
            raise CaffeError(f"unknown solver type '{sp.type}' (known: {', '.join(RULES)})")
        self.rule = RULES[sp.type](sp)
        if sp.HasField("solver_mode") and sp.solver_mode == pb.SolverParameter.GPU:   # the default
            log.cpu_only(f"solver_mode: GPU (device_id {sp.device_id})")                # says nothing
        self.parallel = parallel.from_environment()     # under mpirun with K > 1 ranks; else None
        if sp.random_seed >= 0:
            rng.seed(sp.random_seed)
        self.iter = 0
        self.lr_state = {"current_step": 0}
        self.net = Net(self._train_net_param())
        self.test_nets = [Net(p) for p in self._test_net_params()]
        self.scheduled = [layer for layer in self.net.layers if hasattr(layer, "on_iteration")]
        for tn in self.test_nets:
            tn.share_trained_layers_with(self.net)
        self.history = [[np.zeros_like(b.data) for _ in range(self.rule.n_history)]
                        for b in self.net.learnable_params]
        self.losses = []
        self.smoothed_loss = 0.0
        self.effects = {"SIGINT": sigint_effect, "SIGHUP": sighup_effect}
        self.requested = None
        self.progress = False      # the CLI turns it on when stderr is a terminal
        self.callbacks = []        # (on_start, on_gradients_ready), as pycaffe's add_callback
        self.stop_on_nan = False   # a NaN/Inf loss stops step() with a snapshot (train --stop_on_nan)
        self.finite = True         # the last loss was: a NaN is warned of once, not every iteration
        self.zeros_checked = False  # plain layers with mostly zero weights are warned of at the first step
        log.info(f"Solver type {sp.type}; Learning Rate Policy: {sp.lr_policy}")

    # ------------------------------------------------------------ nets
    def _train_net_param(self):
        sp = self.param
        given = [f for f in ("train_net_param", "train_net", "net_param", "net") if sp.HasField(f)]
        if len(given) != 1:
            raise CaffeError(f"{self.source}: the solver must name exactly one train net "
                             f"(train_net, train_net_param, net or net_param); found {given or 'none'}")
        f = given[0]
        p = getattr(sp, f) if f.endswith("_param") else io.read_net(getattr(sp, f))
        out = pb.NetParameter()
        out.CopyFrom(p)
        state = pb.NetState(phase=pb.TRAIN)
        state.MergeFrom(out.state)
        state.MergeFrom(sp.train_state)
        state.phase = pb.TRAIN
        out.state.CopyFrom(state)
        return out

    def _test_net_params(self):
        sp = self.param
        nets = list(sp.test_net_param) + [io.read_net(p) for p in sp.test_net]
        generic = sp.net_param if sp.HasField("net_param") else (
            io.read_net(sp.net) if sp.HasField("net") else None)
        if generic is not None:
            nets += [generic] * max(0, len(sp.test_iter) - len(nets))
        if len(sp.test_iter) != len(nets):
            raise CaffeError(f"{self.source}: {len(sp.test_iter)} test_iter value(s) for "
                             f"{len(nets)} test net(s); give one test_iter per test net")
        if len(sp.test_state) not in (0, len(nets)):
            raise CaffeError(f"{self.source}: test_state must be given once per test net or not at all")
        out = []
        for i, p in enumerate(nets):
            q = pb.NetParameter()
            q.CopyFrom(p)
            state = pb.NetState(phase=pb.TEST)
            if len(sp.test_state):
                state.MergeFrom(sp.test_state[i])
            state.phase = pb.TEST
            q.state.CopyFrom(state)
            out.append(q)
        return out

    # ------------------------------------------------------------ signals
    def _install_signals(self):
        def handler(signum, frame):
            name = "SIGINT" if signum == signal.SIGINT else "SIGHUP"
            effect = self.effects[name]
            if effect != "none":
                self.requested = effect
        old = {}
        for s in (signal.SIGINT, getattr(signal, "SIGHUP", None)):
            if s is not None:
                try:
                    old[s] = signal.signal(s, handler)
                except ValueError:      # not the main thread
                    pass
        return old

    # ------------------------------------------------------------ training
    def step(self, iters):
        sp = self.param
        start_iter, stop_iter = self.iter, self.iter + iters
        if not self.zeros_checked:
            self.zeros_checked = True
            self._warn_of_zeros()
        if self.parallel:
            self.parallel.start(self)
        old = self._install_signals()
        t0, last = time.time(), self.iter
        try:
            while self.iter < stop_iter:
                if sp.random_seed >= 0:
                    rng.seed(sp.random_seed * 1000003 + self.iter + 1)
                self.net.clear_param_diffs()
                self._tell_iteration()
                if sp.test_interval and self.iter % sp.test_interval == 0 and (
                        self.iter > 0 or sp.test_initialization):
                    self.test_all()
                for on_start, _ in self.callbacks:
                    on_start()
                display = sp.display and self.iter % sp.display == 0
                self.net.debug_info = bool(display and sp.debug_info)
                loss = 0.0
                for _ in range(sp.iter_size):
                    loss += self.net.forward_backward()
                loss /= sp.iter_size
                if self.parallel:
                    loss = self.parallel.average(self, loss)
                if self._stop_for_nan(loss):
                    break
                self._update_smoothed_loss(loss, start_iter)
                if display:
                    dt = time.time() - t0
                    speed = (self.iter - last) / dt if dt > 0 and self.iter > last else 0.0
                    log.info(f"Iteration {self.iter} ({speed:.4g} iter/s, {dt:.4g}s/{sp.display} iters), "
                             f"loss = {self.smoothed_loss:.6g}")
                    t0, last = time.time(), self.iter
                    self._log_outputs(self.net, "Train", [self.net.blobs[n].data for n in self.net.outputs])
                for _, on_gradients_ready in self.callbacks:
                    on_gradients_ready()
                self.apply_update()
                self.iter += 1
                self._tell_iteration()      # a snapshot or the last test sees this iteration's masks
                if self.progress:
                    done = (self.iter - start_iter) / max(iters, 1)
                    bar = "#" * int(30 * done)
                    sys.stderr.write(f"\r[{bar:<30}] {self.iter}/{stop_iter} loss {self.smoothed_loss:.4g} ")
                    sys.stderr.flush()
                request, self.requested = self.requested, None
                if self.parallel:
                    request = self.parallel.decide(request)
                if (sp.snapshot and self.iter % sp.snapshot == 0) or request == "snapshot":
                    self.snapshot()
                if request == "stop":
                    self.requested = "stop"
                    break
        finally:
            if self.progress:
                sys.stderr.write("\n")
            for s, h in old.items():
                signal.signal(s, h)

    def _warn_of_zeros(self):
        """A pruned model finetuned with the ordinary prototxt trains its zeros back (82.65% sparse
        -> 0.55% in 100 iterations of the digits LeNet): say so, once per layer, before it starts."""
        for layer, trained in zip(self.net.layers, self.net.param_propagate_down):
            kind = layer.param.type
            if kind not in ("Convolution", "InnerProduct") or not trained or not trained[0]:
                continue        # a Cmp layer keeps its zeros, and so does a frozen weight (lr_mult 0)
            zeros = float((layer.blobs[0].peek == 0).mean())
            if zeros >= 0.5:
                log.warning(f"layer '{layer.param.name}': {100 * zeros:.1f}% of its weights are zero, but "
                            f"a plain {kind} layer trains them back; to keep them zero, train with the "
                            f"Cmp{kind} prototxt that `minicaffe prune` writes beside its output")

    def _tell_iteration(self):
        """Layers that change with the iteration (gradual pruning) learn it before its forward."""
        for layer in self.scheduled:
            layer.on_iteration(self.iter)

    def _stop_for_nan(self, loss):
        """A NaN or infinite loss is warned of at the first iteration it shows (not at every one
        after); with stop_on_nan, the weights as they were before it are snapshotted and step stops."""
        was_finite, self.finite = self.finite, bool(np.isfinite(loss))
        if self.finite:
            return False
        if was_finite or self.stop_on_nan:
            log.warning(f"Iteration {self.iter}, loss = {loss}: the loss is not finite "
                        "(a learning rate too high, or bad data?)")
        if not self.stop_on_nan:
            return False
        log.info(f"Stopping at iteration {self.iter} (stop_on_nan), before its update")
        self.snapshot()
        self.requested = "stop_on_nan"
        return True

    def solve(self, resume_file=None):
        sp = self.param
        log.info(f"Solving {self.net.name}")
        log.info(f"Learning Rate Policy: {sp.lr_policy}")
        if resume_file:
            log.info(f"Restoring previous solver status from {resume_file}")
            self.restore(resume_file)
        self.step(sp.max_iter - self.iter)
        if self.requested == "stop_on_nan":     # step took the snapshot
            log.info("Optimization stopped: the loss is not finite.")
            return
        stopped = self.requested == "stop"
        if sp.snapshot_after_train and (not sp.snapshot or self.iter % sp.snapshot != 0):
            self.snapshot()
        if stopped:
            log.info("Optimization stopped early.")
            return
        if sp.display and self.iter % sp.display == 0:
            loss = self.net.forward_from_to()
            self._update_smoothed_loss(loss, 0)
            log.info(f"Iteration {self.iter}, loss = {self.smoothed_loss:.6g}")
        if sp.test_interval and self.iter % sp.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")

    def _update_smoothed_loss(self, loss, start_iter):
        n = self.param.average_loss
        if len(self.losses) < n:
            self.losses.append(loss)
        else:
            self.losses[(self.iter - start_iter) % n] = loss
        self.smoothed_loss = sum(self.losses) / len(self.losses)

    def _log_outputs(self, net, kind, values):
        idx = 0
        for name, v in zip(net.outputs, values):
            for x in np.asarray(v).ravel():
                log.info(f"    {kind} net output #{idx}: {net.output_line(name, x)}")
                idx += 1

    def apply_update(self):
        sp = self.param
        rate = learning_rate(sp, self.iter, self.lr_state)
        if sp.display and self.iter % sp.display == 0:
            log.info(f"Iteration {self.iter}, lr = {rate:.6g}")
        params = self.net.learnable_params
        if sp.clip_gradients >= 0:
            norm = np.sqrt(sum(float((b.diff.astype(np.float64) ** 2).sum()) for b in params))
            if norm > sp.clip_gradients:
                f = sp.clip_gradients / norm
                log.info(f"Gradient clipping: scaling down gradients (L2 norm {norm:.6g} > "
                         f"{sp.clip_gradients:g}) by scale factor {f:.6g}")
                for b in params:
                    b.diff *= f
        for i, b in enumerate(params):
            lr_mult = self.net.params_lr[i]
            g = b.diff
            if sp.iter_size > 1:
                g *= 1.0 / sp.iter_size
            decay = sp.weight_decay * self.net.params_weight_decay[i]
            if decay:
                if sp.regularization_type == "L2":
                    g += decay * b.data
                elif sp.regularization_type == "L1":
                    g += decay * np.sign(b.data)
                else:
                    raise CaffeError(f"unknown regularization_type '{sp.regularization_type}' (L1 or L2)")
            self.rule.compute(g, self.history[i], rate * lr_mult, self.iter)
            if b.mask is not None:
                g *= b.mask            # a pruned weight never moves
            b.data -= g

    def add_callback(self, on_start, on_gradients_ready=None):
        """pycaffe's: call on_start() before each iteration's forward, on_gradients_ready() between
        its backward and the update; or add_callback(obj) with those two methods (pycaffe's NCCL)."""
        if on_gradients_ready is None:
            if not (callable(getattr(on_start, "on_start", None)) and
                    callable(getattr(on_start, "on_gradients_ready", None))):
                raise TypeError("add_callback takes (on_start, on_gradients_ready) callables, or an "
                                "object with on_start() and on_gradients_ready() (an NCCL)")
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        self.callbacks.append((on_start, on_gradients_ready))

    def share_weights(self, net):
        """pycaffe's: `net` uses this solver's train-net weights."""
        net.share_trained_layers_with(self.net)

    # ------------------------------------------------------------ testing
    def test_all(self):
        if self.parallel and not self.parallel.root:    # rank 0 alone tests and snapshots
            return
        for i in range(len(self.test_nets)):
            self.test(i)

    def test(self, i):
        sp, net = self.param, self.test_nets[i]
        log.info(f"Iteration {self.iter}, Testing net (#{i})")
        loss, means = net.average_outputs(sp.test_iter[i])
        if sp.test_compute_loss:
            log.info(f"Test loss: {loss:.6g}")
        self._log_outputs(net, "Test", means)
        return dict(zip(net.outputs, means))

    # ------------------------------------------------------------ snapshots
    def _prefix(self):
        """Caffe's: the solver file's path without its extension when no prefix is given, and the
        solver file's name inside the prefix when the prefix is a directory."""
        sp, named = self.param, self.source != "<solver>"
        if not sp.snapshot_prefix:
            return os.path.splitext(self.source)[0] if named else "snapshot"
        if os.path.isdir(sp.snapshot_prefix):
            stem = os.path.splitext(os.path.basename(self.source))[0] if named else "snapshot"
            return os.path.join(sp.snapshot_prefix, stem)
        return sp.snapshot_prefix

    def snapshot(self):
        if self.parallel and not self.parallel.root:
            return None, None
        hdf5 = self.param.snapshot_format == pb.SolverParameter.HDF5
        ext = ".h5" if hdf5 else ""
        base = f"{self._prefix()}_iter_{self.iter}"
        model = base + ".caffemodel" + ext
        kind = "HDF5 file" if hdf5 else "binary proto file"
        log.info(f"Snapshotting to {kind} {model}")
        io.write_weights(model, self.net.to_proto(self.param.snapshot_diff), "hdf5" if hdf5 else "binaryproto")
        state = pb.SolverState(iter=self.iter, learned_net=model,
                               current_step=self.lr_state["current_step"])
        for hs in self.history:
            for h in hs:
                io.array_to_blob(h, state.history.add())
        path = base + ".solverstate" + ext
        log.info(f"Snapshotting solver state to {kind} {path}")
        io.write_solverstate(path, state)
        return model, path

    def restore(self, path):
        st = io.read_solverstate(str(path))
        flat = [h for hs in self.history for h in hs]
        if len(st.history) != len(flat):
            raise CaffeError(f"{path}: {len(st.history)} history blobs, but this solver needs {len(flat)}; "
                             "was it written for another net or solver type?")
        if st.learned_net:
            self.net.copy_trained_layers_from(st.learned_net)
        for h, bp in zip(flat, st.history):
            a = io.blob_to_array(bp)
            if a.size != h.size:
                raise CaffeError(f"{path}: history blob of shape {a.shape} does not fit {h.shape}")
            h[...] = a.reshape(h.shape)
        self.iter = st.iter
        self.lr_state["current_step"] = st.current_step
        for layer in self.net.layers:
            if hasattr(layer, "skip_batches"):
                layer.skip_batches(self.iter * self.param.iter_size)
