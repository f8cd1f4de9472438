"""Net: layers in order and blobs by name, built from a NetParameter as Caffe's Net::Init does."""
import itertools
from collections import OrderedDict

import numpy as np

from . import io, log
from . import minicaffe_pb2 as pb
from .blob import Blob, physical_memory
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


def _mean_abs(a):
    return float(np.abs(a).sum(dtype=np.float64) / max(a.size, 1))


def _shape_equals_legacy(shape, other):
    """Caffe accepts old 4-D (num, channels, height, width) shapes for lower-rank blobs; a blob of
    one value matches any all-ones shape (a 0-axis blob such as a shared PReLU slope may come
    without a shape, read as (1,))."""
    if tuple(shape) == tuple(other):
        return True
    if all(d == 1 for d in shape) and all(d == 1 for d in other):
        return True
    if len(other) == 4 and len(shape) <= 4:
        padded = (1,) * (4 - len(shape)) + tuple(shape)
        return padded == tuple(other)
    return False


def shape_string(shape):
    """Caffe's Blob::shape_string: the axes, then the count."""
    return "".join(f"{d} " for d in shape) + f"({int(np.prod(shape, dtype=np.int64))})"


class Net:
    """A Caffe net. Also pycaffe's Net: Net(network_file, phase, level=0, stages=None,
    weights=None), or the legacy Net(network_file, weights, phase)."""

    def __init__(self, network_file, *args, weights=None, phase=None, level=None, stages=None):
        for a in args:
            if isinstance(a, (int, np.integer)):
                phase = int(a)
            else:
                weights = a
        if isinstance(network_file, pb.NetParameter):
            param = pb.NetParameter()
            param.CopyFrom(network_file)
            self.source = "<net>"
        else:
            param = io.read_net(str(network_file))
            self.source = str(network_file)
            level = level or 0      # as Caffe's Net(file, phase, level, stages): the level is set
        if phase is not None:
            param.state.phase = phase
        if level is not None:
            param.state.level = level
        if stages:                  # added to the file's own stages, as Caffe does
            param.state.stage.extend(stages)
        self._init(param)
        if weights:
            for w in str(weights).split(",") if isinstance(weights, str) else weights:
                self.copy_from(w)

    # ------------------------------------------------------------ construction
    def _init(self, in_param):
        self.phase = in_param.state.phase
        # pycaffe's before_forward & co.: callables given the layer index around each layer's pass
        self.callbacks = {"before_forward": [], "after_forward": [], "before_backward": [],
                          "after_backward": []}
        filtered = filter_net(in_param)
        if not len(in_param.layer):
            raise CaffeError(f"{self.source}: the net has no layers (an empty or wrong file?)")
        log.info("Initializing net from parameters: \n" + io.to_text(filtered))
        self.param = insert_splits(filtered)
        self.name = self.param.name
        self.blobs = OrderedDict()
        self.layers, self._layer_names = [], []
        self.bottom_vecs, self.top_vecs, self.bottom_name_vecs, self.top_name_vecs = [], [], [], []
        self.loss_tops = []        # (blob, weight)
        self.loss_weight_of = {}   # blob name -> its nonzero loss weight
        owners = {}                # shared param name -> (layer, index, blob)
        self.learnable_params, self.params_lr, self.params_weight_decay = [], [], []
        self.layer_params = OrderedDict()
        blob_need_bw = {}          # blob name -> needs backward (Caffe's blob_need_backward_)
        self.layer_need_backward, self.bottom_need_backward, self.param_propagate_down = [], [], []
        memory = 0

        for lp in self.param.layer:
            if not lp.HasField("phase"):
                lp.phase = self.phase
            pd = list(lp.propagate_down)
            if pd and len(pd) != len(lp.bottom):
                raise CaffeError(f"layer '{lp.name}': propagate_down must be given once per bottom "
                                 f"({len(lp.bottom)}), got {len(pd)}")
            layer = create_layer(lp, self.phase)
            log.info(f"Creating Layer {lp.name}")
            bottoms, need_backward, bneed = [], False, []
            for i, b in enumerate(lp.bottom):
                if b not in self.blobs:
                    raise CaffeError(f"layer '{lp.name}': unknown bottom blob '{b}' (bottom index {i}); "
                                     "no earlier layer produces it")
                log.info(f"{lp.name} <- {b}")
                bottoms.append(self.blobs[b])
                need_backward |= blob_need_bw[b]
                bneed.append(pd[i] if pd else blob_need_bw[b])     # propagate_down: true forces it
            tops = []
            for i, t in enumerate(lp.top):
                if i < len(lp.bottom) and t == lp.bottom[i]:
                    log.info(f"{lp.name} -> {t} (in-place)")
                    tops.append(self.blobs[t])
                elif t in self.blobs:
                    raise CaffeError(f"layer '{lp.name}': top blob '{t}' is produced by more than one "
                                     "layer (in-place use must give the same blob at the same index)")
                else:
                    log.info(f"{lp.name} -> {t}")
                    self.blobs[t] = Blob()
                    blob_need_bw[t] = False
                    tops.append(self.blobs[t])
            log.info(f"Setting up {lp.name}")
            try:
                layer.set_up(bottoms, tops)
            except CaffeError as e:        # a too large blob, a missing mean file: name the layer
                if str(e).startswith("layer '"):
                    raise
                raise CaffeError(f"layer '{lp.name}' ({lp.type}): {e}") from None
            if len(lp.blobs):
                self._load_layer_blobs(layer, lp.blobs, lp.name)
            if layer.blobs:
                layer.on_weights_set()
            self._set_loss_weights(layer, lp, tops)
            for t, blob in zip(lp.top, tops):
                log.info(f"Top shape: {shape_string(blob.shape)}")
                if t in self.loss_weight_of:
                    log.info(f"    with loss weight {self.loss_weight_of[t]:g}")
                memory += blob.count
            if 2 * 4 * memory > physical_memory():
                raise CaffeError(f"layer '{lp.name}' ({lp.type}): the net's blobs up to this layer need "
                                 f"{2 * 4 * memory / 2**30:.1f} GiB (data and diff), more than this "
                                 f"machine's {physical_memory() / 2**30:.1f} GiB")

            # parameters: sharing by name, lr/decay multipliers
            if len(lp.param) > len(layer.blobs):
                raise CaffeError(f"layer '{lp.name}' has {len(layer.blobs)} parameter blob(s) but "
                                 f"{len(lp.param)} param specs")
            propagate = []
            for i, blob in enumerate(layer.blobs):
                spec = lp.param[i] if i < len(lp.param) else pb.ParamSpec()
                if getattr(layer, "frozen_params", False):
                    spec = pb.ParamSpec(name=spec.name, lr_mult=0, decay_mult=0)
                propagate.append(spec.lr_mult > 0)
                if spec.name and spec.name in owners:
                    olayer, oi, oblob = owners[spec.name]
                    ok = (blob.shape == oblob.shape if spec.share_mode != pb.ParamSpec.PERMISSIVE
                          else blob.count == oblob.count)
                    if not ok:
                        raise CaffeError(f"layer '{lp.name}' shares param '{spec.name}' with layer "
                                         f"'{olayer}', but shapes differ: {blob.shape} vs {oblob.shape}")
                    log.info(f"Sharing parameters '{spec.name}' owned by layer '{olayer}', param index {oi}")
                    if blob.shape != oblob.shape:
                        blob.share(oblob.data.reshape(blob.shape), oblob.diff.reshape(blob.shape))
                    else:
                        layer.blobs[i] = oblob
                    continue
                if spec.name:
                    owners[spec.name] = (lp.name, i, blob)
                self.learnable_params.append(blob)
                self.params_lr.append(spec.lr_mult)
                self.params_weight_decay.append(spec.decay_mult)
            need_backward |= any(propagate)
            if need_backward:
                for t in lp.top:
                    blob_need_bw[t] = True
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            self.bottom_vecs.append(bottoms)
            self.top_vecs.append(tops)
            self.bottom_name_vecs.append(list(lp.bottom))
            self.top_name_vecs.append(list(lp.top))
            self.layer_need_backward.append(need_backward)
            self.bottom_need_backward.append(bneed)
            self.param_propagate_down.append(propagate)
            if layer.blobs:
                self.layer_params[lp.name] = layer.blobs
        self._backward_rules(self.param.force_backward)

        # Caffe keeps the blobs no layer consumed in a sorted set: outputs come alphabetically
        available = set()
        for lp in self.param.layer:
            available.difference_update(lp.bottom)
            available.update(lp.top)
        self.outputs = sorted(available)
        for name in self.outputs:
            log.info(f"This network produces output {name}")
        self.inputs = [t for layer, lp in zip(self.layers, self.param.layer)
                       if lp.type == "Input" for t in lp.top]
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        self.debug_info = self.param.debug_info
        log.info("Network initialization done.")
        log.info(f"Memory required for data: {memory * 4}")

    def _backward_rules(self, force):
        """Caffe's order: skip layers that do not lead to a loss or whose bottoms all skip
        backward, then force_backward turns on every layer and every bottom its layer allows."""
        under_loss, skip = set(), set()
        for li in range(len(self.layers) - 1, -1, -1):
            layer, tops, bottoms = self.layers[li], self.top_name_vecs[li], self.bottom_name_vecs[li]
            contributes = any(w != 0 for w in layer.loss_weights) or any(t in under_loss for t in tops)
            skips_all = all(t in skip for t in tops)
            bneed = self.bottom_need_backward[li]
            if self.layer_need_backward[li] and skips_all:
                self.layer_need_backward[li] = False
                bneed[:] = [False] * len(bneed)
            if not contributes:
                self.layer_need_backward[li] = False
            log.info(f"{self._layer_names[li]} " + ("needs backward computation." if
                     self.layer_need_backward[li] else "does not need backward computation."))
            for i, b in enumerate(bottoms):
                if contributes:
                    under_loss.add(b)
                else:
                    bneed[i] = False
                if not bneed[i]:
                    skip.add(b)
        if force:
            for li, layer in enumerate(self.layers):
                self.layer_need_backward[li] = True
                bneed = self.bottom_need_backward[li]
                bneed[:] = [n or bool(layer.allow_force_backward(i)) for i, n in enumerate(bneed)]
                self.param_propagate_down[li] = [True] * len(layer.blobs)

    def _set_loss_weights(self, layer, lp, tops):
        weights = list(lp.loss_weight)
        if not weights and layer.is_loss:
            weights = [1.0] + [0.0] * (len(tops) - 1)
        if weights and len(weights) != len(tops):
            raise CaffeError(f"layer '{lp.name}': loss_weight must be given once per top "
                             f"({len(tops)}), got {len(weights)}")
        layer.loss_weights = weights
        for name, t, w in zip(lp.top, tops, weights):
            if w:       # backward starts from here: the diff holds the weight, as Caffe sets it once
                t.diff[...] = w
                self.loss_tops.append((t, w))
                self.loss_weight_of[name] = w

    # ------------------------------------------------------------ pycaffe's views
    @property
    def params(self):
        return self.layer_params

    @property
    def layer_names(self):
        return self._layer_names

    @property
    def blob_loss_weights(self):
        return OrderedDict((n, self.loss_weight_of.get(n, 0.0)) for n in self.blobs)

    @property
    def _blob_names(self):
        return list(self.blobs)

    @property
    def top_names(self):
        return OrderedDict(zip(self._layer_names, (list(t) for t in self.top_name_vecs)))

    @property
    def bottom_names(self):
        return OrderedDict(zip(self._layer_names, (list(b) for b in self.bottom_name_vecs)))

    @property
    def _blobs(self):
        return list(self.blobs.values())

    @property
    def _blob_loss_weights(self):
        return list(self.blob_loss_weights.values())

    @property
    def _inputs(self):
        """pycaffe's: the inputs as indices into _blob_names."""
        names = self._blob_names
        return [names.index(n) for n in self.inputs]

    @property
    def _outputs(self):
        names = self._blob_names
        return [names.index(n) for n in self.outputs]

    def _top_ids(self, i):
        names = self._blob_names
        return [names.index(t) for t in self.top_name_vecs[i]]

    def _bottom_ids(self, i):
        names = self._blob_names
        return [names.index(b) for b in self.bottom_name_vecs[i]]

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
        if self.debug_info:
            for name in self.inputs:
                log.info(f"    [Forward] Input {name} data: {_mean_abs(self.blobs[name].peek):g}")
        before, after = self.callbacks["before_forward"], self.callbacks["after_forward"]
        for i in range(start, end + 1):
            for run in before:
                run(i)
            layer, bottom, top = self.layers[i], self.bottom_vecs[i], self.top_vecs[i]
            layer.reshape(bottom, top)
            layer.forward(bottom, top)
            for t, w in zip(top, layer.loss_weights):
                if w:
                    loss += w * float(t.data.sum(dtype=np.float64))
            if self.debug_info:
                self._forward_debug(i)
            for run in after:
                run(i)
        return loss

    def backward_from_to(self, start=None, end=0):
        start = len(self.layers) - 1 if start is None else start
        before, after = self.callbacks["before_backward"], self.callbacks["after_backward"]
        for i in range(start, end - 1, -1):
            for run in before:      # every layer, even one that needs no backward, as Caffe
                run(i)
            if self.layer_need_backward[i]:
                self._backward_layer(i)
            for run in after:
                run(i)

    def _backward_layer(self, i):
        layer = self.layers[i]
        keep = [(b, b.diff.copy()) for b, p in zip(layer.blobs, self.param_propagate_down[i])
                if not p]     # a param with lr_mult 0 gets no gradient, as in Caffe
        layer.backward(self.top_vecs[i], self.bottom_need_backward[i], self.bottom_vecs[i])
        for b, d in keep:
            b.diff[...] = d
        if self.debug_info:
            self._backward_debug(i)

    def _forward(self, start, end):
        """pycaffe's: layers start..end by index (inclusive); the loss."""
        return self.forward_from_to(start, end)

    def _backward(self, start, end):
        self.backward_from_to(start, end)

    def before_forward(self, run):
        """pycaffe's: run(layer index) before each layer's forward (and so on for the others)."""
        self.callbacks["before_forward"].append(run)

    def after_forward(self, run):
        self.callbacks["after_forward"].append(run)

    def before_backward(self, run):
        self.callbacks["before_backward"].append(run)

    def after_backward(self, run):
        self.callbacks["after_backward"].append(run)

    def forward_backward(self):
        loss = self.forward_from_to()
        self.backward_from_to()
        return loss

    def _forward_debug(self, i):
        name = self._layer_names[i]
        for t, blob in zip(self.top_name_vecs[i], self.top_vecs[i]):
            log.info(f"    [Forward] Layer {name}, top blob {t} data: {_mean_abs(blob.peek):g}")
        for j, blob in enumerate(self.layers[i].blobs):
            log.info(f"    [Forward] Layer {name}, param blob {j} data: {_mean_abs(blob.peek):g}")

    def _backward_debug(self, i):
        name = self._layer_names[i]
        for b, blob, need in zip(self.bottom_name_vecs[i], self.bottom_vecs[i],
                                 self.bottom_need_backward[i]):
            if need:
                log.info(f"    [Backward] Layer {name}, bottom blob {b} diff: {_mean_abs(blob.diff):g}")
        for j, (blob, p) in enumerate(zip(self.layers[i].blobs, self.param_propagate_down[i])):
            if p:
                log.info(f"    [Backward] Layer {name}, param blob {j} diff: {_mean_abs(blob.diff):g}")

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
        w = self.loss_weight_of.get(name, 0)
        return f"{name} = {x:.6g}" + (f" (* {w:g} = {w * x:.6g} loss)" if w else "")

    def clear_param_diffs(self):
        for b in self.learnable_params:
            b.diff[...] = 0

    # ------------------------------------------------------------ pycaffe's running API
    def _set_blobs(self, values, field):
        for name, value in values.items():
            if name not in self.blobs:
                raise CaffeError(f"no blob named '{name}'")
            value = np.asarray(value, np.float32)
            b = self.blobs[name]
            if field == "data" and value.shape != b.shape:
                b.reshape(value.shape)
            getattr(b, field)[...] = value

    def forward(self, blobs=None, start=None, end=None, **inputs):
        """pycaffe's: inputs by name (reshaping the net to them), the outputs (or `end`'s tops)
        plus `blobs` as a dict of arrays."""
        self._set_blobs(inputs, "data")
        s = self._index(start, 0)
        e = self._index(end, len(self.layers) - 1)
        self.forward_from_to(s, e)
        outs = self.top_name_vecs[e] if end is not None else self.outputs
        return {n: self.blobs[n].data for n in set(outs) | set(blobs or [])}

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """pycaffe's: top diffs by name (a loss top's diff holds its loss weight unless changed),
        the inputs' (or `end`'s bottoms') diffs plus `diffs` as a dict of arrays."""
        self._set_blobs(top_diffs, "diff")
        s = self._index(start, len(self.layers) - 1)
        e = self._index(end, 0)
        self.backward_from_to(s, e)
        names = self.bottom_name_vecs[e] if end is not None else self.inputs
        return {n: self.blobs[n].diff for n in set(names) | set(diffs or [])}

    def _batch(self, arrays):
        """Split arrays of one length into the first one's batch size, zero-padding the last."""
        if not arrays:
            return
        n = len(next(iter(arrays.values())))
        size = self.blobs[next(iter(arrays))].shape[0]
        for i in range(0, n, size):
            batch = {}
            for name, a in arrays.items():
                chunk = np.asarray(a[i:i + size], np.float32)
                pad = np.zeros((size - len(chunk),) + chunk.shape[1:], np.float32)
                batch[name] = np.concatenate([chunk, pad]) if len(pad) else chunk
            yield batch

    def forward_all(self, blobs=None, **inputs):
        """pycaffe's: forward any number of items in batches; outputs (and `blobs`) stacked."""
        return self.forward_backward_all(blobs=blobs, backward=False, **inputs)[0]

    def forward_backward_all(self, blobs=None, diffs=None, backward=True, **kwargs):
        """pycaffe's: inputs and output diffs of any length, run in batches, results stacked."""
        fwd = {k: v for k, v in kwargs.items() if k not in self.outputs or k in self.inputs}
        bwd = {k: v for k, v in kwargs.items() if k in self.outputs and k not in self.inputs}
        outs = {n: [] for n in set(self.outputs) | set(blobs or [])}
        douts = {n: [] for n in set(self.inputs) | set(diffs or [])} if backward else {}
        for fb, bb in itertools.zip_longest(self._batch(fwd), self._batch(bwd), fillvalue={}):
            for n, a in self.forward(blobs=blobs, **fb).items():
                outs[n].extend(a.copy())
            if backward:
                for n, a in self.backward(diffs=diffs, **bb).items():
                    douts[n].extend(a.copy())
        given = len(next(iter(kwargs.values()))) if kwargs else None
        return ({n: np.asarray(v)[:given] for n, v in outs.items()},
                {n: np.asarray(v)[:given] for n, v in douts.items()})

    def share_with(self, other):
        """pycaffe's: use `other`'s weights (by layer name) without copying."""
        self.share_trained_layers_with(other)

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

    def copy_trained_layers_from(self, source, what=None):
        """Copy weights by layer name from a NetParameter or a weights file; extra layers are ignored,
        but a file that gives no layer of this net its weights is an error."""
        strict = str(source).endswith(".mcz")
        what = what or (str(source) if not isinstance(source, pb.NetParameter) else "the weights")
        if not isinstance(source, pb.NetParameter):
            source = io.read_weights(str(source))
        if strict:   # a compressed model is the whole net's weights: its layers must match exactly
            have = [lp.name for lp in source.layer if len(lp.blobs)]
            want = [n for n, layer in zip(self._layer_names, self.layers) if layer.blobs]
            if sorted(have) != sorted(want):
                raise CaffeError(f"the compressed model has {len(have)} layer(s) with weights "
                                 f"({', '.join(have)}), the net has {len(want)} ({', '.join(want)})")
        copied = 0
        for lp in source.layer:
            layer = self.layer_dict.get(lp.name)
            if layer is None:
                log.info(f"Ignoring source layer {lp.name}")
                continue
            log.info(f"Copying source layer {lp.name} Type:{lp.type} #blobs={len(lp.blobs)}")
            if not len(lp.blobs):
                continue
            self._load_layer_blobs(layer, lp.blobs, lp.name)
            layer.on_weights_set()
            copied += 1
        if not copied and any(layer.blobs for layer in self.layers):
            raise CaffeError(f"{what}: none of its {len(source.layer)} layer(s) with weights has the "
                             f"name of a layer of this net ({', '.join(self.layer_params)}); is it "
                             "the weights file of another net?")

    def copy_from(self, path):
        self.copy_trained_layers_from(path)

    def load_hdf5(self, path):
        """pycaffe's: weights from an HDF5 file as Caffe's save_hdf5 writes it, whatever its name."""
        self.copy_trained_layers_from(io.read_weights(str(path), fmt="hdf5"), what=str(path))

    def save_hdf5(self, path):
        io.write_weights(str(path), self.to_proto(), "hdf5")

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
