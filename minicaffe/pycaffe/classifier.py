"""pycaffe's caffe.Classifier: predict classes of images, with optional oversampling."""
import numpy as np

from minicaffe.net import Net

from . import io
from .proto.caffe_pb2 import TEST


def configure_transformer(net, mean, input_scale, raw_scale, channel_swap):
    """The Transformer pycaffe's Classifier and Detector set up for the net's first input."""
    in_ = net.inputs[0]
    t = io.Transformer({in_: net.blobs[in_].data.shape})
    t.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        t.set_mean(in_, mean)
    if input_scale is not None:
        t.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(in_, channel_swap)
    return t


def forward_images(net, images):
    """The net's first output for each (H, W, K) image, preprocessed by net.transformer."""
    in_ = net.inputs[0]
    caffe_in = np.array([net.transformer.preprocess(in_, x) for x in images], dtype=np.float32)
    return net.forward_all(**{in_: caffe_in})[net.outputs[0]]


class Classifier(Net):
    """A TEST-phase Net that classifies (H, W, K) images: each is resized to `image_dims` (default:
    the input's), then its centre crop, or its ten oversampled crops with their predictions
    averaged, goes through the Transformer and the net."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        in_ = self.inputs[0]
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if image_dims is None or not len(image_dims):
            image_dims = self.crop_dims
        self.image_dims = image_dims

    def predict(self, inputs, oversample=True):
        """(N, classes): the first output for each of the N images."""
        input_ = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1], inputs[0].shape[2]),
                          dtype=np.float32)
        for ix, in_ in enumerate(inputs):
            input_[ix] = io.resize_image(in_, self.image_dims)
        if oversample:
            input_ = io.oversample(input_, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            crop = (np.tile(center, 2) + np.concatenate([-self.crop_dims / 2.0,
                                                         self.crop_dims / 2.0])).astype(int)
            input_ = input_[:, crop[0]:crop[2], crop[1]:crop[3], :]
        predictions = forward_images(self, input_)
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
