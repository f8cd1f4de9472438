"""Upgrades of old net and solver definitions, as Caffe's upgrade_net_proto_text does."""
from . import minicaffe_pb2 as pb
from .errors import CaffeError

V1_TYPE_NAMES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# V1 fields that carry over to LayerParameter unchanged (same message types).
_SAME_FIELDS = [
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param", "image_data_param",
    "infogain_loss_param", "inner_product_param", "lrn_param", "memory_data_param", "mvn_param",
    "pooling_param", "power_param", "relu_param", "sigmoid_param", "softmax_param",
    "slice_param", "tanh_param", "threshold_param", "window_data_param", "transform_param",
    "loss_param",
]


def _v1_to_layer(v1, lp, path):
    if v1.HasField("layer"):
        raise CaffeError(f"{path}: layer '{v1.layer.name}' is in the V0 format (before 2014); "
                         "upgrade it with Caffe's upgrade_net_proto_text first")
    lp.name = v1.name
    lp.type = V1_TYPE_NAMES.get(pb.V1LayerParameter.LayerType.Name(v1.type), "")
    if not lp.type:
        raise CaffeError(f"{path}: layer '{v1.name}' has no type")
    lp.bottom.extend(v1.bottom)
    lp.top.extend(v1.top)
    lp.include.extend(v1.include)
    lp.exclude.extend(v1.exclude)
    lp.blobs.extend(v1.blobs)
    lp.loss_weight.extend(v1.loss_weight)
    n = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(n):
        ps = lp.param.add()
        if i < len(v1.param):
            ps.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            ps.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            ps.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            ps.decay_mult = v1.weight_decay[i]
    for f in _SAME_FIELDS:
        if v1.HasField(f):
            getattr(lp, f).CopyFrom(getattr(v1, f))


def _move_data_transform(lp):
    """Old nets put scale/mean/crop/mirror in data_param; Caffe moved them to transform_param."""
    for f in ("data_param", "image_data_param", "window_data_param"):
        if not lp.HasField(f):
            continue
        dp = getattr(lp, f)
        for name in ("scale", "mean_file", "crop_size", "mirror"):
            if dp.HasField(name):
                setattr(lp.transform_param, name, getattr(dp, name))
                dp.ClearField(name)


def upgrade_net(net, path="<net>"):
    if len(net.layers):
        if len(net.layer):
            raise CaffeError(f"{path}: uses both 'layer' and legacy 'layers'; use only 'layer'")
        for v1 in net.layers:
            lp = net.layer.add()
            _v1_to_layer(v1, lp, path)
            _move_data_transform(lp)     # as Caffe: only legacy layers; new ones ignore those fields
        net.ClearField("layers")
    if len(net.input):
        _upgrade_inputs(net, path)
    return net


def _upgrade_inputs(net, path):
    """Net-level `input:`/`input_dim:`/`input_shape` become an Input layer in front."""
    shapes = [list(s.dim) for s in net.input_shape]
    if not shapes and len(net.input_dim):
        if len(net.input_dim) != 4 * len(net.input):
            raise CaffeError(f"{path}: input_dim needs 4 values per input, got "
                             f"{len(net.input_dim)} for {len(net.input)} input(s)")
        dims = list(net.input_dim)
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(net.input))]
    if len(shapes) != len(net.input):
        raise CaffeError(f"{path}: {len(net.input)} input(s) but {len(shapes)} input shape(s)")
    layers = list(net.layer)
    net.ClearField("layer")
    lp = net.layer.add(name="input", type="Input")
    for name, shape in zip(net.input, shapes):
        lp.top.append(name)
        lp.input_param.shape.add().dim.extend(shape)
    net.layer.extend(layers)
    for f in ("input", "input_dim", "input_shape"):
        net.ClearField(f)


SOLVER_TYPE_NAMES = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]


def upgrade_solver(sp):
    if sp.HasField("solver_type"):
        if sp.HasField("type") and sp.type != SOLVER_TYPE_NAMES[sp.solver_type]:
            raise CaffeError("solver sets both 'type' and the deprecated 'solver_type', and they differ")
        sp.type = SOLVER_TYPE_NAMES[sp.solver_type]
        sp.ClearField("solver_type")
    return sp
