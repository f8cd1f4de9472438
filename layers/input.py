"""Layers that make blobs from nothing: Input (shapes only), DummyData (filled) and Parameter
(a learned blob)."""

from minicaffe import minicaffe_pb2 as pb
from minicaffe.filler import fill
from minicaffe.layer import Layer, register


@register("Input")
class Input(Layer):
    n_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        shapes = [tuple(s.dim) for s in self.param.input_param.shape]
        if len(shapes) not in (1, len(top)):
            raise self.error(f"input_param needs 1 shape or one per top ({len(top)}), got {len(shapes)}")
        for i, t in enumerate(top):
            t.reshape(shapes[0] if len(shapes) == 1 else shapes[i])

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass


@register("DummyData")
class DummyData(Layer):
    n_bottom = 0
    min_top = 1

    def setup(self, bottom, top):
        p = self.param.dummy_data_param
        n = len(top)
        if len(p.shape):
            shapes = [tuple(s.dim) for s in p.shape]
        elif len(p.num):
            legacy = [list(p.num), list(p.channels), list(p.height), list(p.width)]
            if any(len(v) not in (1, n) for v in legacy):
                raise self.error("num/channels/height/width must each be given once or once per top")
            shapes = [tuple(v[0] if len(v) == 1 else v[i] for v in legacy) for i in range(n)]
        else:
            raise self.error("dummy_data_param needs shape (or num/channels/height/width)")
        if len(shapes) not in (1, n):
            raise self.error(f"need 1 shape or one per top ({n}), got {len(shapes)}")
        fillers = list(p.data_filler) or [pb.FillerParameter(type="constant", value=0)]
        if len(fillers) not in (1, n):
            raise self.error(f"need 1 data_filler or one per top ({n}), got {len(fillers)}")
        self.shapes = [shapes[0] if len(shapes) == 1 else shapes[i] for i in range(n)]
        self.fillers = [fillers[0] if len(fillers) == 1 else fillers[i] for i in range(n)]
        for t, s, f in zip(top, self.shapes, self.fillers):
            t.reshape(s)
            t.data[...] = fill(f, s)

    def reshape(self, bottom, top):
        for t, s in zip(top, self.shapes):
            t.reshape(s)

    def forward(self, bottom, top):
        for t, s, f in zip(top, self.shapes, self.fillers):
            if f.type != "constant":
                t.data[...] = fill(f, s)


@register("Parameter")
class Parameter(Layer):
    """A learned blob as a top: the top holds the param's own data and diff arrays (Caffe's
    ShareData/ShareDiff), so the gradient the consumers write into it is the param's gradient."""
    n_bottom = 0
    n_top = 1

    def setup(self, bottom, top):
        self.new_param(tuple(self.param.parameter_param.shape.dim))

    def reshape(self, bottom, top):
        self._share(top)

    def forward(self, bottom, top):
        self._share(top)   # again: the net may have replaced the param's arrays (sharing, loading)

    def _share(self, top):
        p = self.blobs[0]
        top[0].share(p.data, p.diff)
