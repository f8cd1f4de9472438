"""Magnitude pruning: the one mask mechanism every Cmp layer uses.

A pruned blob carries `blob.mask` (0/1, float32) beside its data. The mask is applied in three
places and nowhere else: when weights are set (data *= mask), to the weight gradient in backward,
and to the solver's update (so no solver, momentum or weight decay can move a pruned weight).
"""
import numpy as np


def magnitude_mask(w, ratio):
    """Keep all but the k = int(n * ratio) smallest |w|, and never revive a weight that is already 0.

    Ties at the threshold are broken by position (lower flat index is pruned first), so exactly k
    weights are cut when fewer than k are zero already; when more are, those stay zero.
    """
    flat = np.abs(w).ravel()
    n = flat.size
    k = int(n * ratio)
    keep = flat != 0
    if k > 0:
        order = np.argsort(flat, kind="stable")
        keep[order[:k]] = False
    return keep.reshape(w.shape).astype(np.float32)


def apply_mask(blob, mask):
    blob.mask = mask
    blob.data *= mask
    blob.data += 0.0      # -0.0 * 0 is -0.0; store pruned weights as +0.0
