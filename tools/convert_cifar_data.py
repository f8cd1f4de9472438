"""convert_cifar_data: CIFAR-10 binary batches (or cifar-10-binary.tar.gz) -> train and test LMDBs."""
import os
import tarfile
import zlib

import numpy as np

from minicaffe import io
from minicaffe.errors import CaffeError

HELP = "convert the CIFAR-10 binary batches to train/test LMDBs"
RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILE = "test_batch.bin"


def add_arguments(p):
    p.add_argument("input", help="folder with data_batch_*.bin and test_batch.bin, or cifar-10-binary.tar.gz")
    p.add_argument("output", help="output folder for cifar10_train_lmdb and cifar10_test_lmdb")
    p.add_argument("--backend", default="lmdb")


def _records(data, name):
    if len(data) % RECORD:
        raise CaffeError(f"{name}: {len(data)} bytes is not a whole number of {RECORD}-byte records")
    rec = np.frombuffer(data, np.uint8).reshape(-1, RECORD)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0]


def read_batches(src):
    """{file name: bytes} for the six batch files, from a folder or the tar.gz."""
    want = TRAIN_FILES + [TEST_FILE]
    out = {}
    if os.path.isdir(src):
        for n in want:
            p = os.path.join(src, n)
            if not os.path.exists(p):
                raise CaffeError(f"{p} not found")
            try:
                with open(p, "rb") as f:
                    out[n] = f.read()
            except OSError as e:
                raise CaffeError(f"cannot read {p}: {e.strerror}") from None
        return out
    try:
        with tarfile.open(src, "r:*") as tar:
            for m in tar.getmembers():
                base = os.path.basename(m.name)
                if base in want and m.isfile():
                    out[base] = tar.extractfile(m).read()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise CaffeError(f"cannot read {src}: {e}") from None
    missing = [n for n in want if n not in out]
    if missing:
        raise CaffeError(f"{src} lacks {', '.join(missing)}")
    return out


def run(a):
    if a.backend != "lmdb":
        raise CaffeError("only the lmdb backend is supported")
    dbs = [os.path.join(a.output, f"cifar10_{k}_lmdb") for k in ("train", "test")]
    for db in dbs:      # both checked first: never one new database beside a refused one
        if os.path.lexists(db):
            raise CaffeError(f"{db} already exists: remove it first, or give another output folder")
    batches = read_batches(a.input)
    try:
        os.makedirs(a.output, exist_ok=True)
    except OSError as e:
        raise CaffeError(f"cannot create {a.output}: {e.strerror}") from None

    def gen(names):
        i = 0
        for n in names:
            imgs, labels = _records(batches[n], n)
            for im, lab in zip(imgs, labels):
                # CIFAR stores RGB planes; Caffe's converter writes them unchanged
                yield f"{i:05d}".encode(), io.datum(im, lab).SerializeToString()
                i += 1
    print("Writing Training data")
    n1 = io.write_lmdb(dbs[0], gen(TRAIN_FILES))
    print("Writing Testing data")
    n2 = io.write_lmdb(dbs[1], gen([TEST_FILE]))
    print(f"Processed {n1} training and {n2} test images.")
