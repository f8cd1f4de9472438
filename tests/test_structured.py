"""Structured masks: whole filters (axis 0) or input channels (axis 1) by L1/L2 norm, exact counts,
ties by index, all-zero units pruned first and never revived."""
import numpy as np
import pytest

from minicaffe.compress.mask import make_mask, magnitude_mask


def reference_units(w, ratio, axis, norm):
    """The pruned unit indices, by a plain loop: zero units first, then smallest norm, then index."""
    units = [np.take(w, i, axis=axis).astype(np.float64) for i in range(w.shape[axis])]
    norms = [np.abs(u).sum() if norm == "L1" else np.sqrt((u ** 2).sum()) for u in units]
    ranked = sorted(range(len(units)), key=lambda i: (norms[i], i))
    k = int(len(units) * ratio)
    return set(ranked[:k]) | {i for i in range(len(units)) if norms[i] == 0}


@pytest.mark.parametrize("shape", [(12, 7), (10, 3, 3, 3)])
@pytest.mark.parametrize("norm", ["L1", "L2"])
@pytest.mark.parametrize("granularity,axis", [("filter", 0), ("channel", 1)])
def test_structured_mask_matches_reference(shape, norm, granularity, axis):
    w = np.random.RandomState(1).randn(*shape).astype(np.float32)
    w[2] *= 0.01              # one small filter, so L1 and L2 choices are not trivially random
    for r in (0.0, 0.2, 0.34, 0.5, 0.9):
        m = make_mask(w, r, granularity, norm)
        assert m.dtype == np.float32 and m.shape == w.shape and m.flags.c_contiguous
        cut = reference_units(w, r, axis, norm)
        for i in range(shape[axis]):
            unit = np.take(m, i, axis=axis)
            assert (unit == (0 if i in cut else 1)).all(), (r, i)
        assert len(cut) == int(shape[axis] * r)


def test_l1_and_l2_rank_differently():
    # filter 0: one big weight (L1 = 3, L2 = 3); filter 1: spread (L1 = 4, L2 = 2)
    w = np.array([[3, 0, 0, 0], [1, 1, 1, 1]], np.float32)
    assert make_mask(w, 0.5, "filter", "L1")[:, 0].tolist() == [0, 1]
    assert make_mask(w, 0.5, "filter", "L2")[:, 0].tolist() == [1, 0]


def test_ties_by_index_and_zero_units_never_revive():
    w = np.ones((6, 4), np.float32)
    assert make_mask(w, 0.5, "filter")[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert make_mask(w, 0.5, "channel")[0].tolist() == [0, 0, 1, 1]
    w[4] = 0
    w[5] = 0
    m = make_mask(w, 0.34, "filter")            # k = 2: the two zero filters, nothing else
    assert m[:, 0].tolist() == [1, 1, 1, 1, 0, 0]
    m = make_mask(w, 0.0, "filter")             # ratio 0 revives nothing
    assert m[:, 0].tolist() == [1, 1, 1, 1, 0, 0]
    m = make_mask(w, 0.5, "filter")             # k = 3: the zeros, then the lowest index
    assert m[:, 0].tolist() == [0, 1, 1, 1, 0, 0]
    # a mask rebuilt from the weights it left is the same mask (what a resumed run relies on)
    v = np.random.RandomState(2).randn(8, 5, 3).astype(np.float32)
    for g in ("weight", "filter", "channel"):
        m = make_mask(v, 0.6, g)
        assert np.array_equal(make_mask(v * m, 0.6, g), m)


def test_weight_granularity_is_magnitude_mask_and_out_axis():
    w = np.random.RandomState(3).randn(5, 9).astype(np.float32)
    assert np.array_equal(make_mask(w, 0.4), magnitude_mask(w, 0.4))
    # a transposed weight (inputs, outputs): its filters are columns
    assert np.array_equal(make_mask(w.T, 0.4, "filter", out_axis=1), make_mask(w, 0.4, "filter").T)
    assert np.array_equal(make_mask(w.T, 0.4, "channel", out_axis=1), make_mask(w, 0.4, "channel").T)
    with pytest.raises(ValueError, match="granularity"):
        make_mask(w, 0.4, "kernel")
    with pytest.raises(ValueError, match="norm"):
        make_mask(w, 0.4, "filter", "L3")


def test_cmp_layers_prune_whole_filters_and_keep_them_pruned(tmp_path):
    import minicaffe
    from nets import TINY_NET, write_tiny
    net = TINY_NET.replace('type: "Convolution"', 'type: "CmpConvolution"').replace(
        'convolution_param {', 'convolution_param { sparse_ratio: 0.34 prune_granularity: FILTER').replace(
        'type: "InnerProduct"', 'type: "CmpInnerProduct"').replace(
        'inner_product_param {', 'inner_product_param { sparse_ratio: 0.5 prune_granularity: CHANNEL '
        'prune_norm: L2 transpose: true')
    s = minicaffe.get_solver(write_tiny(tmp_path, net=net, max_iter=30, display=0, test_interval=0,
                                        snapshot_after_train="false"))
    conv, ip = (s.net.params[n][0] for n in ("conv1", "ip1"))
    conv0, ip0 = conv.data.copy(), ip.data.copy()
    assert ((conv0 == 0).all(axis=(1, 2, 3))).sum() == 1          # int(3 * 0.34) filters
    assert ((ip0 == 0).all(axis=1)).sum() == int(48 * np.float32(0.5))   # transposed: inputs are rows
    assert not (ip0 == 0).all(axis=0).any()
    s.step(30)
    for b, b0 in ((conv, conv0), (ip, ip0)):
        assert (b.data[b0 == 0] == 0).all() and (b.data[b0 != 0] != b0[b0 != 0]).any()
