"""CmpConvolution and CmpInnerProduct: Convolution and InnerProduct plus the pruning mask
(`sparse_ratio`, by weight or by whole filter/channel: `prune_granularity`, `prune_norm`), an
optional gradual schedule (`initial_sparse_ratio`, `prune_start_iter`, `prune_end_iter`,
`prune_interval`) and optional k-means weight sharing (`quantize_term`, `class_num`)."""
from minicaffe import minicaffe_pb2 as pb
from minicaffe.layer import register
from minicaffe.compress.mask import apply_mask, make_mask, out_axis
from minicaffe.compress.schedule import Schedule
from minicaffe.compress.sharing import WeightSharing

from .conv import Convolution
from .inner_product import InnerProduct

# How a shared value's gradient is formed from its members' (see the note in the pruning docs):
# "sum" is Deep Compression's Eq. 3; "mean" divides by the cluster size.
SHARED_GRAD = "sum"
SCHEDULE_FIELDS = ("initial_sparse_ratio", "prune_start_iter", "prune_interval")


class Compressed:
    sharing = None
    schedule = None
    iteration = None     # the last iteration on_iteration saw, since the weights were last set
    mask_ratio = None    # the ratio the current mask was made with (None: none made yet)

    def compression_param(self):
        raise NotImplementedError

    def setup(self, bottom, top):
        p = self.compression_param()
        if not 0 <= p.sparse_ratio < 1:
            raise self.error(f"sparse_ratio {p.sparse_ratio:g} is not in [0, 1) (the fraction of "
                             "weights pruned)")
        if p.quantize_term and p.class_num < 1:
            raise self.error(f"class_num {p.class_num} must be at least 1 with quantize_term")
        self.granularity = pb.PruneGranularity.Name(p.prune_granularity).lower()
        self.norm = pb.PruneNorm.Name(p.prune_norm)
        if p.HasField("prune_end_iter"):
            if p.quantize_term:
                raise self.error("quantize_term with a gradual schedule (prune_end_iter): share "
                                 "the weights in a finetune after the schedule, with sparse_ratio only")
            try:
                self.schedule = Schedule(p.sparse_ratio, p.initial_sparse_ratio, p.prune_start_iter,
                                         p.prune_end_iter, p.prune_interval)
            except ValueError as e:
                raise self.error(str(e)) from None
        elif any(p.HasField(f) for f in SCHEDULE_FIELDS):
            given = ", ".join(f for f in SCHEDULE_FIELDS if p.HasField(f))
            raise self.error(f"{given} given without prune_end_iter (the end of the gradual schedule)")
        super().setup(bottom, top)
        if self.granularity == "channel" and getattr(self, "group", 1) > 1:
            raise self.error(f"prune_granularity CHANNEL needs group 1, not {self.group}")

    def remask(self, ratio):
        """Mask the weights at `ratio` (zeros already there stay pruned); ratio 0 in a schedule is
        no pruning at all."""
        w = self.blobs[0]
        self.mask_ratio = ratio
        if self.schedule is not None and ratio == 0:
            w.mask = None
            return
        mask = make_mask(w.data, ratio, self.granularity, self.norm, out_axis(self.param))
        apply_mask(w, mask)
        self.sharing = None
        p = self.compression_param()
        if p.quantize_term and mask.any():
            self.sharing = WeightSharing(w.data, mask, p.class_num)
            self.sharing.quantize(w.data)

    def on_weights_set(self):
        """One-shot: mask at load. Gradual, in training: the mask waits for on_iteration, which
        rebuilds it from these weights for the iteration the solver is at (a resume); outside
        training (TEST phase) the final ratio applies."""
        if self.schedule is None or self.phase == pb.TEST:
            self.remask(self.compression_param().sparse_ratio)
            return
        self.blobs[0].mask = None
        self.mask_ratio = self.iteration = None

    def on_iteration(self, it):
        """Called by the solver before iteration `it`: at a schedule step, or when the mask is not
        the one in force at `it`, remake it from the current weights."""
        if self.schedule is None or it == self.iteration:
            return
        ratio = self.schedule.ratio_in_force(it)
        if self.schedule.is_step(it) or ratio != self.mask_ratio:
            self.remask(ratio)
        self.iteration = it

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
