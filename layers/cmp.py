"""CmpConvolution and CmpInnerProduct: Convolution and InnerProduct plus the pruning mask
(`sparse_ratio`) and optional k-means weight sharing (`quantize_term`, `class_num`)."""
from minicaffe.layer import register
from minicaffe.compress.mask import apply_mask, magnitude_mask
from minicaffe.compress.sharing import WeightSharing

from .conv import Convolution
from .inner_product import InnerProduct

# How a shared value's gradient is formed from its members' (see the note in the pruning docs):
# "sum" is Deep Compression's Eq. 3; "mean" divides by the cluster size.
SHARED_GRAD = "sum"


class Compressed:
    sharing = None

    def compression_param(self):
        raise NotImplementedError

    def setup(self, bottom, top):
        p = self.compression_param()
        if not 0 <= p.sparse_ratio < 1:
            raise self.error(f"sparse_ratio {p.sparse_ratio:g} is not in [0, 1) (the fraction of "
                             "weights pruned)")
        if p.quantize_term and p.class_num < 1:
            raise self.error(f"class_num {p.class_num} must be at least 1 with quantize_term")
        super().setup(bottom, top)

    def on_weights_set(self):
        p = self.compression_param()
        w = self.blobs[0]
        mask = magnitude_mask(w.data, p.sparse_ratio)
        apply_mask(w, mask)
        self.sharing = None
        if p.quantize_term and mask.any():
            self.sharing = WeightSharing(w.data, mask, p.class_num)
            self.sharing.quantize(w.data)

    def weight_grad_hook(self, dw):
        assert dw.flags.c_contiguous, "the hook works in place on a contiguous gradient"
        w = self.blobs[0]
        if w.mask is not None:
            dw *= w.mask.reshape(dw.shape)
        if self.sharing is not None:
            self.sharing.shared_grad(dw, SHARED_GRAD)


@register("CmpConvolution")
class CmpConvolution(Compressed, Convolution):
    def compression_param(self):
        return self.param.convolution_param


@register("CmpInnerProduct")
class CmpInnerProduct(Compressed, InnerProduct):
    def compression_param(self):
        return self.param.inner_product_param
