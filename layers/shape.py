"""Layers that move data without arithmetic: Split, Flatten, Reshape, Concat, Slice, Silence."""
import numpy as np

from minicaffe.layer import Layer, canonical_axis, prod, register


@register("Split")
class Split(Layer):
    """Tops share the bottom's data; their diffs are summed into the bottom's."""
    n_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        for t in top:
            diff = t.diff if t.diff.shape == bottom[0].shape else np.zeros(bottom[0].shape, np.float32)
            t.share(bottom[0].data, diff)

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = bottom[0].diff
            np.copyto(d, top[0].diff)
            for t in top[1:]:
                d += t.diff


class View(Layer):
    """Top is a reshaped view of the bottom's data and diff (Caffe's ShareData/ShareDiff)."""
    n_bottom = 1
    n_top = 1

    def reshape(self, bottom, top):
        shape = self.out_shape(bottom[0].shape)
        if prod(shape) != bottom[0].count:
            raise self.error(f"cannot reshape {bottom[0].shape} ({bottom[0].count} values) to {shape}")
        top[0].share(bottom[0].data.reshape(shape), bottom[0].diff.reshape(shape))

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register("Flatten")
class Flatten(View):
    def out_shape(self, shape):
        p = self.param.flatten_param
        a = canonical_axis(p.axis, len(shape))
        e = canonical_axis(p.end_axis, len(shape))
        return shape[:a] + (prod(shape[a:e + 1]),) + shape[e + 1:]


@register("Reshape")
class Reshape(View):
    def out_shape(self, shape):
        p = self.param.reshape_param
        dims = list(p.shape.dim)
        n = len(shape)
        start = canonical_axis(p.axis, n + 1) if p.axis < 0 else p.axis
        if start > n:
            raise self.error(f"axis {p.axis} out of range for shape {shape}")
        end = n if p.num_axes == -1 else start + p.num_axes
        if end > n:
            raise self.error(f"num_axes {p.num_axes} out of range for shape {shape}")
        new = []
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= n:
                    raise self.error(f"dim {i} is 0 (copy) but the bottom has no axis {start + i}")
                new.append(shape[start + i])
            else:
                new.append(d)
        if new.count(-1) > 1:
            raise self.error("at most one dimension may be -1 (inferred)")
        out = list(shape[:start]) + new + list(shape[end:])
        if -1 in out:
            known = prod([d for d in out if d != -1])
            if known == 0 or prod(shape) % known:
                raise self.error(f"cannot infer the -1 dimension reshaping {shape} to {dims}")
            out[out.index(-1)] = prod(shape) // known
        return tuple(int(d) for d in out)


@register("Concat")
class Concat(Layer):
    min_bottom = 1
    n_top = 1

    def reshape(self, bottom, top):
        p = self.param.concat_param
        nd = bottom[0].data.ndim
        self.axis = canonical_axis(p.axis, nd) if p.HasField("axis") or not p.HasField("concat_dim") \
            else p.concat_dim
        shape = list(bottom[0].shape)
        for b in bottom[1:]:
            s = list(b.shape)
            if len(s) != nd or s[:self.axis] + s[self.axis + 1:] != shape[:self.axis] + shape[self.axis + 1:]:
                raise self.error(f"bottoms must match except along axis {self.axis}: "
                                 f"{bottom[0].shape} vs {b.shape}")
        shape[self.axis] = sum(b.shape[self.axis] for b in bottom)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        np.concatenate([b.data for b in bottom], axis=self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        off = 0
        for b, pd in zip(bottom, propagate_down):
            n = b.shape[self.axis]
            if pd:
                b.diff[...] = np.take(top[0].diff, np.arange(off, off + n), axis=self.axis)
            off += n


@register("Slice")
class Slice(Layer):
    n_bottom = 1
    min_top = 1

    def reshape(self, bottom, top):
        p = self.param.slice_param
        shape = list(bottom[0].shape)
        self.axis = canonical_axis(p.axis, len(shape)) if p.HasField("axis") or not p.HasField(
            "slice_dim") else p.slice_dim
        total = shape[self.axis]
        points = list(p.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise self.error(f"{len(points)} slice_point(s) for {len(top)} tops; need {len(top) - 1}")
            bounds = [0] + points + [total]
            if any(b >= e for b, e in zip(bounds, bounds[1:])):
                raise self.error(f"slice points {points} must be increasing and inside (0, {total})")
        else:
            if total % len(top):
                raise self.error(f"axis size {total} does not split evenly into {len(top)} tops")
            step = total // len(top)
            bounds = list(range(0, total + 1, step))
        self.bounds = bounds
        for t, b, e in zip(top, bounds, bounds[1:]):
            s = list(shape)
            s[self.axis] = e - b
            t.reshape(s)

    def _sl(self, b, e):
        return (slice(None),) * self.axis + (slice(b, e),)

    def forward(self, bottom, top):
        for t, b, e in zip(top, self.bounds, self.bounds[1:]):
            t.data[...] = bottom[0].data[self._sl(b, e)]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            for t, b, e in zip(top, self.bounds, self.bounds[1:]):
                bottom[0].diff[self._sl(b, e)] = t.diff


@register("Silence")
class Silence(Layer):
    n_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for b, pd in zip(bottom, propagate_down):
            if pd:
                b.diff[...] = 0
