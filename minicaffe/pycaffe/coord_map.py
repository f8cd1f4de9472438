"""pycaffe's caffe.coord_map: how blob coordinates map through layers (crop offsets for FCNs).

A layer's map is (axis, a, b): input coordinate x lines up with output coordinate y = a * x + b
on the spatial axes after `axis` (the last axis that is not a coordinate; None where the layer
does not care). Maps compose along a path of NetSpec tops, so the offset between two tops that
share an ancestor is known before the net is built, and crop() turns it into a Crop layer.
"""
import numpy as np

from .net_spec import layers as L

PASS_THROUGH_LAYERS = ['AbsVal', 'BatchNorm', 'Bias', 'BNLL', 'Dropout', 'Eltwise', 'ELU', 'Log',
                       'LRN', 'Exp', 'MVN', 'Power', 'ReLU', 'PReLU', 'Scale', 'Sigmoid', 'Split',
                       'TanH', 'Threshold']
_LEGACY = {'pad_h', 'pad_w', 'kernel_h', 'kernel_w', 'stride_h', 'stride_w'}


class UndefinedMapException(Exception):
    """The layer's output coordinates do not follow from its input's (InnerProduct, Reshape, ...)."""


class AxisMismatchException(Exception):
    """Two maps on a path disagree on where the spatial axes start."""


def _vec(x):
    return np.array(x, ndmin=1)


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a (Cmp)Convolution, Deconvolution, Im2col
    or Pooling Function, from its kwargs or its convolution_param/pooling_param dict; the extent of a
    dilated kernel is (k - 1) * dilation + 1."""
    p = fn.params.get('convolution_param', fn.params.get('pooling_param', fn.params))
    if _LEGACY & (set(p) | set(fn.params)):
        raise AssertionError('cropping does not support legacy _h/_w params')
    kernel = _vec(p['kernel_size'])
    extent = (kernel - 1) * _vec(p.get('dilation', 1)) + 1
    return p.get('axis', 1), _vec(p.get('stride', 1)), extent, _vec(p.get('pad', 0))


def crop_params(fn):
    """(axis, offset) of a Crop Function, with Caffe's defaults (axis 2: crop H and W of NCHW)."""
    p = fn.params.get('crop_param', fn.params)
    return p.get('axis', 2), _vec(p.get('offset', 0))


def coord_map(fn):
    """The (axis, a, b) map of one layer: identity (None, 1, 0) for pointwise layers."""
    t = fn.type_name
    if t in ('Convolution', 'CmpConvolution', 'Pooling', 'Im2col'):
        axis, stride, extent, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if t == 'Deconvolution':
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if t in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if t == 'Crop':
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset   # the map's axis is the last one the crop leaves alone
    raise UndefinedMapException(t)


def compose(base_map, next_map):
    """`next_map`, then `base_map`: the scales multiply and next_map's shift is scaled by base_map's."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException(f"axis {ax1} meets axis {ax2}")
    return (ax2 if ax1 is None else ax1), a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map the other way: input coordinate from output coordinate."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _mapped_bottoms(top):
    """The inputs a top's coordinates come from: all of them, except that a Crop's second input
    only gives the size to crop to."""
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == 'Crop' else inputs


def _walk_back(top):
    """Yield (ancestor, map from the ancestor's coordinates to `top`'s), nearest first, through
    every layer with a defined map; a layer without one ends that branch."""
    maps, frontier = {top: (None, 1, 0)}, [top]
    while frontier:
        t = frontier.pop(0)
        yield t, maps[t]
        bottoms = _mapped_bottoms(t)
        if not bottoms:
            continue
        try:
            step = compose(maps[t], coord_map(t.fn))
        except UndefinedMapException:
            continue
        for bottom in bottoms:
            if bottom not in maps:
                maps[bottom] = step
                frontier.append(bottom)


def coord_map_from_to(top_from, top_to):
    """(axis, a, b) with top_to's coordinate = a * (top_from's coordinate) + b, through a common
    ancestor of the two tops; a RuntimeError when only non-spatial layers connect them."""
    from_maps = dict(_walk_back(top_from))
    for t, to_map in _walk_back(top_to):
        if t in from_maps:
            return compose(to_map, inverse(from_maps[t]))
    raise RuntimeError('Could not compute map between tops; are they connected by spatial layers?')


def crop(top_from, top_to):
    """A Crop layer cutting top_from down to top_to's size at the offset their maps give; the
    offset must be a whole, non-negative number of pixels at the same scale."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    if not np.all(a == 1):
        raise AssertionError(f'scale mismatch on crop (a = {a})')
    if not np.all(b <= 0):
        raise AssertionError(f'cannot crop negative offset (b = {b})')
    if not np.all(np.round(b) == b):
        raise AssertionError(f'cannot crop noninteger offset (b = {b})')
    offset = [int(x) for x in -np.round(_vec(b))]
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=offset))
