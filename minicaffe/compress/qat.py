"""Quantization-aware training: the Convolution and InnerProduct layers that `minicaffe quantize` turns
into int8 compute, while training, with the weights and inputs that int8 would see (fake
quantization), and pass their gradients straight through to the float weights (Jacob et al. 2018).

The layer's own forward and backward run unchanged: around each call the weight blob holds the
per-channel quantized-then-dequantized weights and each bottom the per-tensor quantized inputs; the
float values come back afterwards, and the weight gradient (computed at the quantized point) lands on
the float weights, which the solver updates. Input scales follow a moving average of max|x| / 127 in
TRAIN; a TEST net shares them (by layer name) from the train net it is given.
"""
import numpy as np

from minicaffe import minicaffe_pb2 as pb

from .mask import out_axis
from .quantize import QMAX, dequantize, quantize_input, quantize_weights, quantizable

MOMENTUM = 0.9     # of the moving average of each input's max |x|


def fake_weights(w, axis):
    return dequantize(*quantize_weights(w, axis), axis)


def fake_inputs(x, scale):
    return quantize_input(x, scale).astype(np.float32) * np.float32(scale)


class FakeQuant:
    """One layer's fake quantization: its input scales and the wrapping of forward/backward."""

    def __init__(self, layer, scales):
        self.layer, self.scales = layer, scales     # scales: [max|x|] per bottom, shared with TEST
        self.axis = out_axis(layer.param)
        self.forward, self.backward = layer.forward, layer.backward
        layer.forward = self.quantized(self.forward, True)
        layer.backward = self.quantized(self.backward, False)

    def quantized(self, call, observe):
        def run(*args):
            bottom = args[0] if observe else args[2]
            if observe and self.layer.phase == pb.TRAIN:    # follow the inputs' range
                for i, b in enumerate(bottom):
                    m = float(np.abs(b.peek).max(initial=0))
                    self.scales[i] = m if self.scales[i] is None else MOMENTUM * self.scales[i] + (1 - MOMENTUM) * m
            w = self.layer.blobs[0]
            saved = [w.peek] + [b.peek for b in bottom]
            w.share(fake_weights(saved[0], self.axis))
            for b, x, m in zip(bottom, saved[1:], self.scales):
                if m:
                    b.share(fake_inputs(x, np.float32(m / QMAX)))
            try:
                return call(*args)
            finally:
                w.share(saved[0])
                for b, x in zip(bottom, saved[1:]):
                    b.share(x)
        return run


def enable(net, scales=None):
    """Fake-quantize `net`'s quantizable layers; pass the train net's result as `scales` to a TEST
    net so that it uses the ranges training saw. Returns {layer name: scales}."""
    scales = {} if scales is None else scales
    for i, layer in quantizable(net):
        FakeQuant(layer, scales.setdefault(layer.name, [None] * len(net.bottom_vecs[i])))
    return scales
