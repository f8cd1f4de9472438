"""Nets of the kinds Caffe's users bring, using the layer families added for them: a fully
convolutional net (Deconvolution + Crop, offsets from coord_map), a captioning net (Embed + LSTM
with a static image input, per-time-step InnerProduct and loss), a spatial-pyramid net (SPP).
Each builds, runs forward and backward, and learns (loss falls over a few SGD steps)."""
import numpy as np

import caffe
from caffe import layers as L, params as P
from caffe.coord_map import crop


def fcn():
    n = caffe.NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[2, 3, 20, 20]), dict(dim=[2, 1, 20, 20])], ntop=2)
    n.conv1 = L.Convolution(n.data, num_output=8, kernel_size=3, pad=30,
                            weight_filler=dict(type="gaussian", std=0.1))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.score = L.Convolution(n.pool1, num_output=3, kernel_size=1, weight_filler=dict(type="gaussian", std=0.1))
    n.up = L.Deconvolution(n.score, convolution_param=dict(num_output=3, group=3, kernel_size=4, stride=2, bias_term=False,
                                                           weight_filler=dict(type="bilinear")),
                           param=[dict(lr_mult=0)])
    n.crop = crop(n.up, n.data)
    n.loss = L.SoftmaxWithLoss(n.crop, n.label, loss_param=dict(ignore_label=255, normalize=False))
    return n.to_proto()


def captioning():
    n = caffe.NetSpec()
    n.image, n.words, n.cont, n.target = L.Input(
        shape=[dict(dim=[3, 6]), dict(dim=[5, 3]), dict(dim=[5, 3]), dict(dim=[5, 3])], ntop=4)
    n.embed = L.Embed(n.words, input_dim=12, num_output=8, weight_filler=dict(type="uniform", min=-0.1, max=0.1))
    n.lstm = L.LSTM(n.embed, n.cont, n.image, recurrent_param=dict(
        num_output=10, weight_filler=dict(type="uniform", min=-0.1, max=0.1), bias_filler=dict(type="constant")))
    n.predict = L.InnerProduct(n.lstm, num_output=12, axis=2, weight_filler=dict(type="gaussian", std=0.1))
    n.loss = L.SoftmaxWithLoss(n.predict, n.target, softmax_param=dict(axis=2), loss_param=dict(ignore_label=-1))
    return n.to_proto()


def spp():
    n = caffe.NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[4, 2, 13, 11]), dict(dim=[4])], ntop=2)
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3, weight_filler=dict(type="xavier"))
    n.spp = L.SPP(n.conv, pyramid_height=3, pool=P.SPP.MAX)
    n.norm = L.MVN(n.spp)
    n.ip = L.InnerProduct(n.norm, num_output=3, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip, n.label)
    return n.to_proto()


def inputs(net, rs):
    if "image" in net.blobs:
        words = rs.randint(0, 12, (5, 3))
        target = np.roll(words, -1, 0)
        target[-1] = -1                              # ignored: nothing follows the last word
        cont = np.ones((5, 3))
        cont[0] = 0                                  # each column is a new sentence
        return dict(image=rs.randn(3, 6), words=words, cont=cont, target=target)
    if net.blobs["label"].data.ndim == 4:
        label = rs.randint(0, 3, (2, 1, 20, 20)).astype(float)
        label[:, :, :2] = 255                        # ignored pixels
        return dict(data=rs.randn(2, 3, 20, 20), label=label)
    return dict(data=rs.randn(4, 2, 13, 11), label=rs.randint(0, 3, 4))


def test_example_nets_run_and_learn(tmp_path):
    for make, lr in ((fcn, 1e-3), (captioning, 0.5), (spp, 0.1)):   # fcn's loss sums over pixels
        path = tmp_path / f"{make.__name__}.prototxt"
        path.write_text(str(make()))
        net = caffe.Net(str(path), caffe.TRAIN)
        feed = inputs(net, np.random.RandomState(0))
        losses = []
        for _ in range(15):
            loss = float(net.forward(**feed)["loss"])
            net.clear_param_diffs()
            net.backward()
            for name, ps in net.params.items():
                for i, p in enumerate(ps):
                    if make is fcn and name == "up":
                        assert not p.diff.any()          # lr_mult 0: fixed bilinear upsampling
                        continue
                    assert np.isfinite(p.diff).all()
                    p.data[...] -= lr * p.diff
            losses.append(loss)
        assert np.isfinite(losses).all() and losses[-1] < losses[0], (make.__name__, losses)
        if make is fcn:
            assert net.blobs["crop"].data.shape == (2, 3, 20, 20)
