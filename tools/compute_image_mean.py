"""compute_image_mean: the mean image of an LMDB of Datum, written as a binaryproto."""
import numpy as np

from minicaffe import io
from minicaffe.errors import CaffeError
from minicaffe.transform import read_datum

HELP = "compute the mean image of an LMDB"


def add_arguments(p):
    p.add_argument("db", help="input LMDB")
    p.add_argument("output", nargs="?", help="output .binaryproto")
    p.add_argument("--backend", default="lmdb")


def run(a):
    total, n = None, 0
    for key, v in io.read_lmdb(a.db):
        x = read_datum(v, f"{a.db}: the entry {key!r}")[0].astype(np.float64)
        if total is None:
            total = np.zeros_like(x)
        elif x.shape != total.shape:
            raise CaffeError(f"{a.db}: image {n} has shape {x.shape}, the first had {total.shape}")
        total += x
        n += 1
    if not n:
        raise CaffeError(f"{a.db} is empty")
    mean = (total / n).astype(np.float32)
    print(f"Processed {n} files.")
    for c, m in enumerate(mean.reshape(mean.shape[0], -1).mean(axis=1)):
        print(f"mean_value channel [{c}]: {m:.6g}")
    if a.output:
        io.write_blobproto(a.output, mean[None])
