"""Knowledge distillation (Hinton et al. 2015) as a loss layer, with the type name and
knowledge_distillation_param of the public Caffe distillation fork, so its prototxts run."""
import numpy as np

from minicaffe.layer import canonical_axis, prod, register

from .softmax import (FLT_MIN, LossLayer, label_geometry, loss_weight, normalization_mode, normalizer,
                      softmax)


@register("KnowledgeDistillation")
class KnowledgeDistillation(LossLayer):
    """bottom: student logits, teacher logits, optional labels (only to skip ignore_label).

    loss = T^2 * KL(softmax(teacher/T) || softmax(student/T)), normalized as SoftmaxWithLoss.
    The T^2 keeps the soft gradient's size independent of T, so the hard loss beside it keeps
    its meaning; the teacher and the labels are constants, so only the student gets a gradient.
    """
    min_bottom = 2

    def setup(self, bottom, top):
        if len(bottom) > 3:
            raise self.error(f"takes 2 or 3 bottoms (student logits, teacher logits, labels), "
                             f"got {len(bottom)}")
        lp = self.param.loss_param
        self.ignore = lp.ignore_label if lp.HasField("ignore_label") else None
        if (self.ignore is not None) != (len(bottom) == 3):
            raise self.error("loss_param.ignore_label and a third (label) bottom go together: "
                             "give both or neither")
        self.mode = normalization_mode(self.param)
        self.T = float(self.param.knowledge_distillation_param.temperature)
        if not self.T > 0:
            raise self.error(f"temperature must be positive, got {self.T:g}")

    def allow_force_backward(self, i):
        return i == 0

    def reshape(self, bottom, top):
        s, t = bottom[0], bottom[1]
        self.axis = canonical_axis(self.param.softmax_param.axis, s.data.ndim)
        if s.shape != t.shape:
            raise self.error(f"student logits {s.shape} and teacher logits {t.shape} "
                             "must have the same shape")
        self.outer = prod(s.shape[:self.axis])
        self.inner = prod(s.shape[self.axis + 1:])
        if len(bottom) == 3:
            label_geometry(self, s, bottom[2], self.axis)
        top[0].reshape(())

    def forward(self, bottom, top):
        def probs(b):
            return softmax(b.data.reshape(self.outer, -1, self.inner) / np.float32(self.T), 1)
        self.p_s, self.p_t = probs(bottom[0]), probs(bottom[1])
        if self.ignore is None:
            self.valid = np.ones((self.outer, self.inner), bool)
        else:
            self.valid = bottom[2].data.reshape(self.outer, self.inner).astype(np.int64) != self.ignore
        log_ratio = (np.log(np.maximum(self.p_t, FLT_MIN), dtype=np.float64)
                     - np.log(np.maximum(self.p_s, FLT_MIN), dtype=np.float64))
        kl = (self.p_t * log_ratio).sum(axis=1)
        self.norm = normalizer(self.mode, self.outer, self.inner, int(self.valid.sum()))
        top[0].data[...] = self.T ** 2 * kl[self.valid].sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down[1:]):
            raise self.error("cannot backpropagate to the teacher logits or the labels")
        if not propagate_down[0]:
            return
        # d(T^2 KL)/d(student) = T^2 * (1/T) * (p_s - p_t)
        scale = self.T * loss_weight(top) / self.norm
        d = (self.p_s - self.p_t) * self.valid[:, None, :] * np.float32(scale)
        bottom[0].diff[...] = d.reshape(bottom[0].shape)
