"""Data on disk going wrong: missing LMDBs and mean files named, LMDBs read whatever backend says,
LMDBs held open or broken give CaffeErrors, converters skip bad images and never leave half a
database, and a NaN loss is warned of (or, with --stop_on_nan, stops training with a snapshot)."""
import os
import re
import subprocess
import sys

import lmdb
import numpy as np
import pytest
from PIL import Image

import minicaffe
from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.cli import main
from minicaffe.errors import CaffeError
from nets import write_tiny

TAIL = ('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
        '  inner_product_param { num_output: 2 } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n')


def data_net(source, backend="", transform=""):
    return (f'layer {{ name: "d" type: "Data" top: "data" top: "label" {transform} '
            f'data_param {{ source: "{source}" batch_size: 2 {backend} }} }}\n' + TAIL)


def net(text):
    return minicaffe.Net(io.parse_text(text, pb.NetParameter()), pb.TRAIN)


def item(i):
    return f"{i:03d}".encode(), io.datum(np.full((1, 4, 4), i, np.uint8), i).SerializeToString()


def make_lmdb(path, n=3):
    io.write_lmdb(str(path), [item(i) for i in range(n)])


def error_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ---------------------------------------------------------------- time names the missing file
def test_time_names_the_missing_lmdb_or_mean_file(tmp_path, capsys):
    make_lmdb(tmp_path / "db")
    cases = [(data_net(tmp_path / "gone_lmdb", "backend: LMDB"), r"LMDB '.*gone_lmdb' not found"),
             (data_net(tmp_path / "db", "backend: LMDB",
                       f'transform_param {{ mean_file: "{tmp_path}/m.binaryproto" }}'),
              r"cannot read .*m\.binaryproto: No such file")]
    for text, msg in cases:
        (tmp_path / "net.prototxt").write_text(text)
        assert main(["time", f"--model={tmp_path}/net.prototxt", "--iterations=1"]) == 1
        line = error_line(capsys)
        assert line.startswith("minicaffe time: error: layer 'd' (Data): ") and re.search(msg, line), line


def test_time_stands_in_for_missing_cifar_data_and_says_why(tmp_path, capsys, monkeypatch):
    (tmp_path / "net.prototxt").write_text(data_net(tmp_path / "cifar10_train_lmdb", "backend: LMDB"))
    said = []
    monkeypatch.setattr(minicaffe.log, "info", said.append)
    assert main(["time", f"--model={tmp_path}/net.prototxt", "--iterations=1"]) == 0
    want = r"LMDB '.*cifar10_train_lmdb' not found; timing with random blobs \[2, 3, 32, 32\]"
    assert any(re.search(want, s) for s in said), said


# ---------------------------------------------------------------- which LMDBs the Data layer reads
def test_data_reads_an_lmdb_whatever_backend_says(tmp_path):
    make_lmdb(tmp_path / "db")
    env = lmdb.open(str(tmp_path / "one.mdb"), subdir=False, map_size=1 << 20)   # a one-file LMDB
    with env.begin(write=True) as txn:
        for i in range(3):
            txn.put(*item(i))
    env.close()
    for src in ("db", "one.mdb"):
        for backend in ("", "backend: LMDB", "backend: LEVELDB"):
            n = net(data_net(tmp_path / src, backend))
            n.forward()
            assert n.blobs["label"].data.tolist() == [0, 1], (src, backend)
            np.testing.assert_array_equal(n.blobs["data"].data[1], 1)


def test_data_says_leveldb_only_when_the_source_is_not_an_lmdb(tmp_path):
    (tmp_path / "ldb").mkdir()                   # a LevelDB directory, as Caffe writes one
    (tmp_path / "ldb" / "CURRENT").write_text("MANIFEST-000002\n")
    (tmp_path / "text").write_text("not a database\n")
    with pytest.raises(CaffeError, match=r"layer 'd' \(Data\): '.*ldb' is not an LMDB, and LevelDB .* "
                                         r"not supported; rebuild .* set backend: LMDB"):
        net(data_net(tmp_path / "ldb"))
    for src in ("ldb", "text"):
        with pytest.raises(CaffeError, match=rf"'.*{src}' is not an LMDB \(a directory holding data.mdb"):
            net(data_net(tmp_path / src, "backend: LMDB"))
    with pytest.raises(CaffeError, match=r"database '.*nothing' not found"):
        net(data_net(tmp_path / "nothing"))


# ---------------------------------------------------------------- LMDBs held open, locked or broken
def test_an_lmdb_open_in_the_users_script_is_a_clear_error(tmp_path):
    make_lmdb(tmp_path / "db")
    env = lmdb.open(str(tmp_path / "db"))        # the user's own handle, still open
    try:
        with pytest.raises(CaffeError, match=r"layer 'd' \(Data\): cannot open LMDB '.*db': it is already "
                                             r"open in this process .* close it first"):
            net(data_net(tmp_path / "db"))
        with pytest.raises(CaffeError, match="already open in this process"):
            list(io.read_lmdb(str(tmp_path / "db")))
    finally:
        env.close()
    n = net(data_net(tmp_path / "db"))           # closed: it reads, and a reader shares the layer's handle
    assert [k for k, _ in io.read_lmdb(str(tmp_path / "db"))] == [b"000", b"001", b"002"]
    n.forward()
    assert n.blobs["label"].data.tolist() == [0, 1]


def test_an_lmdb_another_process_is_writing_reads(tmp_path):
    make_lmdb(tmp_path / "db")
    code = ("import lmdb, sys\nenv = lmdb.open(sys.argv[1])\ntxn = env.begin(write=True)\n"
            "txn.put(b'zzz', b'half')\nprint('held', flush=True)\nsys.stdin.read()\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "db")], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"     # its write transaction is open
        n = net(data_net(tmp_path / "db"))
        n.forward()
        assert n.blobs["label"].data.tolist() == [0, 1]
        assert len(list(io.read_lmdb(str(tmp_path / "db")))) == 3
    finally:
        p.communicate("")


def test_a_read_only_lmdb_reads_without_writing_a_lock_file(tmp_path):
    make_lmdb(tmp_path / "db")
    os.unlink(tmp_path / "db" / "lock.mdb")
    os.chmod(tmp_path / "db", 0o555)
    try:
        assert len(list(io.read_lmdb(str(tmp_path / "db")))) == 3
        net(data_net(tmp_path / "db")).forward()
        assert sorted(os.listdir(tmp_path / "db")) == ["data.mdb"]
    finally:
        os.chmod(tmp_path / "db", 0o755)


def test_broken_lmdbs_are_caffe_errors(tmp_path):
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "data.mdb").write_bytes(os.urandom(8192))
    with pytest.raises(CaffeError, match=r"layer 'd' \(Data\): cannot read LMDB '.*garbage'"):
        net(data_net(tmp_path / "garbage"))
    with pytest.raises(CaffeError, match=r"cannot read LMDB '.*garbage'"):
        list(io.read_lmdb(str(tmp_path / "garbage")))
    io.write_lmdb(str(tmp_path / "notdatum"), [(b"0", b"\xff\xff\xff"), (b"1", b"\x08")])
    with pytest.raises(CaffeError, match=r"\(Data\): LMDB '.*notdatum': the entry b'0' is not a Datum"):
        net(data_net(tmp_path / "notdatum"))


# ---------------------------------------------------------------- databases are made whole or not at all
def test_write_lmdb_builds_beside_the_target_and_renames_when_complete(tmp_path):
    target = tmp_path / "db"

    def items(fail_at, target=target):
        for i in range(5):
            assert not target.exists()           # nothing under the name until the end
            if i == fail_at:
                raise KeyboardInterrupt       # Ctrl-C half way
            yield f"{i}".encode(), b"x"
    with pytest.raises(KeyboardInterrupt):
        io.write_lmdb(str(target), items(3))
    assert os.listdir(tmp_path) == []          # the temporary directory went too
    assert io.write_lmdb(str(target), items(None)) == 5
    assert len(list(io.read_lmdb(str(target)))) == 5 and os.listdir(tmp_path) == ["db"]
    assert os.stat(target).st_mode & 0o777 == 0o777 & ~_umask()
    with pytest.raises(CaffeError, match=r"db already exists: remove it first"):
        io.write_lmdb(str(target), items(None))
    (tmp_path / ".tmp-db-123-abcd").mkdir()    # a killed converter's leftovers do not block a rerun
    assert io.write_lmdb(str(tmp_path / "db2"), items(None, tmp_path / "db2")) == 5


def _umask():
    old = os.umask(0)
    os.umask(old)
    return old


def images(d, n=5):
    rs = np.random.RandomState(3)
    lines = []
    for i in range(n):
        Image.fromarray(rs.randint(0, 256, (4, 5, 3)).astype(np.uint8)).save(d / f"im{i}.png")
        lines.append(f"im{i}.png {i}")
    (d / "list.txt").write_text("\n".join(lines) + "\n")


def labels(db):
    out = []
    for _, v in io.read_lmdb(str(db)):
        d = pb.Datum()
        d.ParseFromString(v)
        out.append(d.label)
    return out


def test_convert_imageset_skips_and_counts_unreadable_images(tmp_path, capsys):
    images(tmp_path)
    (tmp_path / "im1.png").write_bytes(b"\x89PNG\r\n\x1a\n this is no image")
    png = (tmp_path / "im3.png").read_bytes()
    (tmp_path / "im3.png").write_bytes(png[:len(png) // 2])        # truncated
    os.unlink(tmp_path / "im4.png")
    assert main(["convert_imageset", f"{tmp_path}/", str(tmp_path / "list.txt"), str(tmp_path / "db")]) == 0
    out = capsys.readouterr()
    assert labels(tmp_path / "db") == [0, 2]
    warned = [ln for ln in out.err.splitlines() if ln.startswith("W")]
    assert len(warned) == 4, out.err
    assert re.search(r"Could not decode file .*im1\.png", warned[0])
    assert re.search(r"Could not decode file .*im3\.png", warned[1])
    assert re.search(r"Could not open or find file .*im4\.png", warned[2])
    assert warned[3].endswith("Skipped 3 of 5 files that could not be read")
    assert "Processed 2 files." in out.out
    assert main(["convert_imageset", f"{tmp_path}/", str(tmp_path / "list.txt"), str(tmp_path / "db")]) == 1
    assert re.search(r"db already exists: remove it first", error_line(capsys))
    assert labels(tmp_path / "db") == [0, 2]    # untouched


def test_convert_imageset_failing_leaves_nothing_and_reruns(tmp_path, capsys):
    images(tmp_path)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "im2.png")
    args = [f"{tmp_path}/", str(tmp_path / "list.txt"), str(tmp_path / "db")]
    assert main(["convert_imageset", "--check_size"] + args) == 1
    assert re.search(r"im2\.png has size \(3, 9, 9\), others \(3, 4, 5\)", error_line(capsys))
    assert not [n for n in os.listdir(tmp_path) if "db" in n]     # no database, no temporary one
    assert main(["convert_imageset", "--resize_height=4", "--resize_width=5", "--check_size"] + args) == 0
    assert labels(tmp_path / "db") == [0, 1, 2, 3, 4]
    for i in range(5):
        (tmp_path / f"im{i}.png").write_bytes(b"junk")
    assert main(["convert_imageset"] + args[:2] + [str(tmp_path / "db2")]) == 1
    capsys.readouterr()
    assert not (tmp_path / "db2").exists()


def test_converters_refuse_existing_databases(tmp_path, capsys):
    import struct
    (tmp_path / "img").write_bytes(struct.pack(">IIII", 2051, 2, 2, 2) + bytes(8))
    (tmp_path / "lab").write_bytes(struct.pack(">II", 2049, 2) + bytes(2))
    args = ["convert_mnist_data", str(tmp_path / "img"), str(tmp_path / "lab"), str(tmp_path / "db")]
    assert main(args) == 0 and main(args) == 1
    assert "db already exists" in error_line(capsys)
    (tmp_path / "img").write_bytes(struct.pack(">II", 2051, 2))
    assert main(args[:3] + [str(tmp_path / "db3")]) == 1
    assert "truncated" in error_line(capsys)
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (cifar / name).write_bytes(bytes(3073))
    (tmp_path / "out").mkdir()
    make_lmdb(tmp_path / "out" / "cifar10_test_lmdb")
    assert main(["convert_cifar_data", str(cifar), str(tmp_path / "out")]) == 1
    assert "cifar10_test_lmdb already exists" in error_line(capsys)
    assert sorted(os.listdir(tmp_path / "out")) == ["cifar10_test_lmdb"]   # the train one was not made


# ---------------------------------------------------------------- a NaN loss
def test_nan_loss_is_warned_of_once(tmp_path, capsys):
    solver = write_tiny(tmp_path, base_lr=1e30, max_iter=6, display=0, test_interval=0)
    with np.errstate(all="ignore"):
        assert main(["train", f"--solver={solver}"]) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("W")]
    assert len(warned) == 1 and re.search(r"Iteration 1, loss = nan: the loss is not finite", warned[0])
    assert (tmp_path / "tiny_iter_6.caffemodel").exists()        # it trained on, as Caffe does


def test_stop_on_nan_stops_with_a_snapshot_before_the_bad_update(tmp_path, capsys):
    solver = write_tiny(tmp_path, base_lr=1e30, max_iter=6, display=0, test_interval=0)
    with np.errstate(all="ignore"):
        assert main(["train", f"--solver={solver}", "--stop_on_nan"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert re.search(r"^W.*Iteration 1, loss = nan", err[0])
    assert re.search(r"error: the loss is not finite at iteration 1: stopped \(--stop_on_nan\)", err[-1])
    assert sorted(p.name for p in tmp_path.glob("tiny_iter_*")) == ["tiny_iter_1.caffemodel",
                                                                     "tiny_iter_1.solverstate"]
    st = io.read_solverstate(str(tmp_path / "tiny_iter_1.solverstate"))
    w = io.read_weights(st.learned_net)
    assert st.iter == 1 and all(np.isfinite(io.blob_to_array(b)).all() for l in w.layer for b in l.blobs)
    # the snapshot holds the weights the NaN came from: iteration 1's forward gives it again
    n = minicaffe.Net(str(tmp_path / "net.prototxt"), pb.TRAIN)
    n.copy_from(st.learned_net)
    with np.errstate(all="ignore"):
        assert not np.isfinite(n.forward()["loss"]).all()
