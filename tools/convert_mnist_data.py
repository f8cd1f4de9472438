"""convert_mnist_data: MNIST IDX image and label files -> an LMDB of Datum, as Caffe's tool."""
import gzip
import struct
import zlib

import numpy as np

from minicaffe import io
from minicaffe.errors import CaffeError

HELP = "convert MNIST IDX files to an LMDB"


def add_arguments(p):
    p.add_argument("images", help="IDX3 image file (train-images-idx3-ubyte, optionally .gz)")
    p.add_argument("labels", help="IDX1 label file")
    p.add_argument("db", help="output LMDB directory")
    p.add_argument("--backend", default="lmdb")


def read_idx(path, magic):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:     # a truncated .gz ends in EOFError
        raise CaffeError(f"cannot read {path}: {e}") from None
    if len(data) < 8 or struct.unpack(">I", data[:4])[0] != magic:
        raise CaffeError(f"{path}: wrong magic number, expected {magic} (not an IDX file of that kind)")
    n = struct.unpack(">I", data[4:8])[0]
    if magic == 2051:
        if len(data) < 16:
            raise CaffeError(f"{path}: truncated, {len(data)} bytes is shorter than the IDX3 header")
        rows, cols = struct.unpack(">II", data[8:16])
        body = np.frombuffer(data, np.uint8, offset=16)
        if body.size != n * rows * cols:
            raise CaffeError(f"{path}: truncated, {body.size} bytes for {n}x{rows}x{cols}")
        return body.reshape(n, 1, rows, cols)
    body = np.frombuffer(data, np.uint8, offset=8)
    if body.size != n:
        raise CaffeError(f"{path}: truncated, {body.size} labels for {n}")
    return body


def run(a):
    if a.backend != "lmdb":
        raise CaffeError("only the lmdb backend is supported")
    images, labels = read_idx(a.images, 2051), read_idx(a.labels, 2049)
    if len(images) != len(labels):
        raise CaffeError(f"{len(images)} images but {len(labels)} labels")
    n = io.write_lmdb(a.db, ((f"{i:08d}".encode(), io.datum(im, lab).SerializeToString())
                             for i, (im, lab) in enumerate(zip(images, labels))))
    print(f"Processed {n} files.")
