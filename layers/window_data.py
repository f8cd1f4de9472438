"""WindowData: R-CNN style windows cut from images listed in Caffe's window file."""
import math
import os

import numpy as np

from minicaffe import log
from minicaffe.layers.data import BatchSource
from minicaffe.layer import register
from minicaffe.transform import IMAGE_FORMATS

F = np.float32


def _round(x):
    """C's round on a float32: halves away from zero (exact in float64)."""
    return int(math.copysign(math.floor(abs(float(x)) + 0.5), x))


def resize_linear(img, out_h, out_w):
    """OpenCV's cv::resize(INTER_LINEAR) of a uint8 (H, W, C) image, as Caffe's crops go through it:
    half-pixel centres, 11-bit fixed-point weights, the vector code's rounding, and the exact
    halving done by area averaging as OpenCV does."""
    h, w = img.shape[:2]
    if (out_h, out_w) == (h, w):
        return img.copy()
    sx, sy = 1 / (out_w / w), 1 / (out_h / h)
    if (sx, sy) == (2.0, 2.0):
        s = img.astype(np.int32)
        return ((s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2] + 2) >> 2).astype(np.uint8)

    def coeffs(n_out, scale):
        f = ((np.arange(n_out) + 0.5) * scale - 0.5).astype(F)
        i = np.floor(f)
        f = (f - i).astype(F)
        return i.astype(np.int64), f

    def weights(f):
        return np.rint((F(1) - f) * F(2048)).astype(np.int32), np.rint(f * F(2048)).astype(np.int32)

    x0, fx = coeffs(out_w, sx)
    fx[(x0 < 0) | (x0 >= w - 1)] = 0         # columns clamp to the edge with the weight on it
    x0 = np.clip(x0, 0, w - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    ax0, ax1 = weights(fx)
    y0, fy = coeffs(out_h, sy)                # rows clamp their index but keep their weights
    by0, by1 = weights(fy)
    rows0, rows1 = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)

    def horizontal(rows):
        r = img[rows].astype(np.int32)
        return r[:, x0] * ax0[None, :, None] + r[:, x1] * ax1[None, :, None]

    v = ((horizontal(rows0) >> 4) * by0[:, None, None] >> 16) + \
        ((horizontal(rows1) >> 4) * by1[:, None, None] >> 16)
    return np.clip((v + 2) >> 2, 0, 255).astype(np.uint8)


def window_geometry(box, img_h, img_w, crop, context_pad, square, mirror):
    """Caffe's context padding: the image region to cut (x1, y1, x2, y2, inclusive), the size it is
    warped to, and where it lands in the crop x crop output (pad_h, pad_w). In float32 as Caffe."""
    x1, y1, x2, y2 = box
    if not (context_pad > 0 or square):
        return (x1, y1, x2, y2), (crop, crop), (0, 0)
    context_scale = F(crop) / F(crop - 2 * context_pad)
    half_h, half_w = F((y2 - y1 + 1) / 2.0), F((x2 - x1 + 1) / 2.0)
    cx, cy = F(x1) + half_w, F(y1) + half_h
    if square:
        half_h = half_w = max(half_h, half_w)
    x1, x2 = _round(cx - half_w * context_scale), _round(cx + half_w * context_scale)
    y1, y2 = _round(cy - half_h * context_scale), _round(cy + half_h * context_scale)
    full_h, full_w = y2 - y1 + 1, x2 - x1 + 1
    pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
    pad_x2, pad_y2 = max(0, x2 - img_w + 1), max(0, y2 - img_h + 1)
    x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
    scale_x, scale_y = F(crop) / F(full_w), F(crop) / F(full_h)
    out_w, out_h = _round(F(x2 - x1 + 1) * scale_x), _round(F(y2 - y1 + 1) * scale_y)
    pad_h = _round(F(pad_y1) * scale_y)
    pad_w = _round(F(pad_x2 if mirror else pad_x1) * scale_x)   # a mirrored window mirrors its padding
    return (x1, y1, x2, y2), (min(out_h, crop - pad_h), min(out_w, crop - pad_w)), (pad_h, pad_w)


@register("WindowData")
class WindowData(BatchSource):
    """Each batch: (1 - fg_fraction) of background windows, then the foreground ones, each drawn at
    random from its set, cut with context, warped to crop_size and mean-subtracted as Caffe does.

    As Caffe, crop_size, mirror and the mean come from transform_param (old nets' copies in
    window_data_param are moved there when the net is read) and mirroring applies in both phases;
    the scale is window_data_param's alone (Caffe's load_batch reads no other: transform_param's,
    and an old net's moved there, are ignored)."""
    n_top = 2
    min_top = max_top = None

    def open(self):
        p, tp = self.param.window_data_param, self.param.transform_param
        self.crop = tp.crop_size
        if not self.crop:
            raise self.error("transform_param.crop_size must be > 0: every window is warped to "
                             "crop_size x crop_size")
        if not p.batch_size:
            raise self.error("window_data_param.batch_size is required")
        if p.crop_mode not in ("warp", "square"):
            raise self.error(f"crop_mode must be 'warp' or 'square', got '{p.crop_mode}'")
        if p.context_pad * 2 >= self.crop:
            raise self.error(f"context_pad {p.context_pad} leaves no room in a {self.crop}-pixel crop")
        self.scale = p.scale
        self.images, windows = self._read_window_file(p)
        overlap = windows[:, 2].astype(F)         # Caffe reads it into a float
        fg = overlap >= F(p.fg_threshold)
        self.fg = windows[fg]
        self.bg = windows[~fg & (overlap < F(p.bg_threshold))]     # else-if: never both
        self.bg[:, 1] = 0                         # background windows are class 0
        self.n_fg = int(F(p.batch_size) * F(p.fg_fraction))
        for n, ws, what in ((self.n_fg, self.fg, f"foreground (overlap >= {p.fg_threshold:g})"),
                            (p.batch_size - self.n_fg, self.bg,
                             f"background (overlap < {p.bg_threshold:g})")):
            if n and not len(ws):
                raise self.error(f"{p.source} has no {what} window to fill {n} of each batch")
        if (self.fg[:, 1] <= 0).any():
            raise self.error(f"{p.source}: foreground windows need a class index > 0 "
                             "(class 0 is background)")
        self.mean = self.transformer.mean
        if self.mean is not None and self.mean.ndim == 3:
            m = self.mean
            self.mean_off = (m.shape[2] - self.crop) // 2
            if m.shape[0] != 3 or self.mean_off < 0 or self.mean_off + self.crop > m.shape[1]:
                raise self.error(f"mean_file shape {m.shape} cannot cover a 3 x {self.crop} x "
                                 f"{self.crop} crop at its centre")
        elif self.mean is not None and len(self.mean) not in (1, 3):
            raise self.error(f"{len(self.mean)} mean_value(s) for 3 channels; give 1 or 3")
        self.cache = {i: self._load(i) for i in range(len(self.images))} if p.cache_images else None
        log.info(f"Number of images: {len(self.images)}")
        classes, counts = np.unique(np.concatenate([self.bg[:, 1], self.fg[:, 1]]), return_counts=True)
        for c, n in zip(classes.astype(int), counts):
            log.info(f"class {c} has {n} samples")

    def _read_window_file(self, p):
        """Images [(path, (line, channels))] and windows [image, class, overlap, x1, y1, x2, y2]."""
        try:
            with open(p.source) as f:
                tokens = [(t, ln) for ln, line in enumerate(f, 1) for t in line.split()]
        except OSError as e:
            raise self.error(f"cannot read window file {p.source}: {e.strerror}") from None
        if not tokens:
            raise self.error(f"window file {p.source} is empty")
        pos = 0

        def take(what, kind=int):
            nonlocal pos
            if pos == len(tokens):
                raise self.error(f"{p.source}: ends where {what} was expected")
            tok, ln = tokens[pos]
            pos += 1
            try:
                return kind(tok)
            except ValueError:
                raise self.error(f"{p.source}:{ln}: expected {what}, got '{tok}'") from None

        images, windows = [], []
        while pos < len(tokens):
            ln = tokens[pos][1]
            if take("'#' starting an image entry", str) != "#":
                raise self.error(f"{p.source}:{ln}: expected '# image_index', got '{tokens[pos - 1][0]}'")
            index = take("the image index after '#'")
            if index != len(images):
                raise self.error(f"{p.source}:{ln}: image index {index}, expected {len(images)} "
                                 "(images are numbered from 0 in file order)")
            path = take("an image path", str)
            channels = take("the image's channels")
            take("the image's height")
            take("the image's width")
            if channels != 3:
                raise self.error(f"{p.source}:{ln}: image {index} has {channels} channels; WindowData "
                                 "reads every image in colour, as Caffe does (3 channels)")
            images.append(os.path.join(p.root_folder, path) if p.root_folder else path)
            for _ in range(take("the number of windows")):
                windows.append([index, take("a class index"), take("an overlap", float),
                                take("x1"), take("y1"), take("x2"), take("y2")])
        return images, np.array(windows, np.float64).reshape(-1, 7)

    def _load(self, i):
        """Image i as BGR uint8 (H, W, 3), as OpenCV's colour imread gives Caffe."""
        from PIL import Image
        try:
            with Image.open(self.images[i], formats=IMAGE_FORMATS) as img:
                return np.asarray(img.convert("RGB"))[:, :, ::-1]
        except OSError as e:
            raise self.error(f"cannot open image {self.images[i]}: {e}") from None

    def make_batch(self, k):
        p = self.param.window_data_param
        rs = self.batch_rng(k)

        def draw(ws, n):
            return ws[rs.integers(0, len(ws), n)] if n else ws[:0]
        picked = np.concatenate([draw(self.bg, p.batch_size - self.n_fg), draw(self.fg, self.n_fg)])
        mirror = (rs.integers(0, 2, len(picked)) == 1) & bool(self.param.transform_param.mirror)
        out = np.zeros((len(picked), 3, self.crop, self.crop), F)
        loaded = self.cache if self.cache is not None else {}
        for j, (w, flip) in enumerate(zip(picked, mirror)):    # one window at a time: each its own warp
            i = int(w[0])
            if i not in loaded:
                loaded[i] = self._load(i)
            self._warp(loaded[i], w[3:].astype(int), flip, out[j])
        return out, picked[:, 1].astype(F)

    def _warp(self, img, box, flip, out):
        """Window `box` of img, warped, into `out` (3, crop, crop), already zero where padded."""
        p = self.param.window_data_param
        h, w = img.shape[:2]
        (x1, y1, x2, y2), (oh, ow), (ph, pw) = window_geometry(
            box, h, w, self.crop, p.context_pad, p.crop_mode == "square", flip)
        if not (0 <= x1 <= x2 < w and 0 <= y1 <= y2 < h):
            raise self.error(f"window {tuple(box)} lies outside its {w}x{h} image")
        if oh <= 0 or ow <= 0:
            raise self.error(f"window {tuple(box)} warps to an empty {oh}x{ow} region")
        patch = resize_linear(img[y1:y2 + 1, x1:x2 + 1], oh, ow)
        if flip:
            patch = patch[:, ::-1]
        x = patch.transpose(2, 0, 1).astype(F)
        if self.mean is not None and self.mean.ndim == 3:
            o = self.mean_off
            x -= self.mean[:, o + ph:o + ph + oh, o + pw:o + pw + ow]
        elif self.mean is not None:
            x -= self.mean[:, None, None] if len(self.mean) == 3 else self.mean[0]
        out[:, ph:ph + oh, pw:pw + ow] = x * F(self.scale)
