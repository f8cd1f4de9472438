"""Edit a net's prototxt and its trained blobs together, so that a method which rewrites a net
(thinning, low-rank factorization) says only what it changes: which outputs or inputs a layer
keeps, what its bias becomes, which layers replace it. The result is written as a prototxt and a
caffemodel that real Caffe reads."""
import numpy as np

from minicaffe import io
from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError

from .mask import out_axis  # noqa: F401  (thin and lowrank take it from here too)

PLAIN = {"CmpConvolution": "Convolution", "CmpInnerProduct": "InnerProduct"}
# The highest field number BVLC's caffe.proto gives these messages: the fields above it are
# minicaffe's pruning extensions, which real Caffe refuses to parse.
CAFFE_LAST_FIELD = {"ConvolutionParameter": 18, "InnerProductParameter": 6}


def weighted_param(lp):
    """The convolution_param or inner_product_param of a Convolution/InnerProduct-like layer."""
    t = PLAIN.get(lp.type, lp.type)
    if t in ("Convolution", "Deconvolution"):
        return lp.convolution_param
    if t == "InnerProduct":
        return lp.inner_product_param
    return None


class NetEdit:
    """A NetParameter (the prototxt, every phase's layers) and its trained arrays by layer name."""

    def __init__(self, net, weights=None):
        self.net = pb.NetParameter()
        self.net.CopyFrom(net)
        self.blobs = {}
        names = {lp.name for lp in self.net.layer}
        for wl in (weights.layer if weights is not None else ()):
            if wl.name in names and len(wl.blobs) and wl.name not in self.blobs:
                arrays = [io.blob_to_array(bp) for bp in wl.blobs]
                self.blobs[wl.name] = self._canonical(self.layer(wl.name), arrays)

    @classmethod
    def load(cls, model, weights):
        return cls(io.read_net(model), io.read_weights(weights))

    @staticmethod
    def _canonical(lp, arrays):
        """Old caffemodels store an InnerProduct's weights and every bias as 4-D (1, 1, N, K):
        give them the shapes the layer has today, (N, K) and (N,)."""
        p = weighted_param(lp)
        if p is None:
            return arrays
        if PLAIN.get(lp.type, lp.type) == "InnerProduct" and arrays[0].ndim != 2:
            n = p.num_output
            arrays[0] = arrays[0].reshape((-1, n) if p.transpose else (n, -1))
        if len(arrays) > 1:
            arrays[1] = arrays[1].reshape(-1)
        return arrays

    # ------------------------------------------------------------ looking
    def layers(self, name):
        """Every layer of that name (a train_test net may give one name in two phases)."""
        found = [lp for lp in self.net.layer if lp.name == name]
        if not found:
            raise CaffeError(f"the net has no layer named '{name}'")
        return found

    def layer(self, name):
        return self.layers(name)[0]

    def weights(self, name):
        if name not in self.blobs:
            raise CaffeError(f"layer '{name}': the weights file holds no trained blobs for it")
        return self.blobs[name]

    def _editable(self, name):
        """The arrays of a layer whose blobs no other layer shares (a shared blob would have to
        change in every layer at once)."""
        mine = {ps.name for lp in self.layers(name) for ps in lp.param if ps.name}
        for lp in self.net.layer:
            if lp.name != name and mine & {ps.name for ps in lp.param}:
                raise CaffeError(f"layer '{name}' shares its blobs with layer '{lp.name}' "
                                 f"(param name {sorted(mine & {ps.name for ps in lp.param})[0]}); "
                                 "a shared blob cannot be edited in one layer")
        return self.weights(name)

    # ------------------------------------------------------------ editing
    def take(self, name, i, axis, index):
        """Keep the entries `index` of blob i along `axis`."""
        arrays = self._editable(name)
        arrays[i] = np.ascontiguousarray(np.take(arrays[i], index, axis=axis))

    def keep_outputs(self, name, index):
        """A Convolution/InnerProduct keeps only the outputs (filters) `index`, with their biases."""
        lp = self.layer(name)
        arrays = self._editable(name)
        self.take(name, 0, out_axis(lp), index)
        if len(arrays) > 1:
            self.take(name, 1, 0, index)
        for lp in self.layers(name):
            weighted_param(lp).num_output = len(index)

    def keep_inputs(self, name, index):
        """A Convolution/InnerProduct reads only the input columns `index` (channels for a
        Convolution; flattened positions for an InnerProduct)."""
        self.take(name, 0, 1 - out_axis(self.layer(name)), index)

    def add_bias(self, name, delta):
        """Add `delta` to a layer's bias, giving it one (bias_term: true) if it had none."""
        arrays = self._editable(name)
        delta = np.asarray(delta, np.float64)
        if len(arrays) > 1:
            arrays[1] = (arrays[1] + delta).astype(np.float32)
        else:
            arrays.append(delta.astype(np.float32))
            for lp in self.layers(name):
                weighted_param(lp).bias_term = True

    def replace(self, name, layers, blobs=None):
        """Put `layers` (LayerParameters) where the layer `name` was, with `blobs` by new layer name."""
        self.layers(name)
        at = next(i for i, lp in enumerate(self.net.layer) if lp.name == name)
        kept = [lp for lp in self.net.layer if lp.name != name]
        self.net.ClearField("layer")
        for lp in kept[:at] + list(layers) + kept[at:]:
            self.net.layer.add().CopyFrom(lp)
        self.blobs.pop(name, None)
        for n, arrays in (blobs or {}).items():
            self.blobs[n] = [np.ascontiguousarray(a, np.float32) for a in arrays]

    def standard(self):
        """Cmp layers become the plain Convolution/InnerProduct they compute once their weights are
        fixed, without minicaffe's pruning fields: a net real Caffe parses."""
        for lp in self.net.layer:
            lp.type = PLAIN.get(lp.type, lp.type)
            p = weighted_param(lp)
            if p is None:
                continue
            last = CAFFE_LAST_FIELD[p.DESCRIPTOR.name]
            for field, _ in p.ListFields():
                if field.number > last:
                    p.ClearField(field.name)

    # ------------------------------------------------------------ writing
    def weights_param(self):
        """The caffemodel: each layer with blobs once, its parameters as in the prototxt."""
        out = pb.NetParameter()
        out.name = self.net.name
        done = set()
        for lp in self.net.layer:
            if lp.name in self.blobs and lp.name not in done:
                done.add(lp.name)
                wl = out.layer.add()
                wl.CopyFrom(lp)
                for a in self.blobs[lp.name]:
                    io.array_to_blob(a, wl.blobs.add())
        return out

    def save(self, prefix):
        """Write prefix.prototxt and prefix.caffemodel (a prefix ending in either extension loses
        it); return their paths."""
        for ext in (".prototxt", ".caffemodel"):
            if prefix.endswith(ext):
                prefix = prefix[:-len(ext)]
        model, weights = prefix + ".prototxt", prefix + ".caffemodel"
        io.write_text(model, self.net)
        io.write_weights(weights, self.weights_param())
        return model, weights
