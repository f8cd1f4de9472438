"""Caffe's weight fillers, chosen by FillerParameter.type."""
import math

import numpy as np

from . import rng
from .blob import check_size
from .errors import CaffeError


def _fans(shape):
    count = int(np.prod(shape))
    fan_in = count // shape[0] if len(shape) else count
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_n(fp, shape):
    fan_in, fan_out = _fans(shape)
    if fp.variance_norm == fp.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if fp.variance_norm == fp.FAN_OUT:
        return fan_out
    return fan_in


def fill(fp, shape):
    """Return a new float32 array of `shape` drawn as the filler `fp` says."""
    r = rng.get()
    shape = check_size(shape)
    t = fp.type
    if 0 in shape:              # nothing to draw (and no fan to divide by)
        return np.zeros(shape, np.float32)
    if t == "constant":
        return np.full(shape, fp.value, np.float32)
    if t == "uniform":
        return r.uniform(fp.min, fp.max, shape).astype(np.float32)
    if t == "gaussian":
        if fp.std < 0:
            raise CaffeError(f"gaussian filler: std must not be negative, got {fp.std:g}")
        x = r.normal(fp.mean, fp.std, shape).astype(np.float32)
        if fp.sparse >= 0:
            if len(shape) < 2:
                raise CaffeError("sparse gaussian filler needs a blob of at least 2 axes")
            p = fp.sparse / float(shape[0])
            x *= (r.random(shape) < p)
        return x
    if t == "positive_unitball":
        x = r.uniform(0, 1, shape).astype(np.float32)
        x2 = x.reshape(shape[0], -1)
        x2 /= x2.sum(axis=1, keepdims=True)
        return x
    if t == "xavier":
        scale = math.sqrt(3.0 / _variance_n(fp, shape))
        return r.uniform(-scale, scale, shape).astype(np.float32)
    if t == "msra":
        std = math.sqrt(2.0 / _variance_n(fp, shape))
        return r.normal(0.0, std, shape).astype(np.float32)
    if t == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise CaffeError("bilinear filler needs a 4-D blob with square kernels")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        i = np.arange(k)
        w1 = 1 - np.abs(i / f - c)
        return np.broadcast_to(np.outer(w1, w1), shape).astype(np.float32).copy()
    raise CaffeError(f"unknown filler type '{t}' (known: constant, uniform, gaussian, "
                     "positive_unitball, xavier, msra, bilinear)")
