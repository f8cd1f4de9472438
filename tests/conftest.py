import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import pytest  # noqa: E402


@pytest.fixture(params=["one thread", "threads"])
def kernel_threads(request, monkeypatch):
    """Run a test with the Numba kernels and convolutions on the calling thread (as small arrays
    are) and split over the threads (as large ones are)."""
    from minicaffe import gemm, kernels
    if request.param == "threads":
        monkeypatch.setattr(kernels, "SERIAL_BELOW", 0)
        monkeypatch.setattr(gemm, "SPLIT_ABOVE", 0)     # convolutions split their images too


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory):
    """The default example's data and net after a short run (150 iterations): (directory, net
    prototxt, solver, test accuracy, caffemodel). Shared: it takes ~10 s to make."""
    import subprocess
    import minicaffe
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d = tmp_path_factory.mktemp("digits")
    subprocess.check_call([sys.executable, os.path.join(root, "models/digits/create_digits.py"), str(d)],
                          stdout=subprocess.DEVNULL)
    text = open(os.path.join(root, "models/digits/lenet_train_test.prototxt")).read()
    (d / "net.prototxt").write_text(text.replace("models/digits/", f"{d}/"))
    (d / "solver.prototxt").write_text(
        open(os.path.join(root, "models/digits/lenet_solver.prototxt")).read()
        .replace("models/digits/lenet_train_test.prototxt", f"{d}/net.prototxt")
        .replace("max_iter: 2000", "max_iter: 150").replace("test_interval: 500", "test_interval: 150")
        .replace('snapshot_prefix: "models/digits/lenet"', f'snapshot_prefix: "{d}/l"'))
    minicaffe.log.quiet = True
    try:
        s = minicaffe.get_solver(str(d / "solver.prototxt"))
        s.step(150)
        acc = s.test(0)["accuracy"][0]
        weights, _ = s.snapshot()
    finally:
        minicaffe.log.quiet = False
    return d, str(d / "net.prototxt"), acc, weights
