"""convert_imageset: a list file of 'path label' lines -> an LMDB of Datum, as Caffe's tool."""
import io as _io
import os
import re

import numpy as np

from minicaffe import io, log
from minicaffe.errors import CaffeError
from minicaffe.transform import IMAGE_FORMATS

HELP = "convert a list of images to an LMDB"


def add_arguments(p):
    p.add_argument("root_folder", help="folder the listed paths are relative to")
    p.add_argument("listfile", help="text file of 'path label' lines")
    p.add_argument("db", help="output LMDB directory")
    p.add_argument("--gray", action="store_true", help="read images as grayscale")
    p.add_argument("--shuffle", action="store_true", help="shuffle the order of the lines")
    p.add_argument("--resize_height", type=int, default=0)
    p.add_argument("--resize_width", type=int, default=0)
    p.add_argument("--encoded", action="store_true", help="store the encoded image bytes")
    p.add_argument("--encode_type", default="", help="re-encode as png or jpg (with --encoded)")
    p.add_argument("--check_size", action="store_true", help="check that all images have one size")
    p.add_argument("--backend", default="lmdb")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle")


def read_list(path):
    items = []
    try:
        with open(path) as f:
            for ln, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                name, _, label = line.rpartition(" ")
                if not name or not re.fullmatch(r"-?[0-9]+", label):
                    raise CaffeError(f"{path}:{ln}: expected 'path label', got '{line}'")
                if not -2 ** 31 <= int(label) < 2 ** 31:
                    raise CaffeError(f"{path}:{ln}: label {label} does not fit Datum's int32")
                items.append((name, int(label)))
    except OSError as e:
        raise CaffeError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise CaffeError(f"{path}: not a UTF-8 text list of 'path label' lines ({e.reason} at byte "
                         f"{e.start})") from None
    return items


def load(path, gray, h, w):
    """The image as PIL reads it, or None (with a warning saying why) if it cannot be read: Caffe's
    converter logs and skips such files."""
    from PIL import Image
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as f:
            img = f.convert("L" if gray else "RGB")     # decodes: a truncated file fails here
        if h and w:
            img = img.resize((w, h), Image.BILINEAR)
    except FileNotFoundError:
        log.warning(f"Could not open or find file {path}")
        return None
    except Exception as e:      # PIL raises many kinds for broken files (OSError, SyntaxError, ...)
        log.warning(f"Could not decode file {path}: {e or type(e).__name__}; skipped")
        return None
    return img


def run(a):
    if a.backend != "lmdb":
        raise CaffeError("only the lmdb backend is supported")
    if os.path.lexists(a.db):       # before reading any image, as Caffe's mkdir check
        raise CaffeError(f"{a.db} already exists: remove it first, or give another name")
    items = read_list(a.listfile)
    if a.shuffle:
        order = np.random.default_rng(a.seed).permutation(len(items))
        items = [items[i] for i in order]
    size = None
    skipped = []

    def gen():
        nonlocal size
        for i, (name, label) in enumerate(items):
            path = os.path.join(a.root_folder, name)
            img = load(path, a.gray, a.resize_height, a.resize_width)
            if img is None:
                skipped.append(path)
                continue
            arr = np.asarray(img)
            chw = arr[None] if arr.ndim == 2 else arr[:, :, ::-1].transpose(2, 0, 1)  # BGR
            if a.check_size:
                if size is None:
                    size = chw.shape
                elif chw.shape != size:
                    raise CaffeError(f"{path} has size {chw.shape}, others {size}")
            if a.encoded:
                raw = None
                if not a.encode_type and not (a.resize_height or a.gray):
                    with open(path, "rb") as f:
                        raw = f.read()
                if raw is None:
                    buf = _io.BytesIO()
                    img.save(buf, format="JPEG" if a.encode_type in ("jpg", "jpeg") else "PNG")
                    raw = buf.getvalue()
                d = io.datum(chw, label, encoded=raw)
            else:
                d = io.datum(chw, label)
            yield f"{i:08d}_{name}".encode(), d.SerializeToString()
        if items and len(skipped) == len(items):
            raise CaffeError(f"none of the {len(items)} images in {a.listfile} could be read "
                             f"(the first: {skipped[0]}); no database written")
    n = io.write_lmdb(a.db, gen())
    if skipped:
        log.warning(f"Skipped {len(skipped)} of {len(items)} files that could not be read")
    print(f"Processed {n} files.")
