"""caffe.NetSpec, caffe.layers (L), caffe.params (P), caffe.to_proto: the text pycaffe produces."""
import re

import numpy as np
import pytest

import caffe
from caffe.proto import caffe_pb2
from minicaffe import io
from caffe import net_spec
from caffe.net_spec import NetSpec, to_proto
from caffe.net_spec import layers as L
from caffe.net_spec import params as P


def lenet(source, batch_size):
    """examples/01-learning-lenet's net, as its notebook writes it."""
    n = NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=source,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def learned_text(name, type_, param, bottom, num_output, kernel_line=""):
    """A Convolution or InnerProduct layer with xavier weights, as to_proto prints it."""
    return f'''layer {{
  name: "{name}"
  type: "{type_}"
  bottom: "{bottom}"
  top: "{name}"
  {param} {{
    num_output: {num_output}
{kernel_line}    weight_filler {{
      type: "xavier"
    }}
  }}
}}
'''


def conv_text(name, bottom, num_output):
    return learned_text(name, "Convolution", "convolution_param", bottom, num_output, "    kernel_size: 5\n")


def ip_text(name, bottom, num_output):
    return learned_text(name, "InnerProduct", "inner_product_param", bottom, num_output)


def pool_text(name, bottom):
    return f'''layer {{
  name: "{name}"
  type: "Pooling"
  bottom: "{bottom}"
  top: "{name}"
  pooling_param {{
    pool: MAX
    kernel_size: 2
    stride: 2
  }}
}}
'''


def float_text(x):
    """How this protobuf prints a float field (old pycaffe printed 1/255 as 0.00392156862745)."""
    return str(caffe_pb2.TransformationParameter(scale=x)).split(": ")[1].strip()


# pycaffe's lenet_auto_train.prototxt, field for field.
LENET_TEXT = ('''layer {
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  transform_param {
    scale: %s
  }
  data_param {
    source: "mnist/mnist_train_lmdb"
    batch_size: 64
    backend: LMDB
  }
}
''' % float_text(1. / 255) + conv_text("conv1", "data", 20) + pool_text("pool1", "conv1")
    + conv_text("conv2", "pool1", 50) + pool_text("pool2", "conv2") + ip_text("fc1", "pool2", 500)
    + '''layer {
  name: "relu1"
  type: "ReLU"
  bottom: "fc1"
  top: "fc1"
}
''' + ip_text("score", "fc1", 10) + '''layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "score"
  bottom: "label"
  top: "loss"
}
''')


def dummy_lenet(batch_size, anonymous):
    """pycaffe's test_net_spec nets: LeNet on DummyData, with its tops named or not."""
    n = NetSpec() if not anonymous else None
    data, label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]), dict(dim=[batch_size, 1, 1, 1])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500, weight_filler=dict(type='xavier'))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=dict(type='xavier'))
    loss = L.SoftmaxWithLoss(ip2, label)
    if anonymous:
        return loss.to_proto()
    for name, top in [("data", data), ("label", label), ("conv1", conv1), ("pool1", pool1),
                      ("conv2", conv2), ("pool2", pool2), ("ip1", ip1), ("relu1", relu1),
                      ("ip2", ip2), ("loss", loss)]:
        n[name] = top
    return n.to_proto()


def load(tmp_path, proto, phase=caffe.TEST):
    path = tmp_path / "net.prototxt"
    path.write_text(str(proto))
    return caffe.Net(str(path), phase)


def test_lenet_text_is_pycaffes():
    assert str(lenet("mnist/mnist_train_lmdb", 64)) == LENET_TEXT


def test_lenet_from_lmdb_runs_forward(tmp_path):
    rng = np.random.RandomState(0)
    db = str(tmp_path / "lmdb")
    io.write_lmdb(db, [(f"{i:05d}".encode(), io.datum(rng.randint(0, 256, (1, 28, 28)), i % 10)
                        .SerializeToString()) for i in range(6)])
    net = load(tmp_path, lenet(db, 3), caffe.TRAIN)
    assert list(net.blobs["data"].data.shape) == [3, 1, 28, 28]
    assert list(net.blobs["pool2"].data.shape) == [3, 50, 4, 4]
    loss = net.forward()["loss"]
    assert np.isfinite(loss) and loss > 0
    assert net.blobs["data"].data.max() <= 1.0  # transform_param's scale reached the data layer


@pytest.mark.parametrize("anonymous", [False, True])
def test_dummy_lenet_builds_and_runs(tmp_path, anonymous):
    proto = dummy_lenet(4, anonymous)
    assert len(proto.layer) == 9
    relu = proto.layer[6]
    assert relu.type == "ReLU" and list(relu.bottom) == list(relu.top)  # in place
    net = load(tmp_path, proto)
    assert len(net.layers) == 9
    out = net.forward()
    assert list(out) == ["loss" if not anonymous else "SoftmaxWithLoss1"]


def test_anonymous_names_are_type_and_counter():
    proto = dummy_lenet(4, anonymous=True)
    assert [lp.name for lp in proto.layer] == [
        "DummyData1", "Convolution1", "Pooling1", "Convolution2", "Pooling2", "InnerProduct1",
        "ReLU1", "InnerProduct2", "SoftmaxWithLoss1"]
    assert list(proto.layer[0].top) == ["DummyData1", "DummyData2"]
    assert list(proto.layer[6].top) == ["InnerProduct1"]
    assert list(proto.layer[7].bottom) == ["InnerProduct1"]
    assert list(proto.layer[8].bottom) == ["InnerProduct2", "DummyData2"]


def test_zero_tops_silence(tmp_path):
    n = NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    proto = n.to_proto()
    assert str(proto) == '''layer {
  name: "data"
  type: "DummyData"
  top: "data"
  top: "data2"
  dummy_data_param {
    shape {
      dim: 3
    }
  }
}
layer {
  name: "silence_data"
  type: "Silence"
  bottom: "data"
}
layer {
  name: "silence_data2"
  type: "Silence"
  bottom: "data2"
}
'''
    assert len(load(tmp_path, proto).forward()) == 0
    # an unnamed top-less layer is named after its type
    assert [lp.name for lp in to_proto(L.Silence(L.DummyData(shape=dict(dim=3)), ntop=0)).layer] == [
        "DummyData1", "Silence1"]


def test_input_that_is_not_a_top_is_a_type_error():
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)


def test_type_names_map_to_their_param_fields():
    names = net_spec.param_name_dict()
    for type_name, field in [("InnerProduct", "inner_product"), ("TanH", "tanh"), ("HDF5Data", "hdf5_data"),
                             ("PReLU", "prelu"), ("LRN", "lrn"), ("ELU", "elu"), ("SPP", "spp"),
                             ("Transformation", "transform"), ("Python", "python"),
                             ("DummyData", "dummy_data")]:
        assert names[type_name] == field
    x = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    proto = to_proto(L.LRN(x, local_size=3, alpha=1e-4), L.PReLU(x, channel_shared=True),
                     L.ELU(x, alpha=0.5), L.HDF5Data(source="list.txt", batch_size=2),
                     L.TanH(x, engine=P.TanH.CAFFE))
    assert str(proto) == '''layer {
  name: "Input1"
  type: "Input"
  top: "Input1"
  input_param {
    shape {
      dim: 1
      dim: 3
      dim: 8
      dim: 8
    }
  }
}
layer {
  name: "LRN1"
  type: "LRN"
  bottom: "Input1"
  top: "LRN1"
  lrn_param {
    local_size: 3
    alpha: 0.0001
  }
}
layer {
  name: "PReLU1"
  type: "PReLU"
  bottom: "Input1"
  top: "PReLU1"
  prelu_param {
    channel_shared: true
  }
}
layer {
  name: "ELU1"
  type: "ELU"
  bottom: "Input1"
  top: "ELU1"
  elu_param {
    alpha: 0.5
  }
}
layer {
  name: "HDF5Data1"
  type: "HDF5Data"
  top: "HDF5Data1"
  hdf5_data_param {
    source: "list.txt"
    batch_size: 2
  }
}
layer {
  name: "TanH1"
  type: "TanH"
  bottom: "Input1"
  top: "TanH1"
  tanh_param {
    engine: CAFFE
  }
}
'''


def test_python_layer_and_layer_level_fields():
    n = NetSpec()
    n.data = L.Input(shape=[dict(dim=[2, 3])])
    n.loss = L.Python(n.data, n.data, module="pyloss", layer="EuclideanLossLayer", param_str="{'k': 1}",
                      loss_weight=1, include=dict(phase=caffe.TRAIN), propagate_down=[True, False],
                      name="my_loss")
    assert str(n.to_proto().layer[1]) == '''name: "my_loss"
type: "Python"
bottom: "data"
bottom: "data"
top: "loss"
loss_weight: 1
include {
  phase: TRAIN
}
propagate_down: true
propagate_down: false
python_param {
  module: "pyloss"
  layer: "EuclideanLossLayer"
  param_str: "{\\'k\\': 1}"
}
'''


def test_repeated_and_nested_fields():
    x = L.Input(shape=dict(dim=[1, 1, 9, 9]))
    conv = L.Convolution(x, num_output=2, kernel_size=[3, 5], stride=(1, 2), pad=1,
                         param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)],
                         bias_filler=dict(type="constant", value=0.2))
    lp = conv.to_proto().layer[1]
    cp = lp.convolution_param
    assert list(cp.kernel_size) == [3, 5] and list(cp.stride) == [1, 2] and list(cp.pad) == [1]
    assert [(p.lr_mult, p.decay_mult) for p in lp.param] == [(1, 1), (2, 0)]
    assert cp.bias_filler.type == "constant" and cp.bias_filler.value == pytest.approx(0.2)
    # a field of neither the type's message nor LayerParameter is an error, as in pycaffe
    with pytest.raises(AttributeError):
        L.ReLU(x, no_such_field=1).to_proto()
    # a message-valued kwarg is copied in
    filler = caffe_pb2.FillerParameter(type="gaussian", std=0.5)
    assert L.InnerProduct(x, num_output=3, weight_filler=filler).to_proto().layer[1] \
        .inner_product_param.weight_filler == filler


def test_shared_param_messages():
    """Deconvolution and the Cmp layers keep their fields in another type's message."""
    x = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    protos = to_proto(L.Deconvolution(x, num_output=2, kernel_size=4, stride=2, bias_term=False),
                      L.Deconvolution(x, convolution_param=dict(num_output=2, kernel_size=4)),
                      L.CmpConvolution(x, num_output=2, kernel_size=3, sparse_ratio=0.5),
                      L.CmpInnerProduct(x, num_output=2, sparse_ratio=0.25))
    deconv, deconv2, cmpconv, cmpip = protos.layer[1:]
    assert (deconv.convolution_param.num_output, list(deconv.convolution_param.kernel_size),
            deconv.convolution_param.bias_term) == (2, [4], False)
    assert list(deconv2.convolution_param.kernel_size) == [4]
    assert cmpconv.convolution_param.sparse_ratio == 0.5
    assert cmpip.inner_product_param.sparse_ratio == 0.25
    assert [lp.name for lp in protos.layer[1:]] == ["Deconvolution1", "Deconvolution2",
                                                    "CmpConvolution1", "CmpInnerProduct1"]


def test_params_are_the_schemas_enum_values():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    assert P.Data.LMDB == caffe_pb2.DataParameter.LMDB
    assert P.Loss.VALID == caffe_pb2.LossParameter.VALID
    with pytest.raises(AttributeError, match="NoSuchParameter"):
        P.NoSuch.X


def test_names_come_from_attributes_and_order_from_dependencies():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2]))
    mid = L.ReLU(n.data)
    n.out = L.Sigmoid(mid)
    n.mid = mid            # named after its use: the name still applies
    n.extra = L.TanH(n.data)
    proto = n.to_proto()
    assert [(lp.name, list(lp.bottom), list(lp.top)) for lp in proto.layer] == [
        ("data", [], ["data"]), ("mid", ["data"], ["mid"]), ("out", ["mid"], ["out"]),
        ("extra", ["data"], ["extra"])]
    assert n["out"] is n.out and hasattr(n, "mid") and not hasattr(n, "nope")
    with pytest.raises(KeyError):
        n["nope"]


def test_to_proto_of_several_tops_shares_their_layers():
    x = L.Input(shape=dict(dim=[1, 2]))
    a, b = L.Slice(x, slice_point=1, ntop=2)
    net = to_proto(L.ReLU(a), L.ReLU(b), L.Eltwise(a, b, operation=P.Eltwise.PROD))
    assert [(lp.name, list(lp.bottom), list(lp.top)) for lp in net.layer] == [
        ("Input1", [], ["Input1"]), ("Slice1", ["Input1"], ["Slice1", "Slice2"]),
        ("ReLU1", ["Slice1"], ["ReLU1"]), ("ReLU2", ["Slice2"], ["ReLU2"]),
        ("Eltwise1", ["Slice1", "Slice2"], ["Eltwise1"])]
    assert re.search(r"operation: PROD", str(net))


def test_caffe_package_exports():
    assert caffe.NetSpec is NetSpec and caffe.to_proto is to_proto
    assert caffe.layers is L and caffe.params is P


def test_netspec_keys_vals_update_and_del():
    """pycaffe's NetSpec also reads like a dict: keys(), vals(), update(name, params), del."""
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=3)
    n.silence = L.Silence(n.conv, ntop=0)
    assert n.keys() == ["data", "conv", "silence"]
    assert n.vals() == [n.data, n.conv, n.silence]
    n.update("conv", dict(num_output=8, pad=1))        # the layer that makes top 'conv'
    cp = n.to_proto().layer[1].convolution_param
    assert cp.num_output == 8 and list(cp.pad) == [1] and list(cp.kernel_size) == [3]
    n.update("silence", dict(propagate_down=[False]))  # a top-less layer is its own Function
    assert list(n.to_proto().layer[2].propagate_down) == [False]
    del n["silence"]
    del n["conv"]
    assert n.keys() == ["data"] and [lp.name for lp in n.to_proto().layer] == ["data"]
    with pytest.raises(KeyError):
        del n["conv"]
