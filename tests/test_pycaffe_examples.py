"""README's pycaffe script and models/pycaffe run as a user would run them."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_script_runs(tmp_path):
    readme = open(os.path.join(ROOT, "README.md")).read()
    section = readme[readme.index("## From pycaffe"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("['conv'] (4, 3) (4, 1, 12, 12) True")
    assert (tmp_path / "small.caffemodel").stat().st_size > 0


def test_linreg_with_a_python_loss_runs_forward_backward_and_trains():
    code = ("import caffe, numpy as np\n"
            "net = caffe.Net('linreg.prototxt', caffe.TRAIN)\n"
            "loss = net.forward()['loss']\n"
            "net.backward()\n"
            "d = net.blobs['ipx'].diff\n"
            "want = (net.blobs['ipx'].data - net.blobs['ipy'].data) / 10\n"
            "assert np.allclose(d, want, atol=1e-6), 'gradient'\n"
            "assert net.params['ipy'][0].diff.any()\n"
            "print(float(loss[0]))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=os.path.join(ROOT, "models/pycaffe"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "minicaffe.cli", "train", "--solver=solver.prototxt"],
                       cwd=os.path.join(ROOT, "models/pycaffe"), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    losses = [float(x) for x in re.findall(r"Iteration \d+ \(.*\), loss = ([\d.e+-]+)", r.stdout)]
    assert len(losses) == 5 and losses[-1] < 0.5 * losses[0]
