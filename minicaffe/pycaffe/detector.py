"""pycaffe's caffe.Detector: classify given windows of images (R-CNN style)."""
import numpy as np

from minicaffe.net import Net

from . import io
from .classifier import configure_transformer, forward_images
from .proto.caffe_pb2 import TEST


class Detector(Net):
    """A TEST-phase Net that classifies windows (ymin, xmin, ymax, xmax) of images, each warped to
    the input's size, with `context_pad` pixels of the input showing the window's surroundings
    (filled with the mean where the image ends), as in R-CNN."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """[{'window', 'prediction', 'filename'}] for every window of every (filename, windows)."""
        images_windows = [(f, list(ws)) for f, ws in images_windows]   # walked twice (a zip would not be)
        window_inputs = []
        for image_fname, windows in images_windows:
            image = io.load_image(image_fname).astype(np.float32)
            window_inputs.extend(self.crop(image, w) for w in windows)
        predictions = forward_images(self, window_inputs)
        windows = [(f, w) for f, ws in images_windows for w in ws]
        return [{'window': w, 'prediction': p, 'filename': f} for (f, w), p in zip(windows, predictions)]

    def detect_selective_search(self, image_fnames):
        raise NotImplementedError(
            "selective search is not available in minicaffe (pycaffe runs it through MATLAB): compute "
            "the window proposals elsewhere and pass them to detect_windows([(filename, windows)])")

    def crop(self, im, window):
        """The window of `im` (an H x W x K image), with its context when context_pad is set."""
        crop = im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        if not self.context_pad:
            return crop
        box = np.array(window, dtype=float)
        crop_size = self.blobs[self.inputs[0]].width      # assumes a square input, as pycaffe
        scale = crop_size / (1. * crop_size - self.context_pad * 2)
        half_h, half_w = (box[2] - box[0] + 1) / 2., (box[3] - box[1] + 1) / 2.
        center = (box[0] + half_h, box[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h = crop_size / (box[2] - box[0] + 1)
        scale_w = crop_size / (box[3] - box[1] + 1)
        pad_y = round(max(0, -box[0]) * scale_h)            # the part beyond the image
        pad_x = round(max(0, -box[1]) * scale_w)
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0., [im_h, im_w, im_h, im_w])
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        if clip_h <= 0 or clip_w <= 0:
            raise ValueError(f"window {tuple(window)} lies outside the {im_h}x{im_w} image")
        crop_h = min(round(clip_h * scale_h), crop_size - pad_y)
        crop_w = min(round(clip_w * scale_w), crop_size - pad_x)
        b = box.astype(int)
        context_crop = io.resize_image(im[b[0]:b[2], b[1]:b[3]], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context_crop
        return crop

    def configure_crop(self, context_pad):
        """The crop dims (H, W, K) and, with context, the mean in the raw image's space, which
        fills the context beyond the image."""
        in_ = self.inputs[0]
        inv_transpose = np.argsort(self.transformer.transpose[in_])
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_transpose]
        self.context_pad = context_pad
        if not self.context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = np.array(mean, dtype=np.float32).transpose(inv_transpose)
        channel_order = self.transformer.channel_swap.get(in_)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, np.argsort(channel_order)]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
