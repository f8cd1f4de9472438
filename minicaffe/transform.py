"""Caffe's DataTransformer: mean subtraction, random/center crop, mirror, scale, in Caffe's order,
applied to a whole batch at once."""
import io as _io

import numpy as np
from google.protobuf.message import DecodeError

from . import io
from . import minicaffe_pb2 as pb
from .errors import CaffeError


# Formats OpenCV's imdecode reads (Caffe decodes with it); others, such as EPS, which Pillow
# hands to Ghostscript, are refused.
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP", "GIF", "JPEG2000", "SUN")
# Pixels an encoded image may claim per byte of the Datum (beyond a megapixel): deflate expands
# at most 1032-fold, and a forged header must not make the decoder allocate gigabytes.
MAX_PIXELS_PER_BYTE = 1032


def decode_datum(d, force_color=False, force_gray=False):
    """A Datum as a (C, H, W) array: raw bytes, float_data, or an encoded image. A Datum whose
    values do not fill its shape, or whose image does not decode, is a CaffeError."""
    if d.encoded:
        return _decode_image(d.data, force_color, force_gray)
    c, h, w = d.channels, d.height, d.width
    if min(c, h, w) <= 0:
        raise CaffeError(f"a Datum of shape {c}x{h}x{w} (channels x height x width); each must be > 0")
    n, got = c * h * w, len(d.data) or len(d.float_data)
    if got != n:
        raise CaffeError(f"a Datum of shape {c}x{h}x{w} needs {n} values, it holds {got}")
    if d.data:
        return np.frombuffer(d.data, np.uint8).reshape(c, h, w)
    return np.asarray(d.float_data, np.float32).reshape(c, h, w)


def read_datum(value, where, force_color=False, force_gray=False):
    """A serialized Datum (an LMDB entry) as (array, label); `where` names the entry in errors."""
    d = pb.Datum()
    try:
        d.ParseFromString(value)
    except (DecodeError, RuntimeError, TypeError) as e:
        raise CaffeError(f"{where} is not a Datum ({e})") from None
    try:
        return decode_datum(d, force_color, force_gray), d.label
    except CaffeError as e:
        raise CaffeError(f"{where}: {e}") from None


def _decode_image(data, force_color, force_gray):
    from PIL import Image
    try:
        img = Image.open(_io.BytesIO(data), formats=IMAGE_FORMATS)
        w, h = img.size
        if w * h > MAX_PIXELS_PER_BYTE * len(data) + (1 << 20):
            raise CaffeError(f"an encoded Datum of {len(data)} bytes claims a {w}x{h} image")
        if force_gray:
            img = img.convert("L")
        elif force_color or img.mode != "L":
            img = img.convert("RGB")
        a = np.asarray(img)
    except CaffeError:
        raise
    except Exception as e:      # Pillow reports a broken image with any of a dozen exception types
        raise CaffeError(f"an encoded Datum does not decode as an image ({type(e).__name__}: {e})") from None
    if a.ndim == 2:
        return a[None]
    return a[:, :, ::-1].transpose(2, 0, 1)   # Caffe stores BGR, as OpenCV decodes


class Transformer:
    def __init__(self, tp, phase):
        self.tp, self.phase = tp, phase
        self.mean = None
        if tp.mean_file and len(tp.mean_value):
            raise CaffeError("transform_param: specify either mean_file or mean_value, not both")
        if tp.mean_file:
            self.mean = io.read_blobproto(tp.mean_file)
            if self.mean.ndim == 4:
                self.mean = self.mean[0]
        elif len(tp.mean_value):
            self.mean = np.asarray(tp.mean_value, np.float32)

    def __call__(self, batch, rs):
        """batch: (B, C, H, W) uint8 or float; rs: the random stream for crops and mirrors."""
        tp = self.tp
        b, c, h, w = batch.shape
        crop = tp.crop_size
        if crop > h or crop > w:
            raise CaffeError(f"crop_size {crop} is larger than the {h}x{w} image")
        x = batch.astype(np.float32)
        if self.mean is not None:
            m = self.mean
            if m.ndim == 1:
                if len(m) not in (1, c):
                    raise CaffeError(f"{len(m)} mean_value(s) for {c} channels; give 1 or {c}")
                x -= m[None, :, None, None] if len(m) == c else m[0]
            else:
                if m.shape != (c, h, w):
                    raise CaffeError(f"mean_file shape {m.shape} does not match the data {(c, h, w)}")
                x -= m
        train = self.phase == pb.TRAIN
        mirror = (rs.integers(0, 2, b) == 1) if (tp.mirror and train) else np.zeros(b, bool)
        if crop or mirror.any():
            ch, cw = (crop, crop) if crop else (h, w)
            if crop and train:
                ho, wo = rs.integers(0, h - crop + 1, b), rs.integers(0, w - crop + 1, b)
            else:
                ho, wo = np.full(b, (h - ch) // 2), np.full(b, (w - cw) // 2)
            rows = ho[:, None] + np.arange(ch)[None]
            cols = wo[:, None] + np.where(mirror[:, None], np.arange(cw)[::-1][None], np.arange(cw)[None])
            x = x[np.arange(b)[:, None, None, None], np.arange(c)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]
        if tp.scale != 1:
            x *= tp.scale
        return np.ascontiguousarray(x, np.float32)
