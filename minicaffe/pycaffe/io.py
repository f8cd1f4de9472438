"""pycaffe's caffe.io: image loading and the Transformer's preprocessing, blob/datum conversion.

pycaffe reads and resizes images with scikit-image; here PIL reads them and NumPy resizes them the
way scikit-image's `resize` does (Gaussian anti-aliasing when shrinking, half-pixel linear or
nearest interpolation with mirrored edges, output clipped to the input's range), so the common
cases give pycaffe's numbers without scikit-image or SciPy installed."""
import numpy as np

from minicaffe import io as _io
from .proto import caffe_pb2


# ---------------------------------------------------------------- proto / datum / ndarray
def blobproto_to_array(blob, return_diff=False):
    """The data (or diff) in the legacy 4-D shape if any legacy field is set, else in `shape`
    (no shape at all only fits a single value: a ValueError otherwise, as pycaffe)."""
    data = np.array(blob.diff if return_diff else blob.data)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return data.reshape(blob.num, blob.channels, blob.height, blob.width)
    return data.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr, diff=None):
    """An N-D array (and its diff, unchecked) as a BlobProto with `shape`."""
    return _io.array_to_blob(np.asarray(arr), caffe_pb2.BlobProto(), diff)


def arraylist_to_blobprotovector_str(arraylist):
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(a) for a in arraylist])
    return vec.SerializeToString()


arraylist_to_blobprotovecor_str = arraylist_to_blobprotovector_str   # pycaffe's older spelling


def blobprotovector_str_to_arraylist(str):
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(str)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    """A (C, H, W) array as a Datum: uint8 as raw bytes, anything else as float_data."""
    if arr.ndim != 3:
        raise ValueError('Incorrect array shape.')
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum):
    """A Datum's (C, H, W) values (uint8 bytes or float64 from float_data); the label is not
    returned. Encoded datums are not decoded, as in pycaffe."""
    if datum.encoded:
        raise ValueError("the datum is encoded (it holds an image file's bytes): decode datum.data "
                         "with an image library instead")
    if len(datum.data):
        return np.frombuffer(datum.data, np.uint8).reshape(
            datum.channels, datum.height, datum.width).copy()
    return np.array(datum.float_data, dtype=float).reshape(datum.channels, datum.height, datum.width)


# ---------------------------------------------------------------- preprocessing
class Transformer:
    """pycaffe's: per input blob, the steps that turn an (H, W, K) image into the net's (K, H, W)
    input. `inputs`: {name: blob shape}."""

    def __init__(self, inputs):
        self.inputs = inputs
        self.transpose = {}
        self.channel_swap = {}
        self.raw_scale = {}
        self.mean = {}
        self.input_scale = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise Exception(f'{in_} is not one of the net inputs: {self.inputs}')

    def preprocess(self, in_, data):
        """Single precision, resized to the input's dims, transposed, channels swapped, raw scale,
        mean subtracted, input scale: in that order. The caller's array is left as it was."""
        self._check_input(in_)
        caffe_in = np.array(data, np.float32)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[channel_swap, :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """Undo preprocess (but not its resize)."""
        self._check_input(in_)
        decaf_in = data.copy().squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """The axis order taking the image to the blob's, e.g. (2, 0, 1) for HxWxK -> KxHxW."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception('Transpose order needs to have the same number of '
                            'dimensions as the input.')
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """The channel order after the transpose, e.g. (2, 1, 0) for RGB -> BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception('Channel swap needs to have the same number of '
                            'dimensions as the input channels.')
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiplies the raw input, before the mean (255 for models trained on [0, 255] pixels)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """A per-channel (K,) mean, or an elementwise one of the input's (K, H, W) (or (H, W))."""
        self._check_input(in_)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError('Mean channels incompatible with input.')
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError('Mean shape invalid')
            if ms != tuple(self.inputs[in_][1:]):
                raise ValueError('Mean shape incompatible with input shape.')
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiplies the preprocessed input, after the mean."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# ---------------------------------------------------------------- image IO
def _as_float(a):
    """scikit-image's img_as_float: integers over their type's maximum."""
    if a.dtype == bool:
        return a.astype(np.float64)
    if a.dtype.kind in "ui":
        return a.astype(np.float64) / np.iinfo(a.dtype).max
    return a.astype(np.float64)


def _imread(filename):
    """The pixels as scikit-image's PIL reader gives them (palettes, 1-bit and alpha modes made
    L, RGB or RGBA)."""
    from PIL import Image
    with Image.open(filename) as img:
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        elif img.mode == "1":
            img = img.convert("L")
        elif "A" in img.mode:
            img = img.convert("RGBA")
        elif img.mode not in ("L", "RGB", "I", "F") and not img.mode.startswith("I;16"):
            img = img.convert("RGB")
        a = np.asarray(img)
    return a.astype(np.uint16) if a.dtype.kind == "u" and a.dtype.itemsize == 2 else a


def load_image(filename, color=True):
    """An image as float32 in [0, 1]: (H, W, 3) RGB when `color` (grey tiled to 3 channels, alpha
    dropped), else (H, W, 1) intensity (colour converted with scikit-image's rgb2gray weights)."""
    img = _as_float(_imread(filename))
    if img.ndim == 3 and not color:
        if img.shape[2] == 4:       # rgba2rgb: blended onto white
            img = img[:, :, :3] * img[:, :, 3:] + (1 - img[:, :, 3:])
        img = img[:, :, :3] @ np.array([0.2125, 0.7154, 0.0721])
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def _mirror(c, n):
    """SciPy's 'mirror' boundary: coordinates reflected about the first and last samples."""
    if n == 1:
        return np.zeros_like(c)
    c = np.abs(c) % (2 * (n - 1))
    return np.where(c > n - 1, 2 * (n - 1) - c, c)


def _sample(a, axis, coords, order):
    """`a` along `axis` at real coordinates in [0, n-1]: nearest (order 0) or linear (order 1)."""
    n = a.shape[axis]
    if order == 0:
        return np.take(a, np.floor(coords + 0.5).astype(np.int64).clip(0, n - 1), axis)
    i0 = np.floor(coords).astype(np.int64).clip(0, max(n - 2, 0))
    f = (coords - i0).reshape((-1,) + (1,) * (a.ndim - axis - 1))
    return np.take(a, i0, axis) * (1 - f) + np.take(a, np.minimum(i0 + 1, n - 1), axis) * f


def _gaussian(a, axis, sigma):
    """SciPy's gaussian_filter along one axis (truncated at 4 sigma, mirrored edges)."""
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1)
    w = np.exp(-0.5 * x ** 2 / sigma ** 2)
    w /= w.sum()
    pad = [(0, 0)] * a.ndim
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="reflect")
    n = a.shape[axis]
    return sum(wk * np.take(p, np.arange(k, k + n), axis) for k, wk in enumerate(w))


def _check_order(order):
    if order not in (0, 1):
        raise NotImplementedError(f"interp_order {order}: only 0 (nearest) and 1 (linear, "
                                  "pycaffe's default) are available")


def _resize_like_skimage(im, dims, order):
    """scikit-image's resize(im, dims, order) for an (H, W, K) float image."""
    _check_order(order)
    out = im.astype(np.float64)
    for axis, (n, m) in enumerate(zip(im.shape[:2], dims)):
        if n > m:                                           # anti-aliasing, on every shrunk axis
            out = _gaussian(out, axis, (n / m - 1) / 2)
    for axis, (n, m) in enumerate(zip(im.shape[:2], dims)):
        coords = _mirror((np.arange(m) + 0.5) * (n / m) - 0.5, n)
        out = _sample(out, axis, coords, order)
    return np.clip(out, im.min(), im.max())


def _zoom(im, dims, order):
    """SciPy's zoom for images of other channel counts: corners aligned, no smoothing."""
    _check_order(order)
    out = im.astype(np.float64)
    for axis, (n, m) in enumerate(zip(im.shape[:2], dims)):
        step = (n - 1) / (m - 1) if m > 1 else 1.0
        out = _sample(out, axis, np.minimum(np.arange(m) * step, n - 1), order)
    return out


def resize_image(im, new_dims, interp_order=1):
    """An (H, W, K) image resized to new_dims (height, width), as float32. One- and three-channel
    images are resized through [0, 1] and back, so values stay within the input's range."""
    dims = (int(new_dims[0]), int(new_dims[1]))
    if im.shape[-1] == 1 or im.shape[-1] == 3:
        im_min, im_max = im.min(), im.max()
        if im_max > im_min:
            im_std = (im - im_min) / (im_max - im_min)
            resized_im = _resize_like_skimage(im_std, dims, interp_order) * (im_max - im_min) + im_min
        else:
            return np.full(dims + (im.shape[-1],), im_min, dtype=np.float32)
    else:
        resized_im = _zoom(im, dims, interp_order)
    return resized_im.astype(np.float32)


def oversample(images, crop_dims):
    """The four corner crops and the centre crop of each image, then the same five mirrored:
    (10 N, h, w, K) float32, ten crops per image in that order."""
    ims = np.asarray(images, dtype=np.float32)
    h, w = ims.shape[1:3]
    ch, cw = int(crop_dims[0]), int(crop_dims[1])
    tops = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw),
            (int(h / 2.0 - ch / 2.0), int(w / 2.0 - cw / 2.0))]
    crops = np.stack([ims[:, y:y + ch, x:x + cw] for y, x in tops], axis=1)
    return np.concatenate([crops, crops[:, :, :, ::-1]], axis=1).reshape((-1, ch, cw) + ims.shape[3:])
