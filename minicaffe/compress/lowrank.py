"""Low-rank factorization: a large InnerProduct or Convolution becomes two smaller layers whose
product is the truncated SVD of its weights, written through netedit as a plain net real Caffe runs.

- InnerProduct W (N x K) ~ A B: `<name>_v` (K -> r, no bias, weights B) then `<name>_u` (r -> N, weights
  A, the original bias), keeping the original top.
- Convolution, scheme "channel": W reshaped N x (C kh kw) ~ A B: `<name>_v`, a kh x kw convolution to
  r channels (the original pad/stride/dilation, no bias), then `<name>_u`, a 1x1 convolution to N
  channels with the bias.
- Convolution, scheme "spatial" (Jaderberg et al. 2014, scheme 2): W[n, c, i, j] arranged as the
  matrix M[(c, i), (n, j)] of shape (C kh) x (N kw) ~ P Q: `<name>_v`, a kh x 1 convolution to r
  channels (vertical pad/stride/dilation) with V[r, c, i, 0] = P[(c, i), r], then `<name>_u`, a 1 x kw
  convolution to N channels (horizontal pad/stride/dilation, bias) with H[n, r, 0, j] = Q[r, (n, j)].
  Their composition sums H[n, r, j] V[r, c, i] over r, which is M's product: exact at full rank.

The singular values are split evenly: A = U sqrt(S), B = sqrt(S) V^T, so both factors have the
same scale (what weight decay and one learning rate for both layers expect when finetuning).
"""
import numpy as np

from minicaffe import minicaffe_pb2 as pb
from minicaffe.errors import CaffeError

from .netedit import PLAIN, out_axis, weighted_param

SCHEMES = ("channel", "spatial")


def svd_factors(m, rank):
    """A (rows x rank), B (rank x cols) with A B the best rank-`rank` approximation of m."""
    u, s, vt = np.linalg.svd(np.asarray(m, np.float64), full_matrices=False)
    root = np.sqrt(s[:rank])
    return u[:, :rank] * root, root[:, None] * vt[:rank]


def energy_rank(singular_values, energy):
    """The smallest rank whose singular values keep `energy` of the sum of their squares."""
    if not 0 < energy <= 1:
        raise CaffeError(f"energy {energy} must be in (0, 1]")
    sq = np.asarray(singular_values, np.float64) ** 2
    kept = np.cumsum(sq) / max(sq.sum(), np.finfo(np.float64).tiny)
    return int(min(np.searchsorted(kept, energy - 1e-12) + 1, len(sq)))


def kind(lp):
    """'InnerProduct' or 'Convolution' (Cmp layers as their plain type), else None."""
    t = PLAIN.get(lp.type, lp.type)
    return t if t in ("InnerProduct", "Convolution") else None


def _geometry(p, spatial):
    """A convolution's (pad, stride, dilation) per spatial axis, by Caffe's rules."""
    def per_axis(values, h, w, has_hw, default):
        if has_hw:
            return [h, w]
        values = list(values) or [default]
        return values * spatial if len(values) == 1 else values
    pad = per_axis(p.pad, p.pad_h, p.pad_w, p.HasField("pad_h") or p.HasField("pad_w"), 0)
    stride = per_axis(p.stride, p.stride_h, p.stride_w,
                      p.HasField("stride_h") or p.HasField("stride_w"), 1)
    dilation = per_axis(p.dilation, 0, 0, False, 1)
    return pad, stride, dilation


GEOMETRY = ("kernel_size", "pad", "stride", "dilation", "kernel_h", "kernel_w", "pad_h", "pad_w",
            "stride_h", "stride_w")


def _set_geometry(p, kernel, pad, stride, dilation):
    """Write a 2-D convolution's kernel/pad/stride as the _h/_w fields, dilation as two values."""
    for f in GEOMETRY:
        p.ClearField(f)
    p.kernel_h, p.kernel_w = kernel
    p.pad_h, p.pad_w = pad
    p.stride_h, p.stride_w = stride
    p.dilation.extend(dilation)


def matrix(lp, w, scheme):
    """The matrix a layer's weights are factorized as."""
    if kind(lp) == "InnerProduct":
        return w.T if out_axis(lp) else w
    if scheme == "spatial":        # check() made sure w is 4-D
        n, c, kh, kw = w.shape
        return w.transpose(1, 2, 0, 3).reshape(c * kh, n * kw)
    return w.reshape(w.shape[0], -1)


def check(edit, name, scheme):
    """The layer's weight matrix, or a clear refusal of what cannot be factorized."""
    found = edit.layers(name)
    lp = found[0]
    if len(found) > 1:
        raise CaffeError(f"layer '{name}' appears {len(found)} times (one per phase?): factorize a "
                         "net where each layer name is unique")
    if kind(lp) is None:
        raise CaffeError(f"layer '{name}' is a {lp.type}: only InnerProduct and Convolution layers "
                         "(or their Cmp forms) can be factorized")
    if scheme not in SCHEMES:
        raise CaffeError(f"unknown scheme '{scheme}': use one of {', '.join(SCHEMES)}")
    w = edit._editable(name)[0]
    if kind(lp) == "Convolution":
        if lp.convolution_param.group != 1:
            raise CaffeError(f"layer '{name}' is a grouped convolution (group "
                             f"{lp.convolution_param.group}): its weights are not one matrix")
        if scheme == "spatial" and w.ndim != 4:
            raise CaffeError(f"layer '{name}': the spatial scheme needs a 2-D convolution, "
                             f"its weights are {w.shape}")
    return matrix(lp, w, scheme)


def full_rank(edit, name, scheme="channel"):
    return min(check(edit, name, scheme).shape)


def singular_values(edit, name, scheme="channel"):
    return np.linalg.svd(check(edit, name, scheme).astype(np.float64), compute_uv=False)


def _derived(old, name, top, num_output, bias):
    """A copy of `old` renamed, with its own top, its outputs, its bias term and its param specs
    (unnamed, so the two new layers share nothing)."""
    lp = pb.LayerParameter()
    lp.CopyFrom(old)
    lp.type = kind(old)
    lp.name = name
    del lp.top[:]
    lp.top.append(top)
    p = weighted_param(lp)
    p.num_output, p.bias_term = num_output, bias
    if not bias:
        p.ClearField("bias_filler")
        del lp.param[1:]
    for ps in lp.param:
        ps.ClearField("name")
    return lp


def factorize(edit, name, rank, scheme="channel"):
    """Replace layer `name` by its rank-`rank` factorization; return the two new layers' names."""
    m = check(edit, name, scheme)
    if not 1 <= rank <= min(m.shape):
        raise CaffeError(f"layer '{name}': rank {rank} is out of range: its weight matrix is "
                         f"{m.shape[0]} x {m.shape[1]}, so the rank must be 1 to {min(m.shape)}")
    old = edit.layer(name)
    arrays = edit.weights(name)
    w, bias = arrays[0], arrays[1:]
    a, b = svd_factors(m, rank)
    first_name, second_name = name + "_v", name + "_u"
    first = _derived(old, first_name, first_name, rank, False)
    second = _derived(old, second_name, old.top[0], w.shape[out_axis(old)], bool(bias))
    del second.bottom[:]
    second.bottom.append(first_name)
    if kind(old) == "InnerProduct":
        first.inner_product_param.transpose = second.inner_product_param.transpose = False
        first_w, second_w = b, a
    else:
        p1, p2 = first.convolution_param, second.convolution_param
        pad, stride, dilation = _geometry(p1, w.ndim - 2)
        if scheme == "spatial":
            n, c, kh, kw = w.shape
            _set_geometry(p1, (kh, 1), (pad[0], 0), (stride[0], 1), (dilation[0], 1))
            _set_geometry(p2, (1, kw), (0, pad[1]), (1, stride[1]), (1, dilation[1]))
            first_w = a.T.reshape(rank, c, kh, 1)
            second_w = b.reshape(rank, n, 1, kw).transpose(1, 0, 2, 3)
        else:
            for f in GEOMETRY:
                p2.ClearField(f)
            p2.kernel_size.append(1)
            first_w = b.reshape((rank,) + w.shape[1:])
            second_w = a.reshape(a.shape + (1,) * (w.ndim - 2))
    edit.replace(name, [first, second], {first_name: [first_w], second_name: [second_w] + bias})
    return first_name, second_name


def parse_ranks(text):
    """'ip1=32,conv2=16' -> {'ip1': 32, 'conv2': 16}."""
    ranks = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, _, value = item.partition("=")
        try:
            ranks[name.strip()] = int(value)
        except ValueError:
            raise CaffeError(f"--rank '{item}': expected layer=rank, e.g. ip1=32") from None
    return ranks


def choose_ranks(edit, energy, names=None, scheme="channel"):
    """Per layer, the smallest rank keeping `energy` of the squared singular values. Without
    `names`: every InnerProduct and ungrouped Convolution with weights where that rank saves
    parameters (the others are returned with rank None)."""
    if names:
        return {n: energy_rank(singular_values(edit, n, scheme), energy) for n in names}
    ranks = {}
    for lp in edit.net.layer:
        if lp.name in ranks or lp.name not in edit.blobs or kind(lp) is None:
            continue
        if kind(lp) == "Convolution" and lp.convolution_param.group != 1:
            continue
        m = check(edit, lp.name, scheme)
        r = energy_rank(np.linalg.svd(m.astype(np.float64), compute_uv=False), energy)
        ranks[lp.name] = r if r * sum(m.shape) < m.size else None
    return ranks


def lowrank(edit, ranks, scheme="channel"):
    """Factorize each layer of `ranks` ({name: rank}, None = leave it) and make the net plain Caffe;
    return {name: (rank, full rank, (first, second))}."""
    done = {}
    for name in ranks:
        check(edit, name, scheme)       # refuse before changing anything
    for name, rank in ranks.items():
        if rank is None:
            continue
        full = full_rank(edit, name, scheme)
        done[name] = (rank, full, factorize(edit, name, rank, scheme))
    edit.standard()
    return done
