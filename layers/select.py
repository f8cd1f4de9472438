"""Layers that pick or repeat parts of a blob: Crop, Tile, Filter, BatchReindex."""
import numpy as np

from minicaffe.layer import Layer, canonical_axis, prod, register


@register("Crop")
class Crop(Layer):
    """bottom[0] cut to bottom[1]'s shape on every axis from crop_param.axis on; bottom[1] only
    gives the shape and never takes a gradient (Caffe leaves its diff alone)."""
    n_bottom = 2
    n_top = 1

    def setup(self, bottom, top):
        p = self.param.crop_param
        nd = bottom[0].data.ndim
        self.axis = canonical_axis(p.axis, nd)
        self.offsets = list(p.offset)
        if len(self.offsets) > 1 and self.axis + len(self.offsets) != nd:
            raise self.error(f"{len(self.offsets)} offsets for the {nd - self.axis} axes cropped "
                             f"(from axis {self.axis} of a {nd}-D bottom); give one, or one per axis")

    def reshape(self, bottom, top):
        src, ref = bottom[0].shape, bottom[1].shape
        if len(ref) < len(src):
            raise self.error(f"the reference bottom {ref} has fewer axes than the data bottom {src}")
        window = [slice(None)] * self.axis
        for i in range(self.axis, len(src)):
            off = self.offsets[0] if len(self.offsets) == 1 else \
                self.offsets[i - self.axis] if self.offsets else 0
            if off + ref[i] > src[i]:
                raise self.error(f"crop of size {ref[i]} at offset {off} is out of range on axis {i} "
                                 f"(data bottom {src}, reference bottom {ref})")
            window.append(slice(off, off + ref[i]))
        self.window = tuple(window)
        top[0].reshape(src[:self.axis] + tuple(ref[self.axis:len(src)]))

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data[self.window]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.window] = top[0].diff

    def allow_force_backward(self, i):
        return i == 0


@register("Tile")
class Tile(Layer):
    """The blocks from tile_param.axis on, repeated `tiles` times in place; backward sums the
    copies."""
    n_bottom = 1
    n_top = 1

    def reshape(self, bottom, top):
        p = self.param.tile_param
        shape = bottom[0].shape
        axis = canonical_axis(p.axis, len(shape))
        if not p.HasField("tiles"):
            raise self.error("tile_param.tiles (the number of copies) is required")
        if p.tiles <= 0:
            raise self.error(f"tiles must be positive, got {p.tiles}")
        self.tiles = p.tiles
        self.outer, self.inner = prod(shape[:axis]), prod(shape[axis:])
        top[0].reshape(shape[:axis] + (shape[axis] * self.tiles,) + shape[axis + 1:])

    def forward(self, bottom, top):
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = \
            bottom[0].data.reshape(self.outer, 1, self.inner)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            top[0].diff.reshape(self.outer, self.tiles, self.inner).sum(
                1, out=bottom[0].diff.reshape(self.outer, self.inner))


@register("Filter")
class Filter(Layer):
    """Keeps the items (along axis 0) of each of the first K bottoms whose value in the last bottom,
    the selector (N, 1, ...), is nonzero. As in Caffe, the first reshape (at setup) gives the tops
    all N items; each later one, the kept count, which may be 0."""
    min_bottom = 2
    min_top = 1

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error(f"needs one top per filtered bottom: {len(bottom) - 1} bottoms "
                             f"(the last of {len(bottom)} is the selector), {len(top)} tops")
        self.selector = len(bottom) - 1
        self.first_reshape = True

    def reshape(self, bottom, top):
        sel = bottom[-1]
        if sel.data.ndim < 1 or any(d != 1 for d in sel.shape[1:]):
            raise self.error(f"the selector (last bottom) must be (N, 1, ...), got {sel.shape}")
        for b in bottom[:-1]:
            if b.data.ndim < 1 or b.shape[0] != sel.shape[0]:
                raise self.error(f"bottom {b.shape} does not have the selector's {sel.shape[0]} items")
        self.keep = np.flatnonzero(sel.peek.reshape(-1))
        n = sel.shape[0] if self.first_reshape else self.keep.size
        self.first_reshape = False
        for b, t in zip(bottom, top):
            t.reshape((n,) + b.shape[1:])

    def forward(self, bottom, top):
        for b, t in zip(bottom, top):
            np.take(b.data, self.keep, axis=0, out=t.data[:self.keep.size])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise self.error("cannot backpropagate to the selector (last bottom); "
                             "set its propagate_down to false")
        for b, t, down in zip(bottom, top, propagate_down):
            if down:
                b.diff[...] = 0
                b.diff[self.keep] = t.diff[:self.keep.size]

    def allow_force_backward(self, i):
        return i != self.selector


@register("BatchReindex")
class BatchReindex(Layer):
    """top[i] = bottom[0][int(bottom[1][i])]: items picked, reordered or repeated along axis 0;
    backward adds up the gradients of repeated items. The indices take no gradient."""
    n_bottom = 2
    n_top = 1

    def reshape(self, bottom, top):
        if bottom[1].data.ndim != 1:
            raise self.error(f"the index bottom must be 1-D, got shape {bottom[1].shape}")
        top[0].reshape(bottom[1].shape + bottom[0].shape[1:])

    def forward(self, bottom, top):
        idx, n = bottom[1].peek, bottom[0].shape[0]
        bad = ~((idx >= 0) & (idx < n))
        if bad.any():
            raise self.error(f"index {idx[bad][0]} (at {np.flatnonzero(bad)[0]}) is outside the "
                             f"{n} items of the data bottom")
        self.idx = idx.astype(np.int64)       # C's cast: toward zero
        np.take(bottom[0].data, self.idx, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the indices (bottom 1); "
                             "set its propagate_down to false")
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            np.add.at(bottom[0].diff, self.idx, top[0].diff)

    def allow_force_backward(self, i):
        return i == 0
