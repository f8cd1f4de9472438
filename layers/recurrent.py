"""Recurrent layers: RNN, LSTM and LSTMUnit, with Caffe's unrolled semantics.

Caffe builds RNN and LSTM as an unrolled net of InnerProduct, Scale, Eltwise, TanH and LSTMUnit
layers; here the same arithmetic runs as one loop over the time steps, each step vectorized over
the streams, and backward is backprop through time over what forward kept. What the unrolled net
implies, and is kept here:

- bottoms x (T x N x ...), cont (T x N), optional x_static (N x ...), then with expose_hidden the
  initial states (h0; h0, c0 for LSTM; each 1 x N x num_output); tops the output, then with
  expose_hidden the final states in the same order.
- cont_t multiplies the h_{t-1} fed to the recurrent transform (and, in LSTMUnit, the forget gate).
- without expose_hidden the initial states are the final ones of the previous forward (zero at
  first): state carries across batches, and cont decides whether it is used.
- no gradient reaches cont, the initial states (their Input layer in the unrolled net needs no
  backward) or from the final-state tops (only their data is shared): those diffs are ignored.
- x and x_static get their gradient whenever backward runs, whatever propagate_down says: Caffe
  runs the whole unrolled backward, whose input transforms have propagate_down: true, into diffs
  shared with those bottoms.
- the params, in Caffe's order: the x transform's weight and bias, the static transform's weight,
  then the per-step weights (RNN: W_hh, W_ho, b_o; LSTM: W_hc). Each per-step InnerProduct of the
  unrolled net fills its own copy before the first is shared, so later steps still draw numbers.
"""
import numpy as np

from minicaffe.filler import fill
from minicaffe.layer import Layer, prod, register


def _sigmoid(x):
    """As Caffe's LSTMUnit computes it: in double, rounded to float."""
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _tanh(x):
    """Caffe's LSTMUnit tanh, 2 sigmoid(2x) - 1: its sigmoid(2. * x) takes a double, so the whole
    of it runs in double and is rounded to float once (rounding the sigmoid first would cost small
    values up to 1e-3 of their size)."""
    with np.errstate(over="ignore"):
        return (2.0 / (1.0 + np.exp(-2.0 * x.astype(np.float64))) - 1.0).astype(np.float32)


def lstm_cell(c_prev, gates, cont):
    """One LSTMUnit step: c_prev (N, H), gates (N, 4H) as [i, f, o, g], cont (N,) ->
    c, h and the activations backward needs."""
    H = c_prev.shape[1]
    i = _sigmoid(gates[:, :H])
    f = cont[:, None] * _sigmoid(gates[:, H:2 * H])
    o = _sigmoid(gates[:, 2 * H:3 * H])
    g = _tanh(gates[:, 3 * H:])
    c = f * c_prev + i * g
    tanh_c = _tanh(c)
    return c, o * tanh_c, (c_prev, i, f, o, g, tanh_c)


def lstm_cell_backward(dc, dh, acts):
    """Gradients to c_prev and the gates. As Caffe, the forget gate's derivative is taken of
    f = cont * sigmoid (exact for the 0/1 cont it is meant for)."""
    c_prev, i, f, o, g, tanh_c = acts
    dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
    dgates = np.concatenate([dc_total * g * i * (1 - i), dc_total * c_prev * f * (1 - f),
                             dh * tanh_c * o * (1 - o), dc_total * i * (1 - g * g)], axis=1)
    return dc_total * f, dgates


class Recurrent(Layer):
    """What RNN and LSTM share: the blob layout, the input transforms, the carried state.

    Subclasses set `state_names`, `gates` (the x transform's width in units of num_output) and
    implement step_params, run and run_backward."""
    state_names = ()
    gates = 1

    def __init__(self, param, phase):
        super().__init__(param, phase)
        exposed = len(self.state_names) if param.recurrent_param.expose_hidden else 0
        self.min_bottom = 2 + exposed
        self.n_top = 1 + exposed

    # -- set up --
    def setup(self, bottom, top):
        rp = self.param.recurrent_param
        self.H = rp.num_output
        if self.H <= 0:
            raise self.error("recurrent_param.num_output must be positive")
        self.expose = rp.expose_hidden
        n_states = len(self.state_names) if self.expose else 0
        if len(bottom) > 3 + n_states:
            names = ("x", "cont", "x_static") + (self.state_names if self.expose else ())
            raise self.error(f"takes at most {len(names)} bottoms ({', '.join(names)}), "
                             f"got {len(bottom)}")
        self.static = len(bottom) > 2 + n_states
        self.check_x(bottom[0].shape)
        self.T = bottom[0].shape[0]
        self.K = prod(bottom[0].shape[2:])
        G = self.gates * self.H
        w, b = rp.weight_filler, rp.bias_filler
        specs = [((G, self.K), w), ((G,), b)]
        if self.static:
            self.check_static(bottom[2].shape, bottom[0].shape[1])
            self.Ks = prod(bottom[2].shape[1:])
            specs.append(((G, self.Ks), w))
        step = self.step_params(w, b)
        for shape, fp in specs + step:
            self.new_param(shape).data[...] = fill(fp, shape)
        for _ in range(self.T - 1):      # the unused copies of the later time steps
            for shape, fp in step:
                fill(fp, shape)
        self.carry = None

    def check_x(self, shape):
        if len(shape) < 3:
            raise self.error(f"bottom[0] (x) must be T x N x ... with at least 3 axes (the input "
                             f"transform runs over axes 2 and up), got shape {shape}")

    def check_static(self, shape, N):
        if len(shape) < 2 or shape[0] != N:
            raise self.error(f"bottom[2] (x_static) must be N x ... with N = {N} streams and at "
                             f"least 2 axes, got shape {shape}")

    def reshape(self, bottom, top):
        x, cont = bottom[0].shape, bottom[1].shape
        self.check_x(x)
        T, N = x[:2]
        if T != self.T:
            raise self.error(f"input number of timesteps changed: set up for {self.T}, got x {x}")
        if prod(x[2:]) != self.K:
            raise self.error(f"x has {prod(x[2:])} inputs per step (shape {x}), the weights were "
                             f"made for {self.K}")
        if cont != (T, N):
            raise self.error(f"bottom[1] (cont) must be T x N = {(T, N)}, got {cont}")
        if self.static:
            self.check_static(bottom[2].shape, N)
            if prod(bottom[2].shape[1:]) != self.Ks:
                raise self.error(f"x_static has {prod(bottom[2].shape[1:])} inputs per stream "
                                 f"(shape {bottom[2].shape}), the weights were made for {self.Ks}")
        state_shape = (1, N, self.H)
        for j, blob in enumerate(self.state_bottoms(bottom)):
            if blob.shape != state_shape:
                raise self.error(f"bottom[{2 + self.static + j}] ({self.state_names[j]}) must be "
                                 f"1 x N x num_output = {state_shape}, got {blob.shape}")
        top[0].reshape(T, N, self.H)
        for t in top[1:]:
            t.reshape(state_shape)

    def state_bottoms(self, bottom):
        return bottom[2 + self.static:] if self.expose else []

    def reset(self):
        """Caffe's Reset: the next forward starts from zero states."""
        self.carry = None

    # -- forward / backward --
    def forward(self, bottom, top):
        T, N = bottom[0].shape[:2]
        G = self.gates * self.H
        x = bottom[0].data.reshape(T * N, self.K)
        pre = x @ self.blobs[0].peek.T + self.blobs[1].peek
        pre = pre.reshape(T, N, G)
        if self.static:
            pre += (bottom[2].data.reshape(N, self.Ks) @ self.blobs[2].peek.T)[None]
        if self.expose:
            states = [b.data[0] for b in self.state_bottoms(bottom)]
        else:
            if self.carry is None or self.carry[0].shape != (N, self.H):
                self.carry = [np.zeros((N, self.H), np.float32) for _ in self.state_names]
            states = self.carry
        cont = bottom[1].data.reshape(T, N)
        out, final = self.run(pre, cont, states)
        top[0].data[...] = out
        if self.expose:
            for t, s in zip(top[1:], final):
                t.data[0] = s
        else:
            self.carry = [s.copy() for s in final]

    def backward(self, top, propagate_down, bottom):
        T, N = bottom[0].shape[:2]
        G = self.gates * self.H
        dpre = self.run_backward(top[0].diff.reshape(T, N, self.H), bottom[1].data.reshape(T, N))
        flat = dpre.reshape(T * N, G)
        self.blobs[0].diff += flat.T @ bottom[0].data.reshape(T * N, self.K)
        self.blobs[1].diff += flat.sum(axis=0)
        np.matmul(flat, self.blobs[0].peek, out=bottom[0].diff.reshape(T * N, self.K))
        if self.static:
            dstatic = dpre.sum(axis=0)
            self.blobs[2].diff += dstatic.T @ bottom[2].data.reshape(N, self.Ks)
            np.matmul(dstatic, self.blobs[2].peek, out=bottom[2].diff.reshape(N, self.Ks))
        first = 2 + self.static
        for j, blob in enumerate(self.state_bottoms(bottom)):
            if propagate_down[first + j]:
                blob.diff[...] = 0      # Caffe's unrolled net sends nothing to its initial states

    def allow_force_backward(self, i):
        return i != 1


@register("RNN")
class RNN(Recurrent):
    """h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]),
    o_t = tanh(W_ho h_t + b_o); the top is o."""
    state_names = ("h0",)

    def step_params(self, w, b):
        H = self.H
        return [((H, H), w), ((H, H), w), ((H,), b)]       # W_hh, W_ho, b_o

    def step_blobs(self):
        return self.blobs[2 + self.static:]

    def run(self, pre, cont, states):
        w_hh, w_ho, b_o = (p.peek for p in self.step_blobs())
        h = states[0]
        self.h_conted = np.empty_like(pre)
        self.h = np.empty_like(pre)
        for t in range(pre.shape[0]):
            self.h_conted[t] = cont[t][:, None] * h
            h = self.h[t] = np.tanh(self.h_conted[t] @ w_hh.T + pre[t])
        self.o = np.tanh(self.h @ w_ho.T + b_o)
        return self.o, [h]

    def run_backward(self, do, cont):
        w_hh, w_ho, b_o = self.step_blobs()
        H = self.H
        do_pre = (do * (1 - self.o * self.o)).reshape(-1, H)
        w_ho.diff += do_pre.T @ self.h.reshape(-1, H)
        b_o.diff += do_pre.sum(axis=0)
        dh_out = (do_pre @ w_ho.peek).reshape(self.h.shape)
        dpre = np.empty_like(dh_out)
        dh = np.zeros_like(dh_out[0])
        for t in reversed(range(dpre.shape[0])):
            dpre[t] = (dh_out[t] + dh) * (1 - self.h[t] * self.h[t])
            dh = cont[t][:, None] * (dpre[t] @ w_hh.peek)
        w_hh.diff += dpre.reshape(-1, H).T @ self.h_conted.reshape(-1, H)
        return dpre


@register("LSTM")
class LSTM(Recurrent):
    """gates_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static], split as
    [i, f, o, g]; then the LSTMUnit step. The top is h."""
    state_names = ("h0", "c0")
    gates = 4

    def step_params(self, w, b):
        return [((4 * self.H, self.H), w)]                  # W_hc

    def run(self, pre, cont, states):
        w_hc = self.blobs[-1].peek
        h, c = states
        self.h_conted = np.empty(pre.shape[:2] + (self.H,), np.float32)
        self.h = np.empty_like(self.h_conted)
        self.acts = []
        for t in range(pre.shape[0]):
            self.h_conted[t] = cont[t][:, None] * h
            c, h, acts = lstm_cell(c, self.h_conted[t] @ w_hc.T + pre[t], cont[t])
            self.h[t] = h
            self.acts.append(acts)
        return self.h, [h, c]

    def run_backward(self, dh_top, cont):
        w_hc = self.blobs[-1]
        T, N = dh_top.shape[:2]
        dpre = np.empty((T, N, 4 * self.H), np.float32)
        dh = np.zeros_like(dh_top[0])
        dc = np.zeros_like(dh)
        for t in reversed(range(T)):
            dc, dpre[t] = lstm_cell_backward(dc, dh_top[t] + dh, self.acts[t])
            dh = cont[t][:, None] * (dpre[t] @ w_hc.peek)
        w_hc.diff += dpre.reshape(T * N, -1).T @ self.h_conted.reshape(-1, self.H)
        return dpre


@register("LSTMUnit")
class LSTMUnit(Layer):
    """One LSTM step: bottoms c_prev (1 x N x H), gates (1 x N x 4H), cont (1 x N);
    tops c and h (1 x N x H). No gradient to cont; as Caffe, a backward asked for either of
    c_prev and gates writes both diffs."""
    n_bottom = 3
    n_top = 2

    def reshape(self, bottom, top):
        c, x, cont = (b.shape for b in bottom)
        if len(c) != 3 or c[0] != 1:
            raise self.error(f"bottom[0] (c_prev) must be 1 x N x H, got {c}")
        N, H = c[1:]
        if x != (1, N, 4 * H):
            raise self.error(f"bottom[1] (gates) must be 1 x N x 4H = {(1, N, 4 * H)}, got {x}")
        if cont != (1, N):
            raise self.error(f"bottom[2] (cont) must be 1 x N = {(1, N)}, got {cont}")
        top[0].reshape(c)
        top[1].reshape(c)

    def forward(self, bottom, top):
        c, h, self.acts = lstm_cell(bottom[0].data[0], bottom[1].data[0], bottom[2].data[0])
        top[0].data[0] = c
        top[1].data[0] = h

    def backward(self, top, propagate_down, bottom):
        if not (propagate_down[0] or propagate_down[1]):
            return
        dc_prev, dgates = lstm_cell_backward(top[0].diff[0], top[1].diff[0], self.acts)
        bottom[0].diff[0] = dc_prev
        bottom[1].diff[0] = dgates

    def allow_force_backward(self, i):
        return i != 2
