"""minicaffe time: caffe time --model=M: average forward/backward ms per iteration and per layer."""
import time

import numpy as np

from minicaffe import io, log, sparse
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError
from minicaffe.net import Net

from .common import add_net_state, phase, stages

HELP = "time a net's forward and backward passes"


def add_arguments(p):
    p.add_argument("--model", required=True, help="net .prototxt")
    p.add_argument("--weights", default="")
    p.add_argument("--iterations", type=int, default=50)
    add_net_state(p)


def stand_in_data(param, ph, level, stage):
    """Data layers whose source cannot be read become Input layers of the shape they declare;
    fill_stand_ins gives them one random batch, which then stays, as a prefetched batch costs
    nothing to produce (a DummyData refilling every pass took 1.1 ms of a cifar10_quick step)."""
    out = pb.NetParameter()
    out.CopyFrom(param)
    for lp in out.layer:
        if lp.type not in ("Data", "ImageData", "HDF5Data", "MemoryData", "WindowData"):
            continue
        try:
            Net(_only(param, lp), phase=ph, level=level, stages=stage)
            continue
        except CaffeError as e:
            why = str(e)
        if not why.startswith(f"layer '{lp.name}'"):      # a mean file's error names only the file
            why = f"layer '{lp.name}' ({lp.type}): {why}"
        batch = (lp.data_param.batch_size or lp.image_data_param.batch_size or
                 lp.hdf5_data_param.batch_size or lp.memory_data_param.batch_size or 1)
        shape = _declared_shape(lp, batch)
        if shape is None:
            raise CaffeError(f"{why} (and without the data, time cannot tell the shape of its tops)")
        log.info(f"{why}; timing with random blobs {shape} instead")
        tops = list(lp.top)
        lp.Clear()
        lp.name, lp.type = tops[0] + "_standin", "Input"
        lp.top.extend(tops)
        for i, _ in enumerate(tops):
            lp.input_param.shape.add().dim.extend(shape if i == 0 else [batch])
    return out


def fill_stand_ins(net, seed=0):
    """Data uniform in [0, 1), labels 0: the stand-ins' one batch."""
    rs = np.random.RandomState(seed)
    for name, layer, tops in zip(net.layer_names, net.layers, net.top_vecs):
        if name.endswith("_standin") and layer.type_name == "Input":
            tops[0].data[...] = rs.random_sample(tops[0].shape)


def _only(param, lp):
    p = pb.NetParameter()
    p.layer.add().CopyFrom(lp)
    p.state.CopyFrom(param.state)
    return p


def _declared_shape(lp, batch):
    mp = lp.memory_data_param
    if lp.type == "MemoryData":
        return [batch, mp.channels, mp.height, mp.width]
    crop = lp.transform_param.crop_size
    ip = lp.image_data_param
    if lp.type == "ImageData" and ip.new_height:
        return [batch, 3 if ip.is_color else 1, crop or ip.new_height, crop or ip.new_width]
    src = lp.data_param.source.lower()
    if "cifar" in src:
        return [batch, 3, crop or 32, crop or 32]
    if "mnist" in src or "digits" in src:
        return [batch, 1, crop or 28, crop or 28]
    return None


def run(a):
    ph = phase(a, pb.TRAIN)
    param = io.read_net(a.model)
    param.state.phase = ph
    param = stand_in_data(param, ph, a.level, stages(a))
    net = Net(param, phase=ph, level=a.level, stages=stages(a))
    fill_stand_ins(net)
    if a.weights:
        net.copy_from(a.weights)
    n = len(net.layers)
    fwd, bwd = np.zeros(n), np.zeros(n)
    log.info("Performing Forward")
    net.forward_backward()   # warm up: compile kernels, allocate buffers
    if ph == pb.TEST:        # and let pruned layers try their products before the clock runs
        for _ in range(sparse.TRIAL_CALLS):
            net.forward_from_to()
    total_f = total_b = 0.0
    log.info("*** Benchmark begins ***")
    log.info(f"Testing for {a.iterations} iterations.")
    for it in range(a.iterations):
        t_iter = time.perf_counter()
        for t, w in net.loss_tops:
            t.diff[...] = w
        for i, layer in enumerate(net.layers):
            t0 = time.perf_counter()
            layer.reshape(net.bottom_vecs[i], net.top_vecs[i])
            layer.forward(net.bottom_vecs[i], net.top_vecs[i])
            fwd[i] += time.perf_counter() - t0
        t_mid = time.perf_counter()
        for t, w in net.loss_tops:
            t.diff[...] = w
        for i in range(n - 1, -1, -1):
            if net.layer_need_backward[i]:
                t0 = time.perf_counter()
                net.layers[i].backward(net.top_vecs[i], net.bottom_need_backward[i], net.bottom_vecs[i])
                bwd[i] += time.perf_counter() - t0
        t_end = time.perf_counter()
        total_f += t_mid - t_iter
        total_b += t_end - t_mid
        log.info(f"Iteration: {it + 1} forward-backward time: {(t_end - t_iter) * 1e3:.3f} ms.")
    k = a.iterations
    width = max(len(nm) for nm in net.layer_names)
    for i, nm in enumerate(net.layer_names):
        path = getattr(net.layers[i], "path", "")
        log.info(f"{nm:>{width}}\tforward: {fwd[i] / k * 1e3:.4f} ms.{('  [' + path + ']') if path else ''}")
        log.info(f"{nm:>{width}}\tbackward: {bwd[i] / k * 1e3:.4f} ms.")
    log.info(f"Average Forward pass: {total_f / k * 1e3:.4f} ms.")
    log.info(f"Average Backward pass: {total_b / k * 1e3:.4f} ms.")
    log.info(f"Average Forward-Backward: {(total_f + total_b) / k * 1e3:.4f} ms.")
    log.info("*** Benchmark ends ***")
