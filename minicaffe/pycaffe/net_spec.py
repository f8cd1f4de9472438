"""pycaffe's NetSpec: nets written in Python (caffe.layers as L, caffe.params as P, to_proto).

`L.Convolution(bottom, num_output=20)` builds a Function (one layer) and returns its Top (the
blob it makes). Nothing becomes a LayerParameter until to_proto walks back from the tops it is
given, so the layers come out in pycaffe's order (each layer after everything it reads) and the
names pycaffe would give: a NetSpec attribute's name for the blob assigned to it, else the layer
type and a per-type counter ("Convolution1"); a layer takes its first top's name.
"""
from collections import Counter, OrderedDict

from google.protobuf.message import Message

from .proto import caffe_pb2


def param_name_dict():
    """Layer type -> its `<x>_param` field's <x>, read off the schema as pycaffe does: the field's
    message type names the layer type (InnerProductParameter -> inner_product, TanHParameter ->
    tanh, TransformationParameter -> transform)."""
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields
    return {f.message_type.name[:-len("Parameter")]: f.name[:-len("_param")]
            for f in fields if f.name.endswith("_param")}


# Types whose parameters live in another type's message; pycaffe would reject their bare kwargs
# (num_output=...) and need convolution_param=dict(...), which still works the same here.
_SHARED_PARAM = {"Deconvolution": "convolution", "CmpConvolution": "convolution",
                 "CmpInnerProduct": "inner_product"}


def assign_proto(proto, name, val):
    """Set field `name` of `proto` from plain Python: a dict fills a message, a list fills a
    repeated field (a list of dicts adds one message per dict), a lone value given to a repeated
    field is a one-element list, anything else is assigned as is."""
    field = getattr(proto, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(val, (list, tuple)):
        val = [val]
    if repeated:
        if val and isinstance(val[0], dict):
            for item in val:
                sub = field.add()
                for k, v in item.items():
                    assign_proto(sub, k, v)
        else:
            field.extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(field, k, v)
    elif isinstance(val, Message):
        field.CopyFrom(val)
    else:
        setattr(proto, name, val)


def _net(tops, names):
    """A NetParameter with every layer needed to compute `tops` (Tops or Functions), blobs named
    from `names` ({Top: name}) or automatically."""
    layers, autonames = OrderedDict(), Counter()
    for top in tops:
        top._to_proto(layers, names, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


def to_proto(*tops):
    """A NetParameter with every layer needed to compute the given tops, blobs named automatically."""
    return _net(tops, {})


class Top:
    """One output blob of a layer: the `n`th top of Function `fn`."""

    def __init__(self, fn, n):
        self.fn = fn
        self.n = n

    def to_proto(self):
        return to_proto(self)

    def _update(self, params):
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: its type, its input Tops and its keyword parameters (kept as given, less ntop
    and in_place, which caffe.coord_map reads)."""

    def __init__(self, type_name, inputs, params):
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {i} is not a Top (type is {type(inp)})")
        self.type_name = type_name
        self.inputs = inputs
        self.params = params
        self.ntop = params.pop("ntop", 1)
        self.in_place = params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _autoname(self, key, names, autonames):
        autonames[self.type_name] += 1
        names[key] = f"{self.type_name}{autonames[self.type_name]}"

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            top.fn._autoname(top, names, autonames)
        return names[top]

    def _get_name(self, names, autonames):
        if self not in names:
            if self.ntop > 0:
                names[self] = self._get_top_name(self.tops[0], names, autonames)
            else:
                self._autoname(self, names, autonames)
        return names[self]

    def _update(self, params):
        self.params.update(params)

    def _param_field(self):
        prefix = _SHARED_PARAM.get(self.type_name) or _param_names[self.type_name]
        return prefix + "_param"

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._get_top_name(t, names, autonames) for t in self.tops)
        layer.name = self._get_name(names, autonames)
        for k, v in self.params.items():
            if k.endswith("param"):  # transform_param, loss_param, param (ParamSpec), ...
                assign_proto(layer, k, v)
                continue
            try:  # the type's own message first, then LayerParameter itself (include, loss_weight, name)
                assign_proto(getattr(layer, self._param_field()), k, v)
            except (AttributeError, KeyError):
                assign_proto(layer, k, v)
        layers[self] = layer


class _NoTop(AttributeError, KeyError):
    """A NetSpec has no top of that name: pycaffe raised KeyError; AttributeError keeps hasattr,
    copy and pickle working."""


class NetSpec:
    """Tops assigned as attributes (or items) name their blobs; to_proto gives every layer needed
    to make them, in assignment order."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise _NoTop(name) from None

    __setitem__ = __setattr__
    __getitem__ = __getattr__

    def __delitem__(self, name):
        del self.tops[name]

    def keys(self):
        return list(self.tops)

    def vals(self):
        return list(self.tops.values())

    def update(self, name, params):
        """Change (or add) keyword parameters of the layer that makes top `name`."""
        self.tops[name]._update(params)

    def to_proto(self):
        return _net(self.tops.values(), {v: k for k, v in self.tops.items()})


class Layers:
    """caffe.layers: `L.<Type>(*bottoms, **params)` gives the layer's Top, its tuple of Tops when
    ntop > 1, or the Function itself when ntop == 0."""

    def __getattr__(self, type_name):
        if type_name.startswith("_"):
            raise AttributeError(type_name)

        def layer_fn(*args, **kwargs):
            fn = Function(type_name, args, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        layer_fn.__name__ = type_name
        return layer_fn


class Parameters:
    """caffe.params: `P.Pooling.MAX` is PoolingParameter.MAX, the enum values of each type's message."""

    def __getattr__(self, type_name):
        if type_name.startswith("_"):
            raise AttributeError(type_name)
        message = getattr(caffe_pb2, type_name + "Parameter", None)
        if message is None:
            raise AttributeError(f"caffe.params has no '{type_name}': the schema has no "
                                 f"{type_name}Parameter message")
        return _Enums(message)


class _Enums:
    def __init__(self, message):
        self._message = message

    def __getattr__(self, value_name):
        return getattr(self._message, value_name)


_param_names = param_name_dict()
layers = Layers()
params = Parameters()
