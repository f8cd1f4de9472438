"""Net: layers in order and blobs by name, built from a NetParameter as Caffe's Net::Init does."""
from collections import OrderedDict

import numpy as np

from . import io
from . import minicaffe_pb2 as pb
from .blob import Blob
from .errors import CaffeError
from .layer import create_layer
from .splits import insert_splits

TRAIN, TEST = pb.TRAIN, pb.TEST


def state_meets_rule(state, rule):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param):
    """Keep the layers whose include/exclude rules admit the net's state."""
    out = pb.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    for lp in param.layer:
        if len(lp.include) and len(lp.exclude):
            raise CaffeError(f"layer '{lp.name}' specifies both include and exclude; use one")
        if len(lp.include):
            keep = any(state_meets_rule(param.state, r) for r in lp.include)
        else:
            keep = not any(state_meets_rule(param.state, r) for r in lp.exclude)
        if keep:
            out.layer.add().CopyFrom(lp)
    return out


def _shape_equals_legacy(shape, other):
    """Caffe accepts old 4-D (num, channels, height, width) shapes for lower-rank blobs."""
    if tuple(shape) == tuple(other):
        return True
    if len(other) == 4 and len(shape) <= 4:
        padded = (1,) * (4 - len(shape)) + tuple(shape)
        return padded == tuple(other)
    return False


class Net:
    """A Caffe net. Also pycaffe's Net: Net(prototxt, [weights,] phase)."""

    def __init__(self, model, *args, weights=None, phase=None, level=0, stages=None):
        for a in args:
            if isinstance(a, (int, np.integer)):
                phase = int(a)
            else:
                weights = a
        if isinstance(model, pb.NetParameter):
            param = pb.NetParameter()
            param.CopyFrom(model)
            self.source = "<net>"
        else:
            param = io.read_net(str(model))
            self.source = str(model)
        if phase is not None:
            param.state.phase = phase
        if level:
            param.state.level = level
        if stages:
            del param.state.stage[:]
            param.state.stage.extend(stages)
        self._init(param)
        if weights:
            for w in str(weights).split(",") if isinstance(weights, str) else weights:
                self.copy_from(w)

    # ------------------------------------------------------------ construction
    def _init(self, in_param):
        self.phase = in_param.state.phase
        self.param = insert_splits(filter_net(in_param))
        self.name = self.param.name
        self.blobs = OrderedDict()
        self.layers, self._layer_names = [], []
        self.bottom_vecs, self.top_vecs, self.bottom_names, self.top_names = [], [], [], []
        self.loss_tops = []        # (blob, weight)
        self.blob_loss_weights = {}
        owners = {}                # shared param name -> (layer, index, blob)
        self.learnable_params, self.params_lr, self.params_weight_decay = [], [], []
        self.layer_params = OrderedDict()
        need_bw = {}               # blob name -> needs backward
        self.layer_need_backward, self.bottom_need_backward = [], []
        force = self.param.force_backward

        for lp in self.param.layer:
            if not lp.HasField("phase"):
                lp.phase = self.phase
            layer = create_layer(lp, self.phase)
            bottoms, bnames = [], []
            for i, b in enumerate(lp.bottom):
                if b not in self.blobs:
                    raise CaffeError(f"layer '{lp.name}': unknown bottom blob '{b}' (bottom index {i}); "
                                     "no earlier layer produces it")
                bottoms.append(self.blobs[b])
                bnames.append(b)
            tops = []
            for i, t in enumerate(lp.top):
                if t in lp.bottom:
                    tops.append(self.blobs[t])          # in-place
                elif t in self.blobs:
                    raise CaffeError(f"layer '{lp.name}': top blob '{t}' is produced by more than one layer")
                else:
                    self.blobs[t] = Blob()
                    tops.append(self.blobs[t])
            layer.set_up(bottoms, tops)
            if len(lp.blobs):
                self._load_layer_blobs(layer, lp.blobs, lp.name)
            if layer.blobs:
                layer.on_weights_set()
            self._set_loss_weights(layer, lp, tops)

            # parameters: sharing by name, lr/decay multipliers
            if len(lp.param) > len(layer.blobs):
                raise CaffeError(f"layer '{lp.name}' has {len(layer.blobs)} parameter blob(s) but "
                                 f"{len(lp.param)} param specs")
            any_lr = False
            for i, blob in enumerate(layer.blobs):
                spec = lp.param[i] if i < len(lp.param) else pb.ParamSpec()
                if getattr(layer, "frozen_params", False):
                    spec = pb.ParamSpec(name=spec.name, lr_mult=0, decay_mult=0)
                any_lr |= spec.lr_mult != 0
                if spec.name and spec.name in owners:
                    olayer, oi, oblob = owners[spec.name]
                    ok = (blob.shape == oblob.shape if spec.share_mode != pb.ParamSpec.PERMISSIVE
                          else blob.count == oblob.count)
                    if not ok:
                        raise CaffeError(f"layer '{lp.name}' shares param '{spec.name}' with layer "
                                         f"'{olayer}', but shapes differ: {blob.shape} vs {oblob.shape}")
                    if blob.shape != oblob.shape:
                        blob.data = oblob.data.reshape(blob.shape)
                        blob.diff = oblob.diff.reshape(blob.shape)
                    else:
                        layer.blobs[i] = oblob
                    continue
                if spec.name:
                    owners[spec.name] = (lp.name, i, blob)
                self.learnable_params.append(blob)
                self.params_lr.append(spec.lr_mult)
                self.params_weight_decay.append(spec.decay_mult)

            need = force or any(need_bw[b] for b in bnames) or (bool(layer.blobs) and any_lr)
            for t in lp.top:
                need_bw[t] = need
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            self.bottom_vecs.append(bottoms)
            self.top_vecs.append(tops)
            self.bottom_names.append(bnames)
            self.top_names.append(list(lp.top))
            self.layer_need_backward.append(need)
            self.bottom_need_backward.append(
                [need_bw.get(b, False) or (force and layer.allow_force_backward(i))
                 for i, b in enumerate(bnames)])
            if layer.blobs:
                self.layer_params[lp.name] = layer.blobs

        # backward is useless for layers that do not lead to a loss
        under_loss = set()
        for li in range(len(self.layers) - 1, -1, -1):
            layer, lp = self.layers[li], self.param.layer[li]
            contributes = any(w != 0 for w in layer.loss_weights) or any(
                t in under_loss for t in lp.top)
            if not contributes:
                self.layer_need_backward[li] = False
            else:
                under_loss.update(lp.bottom)
            pd = list(lp.propagate_down)
            if pd and len(pd) != len(lp.bottom):
                raise CaffeError(f"layer '{lp.name}': propagate_down must be given once per bottom")
            for i in range(len(lp.bottom)):
                self.bottom_need_backward[li][i] = (self.bottom_need_backward[li][i]
                                                   and self.layer_need_backward[li]
                                                   and (pd[i] if pd else True))
        available = OrderedDict()
        for lp in self.param.layer:
            for b in lp.bottom:
                available.pop(b, None)
            for t in lp.top:
                available[t] = True
        self.outputs = list(available)
        self.inputs = [t for layer, lp in zip(self.layers, self.param.layer)
                       if lp.type == "Input" for t in lp.top]
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))

    def _set_loss_weights(self, layer, lp, tops):
        weights = list(lp.loss_weight)
        if not weights and layer.is_loss:
            weights = [1.0] + [0.0] * (len(tops) - 1)
        if weights and len(weights) != len(tops):
            raise CaffeError(f"layer '{lp.name}': loss_weight must be given once per top "
                             f"({len(tops)}), got {len(weights)}")
        layer.loss_weights = weights
        for name, t, w in zip(lp.top, tops, weights):
            if w:
                self.loss_tops.append((t, w))
                self.blob_loss_weights[name] = w

    @property
    def params(self):
        return self.layer_params

    @property
    def layer_names(self):
        return self._layer_names

    # ------------------------------------------------------------ running
    def _index(self, name, default):
        if name is None:
            return default
        if name not in self.layer_dict:
            raise CaffeError(f"no layer named '{name}'")
        return self._layer_names.index(name)

    def forward_from_to(self, start=0, end=None):
        end = len(self.layers) - 1 if end is None else end
        loss = 0.0
        for i in range(start, end + 1):
            layer, bottom, top = self.layers[i], self.bottom_vecs[i], self.top_vecs[i]
            layer.reshape(bottom, top)
            layer.forward(bottom, top)
            for t, w in zip(top, layer.loss_weights):
                if w:
                    loss += w * float(t.data.sum(dtype=np.float64))
        return loss

    def backward_from_to(self, start=None, end=0, seed_loss=True):
        """Backward from layer `start` down to `end`; the loss tops' diffs start as their weights."""
        start = len(self.layers) - 1 if start is None else start
        if seed_loss:
            for t, w in self.loss_tops:
                t.diff[...] = w
        for i in range(start, end - 1, -1):
            if self.layer_need_backward[i]:
                self.layers[i].backward(self.top_vecs[i], self.bottom_need_backward[i],
                                        self.bottom_vecs[i])

    def forward_backward(self):
        loss = self.forward_from_to()
        self.backward_from_to()
        return loss

    def reshape(self):
        for layer, bottom, top in zip(self.layers, self.bottom_vecs, self.top_vecs):
            layer.reshape(bottom, top)

    def set_input_arrays(self, data, labels):
        """pycaffe's: feed the net's first MemoryData layer."""
        for layer in self.layers:
            if hasattr(layer, "set_input_arrays"):
                return layer.set_input_arrays(data, labels)
        raise CaffeError("the net has no MemoryData layer")

    def average_outputs(self, iterations, each=None):
        """Mean loss and mean of every output over `iterations` forward passes (caffe test, solver
        test); `each(i, values)` sees every pass."""
        sums, loss = None, 0.0
        for i in range(iterations):
            loss += self.forward_from_to()
            vals = [self.blobs[n].data.astype(np.float64).ravel().copy() for n in self.outputs]
            if each:
                each(i, vals)
            sums = vals if sums is None else [a + v for a, v in zip(sums, vals)]
        return loss / iterations, [a / iterations for a in sums or []]

    def output_line(self, name, x):
        """`name = x`, with the loss it contributes when the blob has a loss weight, as Caffe logs it."""
        w = self.blob_loss_weights.get(name, 0)
        return f"{name} = {x:.6g}" + (f" (* {w:g} = {w * x:.6g} loss)" if w else "")

    def clear_param_diffs(self):
        for b in self.learnable_params:
            b.diff[...] = 0

    # ------------------------------------------------------------ pycaffe API
    def forward(self, blobs=None, start=None, end=None, **inputs):
        for name, value in inputs.items():
            if name not in self.blobs:
                raise CaffeError(f"no blob named '{name}'")
            value = np.asarray(value, np.float32)
            b = self.blobs[name]
            b.reshape(value.shape)
            b.data[...] = value
        s = self._index(start, 0)
        e = self._index(end, len(self.layers) - 1)
        self.forward_from_to(s, e)
        outs = self.top_names[e] if end is not None else self.outputs
        outs = list(outs) + [b for b in (blobs or []) if b not in outs]
        return {n: self.blobs[n].data for n in outs}

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        for name, value in top_diffs.items():
            self.blobs[name].diff[...] = value
        s = self._index(start, len(self.layers) - 1)
        e = self._index(end, 0)
        self.backward_from_to(s, e, seed_loss=not top_diffs)
        names = self.bottom_names[e] if end is not None else self.inputs
        names = list(names) + [d for d in (diffs or []) if d not in names]
        return {n: self.blobs[n].diff for n in names}

    # ------------------------------------------------------------ weights
    def _load_layer_blobs(self, layer, blob_protos, name):
        if len(blob_protos) != len(layer.blobs):
            raise CaffeError(f"layer '{name}': weights have {len(blob_protos)} blob(s), "
                             f"the net's layer has {len(layer.blobs)}")
        for i, (bp, blob) in enumerate(zip(blob_protos, layer.blobs)):
            shape = io.blob_shape(bp)
            if not _shape_equals_legacy(blob.shape, shape):
                raise CaffeError(f"layer '{name}': weight blob {i} has shape {shape} in the file "
                                 f"but {blob.shape} in the net")
            blob.data[...] = io.blob_to_array(bp).reshape(blob.shape)

    def copy_trained_layers_from(self, source):
        """Copy weights by layer name from a NetParameter or a weights file; extra layers are ignored."""
        strict = str(source).endswith(".mcz")
        if not isinstance(source, pb.NetParameter):
            source = io.read_weights(str(source))
        if strict:   # a compressed model is the whole net's weights: its layers must match exactly
            have = [lp.name for lp in source.layer if len(lp.blobs)]
            want = [n for n, layer in zip(self._layer_names, self.layers) if layer.blobs]
            if sorted(have) != sorted(want):
                raise CaffeError(f"the compressed model has {len(have)} layer(s) with weights "
                                 f"({', '.join(have)}), the net has {len(want)} ({', '.join(want)})")
        for lp in source.layer:
            layer = self.layer_dict.get(lp.name)
            if layer is None or not len(lp.blobs):
                continue
            self._load_layer_blobs(layer, lp.blobs, lp.name)
            layer.on_weights_set()

    def copy_from(self, path):
        self.copy_trained_layers_from(path)

    def share_trained_layers_with(self, other):
        """Make this (test) net use the weights of `other` (the train net), by layer name."""
        for name, layer in zip(self._layer_names, self.layers):
            src = other.layer_dict.get(name)
            if src is None or not layer.blobs:
                continue
            if len(src.blobs) != len(layer.blobs):
                raise CaffeError(f"layer '{name}': {len(src.blobs)} blobs in the train net, "
                                 f"{len(layer.blobs)} in the test net")
            for i, (a, b) in enumerate(zip(layer.blobs, src.blobs)):
                if a.shape != b.shape:
                    raise CaffeError(f"layer '{name}' blob {i}: shape {a.shape} in the test net, "
                                     f"{b.shape} in the train net")
            layer.blobs[:] = src.blobs
            self.layer_params[name] = layer.blobs

    def to_proto(self, write_diff=False):
        out = pb.NetParameter()
        out.name = self.name
        for layer, lp in zip(self.layers, self.param.layer):
            if lp.type == "Split":
                continue
            lo = out.layer.add()
            lo.CopyFrom(lp)
            lo.ClearField("blobs")
            for b in layer.blobs:
                io.array_to_blob(b.peek, lo.blobs.add(), b.diff if write_diff else None)
        return out

    def save(self, path, fmt="binaryproto"):
        io.write_weights(str(path), self.to_proto(), fmt)
