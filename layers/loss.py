"""The other loss layers: sigmoid cross-entropy, Euclidean, hinge, contrastive."""
import numpy as np

from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import register

from .softmax import LP, LossLayer, normalization_mode, normalizer


def _loss_weight(top):
    return float(top[0].diff.ravel()[0])


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
            bottom[0].diff[...] = (s - t) * self.valid * (_loss_weight(top) / self.norm)


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
        a = _loss_weight(top) / bottom[0].shape[0]
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
            bottom[0].diff[...] = (g * (_loss_weight(top) / n)).reshape(bottom[0].shape)


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
            alpha = sign * _loss_weight(top) / n
            if p.legacy_version:
                dis = np.where(p.margin - self.d2 > 0, -alpha, 0.0)
            else:
                dist = np.sqrt(self.d2)
                mdist = p.margin - dist
                dis = np.where(mdist > 0, -alpha * mdist / (dist + 1e-4), 0.0)
            coef = np.where(self.sim, alpha, dis)
            bottom[i].diff[...] = (coef[:, None] * self.diff).reshape(bottom[i].shape)
