"""The command line: converters on files in the published formats, train/test/time, errors, logs."""
import os
import re
import signal
import struct
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from PIL import Image

from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.cli import main
from minicaffe.transform import decode_datum
from nets import write_tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def datums(db):
    out = []
    for _, v in io.read_lmdb(db):
        d = pb.Datum()
        d.ParseFromString(v)
        out.append(d)
    return out


def test_convert_mnist_data(tmp_path):
    imgs = np.random.RandomState(0).randint(0, 256, (5, 28, 28)).astype(np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    (tmp_path / "img").write_bytes(struct.pack(">IIII", 2051, 5, 28, 28) + imgs.tobytes())
    (tmp_path / "lab").write_bytes(struct.pack(">II", 2049, 5) + labels.tobytes())
    assert main(["convert_mnist_data", str(tmp_path / "img"), str(tmp_path / "lab"), str(tmp_path / "db")]) == 0
    ds = datums(str(tmp_path / "db"))
    assert [d.label for d in ds] == labels.tolist()
    np.testing.assert_array_equal(decode_datum(ds[2])[0], imgs[2])
    (tmp_path / "bad").write_bytes(struct.pack(">II", 1234, 5))
    assert main(["convert_mnist_data", str(tmp_path / "bad"), str(tmp_path / "lab"), str(tmp_path / "db2")]) == 1


def test_convert_imageset_and_mean(tmp_path):
    rs = np.random.RandomState(1)
    lines = []
    for i in range(4):
        a = rs.randint(0, 256, (6 + i, 5, 3)).astype(np.uint8)
        Image.fromarray(a).save(tmp_path / f"im{i}.png")
        lines.append(f"im{i}.png {i % 2}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    assert main(["convert_imageset", "--resize_height=8", "--resize_width=8", "--shuffle",
                 str(tmp_path) + "/", str(tmp_path / "list.txt"), str(tmp_path / "db")]) == 0
    ds = datums(str(tmp_path / "db"))
    assert len(ds) == 4 and all((d.channels, d.height, d.width) == (3, 8, 8) for d in ds)
    assert main(["convert_imageset", "--gray", "--encoded", str(tmp_path) + "/",
                 str(tmp_path / "list.txt"), str(tmp_path / "dbe")]) == 0
    e = datums(str(tmp_path / "dbe"))
    assert e[0].encoded and decode_datum(e[1], force_gray=True).shape == (1, 7, 5)
    assert main(["compute_image_mean", str(tmp_path / "db"), str(tmp_path / "mean.binaryproto")]) == 0
    mean = io.read_blobproto(str(tmp_path / "mean.binaryproto"))
    want = np.mean([decode_datum(d).astype(np.float64) for d in ds], axis=0)
    np.testing.assert_allclose(mean[0], want, rtol=1e-5)


def test_convert_cifar_from_tar(tmp_path):
    rs = np.random.RandomState(2)
    tar_path = tmp_path / "cifar-10-binary.tar.gz"
    records = {}
    with tarfile.open(tar_path, "w:gz") as tar:
        for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            rec = rs.randint(0, 256, (3, 3073)).astype(np.uint8)
            rec[:, 0] %= 10
            records[name] = rec
            p = tmp_path / name
            p.write_bytes(rec.tobytes())
            tar.add(p, arcname=f"cifar-10-batches-bin/{name}")
    assert main(["convert_cifar_data", str(tar_path), str(tmp_path / "out")]) == 0
    train = datums(str(tmp_path / "out/cifar10_train_lmdb"))
    test = datums(str(tmp_path / "out/cifar10_test_lmdb"))
    assert len(train) == 15 and len(test) == 3
    assert test[1].label == records["test_batch.bin"][1, 0]
    np.testing.assert_array_equal(decode_datum(test[1]).ravel(), records["test_batch.bin"][1, 1:])


def parse_log(text):
    """Follows the regexes of Caffe's tools/extra/parse_log.py."""
    train, test, it, lr = [], [], -1, None
    for line in text.splitlines():
        m = re.search(r"Iteration (\d+)", line)
        if m:
            it = int(m.group(1))
        m = re.search(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)", line)
        if m:
            lr = float(m.group(1))
        m = re.search(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)", line)
        if m:
            train.append((it, m.group(2), float(m.group(3)), lr))
        m = re.search(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)", line)
        if m:
            test.append((it, m.group(2), float(m.group(3))))
    return train, test


def run_cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "minicaffe.cli", *args], capture_output=True, text=True,
                          cwd=kw.get("cwd", ROOT), timeout=300)


def test_train_log_parses_and_snapshots(tmp_path):
    solver = write_tiny(tmp_path, "snapshot: 10")
    r = run_cli("train", "-solver", solver)
    assert r.returncode == 0, r.stderr
    train, test = parse_log(r.stdout)
    assert [t[0] for t in train if t[1] == "loss"] == [0, 5, 10, 15]
    assert {t[1] for t in test} == {"accuracy", "loss"} and max(t[0] for t in test) == 20
    assert all(t[3] == pytest.approx(0.05) for t in train if t[0] > 0)   # lr lines follow outputs
    assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} ", r.stdout, re.M)   # glog's prefix
    assert (tmp_path / "tiny_iter_10.caffemodel").exists() and (tmp_path / "tiny_iter_20.solverstate").exists()
    r = run_cli("test", "--model", str(tmp_path / "net.prototxt"), "--weights",
                str(tmp_path / "tiny_iter_20.caffemodel"), "--iterations=3")
    assert r.returncode == 0 and re.search(r"accuracy = [\d.]+", r.stdout)


def test_time_prints_per_layer_table():
    r = run_cli("time", "--model=models/cifar10/cifar10_quick_train_test.prototxt", "--iterations=1")
    assert r.returncode == 0, r.stderr
    for name in ("conv1", "pool3", "ip2", "loss"):
        assert re.search(rf"{name}\s+forward: [\d.]+ ms", r.stdout)
    assert "Average Forward-Backward" in r.stdout


@pytest.mark.parametrize("text,msg", [
    ('layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }\nlayer { nmae: "b" }',
     r"net.prototxt:2:\d+: .*nmae"),
    ('layer { name: "a" type: "ReLU" bottom: "missing" top: "x" }', "unknown bottom blob 'missing'"),
    ('layer { name: "a" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
     'layer { name: "b" type: "Input" top: "x" input_param { shape { dim: 1 } } }', "top blob 'x'"),
    ('layer { name: "a" type: "Convolutoin" top: "x" }', "unknown or unsupported layer type 'Convolutoin'"),
])
def test_cli_errors_are_one_clear_line(tmp_path, text, msg):
    (tmp_path / "net.prototxt").write_text(text)
    r = run_cli("time", f"--model={tmp_path}/net.prototxt", "--iterations=1")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(msg, lines[0]), r.stderr


def test_wrong_weights_shape_cli(tmp_path):
    solver = write_tiny(tmp_path, max_iter=1)
    assert run_cli("train", f"--solver={solver}").returncode == 0
    other = (tmp_path / "net.prototxt").read_text().replace("num_output: 4", "num_output: 5")
    (tmp_path / "net5.prototxt").write_text(other)
    r = run_cli("test", f"--model={tmp_path}/net5.prototxt", f"--weights={tmp_path}/tiny_iter_1.caffemodel")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert re.search(r"layer 'ip1'.*\(4, 48\).*\(5, 48\)", r.stderr.strip())


def test_sigint_stops_with_a_good_snapshot(tmp_path):
    solver = write_tiny(tmp_path, max_iter=1000000, snapshot=50, display=0, test_interval=0)
    p = subprocess.Popen([sys.executable, "-m", "minicaffe.cli", "train", f"--solver={solver}"],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(tmp_path.glob("tiny_iter_*.solverstate")) and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert "Optimization stopped early." in out
    states = sorted(tmp_path.glob("tiny_iter_*.solverstate"), key=lambda f: int(f.stem.split("_")[-1]))
    last = states[-1]
    st = io.read_solverstate(str(last))
    assert st.iter == int(last.stem.split("_")[-1])
    io.read_weights(st.learned_net)             # the model it names reads back whole
    assert not list(tmp_path.glob(".tmp-*"))    # no half-written files left behind


def test_train_setup_errors_are_one_clear_line(tmp_path):
    """Issue 3's list: a missing net file, a missing LMDB, a mean file of the wrong shape, an unknown
    solver type."""
    item = io.datum(np.zeros((1, 4, 4), np.uint8), 0).SerializeToString()
    io.write_lmdb(str(tmp_path / "db"), [(b"0", item)])
    io.write_blobproto(str(tmp_path / "mean.binaryproto"), np.zeros((1, 3, 5, 5), np.float32))
    tail = ('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
            '  inner_product_param { num_output: 2 } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n')
    nets = {"nolmdb": f'layer {{ name: "d" type: "Data" top: "data" top: "label" data_param {{ '
                      f'source: "{tmp_path}/none" batch_size: 1 backend: LMDB }} }}\n' + tail,
            "mean": f'layer {{ name: "d" type: "Data" top: "data" top: "label" transform_param {{ '
                    f'mean_file: "{tmp_path}/mean.binaryproto" }} data_param {{ source: "{tmp_path}/db" '
                    f'batch_size: 1 backend: LMDB }} }}\n' + tail}
    for name, text in nets.items():
        (tmp_path / f"{name}.prototxt").write_text(text)
    cases = [(f'net: "{tmp_path}/missing.prototxt"', r"cannot read .*missing\.prototxt"),
             (f'net: "{tmp_path}/nolmdb.prototxt"', r"layer 'd' \(Data\): LMDB .*none' not found"),
             (f'net: "{tmp_path}/mean.prototxt"', r"mean_file shape \(3, 5, 5\) does not match .*\(1, 4, 4\)"),
             (f'net: "{tmp_path}/mean.prototxt"\ntype: "Adamm"', r"unknown solver type 'Adamm'")]
    for i, (head, msg) in enumerate(cases):
        (tmp_path / f"s{i}.prototxt").write_text(head + "\nbase_lr: 0.1\nmax_iter: 1\n")
        r = run_cli("train", f"--solver={tmp_path}/s{i}.prototxt")
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and re.search(msg, lines[0]), r.stderr
