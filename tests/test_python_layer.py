"""type: "Python" layers: pycaffe's contract (setup/reshape/forward/backward, param_str, phase,
blobs.add_blob), taking part in backward, loss weights, learning, saving and loading."""
import numpy as np
import pytest

import caffe
from minicaffe.errors import CaffeError


class Times(caffe.Layer):
    """y = k x, k from param_str (default 10)."""

    def setup(self, bottom, top):
        self.k = float(self.param_str or 10)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = self.k * top[0].diff


class Gain(caffe.Layer):
    """y = g x with a learned scalar g (a param blob made with add_blob)."""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)
        self.blobs[0].data[...] = 1

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data[0] * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff[0] += (top[0].diff * bottom[0].data).sum()
        if propagate_down[0]:
            bottom[0].diff[...] = self.blobs[0].data[0] * top[0].diff


class SquaredError(caffe.Layer):
    """A loss written in Python: 0.5 * sum((a - b)^2) / N."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("needs two bottoms")

    def reshape(self, bottom, top):
        self.d = np.zeros_like(bottom[0].data)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.d[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = (self.d ** 2).sum() / bottom[0].num / 2

    def backward(self, top, propagate_down, bottom):
        for i, sign in enumerate((1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = sign * self.d / bottom[i].num * top[0].diff[0]


class Phase(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape()

    def forward(self, bottom, top):
        top[0].data[()] = self.phase


class Broken(caffe.Layer):
    def setup(self, bottom, top):
        raise KeyError("no such thing")


def net_file(tmp_path, body, name="net.prototxt"):
    path = tmp_path / name
    path.write_text("name: 'py' force_backward: true\n"
                    "input: 'data' input_shape { dim: 6 dim: 2 dim: 3 }\n" + body)
    return str(path)


def py(name, cls, bottom="data", top=None, extra=""):
    return (f"layer {{ type: 'Python' name: '{name}' bottom: '{bottom}' top: '{top or name}' {extra}"
            f" python_param {{ module: 'test_python_layer' layer: '{cls}' }} }}\n")


def test_chain_forward_backward_and_reshape(tmp_path):
    net = caffe.Net(net_file(tmp_path, py("one", "Times") + py("two", "Times", "one")), caffe.TRAIN)
    assert net.inputs == ["data"] and net.layers[1].type == "Python"
    net.blobs["data"].data[...] = 3
    net.forward()
    assert (net.blobs["two"].data == 300).all()
    net.blobs["two"].diff[...] = 2
    net.backward()
    assert (net.blobs["data"].diff == 200).all()
    net.blobs["data"].reshape(4, 4, 4)
    net.forward()
    assert all(b.data.shape == (4, 4, 4) for b in net.blobs.values())


def test_param_str_and_phase(tmp_path):
    text = py("one", "Times").replace("layer: 'Times'", "layer: 'Times' param_str: '2.5'")
    net = caffe.Net(net_file(tmp_path, text), caffe.TEST)
    assert net.forward(data=np.ones((6, 2, 3), np.float32))["one"][0, 0, 0] == 2.5
    path = tmp_path / "phase.prototxt"
    path.write_text("layer { type: 'Python' name: 'p' top: 'phase' "
                    "python_param { module: 'test_python_layer' layer: 'Phase' } }")
    for phase in (caffe.TRAIN, caffe.TEST):
        assert caffe.Net(str(path), phase).forward()["phase"] == phase


def test_learned_blob_trains_saves_and_loads(tmp_path):
    f = net_file(tmp_path, py("gain", "Gain") +
                 "layer { type: 'Python' name: 'loss' bottom: 'gain' bottom: 'data' top: 'loss' "
                 "loss_weight: 1 python_param { module: 'test_python_layer' layer: 'SquaredError' } }\n")
    net = caffe.Net(f, caffe.TRAIN)
    x = np.random.RandomState(0).randn(6, 2, 3).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    net.clear_param_diffs()
    net.backward()
    # d/dg of 0.5 * sum(((g - 1) x)^2) / N at g = 1 is 0; move g and check against the formula
    g = net.params["gain"][0]
    g.data[0] = 1.5
    net.forward()
    net.clear_param_diffs()
    net.backward()
    np.testing.assert_allclose(g.diff[0], 0.5 * (x ** 2).sum() / 6, rtol=1e-5)
    net.save(str(tmp_path / "w.caffemodel"))
    net2 = caffe.Net(f, caffe.TRAIN, weights=str(tmp_path / "w.caffemodel"))
    assert net2.params["gain"][0].data[0] == 1.5
    # a solver trains the Python layer's blob towards g = 1
    (tmp_path / "solver.prototxt").write_text(f'net: "{f}"\nbase_lr: 0.1\nlr_policy: "fixed"\n'
                                              'max_iter: 50\ndisplay: 0\nsnapshot_after_train: false\n')
    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    solver.net.params["gain"][0].data[0] = 3
    solver.net.blobs["data"].data[...] = x
    solver.step(50)
    assert abs(solver.net.params["gain"][0].data[0] - 1) < 0.05


def test_user_exception_keeps_its_type_and_names_the_layer_and_line(tmp_path):
    f = net_file(tmp_path, py("bad", "Broken"))
    with pytest.raises(KeyError) as e:
        caffe.Net(f, caffe.TEST)
    assert isinstance(e.value, CaffeError)
    msg = str(e.value)
    assert "layer 'bad'" in msg and "test_python_layer" in msg and "no such thing" in msg
    assert f"test_python_layer.py:" in msg


@pytest.mark.parametrize("param,msg", [
    ("module: 'no_such_module_here' layer: 'X'", "No module named 'no_such_module_here'"),
    ("module: 'test_python_layer' layer: 'Missing'", "has no class 'Missing'"),
    ("module: 'test_python_layer' layer: 'net_file'", "derived from caffe.Layer"),
])
def test_bad_python_param(tmp_path, param, msg):
    f = net_file(tmp_path, f"layer {{ type: 'Python' name: 'x' bottom: 'data' top: 'y' python_param {{ {param} }} }}")
    with pytest.raises(CaffeError, match=msg):
        caffe.Net(f, caffe.TEST)


DATA_LAYER = '''
import numpy as np
import caffe


class TwoClouds(caffe.Layer):
    """Batches of points from two Gaussian clouds, label = which cloud."""

    def setup(self, bottom, top):
        self.batch = int(self.param_str)
        self.rs = np.random.RandomState(0)

    def reshape(self, bottom, top):
        top[0].reshape(self.batch, 2)
        top[1].reshape(self.batch)

    def forward(self, bottom, top):
        label = self.rs.randint(0, 2, self.batch)
        top[0].data[...] = self.rs.randn(self.batch, 2) + 3 * label[:, None] - 1.5
        top[1].data[...] = label

    def backward(self, top, propagate_down, bottom):
        pass
'''


def test_python_data_layer_feeds_minicaffe_train(tmp_path):
    import re
    import shutil
    import subprocess
    (tmp_path / "clouds.py").write_text(DATA_LAYER)
    (tmp_path / "net.prototxt").write_text(
        "layer { name: 'data' type: 'Python' top: 'data' top: 'label' "
        "python_param { module: 'clouds' layer: 'TwoClouds' param_str: '32' } }\n"
        "layer { name: 'ip' type: 'InnerProduct' bottom: 'data' top: 'ip' "
        "inner_product_param { num_output: 2 weight_filler { type: 'xavier' } } }\n"
        "layer { name: 'acc' type: 'Accuracy' bottom: 'ip' bottom: 'label' top: 'accuracy' include { phase: TEST } }\n"
        "layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip' bottom: 'label' top: 'loss' }\n")
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 60\ndisplay: 20\n'
        'test_iter: 5\ntest_interval: 60\nsnapshot_prefix: "clouds"\nrandom_seed: 1\n')
    exe = shutil.which("minicaffe")
    assert exe, "the minicaffe console script is installed with the package"
    r = subprocess.run([exe, "train", "--solver=solver.prototxt"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    losses = [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = ([\d.e-]+)", r.stdout)]
    acc = [float(x) for x in re.findall(r"Test net output #0: accuracy = ([\d.]+)", r.stdout)]
    assert losses[-1] < losses[0] and acc[-1] > 0.95
    assert (tmp_path / "clouds_iter_60.caffemodel").exists()
