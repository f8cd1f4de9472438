"""The other loss layers: sigmoid cross-entropy, Euclidean, hinge, contrastive, infogain,
multinomial logistic."""
import numpy as np

from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import canonical_axis, register

from .softmax import (LP, LossLayer, class_labels, label_geometry, loss_weight, normalization_mode,
                      normalizer, softmax)

LOG_THRESHOLD = np.float32(1e-20)     # Caffe's kLOG_THRESHOLD: log(p) never below log(1e-20)


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(LossLayer):
    n_bottom = 2

    def setup(self, bottom, top):
        lp = self.param.loss_param
        self.ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self.mode = normalization_mode(self.param, default=LP.BATCH_SIZE)

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise self.error(f"inputs must have the same count: {bottom[0].shape} vs {bottom[1].shape}")
        top[0].reshape(())

    def forward(self, bottom, top):
        x, t = bottom[0].data, bottom[1].data.reshape(bottom[0].shape)
        self.valid = np.ones(x.shape, bool) if self.ignore is None else t != self.ignore
        pos = x >= 0
        l = -(x * (t - pos) - np.log1p(np.exp(x - 2 * x * pos)))
        outer = bottom[0].shape[0] if x.ndim else 1
        self.norm = normalizer(self.mode, outer, x.size // max(outer, 1), int(self.valid.sum()))
        top[0].data[...] = l[self.valid].sum(dtype=np.float64) / self.norm

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the label input")
        if propagate_down[0]:
            x, t = bottom[0].data, bottom[1].data.reshape(bottom[0].shape)
            s = 0.5 * np.tanh(0.5 * x) + 0.5
            bottom[0].diff[...] = (s - t) * self.valid * (loss_weight(top) / self.norm)


@register("EuclideanLoss")
class EuclideanLoss(LossLayer):
    n_bottom = 2

    def allow_force_backward(self, i):
        return True

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise self.error(f"inputs must have the same count: {bottom[0].shape} vs {bottom[1].shape}")
        top[0].reshape(())

    def forward(self, bottom, top):
        self.d = bottom[0].data - bottom[1].data.reshape(bottom[0].shape)
        top[0].data[...] = (self.d.astype(np.float64) ** 2).sum() / bottom[0].shape[0] / 2

    def backward(self, top, propagate_down, bottom):
        a = loss_weight(top) / bottom[0].shape[0]
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                bottom[i].diff[...] = (sign * a * self.d).reshape(bottom[i].shape)


@register("HingeLoss")
class HingeLoss(LossLayer):
    n_bottom = 2

    def reshape(self, bottom, top):
        top[0].reshape(())

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(bottom[0].shape[0], -1)
        n = x.shape[0]
        self.lab = bottom[1].data.ravel().astype(np.int64)
        d = x.copy()
        d[np.arange(n), self.lab] *= -1
        self.d = np.maximum(0, 1 + d)
        l1 = self.param.hinge_loss_param.norm == pb.HingeLossParameter.L1
        loss = self.d.sum() if l1 else (self.d.astype(np.float64) ** 2).sum()
        top[0].data[...] = loss / n

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the label input")
        if propagate_down[0]:
            n = self.d.shape[0]
            l1 = self.param.hinge_loss_param.norm == pb.HingeLossParameter.L1
            g = np.sign(self.d) if l1 else 2 * self.d
            g[np.arange(n), self.lab] *= -1
            bottom[0].diff[...] = (g * (loss_weight(top) / n)).reshape(bottom[0].shape)


@register("ContrastiveLoss")
class ContrastiveLoss(LossLayer):
    n_bottom = 3

    def allow_force_backward(self, i):
        return i != 2

    def reshape(self, bottom, top):
        if bottom[0].shape != bottom[1].shape:
            raise self.error(f"the two feature inputs differ in shape: {bottom[0].shape} vs {bottom[1].shape}")
        top[0].reshape(())

    def forward(self, bottom, top):
        p = self.param.contrastive_loss_param
        n = bottom[0].shape[0]
        self.diff = (bottom[0].data - bottom[1].data).reshape(n, -1)
        self.d2 = (self.diff.astype(np.float64) ** 2).sum(axis=1)
        self.sim = bottom[2].data.ravel() != 0
        if p.legacy_version:
            dis = np.maximum(p.margin - self.d2, 0)
        else:
            dis = np.maximum(p.margin - np.sqrt(self.d2), 0) ** 2
        top[0].data[...] = np.where(self.sim, self.d2, dis).sum() / n / 2

    def backward(self, top, propagate_down, bottom):
        p = self.param.contrastive_loss_param
        n = bottom[0].shape[0]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if not propagate_down[i]:
                continue
            alpha = sign * loss_weight(top) / n
            if p.legacy_version:
                dis = np.where(p.margin - self.d2 > 0, -alpha, 0.0)
            else:
                dist = np.sqrt(self.d2)
                mdist = p.margin - dist
                dis = np.where(mdist > 0, -alpha * mdist / (dist + 1e-4), 0.0)
            coef = np.where(self.sim, alpha, dis)
            bottom[i].diff[...] = (coef[:, None] * self.diff).reshape(bottom[i].shape)


@register("InfogainLoss")
class InfogainLoss(LossLayer):
    """Caffe's current InfogainLoss: a softmax over `axis` of the scores, then
    -sum_k H[label, k] log(p_k) per labelled position, normalized as loss_param says. H (K x K)
    comes from infogain_loss_param.source (a binaryproto) or a third bottom; it takes no gradient.
    A second top gives the softmax probabilities."""
    max_top = 2

    def allow_force_backward(self, i):
        return i == 0

    def setup(self, bottom, top):
        if len(bottom) > 3:
            raise self.error(f"takes 2 or 3 bottoms (scores, labels[, H]), got {len(bottom)}")
        lp = self.param.loss_param
        if lp.HasField("normalize"):
            raise self.error("loss_param.normalize is deprecated here (as in Caffe); "
                             "use loss_param.normalization")
        self.ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        self.mode = normalization_mode(self.param)
        self.h_file = None
        if len(bottom) < 3:
            ip = self.param.infogain_loss_param
            if not ip.HasField("source"):
                raise self.error("needs infogain_loss_param.source (a binaryproto holding H) "
                                 "or H as a third bottom")
            self.h_file = io.read_blobproto(ip.source)

    def _h(self, bottom):
        return (self.h_file if len(bottom) < 3 else bottom[2].data).reshape(self.k, self.k)

    def reshape(self, bottom, top):
        x = bottom[0]
        self.axis = canonical_axis(self.param.infogain_loss_param.axis, x.data.ndim)
        self.outer, self.inner = label_geometry(self, x, bottom[1], self.axis)
        self.k = x.shape[self.axis]
        h_count = self.h_file.size if len(bottom) < 3 else bottom[2].count
        if h_count != self.k * self.k:
            raise self.error(f"H must be {self.k} x {self.k} (the classes along axis {self.axis}), "
                             f"got {h_count} values")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(x.shape)

    def forward(self, bottom, top):
        self.prob = softmax(bottom[0].data.reshape(self.outer, self.k, self.inner), 1)
        lab = bottom[1].data.reshape(self.outer, self.inner)
        self.lab, self.valid = class_labels(self, lab, self.k, self.ignore)
        rows = self._h(bottom)[self.lab]                       # (outer, inner, K): H[label]
        logp = np.log(np.maximum(self.prob, LOG_THRESHOLD))
        loss = -np.einsum("oik,oki->oi", rows, logp, dtype=np.float64)
        self.norm = normalizer(self.mode, self.outer, self.inner, int(self.valid.sum()))
        top[0].data[...] = loss[self.valid].sum() / self.norm
        if len(top) > 1:
            top[1].data[...] = self.prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the label input")
        if len(bottom) > 2 and propagate_down[2]:
            raise self.error("cannot backpropagate to the infogain matrix input")
        if not propagate_down[0]:
            return
        rows = self._h(bottom)[self.lab]
        d = self.prob * rows.sum(axis=2)[:, None, :] - rows.transpose(0, 2, 1)
        d *= self.valid[:, None, :] * (loss_weight(top) / self.norm)
        bottom[0].diff[...] = d.reshape(bottom[0].shape)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(LossLayer):
    """-mean over the batch of log p[label], the bottom already being probabilities (N x dim);
    p is held at 1e-20 or above."""
    n_bottom = 2

    def reshape(self, bottom, top):
        if bottom[1].count != bottom[0].shape[0]:
            raise self.error(f"needs one label per item: {bottom[0].shape[0]} items "
                             f"({bottom[0].shape}), labels {bottom[1].shape}")
        top[0].reshape(())

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        p = bottom[0].data.reshape(n, -1)
        self.lab, _ = class_labels(self, bottom[1].data.ravel(), p.shape[1])
        self.p = np.maximum(p[np.arange(n), self.lab], LOG_THRESHOLD)
        top[0].data[...] = -np.log(self.p).sum(dtype=np.float64) / n

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the label input")
        if propagate_down[0]:
            n = bottom[0].shape[0]
            d = bottom[0].diff.reshape(n, -1)
            d[...] = 0
            d[np.arange(n), self.lab] = -loss_weight(top) / n / self.p
