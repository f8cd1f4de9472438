"""RNN, LSTM, LSTMUnit: forward against per-stream, per-step loops written from Caffe's equations,
backward by finite differences, and the param blobs in Caffe's order and shapes."""
import numpy as np
import pytest

from gradcheck import check_gradient, forward, make_layer
from minicaffe import rng
from minicaffe.errors import CaffeError
from minicaffe.filler import fill

FILLERS = ('weight_filler { type: "uniform" min: -0.6 max: 0.6 } '
           'bias_filler { type: "uniform" min: -0.3 max: 0.3 }')
CONT = np.array([[0, 0, 0], [1, 1, 0], [1, 0, 1], [1, 1, 1]], np.float32)   # new sequences inside


def text(kind, H=4, expose=False, extra=FILLERS):
    return (f'type: "{kind}" recurrent_param {{ num_output: {H} {extra} '
            f'expose_hidden: {str(expose).lower()} }}')


def r(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


def sig(v):
    return 1 / (1 + np.exp(-v))


def rnn_ref(params, x, cont, xs=None, h0=None):
    """One stream at a time, one step at a time, in float64."""
    p = [w.astype(np.float64) for w in params]
    w_xh, b_h = p[:2]
    w_s = p[2] if xs is not None else None
    w_hh, w_ho, b_o = p[-3:]
    T, N = cont.shape
    out = np.zeros((T, N, len(b_h)))
    for n in range(N):
        h = np.zeros(len(b_h)) if h0 is None else h0[0, n].astype(np.float64)
        for t in range(T):
            a = w_hh @ (cont[t, n] * h) + w_xh @ x[t, n].ravel() + b_h
            if w_s is not None:
                a += w_s @ xs[n].ravel()
            h = np.tanh(a)
            out[t, n] = np.tanh(w_ho @ h + b_o)
    return out


def lstm_ref(params, x, cont, xs=None, h0=None, c0=None):
    p = [w.astype(np.float64) for w in params]
    w_xc, b_c, w_hc = p[0], p[1], p[-1]
    w_s = p[2] if xs is not None else None
    T, N = cont.shape
    H = w_hc.shape[1]
    out = np.zeros((T, N, H))
    finals = []
    for n in range(N):
        h = np.zeros(H) if h0 is None else h0[0, n].astype(np.float64)
        c = np.zeros(H) if c0 is None else c0[0, n].astype(np.float64)
        for t in range(T):
            z = w_xc @ x[t, n].ravel() + b_c + w_hc @ (cont[t, n] * h)
            if w_s is not None:
                z += w_s @ xs[n].ravel()
            i, f, o, g = sig(z[:H]), sig(z[H:2 * H]), sig(z[2 * H:3 * H]), np.tanh(z[3 * H:])
            c = cont[t, n] * f * c + i * g
            h = o * np.tanh(c)
            out[t, n] = h
        finals.append((h, c))
    return out, np.array([f[0] for f in finals]), np.array([f[1] for f in finals])


def params_of(layer):
    return [b.data.copy() for b in layer.blobs]


# -- param blobs --

@pytest.mark.parametrize("static", [False, True])
def test_param_blobs_in_caffes_order(static):
    H, x, xs = 3, r(2, 2, 5, 2), r(2, 7)
    bottoms = [x, CONT[:2, :2]] + ([xs] if static else [])
    s = [(H, 7)] if static else []
    rnn, _, top = make_layer(text("RNN", H), bottoms)
    assert [b.shape for b in rnn.blobs] == [(H, 10), (H,)] + s + [(H, H), (H, H), (H,)]
    assert top[0].shape == (2, 2, H)
    s = [(4 * H, 7)] if static else []
    lstm, _, top = make_layer(text("LSTM", H), bottoms)
    assert [b.shape for b in lstm.blobs] == [(4 * H, 10), (4 * H,)] + s + [(4 * H, H)]
    assert top[0].shape == (2, 2, H)


def test_exposed_hidden_blob_counts_and_shapes():
    x, h0 = r(3, 2, 4), r(1, 2, 5)
    layer, _, top = make_layer(text("LSTM", 5, expose=True), [x, CONT[:3, :2], h0, h0], n_top=3)
    assert [t.shape for t in top] == [(3, 2, 5), (1, 2, 5), (1, 2, 5)]
    assert not layer.static
    layer, _, top = make_layer(text("LSTM", 5, expose=True), [x, CONT[:3, :2], r(2, 3), h0, h0],
                               n_top=3)
    assert layer.static and layer.blobs[2].shape == (20, 3)
    with pytest.raises(CaffeError, match="at least 4 bottom"):
        make_layer(text("LSTM", 5, expose=True), [x, CONT[:3, :2], h0], n_top=3)
    with pytest.raises(CaffeError, match=r"at most 5 bottoms \(x, cont, x_static, h0, c0\)"):
        make_layer(text("LSTM", 5, expose=True), [x, CONT[:3, :2], r(2, 3), h0, h0, h0], n_top=3)
    with pytest.raises(CaffeError, match="takes 2 top"):
        make_layer(text("RNN", 5, expose=True), [x, CONT[:3, :2], h0], n_top=1)


def test_fillers_draw_in_caffes_order():
    """Each time step's InnerProduct of Caffe's unrolled net fills its copy; the first is kept."""
    H, T, K = 3, 3, 4
    fl = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "uniform" min: -1 max: 1 }'
    rng.seed(7)
    layer, _, _ = make_layer(text("RNN", H, extra=fl), [r(T, 2, K), CONT[:T, :2]])
    after = rng.get().random()
    rng.seed(7)
    lp = make_layer(text("RNN", H, extra=fl), [r(T, 2, K), CONT[:T, :2]])[0].param.recurrent_param
    rng.seed(7)
    w, b = lp.weight_filler, lp.bias_filler
    want = [fill(w, (H, K)), fill(b, (H,)), fill(w, (H, H)), fill(w, (H, H)), fill(b, (H,))]
    for _ in range(T - 1):
        fill(w, (H, H)), fill(w, (H, H)), fill(b, (H,))
    for got, ref in zip(layer.blobs, want):
        np.testing.assert_array_equal(got.data, ref)
    assert rng.get().random() == after


# -- forward --

@pytest.mark.parametrize("static", [False, True])
def test_rnn_forward(static):
    x, xs = r(4, 3, 2, 3), r(3, 5, seed=1)
    bottoms = [x, CONT] + ([xs] if static else [])
    layer, bottom, top = make_layer(text("RNN", 4), bottoms)
    forward(layer, bottom, top)
    ref = rnn_ref(params_of(layer), x, CONT, xs if static else None)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("static", [False, True])
def test_lstm_forward(static):
    x, xs = r(4, 3, 5), r(3, 2, 2, seed=1)
    bottoms = [x, CONT] + ([xs] if static else [])
    layer, bottom, top = make_layer(text("LSTM", 5), bottoms)
    forward(layer, bottom, top)
    ref, _, _ = lstm_ref(params_of(layer), x, CONT, xs if static else None)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-6)


def test_exposed_hidden_forward():
    x, cont = r(3, 2, 4), np.ones((3, 2), np.float32)
    cont[1, 0] = 0
    h0, c0 = r(1, 2, 3, seed=1), r(1, 2, 3, seed=2)
    layer, bottom, top = make_layer(text("LSTM", 3, expose=True), [x, cont, h0, c0], n_top=3)
    forward(layer, bottom, top)
    ref, hT, cT = lstm_ref(params_of(layer), x, cont, h0=h0, c0=c0)
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(top[1].data[0], hT, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(top[2].data[0], cT, rtol=1e-5, atol=1e-6)
    layer, bottom, top = make_layer(text("RNN", 3, expose=True), [x, cont, h0], n_top=2)
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, rnn_ref(params_of(layer), x, cont, h0=h0),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carries_across_forwards(kind):
    """Without expose_hidden, a forward starts from the previous forward's final states."""
    x1, x2, cont = r(3, 2, 4), r(3, 2, 4, seed=1), np.ones((3, 2), np.float32)
    layer, bottom, top = make_layer(text(kind, 3), [x1, cont])
    forward(layer, bottom, top)
    p = params_of(layer)
    if kind == "LSTM":
        first, hT, cT = lstm_ref(p, x1, cont)
        np.testing.assert_allclose(top[0].data, first, rtol=1e-5, atol=1e-6)
        second = lstm_ref(p, x2, cont, h0=hT[None], c0=cT[None])[0]
    else:
        first = rnn_ref(p, x1, cont)      # h_T is not an output of RNN: check through o
        full = rnn_ref(p, np.concatenate([x1, x2]), np.concatenate([cont, cont]))
        second = full[3:]
    bottom[0].data[...] = x2
    forward(layer, bottom, top)
    np.testing.assert_allclose(top[0].data, second, rtol=1e-5, atol=1e-6)
    layer.reset()
    forward(layer, bottom, top)
    fresh = lstm_ref(p, x2, cont)[0] if kind == "LSTM" else rnn_ref(p, x2, cont)
    np.testing.assert_allclose(top[0].data, fresh, rtol=1e-5, atol=1e-6)


# -- backward --

@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static", [False, True])
def test_gradient(kind, static):
    bottoms = [r(4, 3, 2, 2), CONT] + ([r(3, 3, seed=1)] if static else [])
    check_gradient(text(kind, 3), bottoms, check_bottom=[0, 2] if static else [0])


def test_lstm_gradient_longer_sequence_without_resets():
    cont = np.ones((4, 2), np.float32)
    cont[0] = 0
    check_gradient(text("LSTM", 5), [r(4, 2, 3), cont], check_bottom=[0])


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_exposed_hidden_gradient(kind):
    """Caffe's unrolled net sends no gradient to h0/c0 and takes none from the final-state tops."""
    n = 1 if kind == "RNN" else 2
    x, xs, cont = r(3, 2, 4), r(2, 3, seed=1), np.ones((3, 2), np.float32)
    cont[2, 1] = 0
    states = [r(1, 2, 3, seed=2 + j) for j in range(n)]
    t = text(kind, 3, expose=True)
    bottoms = [x, cont, xs] + states
    check_gradient(t, bottoms, n_top=1 + n, check_bottom=[0, 2], loss=True)

    def grads(final_diff):
        rng.seed(3)
        layer, bottom, top = make_layer(t, bottoms, n_top=1 + n)
        forward(layer, bottom, top)
        top[0].diff[...] = r(3, 2, 3, seed=9)
        for tp in top[1:]:
            tp.diff[...] = final_diff
        for b in bottom[3:]:
            b.diff[...] = 7
        layer.backward(top, [True, False, True] + [True] * n, bottom)
        for b in bottom[3:]:
            np.testing.assert_array_equal(b.diff, 0)
        return [bottom[0].diff.copy(), bottom[2].diff.copy()] + [p.diff.copy() for p in layer.blobs]

    for a, b in zip(grads(0), grads(5)):
        np.testing.assert_array_equal(a, b)


def test_cont_takes_no_gradient():
    layer, _, _ = make_layer(text("LSTM", 3), [r(2, 2, 3), CONT[:2, :2]])
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


# -- LSTMUnit --

def unit_ref(c_prev, X, cont):
    H = c_prev.shape[2]
    c, h = np.zeros(c_prev.shape), np.zeros(c_prev.shape)
    for n in range(c_prev.shape[1]):
        z = X[0, n].astype(np.float64)
        i, f, o, g = sig(z[:H]), sig(z[H:2 * H]), sig(z[2 * H:3 * H]), np.tanh(z[3 * H:])
        c[0, n] = cont[0, n] * f * c_prev[0, n] + i * g
        h[0, n] = o * np.tanh(c[0, n])
    return c, h


def test_lstm_unit_forward_and_gradient():
    c_prev, X, cont = r(1, 3, 4), r(1, 3, 16, seed=1), np.array([[1, 0, 1]], np.float32)
    layer, bottom, top = make_layer('type: "LSTMUnit"', [c_prev, X, cont], n_top=2)
    forward(layer, bottom, top)
    c, h = unit_ref(c_prev, X, cont)
    np.testing.assert_allclose(top[0].data, c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(top[1].data, h, rtol=1e-5, atol=1e-6)
    check_gradient('type: "LSTMUnit"', [c_prev, X, cont], n_top=2, check_bottom=[0, 1])
    assert not layer.allow_force_backward(2) and layer.allow_force_backward(0)


def test_lstm_unit_forget_gradient_for_fractional_cont():
    """Caffe differentiates f = cont * sigmoid(x_f) as if f were the sigmoid itself."""
    c_prev, X, cont = r(1, 1, 2), r(1, 1, 8, seed=1), np.array([[0.5]], np.float32)
    layer, bottom, top = make_layer('type: "LSTMUnit"', [c_prev, X, cont], n_top=2)
    forward(layer, bottom, top)
    top[0].diff[...] = 1
    top[1].diff[...] = 0
    layer.backward(top, [True, True, False], bottom)
    f = 0.5 * sig(X[0, 0, 2:4].astype(np.float64))
    np.testing.assert_allclose(bottom[1].diff[0, 0, 2:4], c_prev[0, 0] * f * (1 - f), rtol=1e-5)
    np.testing.assert_allclose(bottom[0].diff[0, 0], f, rtol=1e-5)


# -- errors --

@pytest.mark.parametrize("kind,bottoms,msg", [
    ("LSTM", [r(3, 2), CONT[:3, :2]], "at least 3 axes"),
    ("LSTM", [r(3, 2, 4), CONT[:2, :2]], "cont"),
    ("RNN", [r(3, 2, 4), CONT[:3, :2], r(3, 5)], "x_static"),
])
def test_shape_errors(kind, bottoms, msg):
    with pytest.raises(CaffeError, match=msg):
        make_layer(text(kind, 3), bottoms)


def test_reshape_errors():
    layer, bottom, top = make_layer(text("LSTM", 3, expose=True),
                                    [r(3, 2, 4), CONT[:3, :2], r(1, 2, 3), r(1, 2, 3)], n_top=3)
    bottom[3].reshape(1, 2, 4)
    with pytest.raises(CaffeError, match=r"c0\) must be 1 x N x num_output = \(1, 2, 3\)"):
        layer.reshape(bottom, top)
    layer, bottom, top = make_layer(text("RNN", 3), [r(3, 2, 4), CONT[:3, :2]])
    bottom[0].reshape(2, 2, 4)
    with pytest.raises(CaffeError, match="number of timesteps changed"):
        layer.reshape(bottom, top)
    with pytest.raises(CaffeError, match="num_output must be positive"):
        make_layer('type: "RNN"', [r(3, 2, 4), CONT[:3, :2]])
    with pytest.raises(CaffeError, match="gates"):
        make_layer('type: "LSTMUnit"', [r(1, 2, 3), r(1, 2, 8), CONT[:1, :2]], n_top=2)


def test_batch_size_may_change():
    layer, bottom, top = make_layer(text("LSTM", 3), [r(2, 3, 4), CONT[:2]])
    forward(layer, bottom, top)
    bottom[0].reshape(2, 1, 4)
    bottom[1].reshape(2, 1)
    bottom[0].data[...] = r(2, 1, 4, seed=4)
    forward(layer, bottom, top)
    assert top[0].shape == (2, 1, 3)
    ref = lstm_ref(params_of(layer), bottom[0].data, bottom[1].data)[0]
    np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-6)


def test_lstm_unit_tanh_rounds_once():
    """Caffe's tanh is 2 sigmoid(2x) - 1 all in double: small cell inputs keep full float precision
    (a sigmoid rounded to float first is off by up to 1e-3 of a 1e-4 value)."""
    H = 8
    X = np.zeros((1, 2, 4 * H), np.float32)
    X[0, :, 3 * H:] = r(2, H, seed=3) * 1e-4
    layer, bottom, top = make_layer('type: "LSTMUnit"', [np.zeros((1, 2, H), np.float32), X,
                                                         np.ones((1, 2), np.float32)], n_top=2)
    forward(layer, bottom, top)
    g = np.tanh(X[0, :, 3 * H:].astype(np.float64))
    np.testing.assert_allclose(top[0].data[0], 0.5 * g, rtol=1e-6)


def test_lstm_unit_writes_both_diffs_when_either_is_asked():
    """Caffe's LSTMUnit backward returns only when neither c_prev nor the gates want a gradient."""
    c_prev, X, cont = r(1, 2, 3), r(1, 2, 12, seed=1), np.ones((1, 2), np.float32)
    layer, bottom, top = make_layer('type: "LSTMUnit"', [c_prev, X, cont], n_top=2)
    forward(layer, bottom, top)
    top[0].diff[...], top[1].diff[...] = r(1, 2, 3, seed=2), r(1, 2, 3, seed=3)
    layer.backward(top, [True, True, False], bottom)
    full = [bottom[0].diff.copy(), bottom[1].diff.copy()]
    for down in ([True, False, False], [False, True, False]):
        for b in bottom[:2]:
            b.diff[...] = 7
        layer.backward(top, down, bottom)
        for b, f in zip(bottom, full):
            np.testing.assert_array_equal(b.diff, f)
    for b in bottom[:2]:
        b.diff[...] = 7
    layer.backward(top, [False, False, False], bottom)
    assert (bottom[0].diff == 7).all() and (bottom[1].diff == 7).all()


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_inputs_get_gradient_whatever_propagate_down(kind):
    """Caffe backpropagates through the whole unrolled net, whose input transforms have
    propagate_down: true, into diffs shared with x and x_static."""
    bottoms = [r(3, 2, 4), CONT[:3, :2], r(2, 5, seed=1)]
    layer, bottom, top = make_layer(text(kind, 3), bottoms)
    forward(layer, bottom, top)
    top[0].diff[...] = r(3, 2, 3, seed=2)
    layer.backward(top, [True, False, True], bottom)
    full = [bottom[0].diff.copy(), bottom[2].diff.copy()]
    assert np.abs(full[0]).sum() > 0 and np.abs(full[1]).sum() > 0
    bottom[0].diff[...] = bottom[2].diff[...] = 7
    layer.backward(top, [False, False, False], bottom)
    np.testing.assert_allclose(bottom[0].diff, full[0], rtol=1e-6)
    np.testing.assert_allclose(bottom[2].diff, full[1], rtol=1e-6)
