"""Thinning: remove the all-zero filters that filter pruning leaves in Convolution and InnerProduct
layers, and the input channels they fed downstream, giving a smaller plain dense net whose outputs
are the pruned net's.

A removed filter's output is not zero but its bias b, the same at every position. Thinning follows
that constant downstream through the channel-wise layers (each computes it with its own forward,
in the TEST phase) and folds it into the bias of the next Convolution or InnerProduct: b' = b +
(the weights that read the channel, summed) x constant. This is exact wherever a constant stays one
constant; at the borders of a padded Convolution, of a padded AVE pooling and of within-channel LRN
it does not, so a channel reaching one of those with a nonzero constant is kept (its filter stays).
A channel removed from only some bottoms of an Eltwise is kept too (the union is kept). Layers that
mix channels in another way (LRN across channels, grouped convolution, losses, Softmax, a net
output, ...) refuse with their name, and --keep leaves the filters that reach them in place.
"""
from collections import Counter

import numpy as np

from minicaffe import log
from minicaffe import minicaffe_pb2 as pb
from minicaffe.blob import Blob
from minicaffe.errors import CaffeError
from minicaffe.layer import REGISTRY, create_layer
from minicaffe.layers.neuron import Neuron

from .netedit import PLAIN, out_axis, weighted_param

WITH_CHANNEL_PARAMS = ("PReLU", "BatchNorm", "Scale", "Bias")


class Channels:
    """What thinning knows of a blob's channel axis (axis 1): how many channels it has in the
    pruned net, which are removed, the constant each removed one holds everywhere, the filters
    (layer, index) each comes from, and whether later axes were flattened into it (channel-major)."""

    def __init__(self, count, removed=None, value=None, origin=None, flat=False):
        self.count = count
        self.removed = np.zeros(count, bool) if removed is None else removed
        self.value = np.zeros(count) if value is None else value
        self.origin = [frozenset()] * count if origin is None else origin
        self.flat = flat

    def but(self, **changes):
        fields = dict(count=self.count, removed=self.removed, value=self.value, origin=self.origin,
                      flat=self.flat)
        fields.update(changes)
        return Channels(**fields)

    @property
    def kept(self):
        return np.flatnonzero(~self.removed)

    def layers(self, mask=None):
        """The layers whose filters make the removed channels (of those in mask)."""
        chosen = self.removed if mask is None else self.removed & mask
        return sorted({o[0] for c in np.flatnonzero(chosen) for o in self.origin[c]})


def removes(s):
    return s is not None and s.removed.any()


class Pass:
    """One walk through the layers in order: each layer's rule maps its bottoms' Channels to its
    tops', recording the edits, the filters that must stay (`vetoes`) and the refusals."""

    def __init__(self, edit, keep_layers, kept):
        self.edit, self.keep_layers, self.kept = edit, keep_layers, kept
        self.vetoes, self.refusals, self.changes = {}, [], {}

    def run(self):
        state, read = {}, {}
        for lp in self.edit.net.layer:
            ins = [state.get(b) for b in lp.bottom]
            for b in lp.bottom:
                read[b] = True
            outs = rule_for(lp)(self, lp, ins)
            for t, s in zip(lp.top, outs):
                state[t], read[t] = s, False
        for name, s in state.items():
            if removes(s) and not read[name]:
                self.refusals.append(f"blob '{name}' is an output of the net: its channels are the "
                                     f"net's interface and cannot be removed; {self.way_out(s)}")
        return self

    def way_out(self, s):
        names = s.layers()
        return f"leave the zero filters of {', '.join(names)} in place with --keep {','.join(names)}"

    def refuse(self, lp, s, why):
        self.refusals.append(f"layer '{lp.name}' ({lp.type}) {why}, so it cannot be thinned; "
                             + self.way_out(s))

    def veto(self, s, mask, why):
        for c in np.flatnonzero(s.removed & mask):
            for o in s.origin[c]:
                self.vetoes.setdefault(o, why)

    def change(self, lp):
        return self.changes.setdefault(lp.name, {})

    def constants(self, lp, s):
        """The removed channels' constants after the channel-wise layer lp: its own forward
        (TEST phase) on one 1x1 image holding them, with its trained blobs."""
        one = pb.LayerParameter()
        one.CopyFrom(lp)
        one.phase = pb.TEST
        quiet, log.quiet = log.quiet, True
        try:
            layer = create_layer(one, pb.TEST)
            x = Blob((1, s.count, 1, 1))
            x.data[...] = np.where(s.removed, s.value, 0).reshape(x.shape)
            y = Blob(x.shape)
            layer.set_up([x], [y])
            for blob, a in zip(layer.blobs, self.edit.blobs.get(lp.name, ())):
                blob.data[...] = a.reshape(blob.shape)
            layer.forward([x], [y])
        finally:
            log.quiet = quiet
        return y.data.reshape(-1).astype(np.float64)


# ---------------------------------------------------------------- rules, one per kind of layer
def weighted(ps, lp, ins):
    """Convolution / InnerProduct (and their Cmp forms): slice the input columns of removed
    channels, fold their constants into the bias, and remove this layer's own zero filters."""
    p = weighted_param(lp)
    conv = PLAIN.get(lp.type, lp.type) == "Convolution"
    if lp.name not in ps.edit.blobs and not any(removes(s) for s in ins):
        return [Channels(p.num_output)]
    w = ps.edit.weights(lp.name)
    oa = out_axis(lp)
    n = w[0].shape[oa]
    bias = w[1].astype(np.float64) if len(w) > 1 else np.zeros(n)
    s = ins[0]
    if removes(s):
        per = consumer_weights(ps, lp, s, w[0], conv)
        if per is None:
            return [Channels(n)]
        cols, per = per
        ps.change(lp)["in"] = cols
        delta = per[:, s.removed] @ s.value[s.removed]
        if delta.any():
            ps.change(lp)["bias"] = delta
            bias = bias + delta
    zero = ~np.moveaxis(w[0], oa, 0).reshape(n, -1).any(axis=1)
    if lp.name in ps.keep_layers:
        zero[:] = False
    zero &= [(lp.name, o) not in ps.kept for o in range(n)]
    if zero.all():
        ps.vetoes.setdefault((lp.name, 0), "a layer keeps at least one output")
        zero[0] = False
    out = Channels(n, zero, np.where(zero, bias, 0), [frozenset({(lp.name, o)}) for o in range(n)])
    if zero.any():
        if conv and p.group != 1:
            ps.refuse(lp, out, f"is a grouped convolution (group {p.group}) with zero filters: "
                               "removing them would unbalance its groups")
        elif not conv and p.axis != 1:
            ps.refuse(lp, out, f"has axis {p.axis}: only axis 1 outputs are channels")
        else:
            ps.change(lp)["out"] = out.kept
    return [out]


def consumer_weights(ps, lp, s, w, conv):
    """The kept input columns of w, and its weights summed per (output, input channel): what a
    channel's constant adds to each output. None after a refusal."""
    p = weighted_param(lp)
    if conv:
        if p.group != 1:
            ps.refuse(lp, s, f"is a grouped convolution (group {p.group}): its groups would not "
                             "stay equal")
            return None
        if w.shape[1] != s.count:
            ps.refuse(lp, s, f"has {w.shape[1]} input channels, its bottom {s.count}")
            return None
        if any(p.pad) or p.pad_h or p.pad_w:
            ps.veto(s, s.value != 0, f"its nonzero constant output would reach the padded "
                                     f"convolution '{lp.name}', whose borders see less of it")
        return s.kept, w.sum(axis=tuple(range(2, w.ndim)), dtype=np.float64)
    if p.axis != 1:
        ps.refuse(lp, s, f"has axis {p.axis}: thinning reads the channels on axis 1")
        return None
    wk = w.T if p.transpose else w          # (outputs, inputs)
    if wk.shape[1] % s.count:
        ps.refuse(lp, s, f"has {wk.shape[1]} inputs, not a multiple of its bottom's {s.count} channels")
        return None
    size = wk.shape[1] // s.count            # the positions of one channel, channel-major
    cols = (s.kept[:, None] * size + np.arange(size)).ravel()
    return cols, wk.reshape(wk.shape[0], s.count, size).sum(axis=2, dtype=np.float64)


def channel_wise(ps, lp, ins):
    """Element-wise layers, and PReLU/BatchNorm/Scale/Bias whose per-channel blobs are sliced."""
    s = ins[0] if len(ins) == 1 else None
    if not removes(s):
        if any(removes(b) for b in ins):
            ps.refuse(lp, next(b for b in ins if removes(b)), "takes its parameters from a bottom")
        return [s]
    sliced = []
    if lp.type in WITH_CHANNEL_PARAMS:
        axis = {"Scale": lp.scale_param.axis, "Bias": lp.bias_param.axis}.get(lp.type, 1)
        if axis != 1:
            ps.refuse(lp, s, f"has axis {axis}: thinning reads the channels on axis 1")
            return [None]
        for i, a in enumerate(ps.edit.blobs.get(lp.name, ())):
            if a.size == s.count and not (lp.type == "BatchNorm" and i == 2):
                sliced.append(i)
            elif a.size != 1:
                ps.refuse(lp, s, f"has a blob of shape {a.shape}, not one value per channel")
                return [None]
        if sliced and s.flat:
            ps.refuse(lp, s, "has one parameter per channel of a flattened blob")
            return [None]
    if sliced:
        ps.change(lp).update(slice=sliced, kept=s.kept)
    return [s.but(value=ps.constants(lp, s))]


def pooling(ps, lp, ins):
    s = ins[0]
    if removes(s):
        pp = lp.pooling_param
        if s.flat or len(lp.top) > 1:
            ps.refuse(lp, s, "pools a flattened blob" if s.flat else "has a second top (the argmax)")
        elif pp.pool == pb.PoolingParameter.AVE and (pp.pad or pp.pad_h or pp.pad_w):
            ps.veto(s, s.value != 0, f"its nonzero constant output would reach the padded AVE "
                                     f"pooling '{lp.name}', which averages in the padding")
    return [s] + [None] * (len(lp.top) - 1)


def lrn(ps, lp, ins):
    s = ins[0]
    if removes(s):
        if lp.lrn_param.norm_region == pb.LRNParameter.ACROSS_CHANNELS:
            ps.refuse(lp, s, "normalizes across channels: removing a channel changes its "
                             "neighbours' outputs")
        else:
            ps.veto(s, s.value != 0, f"its nonzero constant output would reach the within-channel "
                                     f"LRN '{lp.name}', whose borders see less of it")
    return [s]


def concat(ps, lp, ins):
    cp = lp.concat_param
    axis = cp.concat_dim if cp.HasField("concat_dim") else cp.axis
    known = all(s is not None and not s.flat for s in ins)
    if any(removes(s) for s in ins):
        s = next(s for s in ins if removes(s))
        if axis != 1:
            ps.refuse(lp, s, f"concatenates along axis {axis}, not the channels")
            return [None]
        if not known:
            ps.refuse(lp, s, "has a bottom whose channel count thinning cannot tell, or a "
                             "flattened one")
            return [None]
    if not known or axis != 1:
        return [None]
    return [Channels(sum(s.count for s in ins), np.concatenate([s.removed for s in ins]),
                     np.concatenate([s.value for s in ins]), [o for s in ins for o in s.origin])]


def eltwise(ps, lp, ins):
    if not any(removes(s) for s in ins):
        return [ins[0].but() if ins[0] is not None else None]
    first = next(s for s in ins if removes(s))
    counts = {s.count for s in ins if s is not None}
    if len(counts) > 1:
        ps.refuse(lp, first, f"has bottoms of {sorted(counts)} channels")
        return [None]
    n = first.count
    ins = [s if s is not None else Channels(n) for s in ins]
    removed = np.logical_and.reduce([s.removed for s in ins])
    for s in ins:
        ps.veto(s, ~removed, f"the Eltwise '{lp.name}' keeps that channel of another bottom")
    ep = lp.eltwise_param
    values = np.array([s.value for s in ins])
    if ep.operation == pb.EltwiseParameter.SUM:
        coeff = np.array(ep.coeff) if len(ep.coeff) else np.ones(len(ins))
        value = coeff @ values
    elif ep.operation == pb.EltwiseParameter.PROD:
        value = values.prod(axis=0)
    else:
        value = values.max(axis=0)
    origin = [frozenset().union(*(s.origin[c] for s in ins)) for c in range(n)]
    return [Channels(n, removed, np.where(removed, value, 0), origin, first.flat)]


def flatten(ps, lp, ins):
    s, fp = ins[0], lp.flatten_param
    if s is None:
        return [None]
    if fp.axis >= 2:
        return [s]
    if fp.axis == 1 and fp.end_axis == -1:
        return [s.but(flat=True)]
    if removes(s):
        ps.refuse(lp, s, f"flattens axes {fp.axis} to {fp.end_axis}, not just the ones after the channels")
    return [None]


def reshape(ps, lp, ins):
    s, rp = ins[0], lp.reshape_param
    dims = list(rp.shape.dim)
    if s is None:
        return [None]
    if rp.axis >= 2 or (rp.axis == 0 and rp.num_axes == -1 and dims[:2] == [0, 0]):
        return [s]
    if rp.axis == 0 and rp.num_axes == -1 and dims == [0, -1]:
        return [s.but(flat=True)]
    if removes(s):
        ps.refuse(lp, s, f"reshapes to {dims} (thinning follows only dim: 0 dim: -1, a flatten, "
                         "or dim: 0 dim: 0 ..., which keeps the channels)")
    return [None]


def split(ps, lp, ins):
    return ins * len(lp.top)


def silence(ps, lp, ins):
    return []


def other(ps, lp, ins):
    """Losses, Softmax, Deconvolution, Slice, Python layers, ...: thinning does not know how
    they use the channels, so they must get them all."""
    for s in ins:
        if removes(s):
            ps.refuse(lp, s, "reads every channel of its bottom (thinning does not follow this type)")
            break
    return [None] * len(lp.top)


RULES = {"Convolution": weighted, "InnerProduct": weighted, "Pooling": pooling, "LRN": lrn,
         "Concat": concat, "Eltwise": eltwise, "Flatten": flatten, "Reshape": reshape,
         "Split": split, "Silence": silence}


def rule_for(lp):
    t = PLAIN.get(lp.type, lp.type)
    if t in RULES:
        return RULES[t]
    cls = REGISTRY.get(t)
    if t in WITH_CHANNEL_PARAMS or (cls is not None and issubclass(cls, Neuron)):
        return channel_wise
    return other


# ---------------------------------------------------------------- the method
def thin(edit, keep=()):
    """Remove the all-zero filters from `edit` (a NetEdit), and the inputs they fed, except those of
    the layers named in `keep`; make every layer a standard Caffe one. Returns the notes: one line
    per layer whose zero filters stay, with the reason."""
    keep = set(keep)
    for name in keep:
        edit.layer(name)
    kept = {}
    while True:
        ps = Pass(edit, keep, kept).run()
        new = {k: why for k, why in ps.vetoes.items() if k not in kept}
        if not new:
            break
        kept.update(new)
    if ps.refusals:
        raise CaffeError(ps.refusals[0])
    for name, ch in ps.changes.items():
        if "bias" in ch:
            edit.add_bias(name, ch["bias"])
        if "in" in ch:
            edit.keep_inputs(name, ch["in"])
        if "out" in ch:
            edit.keep_outputs(name, ch["out"])
        for i in ch.get("slice", ()):
            edit.take(name, i, 0, ch["kept"])
    edit.standard()
    reasons = Counter((name, why) for (name, _), why in kept.items())
    return [f"{name}: {k} zero filter(s) kept: {why}" for (name, why), k in reasons.items()]
