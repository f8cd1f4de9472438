"""Pruning masks: the one mask mechanism every Cmp layer uses, by weight or by whole filter/channel.

A pruned blob carries `blob.mask` (0/1, float32) beside its data. The mask is applied in three
places and nowhere else: when weights are set (data *= mask), to the weight gradient in backward,
and to the solver's update (so no solver, momentum or weight decay can move a pruned weight).
A structured mask (filter or channel granularity) is such a mask whose zeros come in whole slices.
"""
import numpy as np

GRANULARITIES = ("weight", "filter", "channel")
NORMS = ("L1", "L2")
PRUNABLE = ("Convolution", "InnerProduct", "CmpConvolution", "CmpInnerProduct", "Deconvolution")


def out_axis(lp):
    """The weight axis that holds a layer's outputs (its filters): 0, or 1 for a transposed
    InnerProduct and for Deconvolution, whose weights are inputs x outputs."""
    transposed = lp.type.endswith("InnerProduct") and lp.inner_product_param.transpose
    return 1 if transposed or lp.type == "Deconvolution" else 0


def pruned_count(n, ratio):
    """int(n * ratio) in float32, as a C++ float ratio from a prototxt gives it: the same count
    whether the ratio comes as the prototxt's float32 0.9 (0.8999999761...) or as Python's 0.9."""
    return int(np.float32(n) * np.float32(ratio))


def magnitude_mask(w, ratio):
    """Keep all but the k = pruned_count(n, ratio) smallest |w|, and never revive a weight that is
    already 0.

    Ties at the threshold are broken by position (lower flat index is pruned first), so exactly k
    weights are cut when fewer than k are zero already; when more are, those stay zero.
    """
    flat = np.abs(w).ravel()
    k = pruned_count(flat.size, ratio)
    keep = flat != 0
    if k > 0:
        order = np.argsort(flat, kind="stable")
        keep[order[:k]] = False
    return keep.reshape(w.shape).astype(np.float32)


def slice_norms(w, axis, norm="L1"):
    """The L1 or L2 norm of each slice of w along `axis` (0: output filters, 1: input channels),
    in float64 so that only an all-zero slice has norm 0."""
    if norm not in NORMS:
        raise ValueError(f"norm '{norm}' is not one of {', '.join(NORMS)}")
    a = np.moveaxis(np.asarray(w, np.float64), axis, 0).reshape(w.shape[axis], -1)
    return np.abs(a).sum(axis=1) if norm == "L1" else np.sqrt((a * a).sum(axis=1))


def make_mask(w, ratio, granularity="weight", norm="L1", out_axis=0):
    """A 0/1 float32 mask of w's shape pruning pruned_count(n, ratio) of its units: single weights by
    magnitude, or whole output filters / input channels by their L1 or L2 norm (Li et al. 2017).

    `out_axis` is the axis of the output filters (0 for Convolution and InnerProduct, 1 for a
    transposed InnerProduct or a Deconvolution); channels are the other of axes 0 and 1. As in
    magnitude_mask, units already all zero are pruned first and never revive, and ties go by index,
    so the count is exact and a mask can be rebuilt from the weights it left.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity '{granularity}' is not one of {', '.join(GRANULARITIES)}")
    if granularity == "weight":
        return magnitude_mask(w, ratio)
    if w.ndim < 2:
        raise ValueError(f"{granularity} pruning needs a weight of 2 or more axes, got shape {w.shape}")
    axis = out_axis if granularity == "filter" else 1 - out_axis
    keep = magnitude_mask(slice_norms(w, axis, norm), ratio)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.broadcast_to(keep.reshape(shape), w.shape).astype(np.float32, order="C")


def apply_mask(blob, mask):
    blob.mask = mask
    blob.data *= mask
    blob.data += 0.0      # -0.0 * 0 is -0.0; store pruned weights as +0.0
