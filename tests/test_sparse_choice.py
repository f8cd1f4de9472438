"""The choice between dense and sparse products (minicaffe/sparse.py), with scripted timings: which
product wins, that noise does not decide it, that a choice that stops winning is dropped, and that a
layer settled on dense takes its own dense path."""
import numpy as np
import pytest

from minicaffe import sparse
from minicaffe.blob import Blob
from minicaffe.sparse import SparseChooser, pick


class Layer:
    path = None


class FakeCSR:
    """Stands in for SlicedCSR: counts the products run."""

    def __init__(self, runs):
        self.runs = runs

    def matmul(self, x, out, threads=True):
        self.runs.append("sparse" if threads else "sparse-1t")


class Script:
    """A chooser's clock: each product takes the time `times(name, call)` says (call counts all
    timed calls so far), and runs counts every product run, timed or not."""

    def __init__(self, times):
        self.times, self.calls, self.runs = times, 0, []
        self.chooser = SparseChooser()
        self.chooser.time_call = self.time_call
        self.csr, self.layer = FakeCSR(self.runs), Layer()

    def time_call(self, name, f):
        f()
        self.calls += 1
        return self.times(name, self.calls)

    def run(self, n, shape=(8, 64)):
        x = np.empty(shape, np.float32)
        for _ in range(n):
            self.chooser.run(self.layer, self.csr, x, None, lambda: self.runs.append("dense"))


def steady(dense, one_thread, all_threads):
    table = {"dense": dense, "sparse-1t": one_thread, "sparse": all_threads}
    return lambda name, call: table[name]


def test_pick_by_median_with_a_margin_and_fewest_threads():
    assert pick({"dense": [1.0] * 5, "sparse-1t": [0.5] * 5, "sparse": [0.3] * 5}) == "sparse"
    # the product on all cores must beat the one on this thread by the margin too
    assert pick({"dense": [1.0] * 5, "sparse-1t": [0.5] * 5, "sparse": [0.46] * 5}) == "sparse-1t"
    assert pick({"dense": [1.0] * 5, "sparse-1t": [0.95] * 5, "sparse": [0.92] * 5}) == "dense"
    assert pick({"dense": [1.0] * 5, "sparse-1t": [0.95] * 5, "sparse": [0.5] * 5}) == "sparse"
    # one lucky call of a slower product, one burst of load during dense's: medians do not move
    assert pick({"dense": [1.0, 1.0, 9.0, 1.0, 1.0], "sparse-1t": [1.1, 0.1, 1.1, 1.1, 1.1],
                 "sparse": [1.2] * 5}) == "dense"


def test_trial_takes_turns_in_real_calls_then_keeps_the_winner():
    s = Script(steady(1.0, 0.5, 0.8))
    s.run(sparse.TRIAL_CALLS - 1)
    assert s.layer.path == "trial"
    # each product once untimed, then TRIAL timed rounds, all in the layer's own calls
    assert s.runs == (["dense", "sparse-1t", "sparse"] * (sparse.TRIAL + 1))[:-1]
    assert s.calls == 3 * sparse.TRIAL - 1
    s.run(1)
    assert s.layer.path == "sparse-1t" and s.calls == 3 * sparse.TRIAL
    del s.runs[:]
    s.run(10)
    assert s.runs == ["sparse-1t"] * 10 and s.layer.path == "sparse-1t"


def test_each_input_shape_has_its_own_choice():
    s = Script(lambda name, call: {"dense": 1.0, "sparse-1t": 0.5, "sparse": 0.8}[name])
    s.run(sparse.TRIAL_CALLS, shape=(8, 64))
    s.run(sparse.TRIAL_CALLS, shape=(8, 1))
    assert set(s.chooser.shapes) == {(8, 64), (8, 1)}
    assert all(sh.choice == "sparse-1t" for sh in s.chooser.shapes.values())


def test_a_choice_that_stops_winning_in_context_is_tried_again():
    """sparse-1t wins the trial; later (another process takes the core) it takes twice dense's
    time: within CHECKS rechecks the shape is tried again, and dense chosen."""
    slow = {"now": False}

    def times(name, call):
        if name == "sparse-1t" and slow["now"]:
            return 2.0
        return {"dense": 1.0, "sparse-1t": 0.5, "sparse": 1.2}[name]
    s = Script(times)
    s.run(sparse.TRIAL_CALLS)
    assert s.layer.path == "sparse-1t"
    del s.runs[:]
    s.run(sparse.RECHECK * sparse.CHECKS)
    # while it wins: dense runs once every RECHECK calls, in the chosen one's place
    assert s.runs.count("dense") == sparse.CHECKS and s.layer.path == "sparse-1t"
    assert s.runs.index("dense") == sparse.RECHECK - 1
    slow["now"] = True
    s.run(sparse.RECHECK * sparse.CHECKS)
    assert s.layer.path == "trial"
    s.run(sparse.TRIAL_CALLS)
    assert s.layer.path == "dense"


def test_a_layer_settled_on_dense_takes_its_own_path_and_looks_again_now_and_then():
    s = Script(steady(1.0, 1.0, 1.0))
    blob = Blob((8, 10))
    blob.data[...] = np.where(np.arange(80).reshape(8, 10) % 5 == 0, 1.0, 0.0)
    ch = s.chooser
    csr = ch.csr_of(blob, 8)
    assert csr is not None
    s.csr = csr
    s.csr.matmul = FakeCSR(s.runs).matmul
    for _ in range(sparse.TRIAL_CALLS):
        assert ch.csr_of(blob, 8) is csr
        s.run(1)
    assert s.layer.path == "dense"
    got = [ch.csr_of(blob, 8) for _ in range(2 * sparse.PROBE)]
    assert got.count(csr) == 2 and got.count(None) == 2 * sparse.PROBE - 2
    # a new input shape seen at a look is tried: the CSR path until it is decided
    s.run(1, shape=(10, 1))
    assert s.layer.path == "trial" and ch.csr_of(blob, 8) is csr
    # changed weights: everything is measured anew
    blob.data[0, 1] = 2.0
    assert ch.csr_of(blob, 8) is not csr and ch.shapes == {}


def test_forced_and_dense_only():
    s = Script(steady(1.0, 0.1, 0.1))
    s.chooser.forced = "sparse"
    s.run(3)
    assert s.runs == ["sparse"] * 3 and s.calls == 0 and s.layer.path == "sparse"
    blob = Blob((8, 10))
    blob.data[0, 0] = 1.0
    ch = SparseChooser()
    with sparse.dense_only():
        assert ch.csr_of(blob, 8) is None
    assert ch.csr_of(blob, 8) is not None


@pytest.mark.parametrize("batch", [1, 5])
def test_outputs_right_through_the_trial(batch):
    """Whatever product a call runs while the products take turns, the output is the layer's."""
    from gradcheck import forward, make_layer
    from minicaffe import minicaffe_pb2 as pb
    text = ('type: "InnerProduct" inner_product_param { num_output: 30 '
            'weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } }')
    x = np.random.RandomState(0).randn(batch, 40).astype(np.float32)
    layer, bottom, top = make_layer(text, [x], phase=pb.TEST)
    w = layer.blobs[0].data
    w[np.random.RandomState(1).rand(*w.shape) < 0.9] = 0
    ref = x @ w.T + layer.blobs[1].data
    del w
    paths = set()
    for _ in range(sparse.TRIAL_CALLS + 2):
        forward(layer, bottom, top)
        paths.add(layer.path)
        np.testing.assert_allclose(top[0].data, ref, rtol=1e-5, atol=1e-5)
    assert "trial" in paths and layer.path in ("dense", "sparse", "sparse-1t")
