"""The update rules of Caffe's solvers: each turns a regularized gradient into the step to subtract."""
import numpy as np


class SGD:
    n_history = 1

    def __init__(self, sp):
        self.sp = sp

    def compute(self, g, hist, rate, it):
        h = hist[0]
        h *= self.sp.momentum
        h += rate * g
        g[...] = h


class Nesterov(SGD):
    def compute(self, g, hist, rate, it):
        h = hist[0]
        prev = h.copy()
        h *= self.sp.momentum
        h += rate * g
        g[...] = (1 + self.sp.momentum) * h - self.sp.momentum * prev


class AdaGrad(SGD):
    def compute(self, g, hist, rate, it):
        h = hist[0]
        h += g * g
        g[...] = rate * g / (np.sqrt(h) + self.sp.delta)


class RMSProp(SGD):
    def compute(self, g, hist, rate, it):
        h, d = hist[0], self.sp.rms_decay
        h *= d
        h += (1 - d) * g * g
        g[...] = rate * g / (np.sqrt(h) + self.sp.delta)


class AdaDelta(SGD):
    n_history = 2

    def compute(self, g, hist, rate, it):
        h1, h2 = hist
        m, eps = self.sp.momentum, self.sp.delta
        h1 *= m
        h1 += (1 - m) * g * g
        upd = g * np.sqrt((h2 + eps) / (h1 + eps))
        h2 *= m
        h2 += (1 - m) * upd * upd
        g[...] = rate * upd


class Adam(SGD):
    n_history = 2

    def compute(self, g, hist, rate, it):
        m, v = hist
        b1, b2 = self.sp.momentum, self.sp.momentum2
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        t = it + 1
        corr = np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        g[...] = rate * corr * m / (np.sqrt(v) + self.sp.delta)


RULES = {"SGD": SGD, "Nesterov": Nesterov, "AdaGrad": AdaGrad, "RMSProp": RMSProp,
         "AdaDelta": AdaDelta, "Adam": Adam}
