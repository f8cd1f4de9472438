"""Softmax and the loss that fuses it with the multinomial log loss."""
import numpy as np

from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import Layer, canonical_axis, prod, register

LP = pb.LossParameter
FLT_MIN = np.finfo(np.float32).tiny


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@register("Softmax")
class Softmax(Layer):
    n_bottom = 1
    n_top = 1

    def reshape(self, bottom, top):
        self.axis = canonical_axis(self.param.softmax_param.axis, bottom[0].data.ndim)
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = softmax(bottom[0].data, self.axis)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].data, top[0].diff
            bottom[0].diff[...] = y * (dy - (dy * y).sum(axis=self.axis, keepdims=True))


def normalization_mode(param, default=LP.VALID):
    lp = param.loss_param
    if lp.HasField("normalization"):
        return lp.normalization
    if lp.HasField("normalize"):
        return LP.VALID if lp.normalize else LP.BATCH_SIZE
    return default


def normalizer(mode, outer, inner, valid):
    n = {LP.FULL: outer * inner, LP.VALID: valid, LP.BATCH_SIZE: outer, LP.NONE: 1}[mode]
    return max(1.0, float(n))


def label_geometry(layer, x, labels, axis):
    """(outer, inner) of the scores around the class axis; one label per prediction."""
    outer, inner = prod(x.shape[:axis]), prod(x.shape[axis + 1:])
    if outer * inner != labels.count:
        raise layer.error(f"number of labels ({labels.count}) must equal the number of predictions "
                          f"({outer * inner}); scores {x.shape}, labels {labels.shape}")
    return outer, inner


def class_labels(layer, raw, n_classes, ignore=None):
    """Integer labels (0 where ignored) and which ones count; those that count must name a class
    (Caffe only DCHECKs, then reads past the row). A non-finite label reads as -1."""
    lab = np.where(np.isfinite(raw), raw, -1).astype(np.int64)
    valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
    bad = valid & ((lab < 0) | (lab >= n_classes))
    if bad.any():
        raise layer.error(f"label {raw[bad][0]:g} is outside [0, {n_classes})")
    return np.where(valid, lab, 0), valid


def loss_weight(top):
    """The loss weight the net seeds into the loss top's diff."""
    return float(top[0].diff.ravel()[0])


class LossLayer(Layer):
    is_loss = True
    min_bottom = 2
    min_top = 1
    max_top = 1

    def allow_force_backward(self, i):
        return i != 1   # never into the labels


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(LossLayer):
    n_bottom = 2
    max_top = 2

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self.ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self.mode = normalization_mode(self.param)

    def reshape(self, bottom, top):
        x, lab = bottom
        self.axis = canonical_axis(self.param.softmax_param.axis, x.data.ndim)
        self.outer, self.inner = label_geometry(self, x, lab, self.axis)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(x.shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, -1, self.inner)
        c = x.shape[1]
        self.prob = softmax(x, 1)
        self.lab, self.valid = class_labels(self, bottom[1].data.reshape(self.outer, self.inner),
                                            c, self.ignore)
        p = np.take_along_axis(self.prob, self.lab[:, None, :], axis=1)[:, 0, :]
        loss = -np.log(np.maximum(p, FLT_MIN))[self.valid].sum(dtype=np.float64)
        self.norm = normalizer(self.mode, self.outer, self.inner, int(self.valid.sum()))
        top[0].data[...] = loss / self.norm
        if len(top) > 1:
            top[1].data[...] = self.prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the label input")
        if not propagate_down[0]:
            return
        d = self.prob.copy()
        o, i = np.meshgrid(np.arange(self.outer), np.arange(self.inner), indexing="ij")
        d[o, self.lab, i] -= 1
        d *= self.valid[:, None, :]
        d *= loss_weight(top) / self.norm
        bottom[0].diff[...] = d.reshape(bottom[0].shape)
