"""Make the digits LMDBs: the UCI digits (committed in data/), a fixed stratified 80/20 split,
upscaled from 8x8 to 28x28, written as MNIST IDX files and converted with convert_mnist_data."""
import gzip
import os
import shutil
import struct
import sys

import numpy as np
from PIL import Image

from minicaffe.cli import main as minicaffe

HERE = os.path.dirname(os.path.abspath(__file__))


def load():
    with gzip.open(os.path.join(HERE, "data", "digits.csv.gz"), "rt") as f:
        rows = np.loadtxt(f, delimiter=",")
    return rows[:, :64].reshape(-1, 8, 8), rows[:, 64].astype(np.uint8)


def split(labels, test_fraction=0.2, seed=0):
    """Per class, a fixed permutation; its first 20% go to the test set."""
    rs = np.random.RandomState(seed)
    test = np.zeros(len(labels), bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rs.permutation(len(idx))]
        test[idx[:int(round(len(idx) * test_fraction))]] = True
    return ~test, test


def upscale(images):
    out = np.empty((len(images), 28, 28), np.uint8)
    for i, im in enumerate(np.clip(images * 16, 0, 255).astype(np.uint8)):
        out[i] = np.asarray(Image.fromarray(im).resize((28, 28), Image.BILINEAR))
    return out


def write_idx(path, array, magic):
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + struct.pack(">I", len(array)))
        if array.ndim == 3:
            f.write(struct.pack(">II", *array.shape[1:]))
        f.write(array.tobytes())


def main(out=HERE):
    images, labels = load()
    train, test = split(labels)
    big = upscale(images)
    tmp = os.path.join(out, "idx")
    os.makedirs(tmp, exist_ok=True)
    for name, sel in (("train", train), ("test", test)):
        db = os.path.join(out, f"digits_{name}_lmdb")
        if os.path.exists(db):
            shutil.rmtree(db)
        write_idx(os.path.join(tmp, f"{name}-images-idx3-ubyte"), big[sel], 2051)
        write_idx(os.path.join(tmp, f"{name}-labels-idx1-ubyte"), labels[sel], 2049)
        rc = minicaffe(["convert_mnist_data", os.path.join(tmp, f"{name}-images-idx3-ubyte"),
                        os.path.join(tmp, f"{name}-labels-idx1-ubyte"), db])
        if rc:
            sys.exit(rc)
    shutil.rmtree(tmp)
    print(f"digits: {train.sum()} train / {test.sum()} test images in {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
